//! The global API: functions that act on the whole run (`start_all`, `subtest`,
//! `retry`, `partition`, `polling_condition`, ...).

use std::sync::Arc;
use std::time::Duration;

use rhai::{Dynamic, Engine};
use tokio::sync::oneshot;

use super::args::{machine_name, secs_arg, vlan_arg};
use super::context::{ConditionCall, Ctx, Res, World, DEFAULT_WAIT};
use super::errors::innermost;
use crate::error::Error;
use crate::junit::{Subtest, Subtests};
use crate::log::Log;
use crate::machine::Machine;

/// Registers the global functions.
pub(super) fn register(
    engine: &mut Engine,
    ctx: &Arc<Ctx>,
    world: &World,
    log: &Log,
    subtests: Subtests,
) {
    let World {
        machines,
        fabric,
        conditions,
    } = world;
    let c = ctx.clone();
    let all: Vec<Arc<Machine>> = machines.values().cloned().collect();
    engine.register_fn("start_all", move || {
        let all = all.clone();
        c.block(async move {
            let results = futures::future::join_all(all.iter().map(|m| m.start())).await;
            results
                .into_iter()
                .collect::<Result<Vec<()>, Error>>()
                .map(|_| ())
        })
    });
    let l = log.clone();
    engine.register_fn("log", move |text: &str| l.info(text));

    // Subtests: named, timed, nestable sections.
    let l = log.clone();
    let stack: Arc<std::sync::Mutex<Vec<String>>> = Arc::default();
    engine.register_fn(
        "subtest",
        move |call: rhai::NativeCallContext, name: &str, body: rhai::FnPtr| -> Res<Dynamic> {
            let (path, depth) = match stack.lock() {
                Ok(mut st) => {
                    st.push(name.to_owned());
                    (st.join(" / "), st.len() - 1)
                }
                Err(_) => (name.to_owned(), 0),
            };
            let indent = "  ".repeat(depth);
            l.info(&format!("{indent}subtest: {name}"));
            let step = l.step(None, "subtest", &path);
            let started = std::time::Instant::now();
            let result = body.call_within_context::<Dynamic>(&call, ());
            let duration = started.elapsed();
            if let Ok(mut st) = stack.lock() {
                st.pop();
            }
            let failure = result.as_ref().err().map(|e| innermost(e).1);
            step.finish(failure.clone().map_or(Ok(None), Err));
            let verdict = if failure.is_some() { "FAILED" } else { "ok" };
            l.info(&format!(
                "{indent}subtest: {name} {verdict} ({:.2} s)",
                duration.as_secs_f64()
            ));
            if let Ok(mut list) = subtests.lock() {
                list.push(Subtest {
                    name: path,
                    duration,
                    failure,
                });
            }
            result
        },
    );

    // retry(|| { ... }) and retry(|| { ... }, secs): run the closure until it does not
    // throw, a second apart; the last error is the test's when time runs out, or at
    // once when a helper of the network died (every later call would fail).
    let c = ctx.clone();
    let l = log.clone();
    let f = fabric.clone();
    let retry = move |call: &rhai::NativeCallContext,
                      body: &rhai::FnPtr,
                      secs: i64|
          -> Res<Dynamic> {
        let deadline = std::time::Instant::now() + secs_arg(secs)?;
        let mut tries = 0;
        loop {
            tries += 1;
            match body.call_within_context::<Dynamic>(call, ()) {
                Ok(v) => return Ok(v),
                Err(e) if c.cancel().is_cancelled() => return Err(e),
                Err(e) if f.check_helpers().is_err() => {
                    l.info(&format!("retry: try {tries} failed, and a helper of the network died: no more tries"));
                    return Err(e);
                }
                Err(e) if std::time::Instant::now() >= deadline => {
                    l.info(&format!("retry: giving up after {tries} tries"));
                    return Err(e);
                }
                Err(e) => {
                    l.info(&format!("retry: try {tries} failed: {}", innermost(&e).1));
                    std::thread::sleep(Duration::from_secs(1));
                }
            }
        }
    };
    let r = retry.clone();
    engine.register_fn(
        "retry",
        move |call: rhai::NativeCallContext, body: rhai::FnPtr| {
            r(&call, &body, DEFAULT_WAIT.as_secs() as i64)
        },
    );
    engine.register_fn(
        "retry",
        move |call: rhai::NativeCallContext, body: rhai::FnPtr, secs: i64| {
            retry(&call, &body, secs)
        },
    );

    let c = ctx.clone();
    let f = fabric.clone();
    engine.register_fn(
        "partition",
        move |vlan: i64, groups: rhai::Array| -> Res<()> {
            let vlan = vlan_arg(vlan)?;
            let mut names = Vec::new();
            for group in groups {
                let members: rhai::Array = group
                    .try_cast::<rhai::Array>()
                    .ok_or("partition takes an array of arrays of machine names")?;
                let mut g = Vec::new();
                for member in members {
                    g.push(machine_name(member)?);
                }
                names.push(g);
            }
            let f = f.clone();
            c.block(async move { f.partition(vlan, &names).await })
        },
    );
    let c = ctx.clone();
    let f = fabric.clone();
    let l = log.clone();
    engine.register_fn("capture_vlan", move |vlan: i64| -> Res<String> {
        let vlan = vlan_arg(vlan)?;
        let path = l.dir().join(format!("vlan{vlan}.pcap"));
        let f = f.clone();
        let p = path.clone();
        c.block(async move { f.capture_vlan(vlan, &p).await })?;
        Ok(path.display().to_string())
    });
    let c = ctx.clone();
    let f = fabric.clone();
    engine.register_fn("heal", move |vlan: i64| -> Res<()> {
        let vlan = vlan_arg(vlan)?;
        let f = f.clone();
        c.block(async move { f.heal(vlan).await })
    });
    let c = ctx.clone();
    engine.register_fn("http_get", move |url: &str| -> Res<String> {
        c.block(crate::http::get(url, Duration::from_secs(30)))
    });

    // polling_condition(name, || { ... }) and polling_condition(name, secs, || { ... }).
    let add_condition = {
        let ctx = ctx.clone();
        let conditions = conditions.clone();
        move |name: &str, secs: f64, body: rhai::FnPtr| -> Res<()> {
            if !secs.is_finite() || secs < 0.0 {
                return Err(format!(
                    "polling_condition `{name}`: interval {secs} s must be 0 or more"
                )
                .into());
            }
            let index = match ctx.conditions.lock() {
                Ok(mut list) => {
                    list.push(body);
                    list.len() - 1
                }
                Err(_) => return Err("polling conditions are unavailable".into()),
            };
            let tx = ctx.requests_tx.clone();
            conditions.add(name, Duration::from_secs_f64(secs), move || {
                let tx = tx.clone();
                async move {
                    let (reply, answer) = oneshot::channel();
                    tx.send(ConditionCall { index, reply })
                        .map_err(|_| Error::Usage("the script has ended".into()))?;
                    match answer.await {
                        Ok(Ok(())) => Ok(()),
                        Ok(Err(message)) => Err(Error::Usage(message)),
                        Err(_) => Err(Error::Usage("the script has ended".into())),
                    }
                }
            });
            Ok(())
        }
    };
    let add = add_condition.clone();
    engine.register_fn("polling_condition", move |name: &str, body: rhai::FnPtr| {
        add(name, 0.0, body)
    });
    let add = add_condition.clone();
    engine.register_fn(
        "polling_condition",
        move |name: &str, secs: i64, body: rhai::FnPtr| add(name, secs as f64, body),
    );
    engine.register_fn(
        "polling_condition",
        move |name: &str, secs: f64, body: rhai::FnPtr| add_condition(name, secs, body),
    );
}

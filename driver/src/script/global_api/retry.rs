//! `retry(|| { ... })` and `retry(|| { ... }, secs)`: run the closure until it does not
//! throw, a second apart; the last error is the test's when time runs out, or at once
//! when a helper of the network died (every later call would fail).

use std::sync::Arc;
use std::time::Duration;

use rhai::{Dynamic, Engine};

use crate::fabric::Fabric;
use crate::log::Log;
use crate::script::args::secs_arg;
use crate::script::context::{Ctx, Res, DEFAULT_WAIT};
use crate::script::errors::innermost;

/// Registers both forms of `retry`.
pub(super) fn register(engine: &mut Engine, ctx: &Arc<Ctx>, fabric: &Arc<Fabric>, log: &Log) {
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
}

//! `polling_condition(name, || { ... })` and `polling_condition(name, secs, || { ... })`:
//! closures checked before every command of any machine, at most every `secs`.

use std::sync::Arc;
use std::time::Duration;

use rhai::Engine;
use tokio::sync::oneshot;

use crate::conditions::Conditions;
use crate::error::Error;
use crate::script::context::{ConditionCall, Ctx, Res};

/// Registers the three forms of `polling_condition`; each call adds its closure to
/// `conditions`, checked through the script's context.
pub(super) fn register(engine: &mut Engine, ctx: &Arc<Ctx>, conditions: &Arc<Conditions>) {
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

//! A machine's script calls: commands and power: `start`, `succeed`, `fail`, `wait_until_succeeds`,
//! `wait_until_fails`, `execute`, `shutdown`, `crash`, `reboot`.

use std::sync::Arc;
use std::time::Duration;

use rhai::{Dynamic, Engine, EvalAltResult, Map};

use crate::error::Error;
use crate::machine::Machine;
use crate::script::args::secs_arg;
use crate::script::context::{Ctx, MachineHandle, DEFAULT_WAIT, SHUTDOWN_WAIT};

async fn wait(m: &Machine, cmd: &str, limit: Duration, success: bool) -> Result<String, Error> {
    if success {
        m.wait_until_succeeds(cmd, limit).await
    } else {
        m.wait_until_fails(cmd, limit).await
    }
}

/// Registers these calls of the `Machine` type.
pub(super) fn register(engine: &mut Engine, ctx: &Arc<Ctx>) {
    let c = ctx.clone();
    engine.register_fn("start", move |m: &mut MachineHandle| c.block(m.0.start()));
    with_limit!(engine, ctx, "succeed", |c, m, cmd: &str, limit| {
        let limit = limit.unwrap_or(m.0.command_timeout());
        c.block(m.0.succeed_with_timeout(cmd, limit))
    });
    with_limit!(engine, ctx, "fail", |c, m, cmd: &str, limit| {
        let limit = limit.unwrap_or(m.0.command_timeout());
        c.block(m.0.fail_with_timeout(cmd, limit))
    });
    for (name, success) in [("wait_until_succeeds", true), ("wait_until_fails", false)] {
        let c = ctx.clone();
        engine.register_fn(name, move |m: &mut MachineHandle, cmd: &str| {
            c.block(wait(&m.0, cmd, DEFAULT_WAIT, success))
        });
        let c = ctx.clone();
        engine.register_fn(name, move |m: &mut MachineHandle, cmd: &str, secs: i64| {
            c.block(wait(&m.0, cmd, secs_arg(secs)?, success))
        });
    }
    with_limit!(engine, ctx, "execute", |c, m, cmd: &str, limit| {
        let limit = limit.unwrap_or(m.0.command_timeout());
        let r = c.block(m.0.execute_with_timeout(cmd, limit))?;
        let mut map = Map::new();
        map.insert(
            "status".into(),
            r.code.map_or(Dynamic::UNIT, |c| Dynamic::from(c as i64)),
        );
        map.insert("stdout".into(), r.stdout.into());
        map.insert("stderr".into(), r.stderr.into());
        Ok::<_, Box<EvalAltResult>>(map)
    });
    with_limit!(engine, ctx, "shutdown", |c, m, limit| {
        c.block(m.0.shutdown(limit.unwrap_or(SHUTDOWN_WAIT)))
    });
    let c = ctx.clone();
    engine.register_fn("crash", move |m: &mut MachineHandle| c.block(m.0.crash()));
    with_limit!(engine, ctx, "reboot", |c, m, limit| {
        c.block(m.0.reboot(limit.unwrap_or(SHUTDOWN_WAIT)))
    });
}

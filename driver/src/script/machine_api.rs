//! The machine API: every machine of the spec is a script variable of type `Machine`,
//! whose methods are these (`server.succeed("uname -r")`).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rhai::{Dynamic, Engine, EvalAltResult, Map};

use super::args::{impairment_arg, port_arg, secs_arg, vlan_arg};
use super::context::{Ctx, MachineHandle, Res, DEFAULT_WAIT, SHUTDOWN_WAIT};
use super::errors::error_to_rhai;
use crate::error::Error;
use crate::log::Log;
use crate::machine::{Machine, ScreenReader};

/// Registers `name(m[, arg])` and `name(m[, arg], secs)`; the body gets `limit`, the
/// call's own time limit (`None` for the default).
macro_rules! with_limit {
    ($engine:ident, $ctx:ident, $name:literal, |$c:ident, $m:ident, $limit:ident| $body:block) => {{
        let $c = $ctx.clone();
        $engine.register_fn($name, move |$m: &mut MachineHandle| {
            let $limit: Option<Duration> = None;
            $body
        });
        let $c = $ctx.clone();
        $engine.register_fn($name, move |$m: &mut MachineHandle, secs: i64| {
            let $limit = Some(secs_arg(secs)?);
            $body
        });
    }};
    ($engine:ident, $ctx:ident, $name:literal, |$c:ident, $m:ident, $arg:ident: $ty:ty, $limit:ident| $body:block) => {{
        let $c = $ctx.clone();
        $engine.register_fn($name, move |$m: &mut MachineHandle, $arg: $ty| {
            let $limit: Option<Duration> = None;
            $body
        });
        let $c = $ctx.clone();
        $engine.register_fn(
            $name,
            move |$m: &mut MachineHandle, $arg: $ty, secs: i64| {
                let $limit = Some(secs_arg(secs)?);
                $body
            },
        );
    }};
}

async fn wait(m: &Machine, cmd: &str, limit: Duration, success: bool) -> Result<String, Error> {
    if success {
        m.wait_until_succeeds(cmd, limit).await
    } else {
        m.wait_until_fails(cmd, limit).await
    }
}

/// Registers the machines as variables and the `Machine` type's methods.
pub(super) fn register(
    engine: &mut Engine,
    ctx: &Arc<Ctx>,
    machines: &BTreeMap<String, Arc<Machine>>,
    path: &Path,
    log: &Log,
) {
    let vars: BTreeMap<String, Dynamic> = machines
        .iter()
        .map(|(name, m)| (name.clone(), Dynamic::from(MachineHandle(m.clone()))))
        .collect();
    #[allow(deprecated)] // "volatile", not deprecated: the documented way to resolve names
    engine.on_var(move |name, _, _| Ok(vars.get(name).cloned()));

    engine.register_type_with_name::<MachineHandle>("Machine");
    engine.register_get("name", |m: &mut MachineHandle| m.0.name().to_owned());
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

    // Waiting.
    with_limit!(
        engine,
        ctx,
        "wait_for_console_text",
        |c, m, pattern: &str, limit| {
            c.block(m.0.wait_for_console_text(pattern, limit.unwrap_or(DEFAULT_WAIT)))
        }
    );
    engine.register_fn("get_console_log", |m: &mut MachineHandle| m.0.console_log());
    with_limit!(engine, ctx, "wait_for_file", |c, m, path: &str, limit| {
        c.block(m.0.wait_for_file(path, limit.unwrap_or(DEFAULT_WAIT)))
    });
    with_limit!(
        engine,
        ctx,
        "wait_for_open_port",
        |c, m, port: i64, limit| {
            c.block(m.0.wait_for_open_port(port_arg(port)?, limit.unwrap_or(DEFAULT_WAIT)))
        }
    );
    with_limit!(
        engine,
        ctx,
        "wait_for_closed_port",
        |c, m, port: i64, limit| {
            c.block(m.0.wait_for_closed_port(port_arg(port)?, limit.unwrap_or(DEFAULT_WAIT)))
        }
    );
    with_limit!(engine, ctx, "wait_for_unit", |c, m, unit: &str, limit| {
        c.block(m.0.wait_for_unit(unit, limit.unwrap_or(DEFAULT_WAIT)))
    });

    // Files.
    let c = ctx.clone();
    let base = path.parent().unwrap_or(Path::new(".")).to_path_buf();
    engine.register_fn(
        "copy_to",
        move |m: &mut MachineHandle, local: &str, remote: &str| -> Res<i64> {
            let local = base.join(local);
            c.block(m.0.copy_to(&local, remote)).map(|n| n as i64)
        },
    );
    let c = ctx.clone();
    let out = log.dir().to_path_buf();
    engine.register_fn(
        "copy_from",
        move |m: &mut MachineHandle, remote: &str, local: &str| -> Res<String> {
            let local = out.join(local);
            c.block(m.0.copy_from(remote, &local))?;
            Ok(local.display().to_string())
        },
    );

    // Screen and keyboard.
    let c = ctx.clone();
    engine.register_fn(
        "screenshot",
        move |m: &mut MachineHandle, name: &str| -> Res<String> {
            c.block(m.0.screenshot(name))
                .map(|p| p.display().to_string())
        },
    );
    let c = ctx.clone();
    engine.register_fn("get_screen_text", move |m: &mut MachineHandle| {
        c.block(m.0.get_screen_text())
    });
    let c = ctx.clone();
    engine.register_fn("get_screen_text_ocr", move |m: &mut MachineHandle| {
        c.block(m.0.get_screen_text_ocr())
    });
    with_limit!(
        engine,
        ctx,
        "wait_for_text",
        |c, m, pattern: &str, limit| {
            c.block(m.0.wait_for_text(pattern, limit.unwrap_or(DEFAULT_WAIT)))
        }
    );
    with_limit!(
        engine,
        ctx,
        "wait_for_text_ocr",
        |c, m, pattern: &str, limit| {
            let limit = limit.unwrap_or(DEFAULT_WAIT);
            c.block(m.0.wait_for_text_with(pattern, limit, ScreenReader::Ocr))
                .map(|s| s.text)
        }
    );
    let c = ctx.clone();
    engine.register_fn("send_key", move |m: &mut MachineHandle, keys: &str| {
        c.block(m.0.send_key(keys))
    });
    let c = ctx.clone();
    engine.register_fn("send_chars", move |m: &mut MachineHandle, text: &str| {
        c.block(m.0.send_chars(text, Duration::from_millis(10)))
    });
    let c = ctx.clone();
    engine.register_fn(
        "send_chars",
        move |m: &mut MachineHandle, text: &str, delay_ms: i64| {
            let delay = Duration::from_millis(delay_ms.clamp(0, 10_000) as u64);
            c.block(m.0.send_chars(text, delay))
        },
    );

    // Networking.
    engine.register_fn("ip", |m: &mut MachineHandle, vlan: i64| -> Res<String> {
        Ok(m.0
            .ip(vlan_arg(vlan)?)
            .map_err(|e| error_to_rhai(&e))?
            .to_string())
    });
    engine.register_fn("ipv6", |m: &mut MachineHandle, vlan: i64| -> Res<String> {
        Ok(m.0
            .ipv6(vlan_arg(vlan)?)
            .map_err(|e| error_to_rhai(&e))?
            .to_string())
    });
    let c = ctx.clone();
    engine.register_fn("block", move |m: &mut MachineHandle, vlan: i64| {
        let vlan = vlan_arg(vlan)?;
        c.block(m.0.set_link(vlan, false))
    });
    let c = ctx.clone();
    engine.register_fn("unblock", move |m: &mut MachineHandle, vlan: i64| {
        let vlan = vlan_arg(vlan)?;
        c.block(m.0.set_link(vlan, true))
    });
    let c = ctx.clone();
    engine.register_fn(
        "impair",
        move |m: &mut MachineHandle, vlan: i64, how: Map| {
            let vlan = vlan_arg(vlan)?;
            let impairment = impairment_arg(&how)?;
            c.block(m.0.impair(vlan, impairment))
        },
    );
    let c = ctx.clone();
    engine.register_fn("unimpair", move |m: &mut MachineHandle, vlan: i64| {
        let vlan = vlan_arg(vlan)?;
        c.block(m.0.impair(vlan, flotilla_vmnet::Impairment::default()))
    });
    let c = ctx.clone();
    engine.register_fn(
        "forward",
        move |m: &mut MachineHandle, guest: i64| -> Res<i64> {
            let guest = port_arg(guest)?;
            c.block(m.0.forward(0, guest)).map(i64::from)
        },
    );
    let c = ctx.clone();
    engine.register_fn(
        "forward",
        move |m: &mut MachineHandle, host: i64, guest: i64| -> Res<i64> {
            let (host, guest) = (port_arg(host)?, port_arg(guest)?);
            c.block(m.0.forward(host, guest)).map(i64::from)
        },
    );
    engine.register_fn(
        "forwarded_port",
        |m: &mut MachineHandle, guest: i64| -> Res<Dynamic> {
            let guest = port_arg(guest)?;
            Ok(m.0
                .forwarded_port(guest)
                .map_or(Dynamic::UNIT, |p| Dynamic::from(i64::from(p))))
        },
    );
    let c = ctx.clone();
    engine.register_fn(
        "capture",
        move |m: &mut MachineHandle, vlan: i64| -> Res<String> {
            let vlan = vlan_arg(vlan)?;
            c.block(m.0.capture(vlan)).map(|p| p.display().to_string())
        },
    );
}

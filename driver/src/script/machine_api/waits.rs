//! A machine's script calls: waits for the console, files, ports and units, and the console log.

use std::sync::Arc;
use std::time::Duration;

use rhai::Engine;

use crate::script::args::{port_arg, secs_arg};
use crate::script::context::{Ctx, MachineHandle, DEFAULT_WAIT};

/// Registers these calls of the `Machine` type.
pub(super) fn register(engine: &mut Engine, ctx: &Arc<Ctx>) {
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
}

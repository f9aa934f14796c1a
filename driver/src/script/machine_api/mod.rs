//! The machine API: every machine of the spec is a script variable of type `Machine`,
//! whose methods are registered by topic, a file each: `commands.rs` (commands and
//! power), `waits.rs`, `files.rs` (copies), `screen.rs` (screen and keyboard),
//! `network.rs`.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use rhai::{Dynamic, Engine};

use super::context::{Ctx, MachineHandle};
use crate::log::Log;
use crate::machine::Machine;

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

mod commands;
mod files;
mod network;
mod screen;
mod waits;

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
    commands::register(engine, ctx);
    waits::register(engine, ctx);
    files::register(engine, ctx, path, log);
    screen::register(engine, ctx);
    network::register(engine, ctx);
}

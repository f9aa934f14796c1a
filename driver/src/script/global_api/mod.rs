//! The global API: functions that act on the whole run, registered by topic, a file
//! each: `subtests.rs` (`subtest`), `retry.rs` (`retry`), `network.rs` (`partition`,
//! `heal`, `capture_vlan`, `http_get`), `conditions.rs` (`polling_condition`); this
//! file registers `start_all` and `log`.

use std::sync::Arc;

use rhai::Engine;

use super::context::Ctx;
use crate::junit::Subtests;
use crate::log::Log;
use crate::world::World;

mod conditions;
mod network;
mod retry;
mod subtests;

/// Registers the global functions.
pub(super) fn register(
    engine: &mut Engine,
    ctx: &Arc<Ctx>,
    world: &World,
    log: &Log,
    subtests: Subtests,
) {
    let World {
        fabric, conditions, ..
    } = world;
    let c = ctx.clone();
    let w = world.clone();
    engine.register_fn("start_all", move || c.block(w.start_all()));
    let l = log.clone();
    engine.register_fn("log", move |text: &str| l.info(text));
    subtests::register(engine, log, subtests);
    retry::register(engine, ctx, fabric, log);
    network::register(engine, ctx, fabric, log);
    conditions::register(engine, ctx, conditions);
}

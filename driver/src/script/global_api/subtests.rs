//! `subtest(name, || { ... })`: named, timed, nestable sections of a run.

use rhai::{Dynamic, Engine};

use crate::junit::{begin_subtest, SubtestStack, Subtests};
use crate::log::Log;
use crate::script::context::Res;
use crate::script::errors::innermost;

/// Registers `subtest`; each one that ends is added to `subtests`.
pub(super) fn register(engine: &mut Engine, log: &Log, subtests: Subtests) {
    let l = log.clone();
    let stack = SubtestStack::default();
    engine.register_fn(
        "subtest",
        move |call: rhai::NativeCallContext, name: &str, body: rhai::FnPtr| -> Res<Dynamic> {
            let open = begin_subtest(&l, &stack, &subtests, name);
            let result = body.call_within_context::<Dynamic>(&call, ());
            open.end(result.as_ref().err().map(|e| innermost(e).1));
            result
        },
    );
}

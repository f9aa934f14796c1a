//! `subtest(name, || { ... })`: named, timed, nestable sections of a run.

use std::sync::Arc;

use rhai::{Dynamic, Engine};

use crate::junit::{Subtest, Subtests};
use crate::log::Log;
use crate::script::context::Res;
use crate::script::errors::innermost;

/// Registers `subtest`; each one that ends is added to `subtests`.
pub(super) fn register(engine: &mut Engine, log: &Log, subtests: Subtests) {
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
}

//! A machine's script calls: file copies between the host and the guest (`copy_to`, `copy_from`).

use std::path::Path;
use std::sync::Arc;

use rhai::Engine;

use crate::log::Log;
use crate::script::context::{Ctx, MachineHandle, Res};

/// Registers these calls of the `Machine` type.
pub(super) fn register(engine: &mut Engine, ctx: &Arc<Ctx>, path: &Path, log: &Log) {
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
}

//! The guest RAM of machines that save or restore a snapshot: a file, so that the
//! machines restored from one state share its unchanged pages.
//!
//! A saving machine's RAM is a file in a tmpfs (`/dev/shm`; QEMU unlinks it at once,
//! so nothing is left behind) mapped shared (`share=on`). With the migration
//! capability `x-ignore-shared`, the saved migration stream holds the devices only;
//! while the VM is still stopped after it, the RAM file is copied into the store
//! (holes and zero pages left out, so the copy is sparse) and summed. A restoring
//! machine maps the store's copy privately (`share=off`: pages it does not write stay
//! the page cache's, one copy for every machine; pages it writes are its own) and loads
//! the devices with `-incoming defer`, `x-ignore-shared`, `migrate-incoming`: QEMU 7.2
//! loads no page of a RAM block the source left out, and the guest runs on the file's
//! content. Machines without snapshots keep QEMU's anonymous RAM. Which RAM a start has
//! is an input of its command's argument list (the plan's `Ram`).

use std::fs::File;
use std::os::unix::fs::FileExt as _;
use std::path::{Path, PathBuf};

use super::command_text::shell_quote;
use super::config::MachineConfig;
use crate::plan::{Ram, RAM_BACKEND_ID};
use crate::snapshot_store::{for_each_block, Sum, Summer};

/// The tmpfs a saving machine's RAM lives in.
const SHARED_DIR: &str = "/dev/shm";

/// A saving machine's RAM: a shared file in a tmpfs (the socket folder where there is
/// no `/dev/shm`).
pub(super) fn shared_ram(c: &MachineConfig) -> Ram {
    let dir = Path::new(SHARED_DIR);
    let dir = if dir.is_dir() { dir } else { c.socket_dir() };
    Ram::Shared(dir.to_owned())
}

/// Turns on `x-ignore-shared`: a migration leaves out (or expects no) shared RAM.
pub(super) async fn ignore_shared(qmp: &flotilla_qmp::Client) -> Result<(), String> {
    qmp.execute_raw(
        "migrate-set-capabilities",
        Some(serde_json::json!({
            "capabilities": [{ "capability": "x-ignore-shared", "state": true }]
        })),
    )
    .await
    .map(|_| ())
    .map_err(|e| format!("qmp migrate-set-capabilities x-ignore-shared: {e}"))
}

/// Starts loading the device state in `file` into a QEMU started with a private RAM
/// file and `Incoming::Snapshot`.
pub(super) async fn load_devices(qmp: &flotilla_qmp::Client, file: &Path) -> Result<(), String> {
    ignore_shared(qmp).await?;
    let uri = format!("exec:cat {}", shell_quote(&file.display().to_string()));
    qmp.execute_raw("migrate-incoming", Some(serde_json::json!({ "uri": uri })))
        .await
        .map(|_| ())
        .map_err(|e| format!("qmp migrate-incoming: {e}"))
}

/// The RAM file of the saving QEMU `pid` (unlinked: found among its open files).
fn ram_of(pid: u32) -> Result<PathBuf, String> {
    let fds = PathBuf::from(format!("/proc/{pid}/fd"));
    let name = format!("qemu_back_mem.{RAM_BACKEND_ID}.");
    std::fs::read_dir(&fds)
        .map_err(|e| format!("reading {}: {e}", fds.display()))?
        .flatten()
        .map(|e| e.path())
        .find(|fd| std::fs::read_link(fd).is_ok_and(|to| to.to_string_lossy().contains(&name)))
        .ok_or_else(|| format!("qemu {pid} has no open file `{name}*`"))
}

/// Copies the RAM of the saving QEMU `pid` (stopped) to `to`, leaving holes where its
/// pages are zeros; returns the copy's sum.
pub(super) fn copy_ram(pid: u32, to: &Path) -> Result<Sum, String> {
    let from = ram_of(pid)?;
    let source = File::open(&from).map_err(|e| format!("opening {}: {e}", from.display()))?;
    let bytes = source
        .metadata()
        .map_err(|e| format!("reading {}: {e}", from.display()))?
        .len();
    let copy = File::create(to).map_err(|e| format!("creating {}: {e}", to.display()))?;
    let mut summer = Summer::new();
    for_each_block(&source, |at, block| {
        for (offset, run) in summer.add(at, block) {
            copy.write_all_at(run, offset)?;
        }
        Ok(())
    })
    .and_then(|()| copy.set_len(bytes))
    .map_err(|e| format!("copying the guest RAM to {}: {e}", to.display()))?;
    Ok(summer.finish(bytes))
}

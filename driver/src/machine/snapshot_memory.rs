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
//! content. Machines without snapshots keep QEMU's anonymous RAM.

use std::fs::File;
use std::os::unix::fs::FileExt as _;
use std::path::{Path, PathBuf};

use super::command_text::shell_quote;
use super::config::MachineConfig;
use super::qemu_command::QemuCommand;
use crate::snapshot_store::{for_each_block, Sum, Summer};

/// The id of the RAM's memory backend.
const BACKEND_ID: &str = "ram";

/// The tmpfs a saving machine's RAM lives in.
const SHARED_DIR: &str = "/dev/shm";

/// Gives a saving machine's `cmd` its RAM as a shared file in a tmpfs (the socket
/// folder where there is no `/dev/shm`).
pub(super) fn share_ram(cmd: &mut QemuCommand, c: &MachineConfig) {
    let dir = Path::new(SHARED_DIR);
    let dir = if dir.is_dir() { dir } else { &c.socket_dir };
    back_ram(cmd, c.spec.memory, dir, true);
}

/// Gives a restoring machine's `cmd` the store's RAM file `ram`, mapped privately, and
/// makes it wait for the device state (see [`load_devices`]).
pub(super) fn map_ram(cmd: &mut QemuCommand, c: &MachineConfig, ram: &Path) {
    back_ram(cmd, c.spec.memory, ram, false);
    cmd.args.push("-incoming".into());
    cmd.args.push("defer".into());
}

/// `-M q35,memory-backend=ram` and a file backend of `memory` MiB at `path` (a file,
/// or a folder to make an unlinked file in).
fn back_ram(cmd: &mut QemuCommand, memory: u32, path: &Path, share: bool) {
    if let Some(machine) = cmd.args.windows(2).position(|w| w[0] == "-M") {
        let mut value = cmd.args[machine + 1].clone();
        value.push(format!(",memory-backend={BACKEND_ID}"));
        cmd.args[machine + 1] = value;
    }
    let path = path.display().to_string().replace(',', ",,");
    let share = if share { "on" } else { "off" };
    cmd.args.push("-object".into());
    cmd.args.push(
        format!(
            "memory-backend-file,id={BACKEND_ID},size={}M,mem-path={path},share={share}",
            memory
        )
        .into(),
    );
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

/// Starts loading the device state in `file` into a QEMU started with [`map_ram`].
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
    let name = format!("qemu_back_mem.{BACKEND_ID}.");
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

#[cfg(test)]
mod tests {
    use std::ffi::OsString;
    use std::path::Path;

    use super::super::qemu_command::QemuCommand;

    #[test]
    fn the_ram_is_a_file_backend_of_the_machine() {
        let mut cmd = QemuCommand {
            program: "qemu".into(),
            args: ["-M", "q35", "-m", "256"].map(OsString::from).to_vec(),
        };
        super::back_ram(&mut cmd, 320, Path::new("/cache/a,b.ram"), false);
        let args: Vec<String> = cmd
            .args
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            args,
            [
                "-M",
                "q35,memory-backend=ram",
                "-m",
                "256",
                "-object",
                "memory-backend-file,id=ram,size=320M,mem-path=/cache/a,,b.ram,share=off",
            ]
        );
    }
}

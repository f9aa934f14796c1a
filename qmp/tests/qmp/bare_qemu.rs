//! The QEMU that the tests and `benches/roundtrip.rs` talk QMP to (the benchmark
//! includes this file with `#[path]`).

use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;

/// The QEMU of `PATH`.
pub const QEMU: &str = "qemu-system-x86_64";

/// `program` (a `qemu-system-x86_64`) for a paused q35 machine with 64 MiB, no devices
/// and no display, with `extra` arguments and a QMP server on each of `sockets`.
pub fn command(
    program: &Path,
    extra: &[&str],
    sockets: impl IntoIterator<Item = impl AsRef<Path>>,
) -> Command {
    let mut command = Command::new(program);
    die_with_parent(&mut command);
    command
        .args([
            "-M",
            "q35",
            "-accel",
            "tcg",
            "-display",
            "none",
            "-nodefaults",
            "-S",
        ])
        .args(["-m", "64"])
        .args(extra);
    for socket in sockets {
        command.arg("-qmp").arg(format!(
            "unix:{},server=on,wait=off",
            socket.as_ref().display()
        ));
    }
    command
}

/// Makes the child get SIGKILL if this process dies (even by SIGKILL), on top of
/// `kill_on_drop` or a guard, which only cover orderly ends.
pub fn die_with_parent(command: &mut Command) {
    // SAFETY: prctl is async-signal-safe and touches no memory of the parent.
    unsafe {
        command.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) == -1 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

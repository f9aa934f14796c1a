//! What the driver runs on the host: QEMU and its qboot firmware.

use std::path::PathBuf;

use flotilla_host::programs::which;

/// The QEMU binary: `$FLOTILLA_QEMU`, else `qemu-system-x86_64` from `PATH`.
pub fn qemu_binary() -> PathBuf {
    std::env::var_os("FLOTILLA_QEMU")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("qemu-system-x86_64"))
}

/// qboot, the minimal firmware that loads a kernel straight away (about a second
/// faster than SeaBIOS under TCG), from QEMU's data folders; `None` if QEMU lacks it.
pub fn qboot_firmware() -> Option<PathBuf> {
    let mut dirs = vec![
        PathBuf::from("/usr/share/qemu"),
        PathBuf::from("/usr/local/share/qemu"),
    ];
    // A QEMU built into a prefix keeps its firmware in <prefix>/share/qemu.
    if let Some(path) = which(qemu_binary()) {
        if let Some(prefix) = path.parent().and_then(|bin| bin.parent()) {
            dirs.insert(0, prefix.join("share/qemu"));
        }
    }
    dirs.into_iter()
        .map(|d| d.join("qboot.rom"))
        .find(|p| p.is_file())
}

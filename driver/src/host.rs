//! What the driver runs on the host: QEMU of each architecture and qboot.

use std::path::PathBuf;

use flotilla_host::arch::Arch;
use flotilla_host::programs::which;

/// The QEMU binary for machines of `arch`: `$FLOTILLA_QEMU_<ARCH>` (or, for the host's
/// architecture, `$FLOTILLA_QEMU`), else its `qemu-system-*` from `PATH`.
pub fn qemu_binary(arch: &Arch) -> PathBuf {
    arch.env("FLOTILLA_QEMU")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(arch.qemu))
}

/// qboot, the minimal firmware that loads a kernel straight away (about a second
/// faster than SeaBIOS under TCG), from QEMU's data folders; `None` if QEMU lacks it
/// or `arch`'s machine type does not boot it.
pub fn qboot_firmware(arch: &Arch) -> Option<PathBuf> {
    if !arch.qboot_and_pvh {
        return None;
    }
    let mut dirs = vec![
        PathBuf::from("/usr/share/qemu"),
        PathBuf::from("/usr/local/share/qemu"),
    ];
    // A QEMU built into a prefix keeps its firmware in <prefix>/share/qemu.
    if let Some(path) = which(qemu_binary(arch)) {
        if let Some(prefix) = path.parent().and_then(|bin| bin.parent()) {
            dirs.insert(0, prefix.join("share/qemu"));
        }
    }
    dirs.into_iter()
        .map(|d| d.join("qboot.rom"))
        .find(|p| p.is_file())
}

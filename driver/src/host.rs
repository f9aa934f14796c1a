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

/// QEMU's version from the first line of its `--version` (`QEMU emulator version 7.2.19
/// (Debian ...)` -> `7.2.19`).
pub fn qemu_version_number(line: &str) -> Option<&str> {
    line.split_whitespace()
        .skip_while(|w| *w != "version")
        .nth(1)
}

/// The QEMU versions Flotilla is tested with (major.minor), and where each comes from:
/// `flotilla doctor` names them, and the book's table of hosts lists the same.
pub const TESTED_QEMU: [(&str, &str); 2] = [
    ("7.2", "Debian 12 bookworm"),
    ("10.0", "Debian 13 trixie, bookworm-backports"),
];

/// The oldest QEMU Flotilla supports (major, minor): 7.2, Debian 12's.
pub const OLDEST_QEMU: (u32, u32) = (7, 2);

/// How a QEMU version (`7.2.22`, `10.0.2`) stands with Flotilla.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QemuSupport {
    /// One of [`TESTED_QEMU`].
    Tested,
    /// Newer than the oldest supported, but not one of the tested ones.
    Untested,
    /// Older than [`OLDEST_QEMU`], or not a version number.
    Unsupported,
}

/// How the QEMU version `version` (`7.2.22`) stands with Flotilla.
pub fn qemu_support(version: &str) -> QemuSupport {
    let mut parts = version.split('.').map(|p| p.parse::<u32>().ok());
    let (Some(Some(major)), Some(Some(minor))) = (parts.next(), parts.next()) else {
        return QemuSupport::Unsupported;
    };
    if (major, minor) < OLDEST_QEMU {
        QemuSupport::Unsupported
    } else if TESTED_QEMU
        .iter()
        .any(|(v, _)| *v == format!("{major}.{minor}"))
    {
        QemuSupport::Tested
    } else {
        QemuSupport::Untested
    }
}

/// The tested versions for messages: `7.2 (Debian 12 bookworm), 10.0 (...)`.
pub fn tested_qemu_names() -> String {
    TESTED_QEMU
        .iter()
        .map(|(v, from)| format!("{v} ({from})"))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qemu_versions_are_read_from_the_first_line() {
        let line = "QEMU emulator version 7.2.22 (Debian 1:7.2+dfsg-7+deb12u18+b3)";
        assert_eq!(qemu_version_number(line), Some("7.2.22"));
        assert_eq!(qemu_version_number("qemu-img"), None);
    }

    #[test]
    fn qemu_versions_are_tested_untested_or_unsupported() {
        assert_eq!(qemu_support("7.2.22"), QemuSupport::Tested);
        assert_eq!(qemu_support("10.0.2"), QemuSupport::Tested);
        assert_eq!(qemu_support("10.0.13"), QemuSupport::Tested);
        assert_eq!(qemu_support("8.2.2"), QemuSupport::Untested);
        assert_eq!(qemu_support("10.1.0"), QemuSupport::Untested);
        assert_eq!(qemu_support("7.1.0"), QemuSupport::Unsupported);
        assert_eq!(qemu_support("6.2.0"), QemuSupport::Unsupported);
        assert_eq!(qemu_support("junk"), QemuSupport::Unsupported);
    }
}

//! How the code of a tree's architecture runs during its build ([`Emulation`]): on
//! the host for the host's architecture; for another, through qemu-user when the host
//! already has it registered with binfmt_misc (a plain `chroot` then works), else in
//! the builder VM (`builder_vm.rs`). Flotilla never registers binfmt_misc itself.

use std::path::Path;

use flotilla_host::arch::Arch;

/// How the build runs the tree's programs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Emulation {
    /// The host's own architecture: `chroot`.
    Native,
    /// Another architecture, through the host's qemu-user binfmt_misc handler:
    /// `chroot` as for the host's.
    Binfmt,
    /// Another architecture, in a short-lived VM of it (`builder_vm.rs`).
    Vm,
}

impl Emulation {
    /// How a tree of `arch` runs its programs on this host.
    pub(super) fn of(arch: &Arch) -> Emulation {
        if arch.is_host() {
            Emulation::Native
        } else if binfmt_handles(Path::new("/proc/sys/fs/binfmt_misc"), arch) {
            Emulation::Binfmt
        } else {
            Emulation::Vm
        }
    }

    /// The build log's line, for another architecture.
    pub(super) fn describe(self, arch: &Arch) -> Option<String> {
        match self {
            Emulation::Native => None,
            Emulation::Binfmt => Some(format!(
                "debian: {} programs run through qemu-user binfmt_misc (qemu-{} is registered)",
                arch.debian, arch.name
            )),
            Emulation::Vm => Some(format!(
                "debian: {0} second stage in an {0} VM ({1} -M {2} -cpu {3}, TCG): the host \
                 has no qemu-{4} binfmt_misc handler",
                arch.debian, arch.qemu, arch.machine, arch.tcg_cpu, arch.name
            )),
        }
    }
}

/// Whether `binfmt` (binfmt_misc's folder) has an enabled `qemu-<arch>` handler that
/// works in a chroot: its interpreter opened when registered (flag `F`), since the
/// chroot has no qemu of its own.
fn binfmt_handles(binfmt: &Path, arch: &Arch) -> bool {
    let Ok(text) = std::fs::read_to_string(binfmt.join(format!("qemu-{}", arch.name))) else {
        return false;
    };
    let mut lines = text.lines();
    lines.next() == Some("enabled")
        && text
            .lines()
            .any(|l| l.strip_prefix("flags:").is_some_and(|f| f.contains('F')))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_an_enabled_fixed_handler_counts() {
        let dir = tempfile::tempdir().unwrap();
        let arm64 = Arch::named("aarch64").unwrap();
        assert!(!binfmt_handles(dir.path(), arm64), "not registered");
        let handler = dir.path().join("qemu-aarch64");
        let entry = |state: &str, flags: &str| {
            format!(
                "{state}\ninterpreter /usr/libexec/qemu-binfmt/aarch64-binfmt-P\n\
                 flags: {flags}\noffset 0\nmagic 7f454c46\n"
            )
        };
        std::fs::write(&handler, entry("enabled", "POCF")).unwrap();
        assert!(binfmt_handles(dir.path(), arm64));
        std::fs::write(&handler, entry("disabled", "POCF")).unwrap();
        assert!(!binfmt_handles(dir.path(), arm64));
        std::fs::write(&handler, entry("enabled", "PO")).unwrap();
        assert!(!binfmt_handles(dir.path(), arm64), "no F: not in a chroot");
        assert_eq!(Emulation::of(Arch::host()), Emulation::Native);
        assert!(Emulation::Vm
            .describe(arm64)
            .unwrap()
            .starts_with("debian: arm64 second stage in an arm64 VM"));
    }
}

//! The guest architectures Flotilla runs, as a table ([`ARCHES`]): everything that
//! differs between them is a field of [`Arch`], so a further architecture is a row,
//! not a new code path.
//!
//! A further row (riscv64, s390x, ppc64el: all on Debian's mirror and in QEMU) takes:
//! its names, QEMU's system binary and machine type for direct kernel boot, the CPU model
//! under TCG, the serial console's name, its ELF machine number, a Debian cloud kernel
//! (or a kernel of that flavour) that setup fetches, busybox-static for it, and the Rust
//! musl target the agent builds for. The rest (modules, initramfs, stage 1, Debian
//! images built in a VM of that architecture, snapshots) follows from the row.

use std::ffi::OsString;

/// One guest architecture.
#[derive(Debug)]
pub struct Arch {
    /// The name specs use (`arch = "aarch64"`), and the kernel's (`uname -m`).
    pub name: &'static str,
    /// Debian's name (`dpkg --print-architecture`), as in package file names.
    pub debian: &'static str,
    /// The Rust target the agent is built for: static, musl, linked by rust-lld.
    pub rust_target: &'static str,
    /// QEMU's system emulator, and the Debian package that has it.
    pub qemu: &'static str,
    pub qemu_package: &'static str,
    /// QEMU's machine type for a direct kernel boot.
    pub machine: &'static str,
    /// The CPU model under TCG (KVM uses `host`).
    pub tcg_cpu: &'static str,
    /// The serial console the kernel writes to (`console=`).
    pub console: &'static str,
    /// `e_machine` of its ELF files.
    pub elf_machine: u16,
    /// The GNU triplet: the cross compiler's prefix (`<triplet>-gcc`) and Debian's
    /// multiarch folder.
    pub gnu_triplet: &'static str,
    /// Whether the machine type boots qboot (`-bios`) and Debian's bzImage unpacked to
    /// an ELF `vmlinux` started through its PVH entry.
    pub qboot_and_pvh: bool,
    /// Whether machines can have a VGA screen (`display = true`): a standard VGA card
    /// and a kernel with its text console.
    pub vga: bool,
    /// Whether its kernel has the pvpanic driver and its machine the `pvpanic-pci`
    /// device: a guest panic then pauses the machine, kept for the error report;
    /// without it the panicking kernel powers the machine off.
    pub pvpanic: bool,
}

/// Every architecture Flotilla runs.
pub static ARCHES: [Arch; 2] = [
    Arch {
        name: "x86_64",
        debian: "amd64",
        rust_target: "x86_64-unknown-linux-musl",
        qemu: "qemu-system-x86_64",
        qemu_package: "qemu-system-x86",
        machine: "q35",
        tcg_cpu: "max",
        console: "ttyS0",
        elf_machine: 62,
        gnu_triplet: "x86_64-linux-gnu",
        qboot_and_pvh: true,
        vga: true,
        pvpanic: true,
    },
    Arch {
        name: "aarch64",
        debian: "arm64",
        rust_target: "aarch64-unknown-linux-musl",
        qemu: "qemu-system-aarch64",
        qemu_package: "qemu-system-arm",
        machine: "virt",
        // Measured (`cargo bench -p flotilla-driver --bench arm64_cpus`, see
        // docs/src/arm64.md): the Neoverse-N1 boots fastest of the models and works
        // nearly as fast as `max,pauth-impdef=on`; a fixed model (ARMv8.2, LSE atomics)
        // where `max` follows QEMU's version; plain `max` costs 4x at boot for pointer
        // authentication under TCG.
        tcg_cpu: "neoverse-n1",
        console: "ttyAMA0",
        elf_machine: 183,
        gnu_triplet: "aarch64-linux-gnu",
        qboot_and_pvh: false,
        // Debian's arm64 cloud kernel has no graphics driver.
        vga: false,
        // Nor pvpanic (CONFIG_PVPANIC is off).
        pvpanic: false,
    },
];

impl PartialEq for Arch {
    fn eq(&self, other: &Arch) -> bool {
        self.name == other.name
    }
}

impl Eq for Arch {}

/// In the order of the table: the host's x86 first, as lists of architectures show them.
impl PartialOrd for Arch {
    fn partial_cmp(&self, other: &Arch) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Arch {
    fn cmp(&self, other: &Arch) -> std::cmp::Ordering {
        let index = |a: &Arch| ARCHES.iter().position(|b| b == a);
        index(self).cmp(&index(other))
    }
}

impl std::fmt::Display for Arch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name)
    }
}

impl Arch {
    /// The architecture of the host, which machines have unless their spec says.
    pub fn host() -> &'static Arch {
        Arch::named(std::env::consts::ARCH).unwrap_or(&ARCHES[0])
    }

    /// The architecture called `name` (its own name or Debian's).
    pub fn named(name: &str) -> Option<&'static Arch> {
        ARCHES.iter().find(|a| a.name == name || a.debian == name)
    }

    /// The names a spec may use, for error messages.
    pub fn names() -> String {
        ARCHES
            .iter()
            .map(|a| format!("\"{}\"", a.name))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// The architecture whose `e_machine` is `machine`.
    pub fn of_elf_machine(machine: u16) -> Option<&'static Arch> {
        ARCHES.iter().find(|a| a.elf_machine == machine)
    }

    /// Whether this is the host's architecture.
    pub fn is_host(&self) -> bool {
        self == Arch::host()
    }

    /// The value of the environment variable `var` for this architecture:
    /// `<var>_<NAME>` (`FLOTILLA_QEMU_AARCH64`), else, for the host's architecture,
    /// `<var>` itself.
    pub fn env(&self, var: &str) -> Option<OsString> {
        std::env::var_os(format!("{var}_{}", self.name.to_uppercase()))
            .or_else(|| self.is_host().then(|| std::env::var_os(var)).flatten())
    }

    /// The link to its kernel's folder in the kernel cache (`scripts/setup` makes it).
    pub fn kernel_link(&self) -> String {
        format!("current-{}", self.debian)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_found_both_ways() {
        for (i, a) in ARCHES.iter().enumerate() {
            assert_eq!(Arch::named(a.name), Some(a));
            assert_eq!(Arch::named(a.debian), Some(a));
            assert_eq!(Arch::of_elf_machine(a.elf_machine), Some(a));
            for b in &ARCHES[i + 1..] {
                assert!(a.name != b.name && a.debian != b.debian, "{a} {b}");
                assert_ne!(a.elf_machine, b.elf_machine);
            }
        }
        assert_eq!(Arch::named("riscv64"), None);
        assert!(Arch::host().is_host());
        assert_eq!(Arch::names(), "\"x86_64\", \"aarch64\"");
        assert!(ARCHES.windows(2).all(|w| w[0] < w[1]));
    }
}

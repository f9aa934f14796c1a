//! Choosing the accelerator: KVM where it really works, else TCG, and always saying why.

use std::fmt;

use flotilla_host::arch::Arch;

/// The accelerator QEMU runs with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accel {
    Kvm,
    Tcg,
}

impl fmt::Display for Accel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Accel::Kvm => "kvm",
            Accel::Tcg => "tcg",
        })
    }
}

/// The chosen accelerator and the reason for the choice, for the log and `doctor`.
#[derive(Debug, Clone)]
pub struct AccelChoice {
    pub accel: Accel,
    pub reason: String,
}

impl fmt::Display for AccelChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.accel, self.reason)
    }
}

/// The accelerator for machines of `arch`: [`detect`] for the host's architecture;
/// TCG for another, which KVM cannot run (the reason says so, whatever
/// `FLOTILLA_ACCEL` asks).
pub fn detect_for(arch: &Arch) -> AccelChoice {
    if arch.is_host() {
        return detect();
    }
    AccelChoice {
        accel: Accel::Tcg,
        reason: format!(
            "software emulation: {arch} on an {} host (KVM runs only the host's architecture)",
            Arch::host()
        ),
    }
}

/// Picks KVM only when the CPU advertises vmx/svm and `/dev/kvm` answers
/// `KVM_GET_API_VERSION` and `KVM_CREATE_VM`; `FLOTILLA_ACCEL=kvm|tcg` overrides.
pub fn detect() -> AccelChoice {
    match std::env::var("FLOTILLA_ACCEL").ok().as_deref() {
        Some("tcg") => {
            return AccelChoice {
                accel: Accel::Tcg,
                reason: "FLOTILLA_ACCEL=tcg".into(),
            }
        }
        Some("kvm") => {
            return AccelChoice {
                accel: Accel::Kvm,
                reason: "FLOTILLA_ACCEL=kvm".into(),
            }
        }
        _ => {}
    }
    match kvm_usable() {
        Ok(()) => AccelChoice {
            accel: Accel::Kvm,
            reason: "/dev/kvm works and the CPU has hardware virtualization".into(),
        },
        Err(why) => AccelChoice {
            accel: Accel::Tcg,
            reason: format!("software emulation, slower: {why}"),
        },
    }
}

pub(crate) fn kvm_usable() -> Result<(), String> {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo")
        .map_err(|e| format!("cannot read /proc/cpuinfo: {e}"))?;
    let has_flag = cpuinfo
        .lines()
        .filter(|l| l.starts_with("flags"))
        .any(|l| l.split_whitespace().any(|f| f == "vmx" || f == "svm"));
    if !has_flag {
        return Err(
            "the CPU does not advertise vmx or svm in /proc/cpuinfo, so \
                    /dev/kvm cannot run guests"
                .into(),
        );
    }
    let path = c"/dev/kvm";
    // SAFETY: open/ioctl/close on a path we own the string for; fds are closed below.
    unsafe {
        let fd = libc::open(path.as_ptr(), libc::O_RDWR | libc::O_CLOEXEC);
        if fd < 0 {
            return Err(format!(
                "cannot open /dev/kvm: {}",
                std::io::Error::last_os_error()
            ));
        }
        const KVM_GET_API_VERSION: libc::c_ulong = 0xAE00;
        const KVM_CREATE_VM: libc::c_ulong = 0xAE01;
        let version = libc::ioctl(fd, KVM_GET_API_VERSION, 0);
        if version != 12 {
            libc::close(fd);
            return Err(format!("/dev/kvm reports API version {version}, not 12"));
        }
        let vm = libc::ioctl(fd, KVM_CREATE_VM, 0);
        if vm < 0 {
            let e = std::io::Error::last_os_error();
            libc::close(fd);
            return Err(format!("/dev/kvm refuses to create a VM: {e}"));
        }
        libc::close(vm);
        libc::close(fd);
    }
    Ok(())
}

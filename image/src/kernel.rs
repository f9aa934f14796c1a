//! The kernel the machines of each architecture boot: Debian's cloud kernel of that
//! architecture, unpacked by `scripts/setup`; a Debian machine boots its release's
//! (`<cache>/kernel/<release>-<arch>`).

use std::path::{Path, PathBuf};

use crate::error::Error;
use crate::release::Release;
use flotilla_host::arch::Arch;
use flotilla_host::cache::cache_dir;

/// A kernel unpacked from a Debian package: `vmlinuz`, `modules/`, `version`.
#[derive(Debug, Clone)]
pub struct Kernel {
    /// The architecture it runs, and its modules and initramfs are for.
    pub arch: &'static Arch,
    pub dir: PathBuf,
    pub image: PathBuf,
    pub modules: PathBuf,
    pub version: String,
}

impl Kernel {
    /// The kernel of `arch` in `$FLOTILLA_KERNEL_DIR_<ARCH>` (or, for the host's
    /// architecture, `$FLOTILLA_KERNEL_DIR`), else `<cache>/kernel/current-<debian arch>`.
    pub fn locate(arch: &'static Arch) -> Result<Kernel, Error> {
        let dir = arch
            .env("FLOTILLA_KERNEL_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| cache_dir().join("kernel").join(arch.kernel_link()));
        Kernel::at(arch, &dir)
    }

    /// The cloud kernel of Debian `release` for `arch`: the default guest's
    /// ([`Kernel::locate`]) for the release it is of, else
    /// `$FLOTILLA_KERNEL_DIR_<RELEASE>_<ARCH>` (`FLOTILLA_KERNEL_DIR_TRIXIE_AARCH64`; for
    /// the host's architecture also `$FLOTILLA_KERNEL_DIR_<RELEASE>`), else
    /// `<cache>/kernel/<release>-<debian arch>`.
    pub fn of_release(release: Release, arch: &'static Arch) -> Result<Kernel, Error> {
        if release.is_default_guest_kernel() {
            return Kernel::locate(arch);
        }
        let var = format!("FLOTILLA_KERNEL_DIR_{}", release.name().to_uppercase());
        let dir = arch.env(&var).map(PathBuf::from).unwrap_or_else(|| {
            cache_dir()
                .join("kernel")
                .join(format!("{release}-{}", arch.debian))
        });
        if !dir.join("vmlinuz").is_file() {
            return Err(Error::Setup {
                what: format!(
                    "no Debian {release} {arch} kernel at {}",
                    dir.join("vmlinuz").display()
                ),
                hint: format!(
                    "run scripts/setup to fetch Debian {release}'s {} cloud kernel",
                    arch.debian
                ),
            });
        }
        Kernel::at(arch, &dir)
    }

    /// The kernel of `arch` unpacked in `dir`.
    pub fn at(arch: &'static Arch, dir: &Path) -> Result<Kernel, Error> {
        let image = dir.join("vmlinuz");
        if !image.is_file() {
            return Err(Error::Setup {
                what: format!("no {arch} kernel at {}", image.display()),
                hint: format!(
                    "run scripts/setup to fetch Debian's {} cloud kernel",
                    arch.debian
                ),
            });
        }
        let version = std::fs::read_to_string(dir.join("version"))
            .map(|v| v.trim().to_owned())
            .unwrap_or_else(|_| "unknown".into());
        Ok(Kernel {
            arch,
            dir: dir.to_path_buf(),
            image,
            modules: dir.join("modules"),
            version,
        })
    }
}

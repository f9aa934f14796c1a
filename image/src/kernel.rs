//! The kernel the machines boot: Debian's cloud kernel unpacked by `scripts/setup`.

use std::path::{Path, PathBuf};

use crate::error::Error;
use flotilla_host::cache::cache_dir;

/// A kernel unpacked from a Debian package: `vmlinuz`, `modules/`, `version`.
#[derive(Debug, Clone)]
pub struct Kernel {
    pub dir: PathBuf,
    pub image: PathBuf,
    pub modules: PathBuf,
    pub version: String,
}

impl Kernel {
    /// The kernel in `$FLOTILLA_KERNEL_DIR`, else `<cache>/kernel/current`.
    pub fn locate() -> Result<Kernel, Error> {
        let dir = std::env::var_os("FLOTILLA_KERNEL_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| cache_dir().join("kernel").join("current"));
        Kernel::at(&dir)
    }

    pub fn at(dir: &Path) -> Result<Kernel, Error> {
        let image = dir.join("vmlinuz");
        if !image.is_file() {
            return Err(Error::Setup {
                what: format!("no kernel at {}", image.display()),
                hint: "run scripts/setup to fetch Debian's cloud kernel".into(),
            });
        }
        let version = std::fs::read_to_string(dir.join("version"))
            .map(|v| v.trim().to_owned())
            .unwrap_or_else(|_| "unknown".into());
        Ok(Kernel {
            dir: dir.to_path_buf(),
            image,
            modules: dir.join("modules"),
            version,
        })
    }
}

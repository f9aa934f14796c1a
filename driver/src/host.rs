//! What the driver runs on the host: QEMU, its qboot firmware, the agent binary the
//! default image carries, and the `PATH` lookup they share.

use std::borrow::Cow;
use std::path::{Path, PathBuf};

use crate::error::Error;

/// The agent binary built for the guest and embedded at build time.
static EMBEDDED_AGENT: &[u8] = include_bytes!(env!("FLOTILLA_AGENT_PATH"));

/// The agent binary for the default image: `$FLOTILLA_AGENT` if set, else the one
/// embedded in this build.
pub fn agent_binary() -> Result<Cow<'static, [u8]>, Error> {
    match std::env::var_os("FLOTILLA_AGENT") {
        Some(path) => std::fs::read(&path)
            .map(Cow::Owned)
            .map_err(|source| Error::Io {
                what: format!("reading FLOTILLA_AGENT={}", PathBuf::from(&path).display()),
                source,
            }),
        None => Ok(Cow::Borrowed(EMBEDDED_AGENT)),
    }
}

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

/// The full path of a program: itself if it has a slash, else the first match in
/// `PATH`; `None` if there is none.
pub fn which(program: impl AsRef<Path>) -> Option<PathBuf> {
    search(program.as_ref(), &[])
}

/// [`which`], then the sbin folders a non-root `PATH` may lack, where the image
/// builder's tools live (`mke2fs`, `depmod`, `debootstrap`).
pub fn which_system_tool(program: impl AsRef<Path>) -> Option<PathBuf> {
    search(
        program.as_ref(),
        &["/usr/sbin", "/sbin", "/usr/bin", "/bin"],
    )
}

fn search(program: &Path, extra: &[&str]) -> Option<PathBuf> {
    if program.components().count() > 1 {
        return Some(program.to_path_buf());
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(extra.iter().map(PathBuf::from))
        .map(|dir| dir.join(program))
        .find(|p| p.is_file())
}

#[cfg(test)]
mod tests {
    #[test]
    fn which_keeps_paths_and_searches_names() {
        assert_eq!(
            super::which("/no/such/qemu"),
            Some(std::path::PathBuf::from("/no/such/qemu"))
        );
        assert!(super::which("sh").is_some_and(|p| p.is_absolute()));
        assert_eq!(super::which("flotilla-no-such-program"), None);
    }
}

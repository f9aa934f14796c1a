//! Finding host programs: `PATH`, and the sbin folders a non-root `PATH` may lack.

use std::path::{Path, PathBuf};

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

//! The cache folder, and the pruning that keeps the newest few of each kind of file in it
//! (initramfs images, unpacked kernels, Debian trees).

use std::path::{Path, PathBuf};

/// The cache directory: `$FLOTILLA_CACHE`, else `$XDG_CACHE_HOME/flotilla`, else
/// `~/.cache/flotilla`. `scripts/setup` uses the same rule.
pub fn cache_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("FLOTILLA_CACHE") {
        return PathBuf::from(dir);
    }
    if let Some(dir) = std::env::var_os("XDG_CACHE_HOME") {
        return PathBuf::from(dir).join("flotilla");
    }
    let home = std::env::var_os("HOME").unwrap_or_else(|| "/root".into());
    PathBuf::from(home).join(".cache").join("flotilla")
}

/// Removes all but the `keep` most recently modified files in `dir` whose names start
/// with `prefix` and end with `suffix` (cache pruning).
pub fn prune(dir: &Path, prefix: &str, suffix: &str, keep: usize) {
    prune_any(dir, &[prefix], suffix, keep);
}

/// [`prune`] of the files whose names start with any of `prefixes`, counted together
/// (e.g. the Debian images of every release).
pub fn prune_any(dir: &Path, prefixes: &[&str], suffix: &str, keep: usize) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let mut found: Vec<(std::time::SystemTime, PathBuf)> = entries
        .flatten()
        .filter(|e| {
            let name = e.file_name();
            let name = name.to_string_lossy();
            prefixes.iter().any(|p| name.starts_with(p)) && name.ends_with(suffix)
        })
        .filter_map(|e| Some((e.metadata().ok()?.modified().ok()?, e.path())))
        .collect();
    found.sort_by_key(|f| std::cmp::Reverse(f.0));
    for (_, old) in found.into_iter().skip(keep) {
        let _ = std::fs::remove_file(old);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_are_pruned_together_and_others_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let t0 = std::time::SystemTime::now() - std::time::Duration::from_secs(100);
        for (i, name) in [
            "bookworm-a.tar",
            "trixie-b.tar",
            "trixie-c.tar",
            "other-d.tar",
        ]
        .iter()
        .enumerate()
        {
            let path = dir.path().join(name);
            std::fs::write(&path, b"").unwrap();
            std::fs::File::options()
                .append(true)
                .open(&path)
                .unwrap()
                .set_modified(t0 + std::time::Duration::from_secs(i as u64))
                .unwrap();
        }
        prune_any(dir.path(), &["bookworm-", "trixie-"], ".tar", 2);
        let mut left: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(left, ["other-d.tar", "trixie-b.tar", "trixie-c.tar"]);
    }
}

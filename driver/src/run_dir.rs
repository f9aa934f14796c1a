//! A run's private directory, `$TMPDIR/flotilla-XXXXXX` (mode 0700): each machine's QMP,
//! agent and QGA sockets, the VLAN switches' sockets, and, without `--keep-state`, the
//! machines' disks. Removed when the run ends.
//!
//! A driver killed with SIGKILL cannot remove its directory, so each run holds an
//! exclusive `flock` on `driver.lock` inside it for as long as it lives, and a new run
//! removes the directories of this user whose lock is free (their driver is gone).
//! A directory without the lock file (another program's, or an older Flotilla's) is
//! left alone.

use std::fs::File;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::error::Error;

const PREFIX: &str = "flotilla-";
const LOCK: &str = "driver.lock";

/// The directory of a live run; removed on drop.
#[derive(Debug)]
pub(crate) struct RunDir {
    dir: tempfile::TempDir,
    // Held for the run's life: the lock says the driver is alive.
    _lock: flotilla_host::lock::Locked,
}

impl RunDir {
    /// Removes the directories of killed runs, then makes this run's, locked.
    pub(crate) fn create() -> Result<RunDir, Error> {
        let removed = remove_stale(&std::env::temp_dir());
        for path in removed {
            tracing::info!(
                "removed {}, left by a driver that was killed",
                path.display()
            );
        }
        let io = |what: &str, source| Error::Io {
            what: format!("{what} the run's socket directory"),
            source,
        };
        let dir = tempfile::Builder::new()
            .prefix(PREFIX)
            .permissions(std::fs::Permissions::from_mode(0o700))
            .tempdir()
            .map_err(|e| io("creating", e))?;
        // Locked under another name, then renamed: a lock file that others can see is
        // always held.
        let pending = dir.path().join(format!("{LOCK}.new"));
        let lock = File::create(&pending).map_err(|e| io("locking", e))?;
        let Some(lock) = flotilla_host::lock::try_exclusive(lock).map_err(|e| io("locking", e))?
        else {
            return Err(io("locking", std::io::Error::other("the lock is taken")));
        };
        std::fs::rename(&pending, dir.path().join(LOCK)).map_err(|e| io("locking", e))?;
        Ok(RunDir { dir, _lock: lock })
    }

    pub(crate) fn path(&self) -> &Path {
        self.dir.path()
    }
}

/// Removes `flotilla-*` directories in `tmp` that this user owns and whose
/// `driver.lock` no one holds; returns them.
fn remove_stale(tmp: &Path) -> Vec<PathBuf> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let uid = unsafe { libc::geteuid() };
    let Ok(entries) = std::fs::read_dir(tmp) else {
        return Vec::new();
    };
    let mut removed = Vec::new();
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name();
        if !name.to_string_lossy().starts_with(PREFIX) {
            continue;
        }
        // Not following links: a directory of this user's, nothing else.
        let Ok(meta) = std::fs::symlink_metadata(&path) else {
            continue;
        };
        if !meta.is_dir() || meta.uid() != uid {
            continue;
        }
        let Ok(lock) = File::open(path.join(LOCK)) else {
            continue;
        };
        let Ok(Some(_dead)) = flotilla_host::lock::try_exclusive(lock) else {
            continue;
        };
        if std::fs::remove_dir_all(&path).is_ok() {
            removed.push(path);
        }
    }
    removed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_run_dir_is_private_and_locked() {
        let run = RunDir::create().unwrap();
        let mode = std::fs::metadata(run.path()).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700);
        let lock = File::open(run.path().join(LOCK)).unwrap();
        assert!(
            flotilla_host::lock::try_exclusive(lock).unwrap().is_none(),
            "the lock is held"
        );
        let path = run.path().to_path_buf();
        drop(run);
        assert!(!path.exists());
    }

    #[test]
    fn only_dead_runs_are_removed() {
        let tmp = tempfile::tempdir().unwrap();
        let make = |name: &str, lock: bool| {
            let dir = tmp.path().join(name);
            std::fs::create_dir(&dir).unwrap();
            std::fs::write(dir.join("qmp.sock"), "").unwrap();
            if lock {
                std::fs::write(dir.join(LOCK), "").unwrap();
            }
            dir
        };
        let dead = make("flotilla-dead01", true);
        let live = make("flotilla-live01", true);
        let other = make("flotilla-nolock", false);
        let unrelated = make("someone-else", true);
        let held = flotilla_host::lock::try_exclusive(File::open(live.join(LOCK)).unwrap())
            .unwrap()
            .expect("free");
        assert_eq!(remove_stale(tmp.path()), vec![dead.clone()]);
        assert!(!dead.exists());
        assert!(live.exists() && other.exists() && unrelated.exists());
        drop(held);
        assert_eq!(remove_stale(tmp.path()), vec![live.clone()]);
    }
}

//! Advisory locks (`flock`) that say a process is alive: a run holds one on a file for
//! as long as it lives, and the kernel drops it when the process dies, even by SIGKILL;
//! a build holds one while it makes a cached image.
//!
//! A lock is released by an explicit `LOCK_UN` when its [`Locked`] is dropped, never by
//! closing the descriptor alone. An `flock` belongs to the open file description, and a
//! child that another thread forks while the file is open holds a copy of the
//! descriptor until it calls `exec` (close-on-exec closes it only then): a close in that
//! window leaves the lock held by the child. On a busy host with many spawns (a fresh
//! machine's first test run) that window is long enough to be hit; an unlock is not
//! affected by the copies.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;

/// A file with an `flock` on it, unlocked (then closed) when dropped.
#[derive(Debug)]
pub struct Locked {
    file: File,
}

impl Drop for Locked {
    fn drop(&mut self) {
        unlock(&self.file);
    }
}

/// Takes an exclusive lock on `file` without waiting; `None` when another open file
/// holds a lock on it.
pub fn try_exclusive(file: File) -> io::Result<Option<Locked>> {
    Ok(try_lock(&file, libc::LOCK_EX)?.then_some(Locked { file }))
}

/// Takes an exclusive lock on `file`, waiting for whoever holds one.
pub fn exclusive(file: File) -> io::Result<Locked> {
    loop {
        // SAFETY: flock on a descriptor that `file` owns for the duration of the call.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } == 0 {
            return Ok(Locked { file });
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// Whether no one holds an exclusive lock on `file` (a shared lock is taken and at once
/// released).
pub fn is_free(file: &File) -> bool {
    let free = try_lock(file, libc::LOCK_SH).unwrap_or(false);
    if free {
        unlock(file);
    }
    free
}

fn unlock(file: &File) {
    // SAFETY: flock on a descriptor that `file` owns for the duration of the call.
    unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_UN) };
}

fn try_lock(file: &File, kind: libc::c_int) -> io::Result<bool> {
    loop {
        // SAFETY: flock on a descriptor that `file` owns for the duration of the call.
        if unsafe { libc::flock(file.as_raw_fd(), kind | libc::LOCK_NB) } == 0 {
            return Ok(true);
        }
        let e = io::Error::last_os_error();
        match e.kind() {
            io::ErrorKind::WouldBlock => return Ok(false),
            io::ErrorKind::Interrupted => continue,
            _ => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::CommandExt;
    use std::time::Duration;

    fn open(path: &std::path::Path) -> File {
        File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)
            .unwrap()
    }

    /// The fresh-machine failure, made certain: a child forked while the lock file is
    /// open holds a copy of its descriptor until it execs (here it waits 300 ms before
    /// exec, as a slow fork on a busy host does for less). Dropping the lock must free
    /// it at once all the same, for exclusive and shared locks.
    #[test]
    fn a_dropped_lock_is_free_even_while_a_forked_child_holds_its_descriptor() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("run.lock");
        let held = try_exclusive(open(&path)).unwrap().expect("free at first");
        let probe = File::open(&path).unwrap();
        assert!(!is_free(&probe), "held");

        let mut child = std::process::Command::new("true");
        // SAFETY: only an async-signal-safe sleep runs in the child before exec.
        unsafe {
            child.pre_exec(|| {
                libc::usleep(300_000);
                Ok(())
            });
        }
        let spawner = std::thread::spawn(move || child.status().unwrap());
        // The child has forked (it holds the descriptor) and waits before its exec.
        std::thread::sleep(Duration::from_millis(100));
        drop(held);
        assert!(is_free(&probe), "the lock went with its Locked");
        // is_free's own shared lock is not left behind either.
        let again = try_exclusive(open(&path)).unwrap();
        assert!(again.is_some(), "taken again while the child still waits");
        assert!(spawner.join().unwrap().success());
    }

    #[test]
    fn a_lock_excludes_others_until_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.lock");
        let first = try_exclusive(open(&path)).unwrap().unwrap();
        assert!(try_exclusive(open(&path)).unwrap().is_none());
        drop(first);
        let _second = exclusive(open(&path)).unwrap();
        assert!(!is_free(&File::open(&path).unwrap()));
    }
}

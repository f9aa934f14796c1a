//! Advisory locks (`flock`) that say a process is alive: a run holds one on a file for
//! as long as it lives, and the kernel drops it when the process dies, even by SIGKILL;
//! a build holds one while it makes a cached image.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;

/// Takes an exclusive lock on `file` without waiting; `Ok(false)` when another open
/// file holds a lock on it.
pub(crate) fn try_exclusive(file: &File) -> io::Result<bool> {
    try_lock(file, libc::LOCK_EX)
}

/// Takes an exclusive lock on `file`, waiting for whoever holds one.
pub(crate) fn exclusive(file: &File) -> io::Result<()> {
    loop {
        // SAFETY: flock on a descriptor that `file` owns for the duration of the call.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } == 0 {
            return Ok(());
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// Whether no one holds an exclusive lock on `file` (a shared lock is taken and kept).
pub(crate) fn is_free(file: &File) -> bool {
    try_lock(file, libc::LOCK_SH).unwrap_or(false)
}

fn try_lock(file: &File, kind: libc::c_int) -> io::Result<bool> {
    // SAFETY: flock on a descriptor that `file` owns for the duration of the call.
    if unsafe { libc::flock(file.as_raw_fd(), kind | libc::LOCK_NB) } == 0 {
        return Ok(true);
    }
    let e = io::Error::last_os_error();
    if e.kind() == io::ErrorKind::WouldBlock {
        Ok(false)
    } else {
        Err(e)
    }
}

//! Thin wrappers over the libc calls the agent needs.

use std::ffi::{CStr, CString};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::Duration;

/// Print one line on the console (stderr, which is /dev/console when we are PID 1).
#[macro_export]
macro_rules! console {
    ($($arg:tt)*) => {
        $crate::sys::console_line(&format!($($arg)*))
    };
}

pub fn console_line(msg: &str) {
    let line = format!("flotilla-agent: {msg}\n");
    write_all_fd(2, line.as_bytes());
}

/// Write everything to a raw fd, ignoring errors (used for diagnostics only).
pub fn write_all_fd(fd: RawFd, mut buf: &[u8]) {
    while !buf.is_empty() {
        // SAFETY: buf is a valid slice for its length.
        let n = unsafe { libc::write(fd, buf.as_ptr().cast(), buf.len()) };
        if n < 0 {
            if io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return;
        }
        if n == 0 {
            return;
        }
        buf = &buf[n as usize..];
    }
}

pub fn cvt(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

pub fn cstring(s: &str) -> io::Result<CString> {
    CString::new(s).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("`{}` contains a NUL byte", s.escape_debug()),
        )
    })
}

pub fn getpid() -> i32 {
    // SAFETY: no preconditions.
    unsafe { libc::getpid() }
}

/// A pipe whose both ends are close-on-exec: (read, write).
pub fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: fds has room for two descriptors.
    cvt(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) })?;
    // SAFETY: pipe2 just returned these descriptors and nothing else owns them.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// A close-on-exec duplicate of `fd`, numbered 3 or above.
pub fn dup_cloexec(fd: RawFd) -> io::Result<OwnedFd> {
    // SAFETY: fcntl on an integer fd; failure is reported.
    let new = cvt(unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 3) })?;
    // SAFETY: fresh descriptor.
    Ok(unsafe { OwnedFd::from_raw_fd(new) })
}

pub fn eventfd() -> io::Result<OwnedFd> {
    // SAFETY: no pointers involved.
    let fd = cvt(unsafe { libc::eventfd(0, libc::EFD_CLOEXEC) })?;
    // SAFETY: fresh descriptor.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

pub fn eventfd_signal(fd: RawFd) {
    let one: u64 = 1;
    // SAFETY: writing 8 bytes from a u64.
    unsafe { libc::write(fd, (&one as *const u64).cast(), 8) };
}

/// Read (and reset) an eventfd counter. Returns false if nothing was pending.
pub fn eventfd_take(fd: RawFd) -> bool {
    let mut v: u64 = 0;
    // SAFETY: reading 8 bytes into a u64.
    let n = unsafe { libc::read(fd, (&mut v as *mut u64).cast(), 8) };
    n == 8
}

/// read(2) retrying on EINTR.
pub fn read(fd: RawFd, buf: &mut [u8]) -> io::Result<usize> {
    loop {
        // SAFETY: buf is valid for writes of its length.
        let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
        if n >= 0 {
            return Ok(n as usize);
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
}

/// write(2) retrying on EINTR.
pub fn write(fd: RawFd, buf: &[u8]) -> io::Result<usize> {
    loop {
        // SAFETY: buf is valid for reads of its length.
        let n = unsafe { libc::write(fd, buf.as_ptr().cast(), buf.len()) };
        if n >= 0 {
            return Ok(n as usize);
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
}

/// poll(2) retrying on EINTR. `timeout` None waits forever.
pub fn poll(fds: &mut [libc::pollfd], timeout: Option<Duration>) -> io::Result<usize> {
    let ms = match timeout {
        None => -1,
        Some(d) => d.as_millis().min(i32::MAX as u128) as i32,
    };
    loop {
        // SAFETY: fds is a valid array of pollfd of the given length.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, ms) };
        if n >= 0 {
            return Ok(n as usize);
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
}

pub fn pollfd(fd: RawFd, events: libc::c_short) -> libc::pollfd {
    libc::pollfd {
        fd,
        events,
        revents: 0,
    }
}

pub fn kill(pid: i32, sig: i32) -> io::Result<()> {
    // SAFETY: no pointers involved.
    cvt(unsafe { libc::kill(pid, sig) }).map(drop)
}

/// SIGKILL a command's process group (and the leader itself, in case it has not
/// called setsid yet).
pub fn kill_group(pid: i32) {
    if pid > 0 {
        let _ = kill(-pid, libc::SIGKILL);
        let _ = kill(pid, libc::SIGKILL);
    }
}

/// Milliseconds since boot according to /proc/uptime (0 if unavailable).
pub fn uptime_ms() -> u64 {
    std::fs::read_to_string("/proc/uptime")
        .ok()
        .and_then(|s| parse_uptime_ms(&s))
        .unwrap_or(0)
}

pub fn parse_uptime_ms(s: &str) -> Option<u64> {
    let first = s.split_whitespace().next()?;
    let (secs, frac) = first.split_once('.').unwrap_or((first, "0"));
    let secs: u64 = secs.parse().ok()?;
    let frac = format!("{frac:0<3}");
    let ms: u64 = frac.get(..3)?.parse().ok()?;
    Some(secs * 1000 + ms)
}

/// "No such file or directory" (without std's " (os error N)" suffix).
pub fn strerror(errno: i32) -> String {
    let text = io::Error::from_raw_os_error(errno).to_string();
    match text.rfind(" (os error") {
        Some(at) => text[..at].to_string(),
        None => text,
    }
}

/// Keep the heap small: one malloc arena for all threads, buffers above 256 KiB
/// (e.g. a 1 MiB frame) mmapped and returned on free.
pub fn tune_malloc() {
    #[cfg(target_env = "gnu")]
    // SAFETY: mallopt only changes allocator parameters.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
        libc::mallopt(libc::M_MMAP_THRESHOLD, 256 * 1024);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 256 * 1024);
    }
}

/// Give freed heap memory back to the kernel (after a burst of traffic).
pub fn trim_heap() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim has no preconditions.
    unsafe {
        libc::malloc_trim(0);
    }
}

pub fn sync() {
    // SAFETY: no preconditions.
    unsafe { libc::sync() };
}

/// The signals the agent handles itself (blocked in every thread, consumed by sigwait).
pub const HANDLED_SIGNALS: [libc::c_int; 6] = [
    libc::SIGCHLD,
    libc::SIGTERM,
    libc::SIGINT,
    libc::SIGPWR,
    libc::SIGUSR2,
    libc::SIGHUP,
];

pub fn handled_sigset() -> libc::sigset_t {
    // SAFETY: sigset_t is plain data; sigemptyset initializes it.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for sig in HANDLED_SIGNALS {
            libc::sigaddset(&mut set, sig);
        }
        set
    }
}

extern "C" fn noop_handler(_: libc::c_int) {}

/// Block the handled signals in the calling thread (call before spawning threads so
/// they inherit the mask) and give them a no-op handler: the kernel drops signals to
/// PID 1 that have the default disposition. SIGIO is blocked too: the port reader
/// consumes it with [`wait_sigio`].
pub fn setup_signals() -> io::Result<()> {
    let mut set = handled_sigset();
    // SAFETY: set is initialized.
    unsafe { libc::sigaddset(&mut set, libc::SIGIO) };
    // SAFETY: set is initialized; a null old-set pointer is allowed.
    let rc = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
    if rc != 0 {
        return Err(io::Error::from_raw_os_error(rc));
    }
    for sig in HANDLED_SIGNALS.into_iter().chain([libc::SIGIO]) {
        // SAFETY: installing a plain handler function with an empty mask.
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = noop_handler as *const () as usize;
            sa.sa_flags = libc::SA_RESTART;
            libc::sigemptyset(&mut sa.sa_mask);
            cvt(libc::sigaction(sig, &sa, std::ptr::null_mut()))?;
        }
    }
    Ok(())
}

/// Wait for one of the handled signals.
pub fn wait_signal() -> i32 {
    let set = handled_sigset();
    loop {
        let mut sig = 0;
        // SAFETY: set is initialized and sig is a valid out-pointer.
        let rc = unsafe { libc::sigwait(&set, &mut sig) };
        if rc == 0 {
            return sig;
        }
    }
}

#[repr(C)]
struct FOwnerEx {
    kind: libc::c_int,
    pid: libc::pid_t,
}
const F_SETOWN_EX: libc::c_int = 15;
const F_OWNER_TID: libc::c_int = 0;

/// Have the kernel send SIGIO to the calling thread when `fd` changes state (for a
/// virtio-serial port: data arrived, or the host side connected or disconnected).
pub fn sigio_to_this_thread(fd: RawFd) -> io::Result<()> {
    // SAFETY: plain syscalls; the struct outlives the fcntl call.
    unsafe {
        let owner = FOwnerEx {
            kind: F_OWNER_TID,
            pid: libc::syscall(libc::SYS_gettid) as libc::pid_t,
        };
        cvt(libc::fcntl(fd, F_SETOWN_EX, &owner as *const FOwnerEx))?;
        let flags = cvt(libc::fcntl(fd, libc::F_GETFL))?;
        cvt(libc::fcntl(fd, libc::F_SETFL, flags | libc::O_ASYNC))?;
    }
    Ok(())
}

/// Wait (at most `timeout`) for a SIGIO sent to this thread.
pub fn wait_sigio(timeout: Duration) {
    // SAFETY: sigset_t and timespec are plain data, initialized here.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGIO);
        let ts = libc::timespec {
            // (musl deprecates naming `time_t`: its width changes in musl 1.2.)
            tv_sec: timeout.as_secs().try_into().unwrap_or(i32::MAX.into()),
            tv_nsec: timeout.subsec_nanos() as libc::c_long,
        };
        libc::sigtimedwait(&set, std::ptr::null_mut(), &ts);
    }
}

/// Make sure fds 0, 1, 2 are open, so that pipes never land on them.
pub fn ensure_std_fds() {
    for fd in 0..3 {
        // SAFETY: F_GETFD on any integer is harmless.
        if unsafe { libc::fcntl(fd, libc::F_GETFD) } >= 0 {
            continue;
        }
        for path in [c"/dev/console", c"/dev/null"] {
            // SAFETY: path is a valid C string.
            let new = unsafe { libc::open(path.as_ptr(), libc::O_RDWR | libc::O_NOCTTY) };
            if new < 0 {
                continue;
            }
            if new != fd {
                // SAFETY: both are valid descriptors.
                unsafe {
                    libc::dup2(new, fd);
                    libc::close(new);
                }
            }
            break;
        }
    }
}

pub fn open_c(path: &CStr, flags: libc::c_int) -> io::Result<OwnedFd> {
    // SAFETY: path is a valid C string.
    let fd = cvt(unsafe { libc::open(path.as_ptr(), flags | libc::O_CLOEXEC, 0o666) })?;
    // SAFETY: fresh descriptor.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// A new pseudo-terminal of `rows` x `cols`: (master, slave), both close-on-exec and
/// neither the caller's controlling terminal.
pub fn openpty(rows: u16, cols: u16) -> io::Result<(OwnedFd, OwnedFd)> {
    let master = open_c(c"/dev/ptmx", libc::O_RDWR | libc::O_NOCTTY)?;
    let unlock: libc::c_int = 0;
    // SAFETY: TIOCSPTLCK reads an int from the pointer.
    cvt(unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCSPTLCK, &unlock) })?;
    // SAFETY: TIOCGPTPEER (Linux 4.13) takes open flags and returns a new descriptor.
    let slave = cvt(unsafe {
        libc::ioctl(
            master.as_raw_fd(),
            libc::TIOCGPTPEER,
            libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC,
        )
    })?;
    // SAFETY: fresh descriptor.
    let slave = unsafe { OwnedFd::from_raw_fd(slave) };
    set_window_size(master.as_raw_fd(), rows, cols)?;
    Ok((master, slave))
}

/// Set a terminal's size; the foreground process group gets SIGWINCH.
pub fn set_window_size(fd: RawFd, rows: u16, cols: u16) -> io::Result<()> {
    let size = libc::winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads a winsize from the pointer.
    cvt(unsafe { libc::ioctl(fd, libc::TIOCSWINSZ, &size) }).map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pty_has_the_size_asked_for() {
        let (master, slave) = openpty(33, 101).unwrap_or_else(|e| panic!("openpty: {e}"));
        let mut size: libc::winsize = unsafe { std::mem::zeroed() };
        // SAFETY: TIOCGWINSZ writes a winsize.
        cvt(unsafe { libc::ioctl(slave.as_raw_fd(), libc::TIOCGWINSZ, &mut size) })
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((size.ws_row, size.ws_col), (33, 101));
        set_window_size(master.as_raw_fd(), 40, 120).unwrap_or_else(|e| panic!("{e}"));
        // SAFETY: as above.
        cvt(unsafe { libc::ioctl(slave.as_raw_fd(), libc::TIOCGWINSZ, &mut size) })
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((size.ws_row, size.ws_col), (40, 120));
        // What the master gets, the slave reads.
        write_all_fd(master.as_raw_fd(), b"hi\n");
        let mut buf = [0u8; 16];
        let n = read(slave.as_raw_fd(), &mut buf).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(&buf[..n], b"hi\n");
    }

    #[test]
    fn uptime_parsing() {
        assert_eq!(parse_uptime_ms("12.34 56.78\n"), Some(12340));
        assert_eq!(parse_uptime_ms("0.05 0.00"), Some(50));
        assert_eq!(parse_uptime_ms("7 1"), Some(7000));
        assert_eq!(parse_uptime_ms("x"), None);
    }
}

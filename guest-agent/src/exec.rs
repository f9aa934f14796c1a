//! Spawning commands, the single zombie reaper, and per-command I/O threads.
//!
//! All `waitpid` calls happen in [`Reaper::reap`]. A command is forked while the reaper
//! table is locked and registered before the lock is released, so the reaper can never
//! collect a status before its owner is known.

use std::collections::HashMap;
use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use flotilla_agent::proto::{Command, ExecRequest, ExitStatus, Frame, Kind, WindowSize, MAX_CHUNK};

use crate::outbox::Outbox;
use crate::registry::Registry;
use crate::sys;
use crate::threads::lock;

pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Where a child's exit status goes.
pub struct ExitSlot {
    status: Mutex<Option<i32>>,
    notify: OwnedFd,
}

impl ExitSlot {
    fn new() -> io::Result<Arc<ExitSlot>> {
        Ok(Arc::new(ExitSlot {
            status: Mutex::new(None),
            notify: sys::eventfd()?,
        }))
    }

    fn status(&self) -> Option<i32> {
        *lock(&self.status)
    }
}

/// The process-wide table of children whose exit status someone waits for.
#[derive(Default)]
pub struct Reaper {
    table: Mutex<HashMap<i32, Arc<ExitSlot>>>,
}

pub fn reaper() -> &'static Reaper {
    static REAPER: OnceLock<Reaper> = OnceLock::new();
    REAPER.get_or_init(Reaper::default)
}

impl Reaper {
    /// SIGKILL the process group of every tracked child.
    pub fn kill_all(&self) {
        for pid in lock(&self.table).keys() {
            sys::kill_group(*pid);
        }
    }

    /// Collect every exited child; hand statuses to their owners, drop the rest
    /// (orphans re-parented to PID 1).
    pub fn reap(&self) {
        loop {
            let mut status = 0;
            // SAFETY: status is a valid out-pointer.
            let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
            if pid <= 0 {
                return;
            }
            let slot = lock(&self.table).remove(&pid);
            if let Some(slot) = slot {
                *lock(&slot.status) = Some(status);
                sys::eventfd_signal(slot.notify.as_raw_fd());
            }
        }
    }
}

/// Everything the child needs, prepared before fork (the child may not allocate).
struct Prepared {
    argv: Vec<CString>,
    envp: Vec<CString>,
    candidates: Vec<CString>,
    cwd: Option<CString>,
    program: String,
}

fn prepare(req: &ExecRequest) -> io::Result<Prepared> {
    let argv: Vec<String> = match &req.command {
        Command::Argv(argv) => argv.clone(),
        Command::Shell(script) => vec!["/bin/sh".into(), "-c".into(), script.clone()],
    };
    let Some(program) = argv.first().cloned() else {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "empty argv"));
    };
    if program.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "empty program name",
        ));
    }
    let mut env: Vec<(String, String)> = vec![
        ("PATH".into(), DEFAULT_PATH.into()),
        ("HOME".into(), "/root".into()),
        ("TERM".into(), "dumb".into()),
    ];
    for (k, v) in &req.env {
        if k.is_empty() || k.contains('=') {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("invalid environment variable name `{}`", k.escape_debug()),
            ));
        }
        match env.iter_mut().find(|(ek, _)| ek == k) {
            Some(slot) => slot.1 = v.clone(),
            None => env.push((k.clone(), v.clone())),
        }
    }
    let path = env
        .iter()
        .find(|(k, _)| k == "PATH")
        .map(|(_, v)| v.clone())
        .unwrap_or_default();
    let candidates = if program.contains('/') {
        vec![sys::cstring(&program)?]
    } else {
        let all: Vec<String> = path
            .split(':')
            .map(|dir| if dir.is_empty() { "." } else { dir })
            .map(|dir| format!("{dir}/{program}"))
            .collect();
        // A failed execve is costly (it sets up a new address space first), so skip
        // the directories where the program plainly is not; if it is nowhere, keep
        // them all so the child reports the proper error.
        let existing: Vec<String> = all
            .iter()
            .filter(|p| std::path::Path::new(p).exists())
            .cloned()
            .collect();
        let chosen = if existing.is_empty() { all } else { existing };
        chosen
            .iter()
            .map(|p| sys::cstring(p))
            .collect::<io::Result<_>>()?
    };
    Ok(Prepared {
        argv: argv
            .iter()
            .map(|a| sys::cstring(a))
            .collect::<io::Result<_>>()?,
        envp: env
            .iter()
            .map(|(k, v)| sys::cstring(&format!("{k}={v}")))
            .collect::<io::Result<_>>()?,
        candidates,
        cwd: req.cwd.as_deref().map(sys::cstring).transpose()?,
        program,
    })
}

/// Stage codes the child reports.
const STAGE_EXEC: i32 = 1;
const STAGE_CWD: i32 = 2;
const STAGE_SETUP: i32 = 3;

/// A started command.
pub struct Child {
    pub pid: i32,
    pub stdin: Option<OwnedFd>,
    /// The stdout pipe, or the terminal's master side.
    pub stdout: OwnedFd,
    /// The stderr pipe; none on a terminal (stderr is the terminal too).
    pub stderr: Option<OwnedFd>,
    /// The terminal's master side, for resizing.
    pub pty: Option<OwnedFd>,
    slot: Arc<ExitSlot>,
}

/// Fork and exec `req`. Errors are complete messages for an Error frame.
pub fn spawn(req: &ExecRequest) -> Result<Child, String> {
    let prep = prepare(req).map_err(|e| format!("cannot run command: {e}"))?;
    let program = prep.program.clone();
    spawn_prepared(prep, req.stdin, req.pty)
        .map_err(|e| format!("failed to start `{}`: {e}", program.escape_debug()))
}

/// What the child needs (read-only) and where it reports failure (written by the
/// child, read by the parent once the vfork-style clone returns).
#[repr(C)]
struct ChildArgs {
    fds: [RawFd; 3],
    argv: *const *const libc::c_char,
    envp: *const *const libc::c_char,
    candidates: *const *const libc::c_char,
    n_candidates: usize,
    cwd: *const libc::c_char,
    /// Make stdin (a terminal) the controlling terminal.
    ctty: bool,
    stage: i32,
    errno: i32,
}

/// Stack for the cloned child until it execs; it only makes a few syscalls.
const CHILD_STACK: usize = 64 * 1024;

fn spawn_prepared(prep: Prepared, want_stdin: bool, pty: Option<WindowSize>) -> io::Result<Child> {
    if let Some(size) = pty {
        let (master, slave) = sys::openpty(size.rows, size.cols)?;
        let fds = [
            sys::dup_cloexec(slave.as_raw_fd())?,
            sys::dup_cloexec(slave.as_raw_fd())?,
            slave,
        ];
        let stdin = want_stdin
            .then(|| sys::dup_cloexec(master.as_raw_fd()))
            .transpose()?;
        let resize = sys::dup_cloexec(master.as_raw_fd())?;
        let (pid, slot) = clone_exec(&prep, fds, true)?;
        return Ok(Child {
            pid,
            stdin,
            stdout: master,
            stderr: None,
            pty: Some(resize),
            slot,
        });
    }
    let (stdin_r, stdin_w) = if want_stdin {
        let (r, w) = sys::pipe()?;
        (r, Some(w))
    } else {
        (sys::open_c(c"/dev/null", libc::O_RDONLY)?, None)
    };
    let (out_r, out_w) = sys::pipe()?;
    let (err_r, err_w) = sys::pipe()?;
    let (pid, slot) = clone_exec(&prep, [stdin_r, out_w, err_w], false)?;
    Ok(Child {
        pid,
        stdin: stdin_w,
        stdout: out_r,
        stderr: Some(err_r),
        pty: None,
        slot,
    })
}

/// Start the child with `fds` as its stdin, stdout, stderr (closed here afterwards)
/// and register it with the reaper; with `ctty`, stdin is a terminal that becomes the
/// child's controlling terminal.
fn clone_exec(prep: &Prepared, fds: [OwnedFd; 3], ctty: bool) -> io::Result<(i32, Arc<ExitSlot>)> {
    let slot = ExitSlot::new()?;

    let mut argv: Vec<*const libc::c_char> = prep.argv.iter().map(|a| a.as_ptr()).collect();
    argv.push(std::ptr::null());
    let mut envp: Vec<*const libc::c_char> = prep.envp.iter().map(|a| a.as_ptr()).collect();
    envp.push(std::ptr::null());
    let candidates: Vec<*const libc::c_char> = prep.candidates.iter().map(|a| a.as_ptr()).collect();
    let mut args = ChildArgs {
        fds: [fds[0].as_raw_fd(), fds[1].as_raw_fd(), fds[2].as_raw_fd()],
        argv: argv.as_ptr(),
        envp: envp.as_ptr(),
        candidates: candidates.as_ptr(),
        n_candidates: candidates.len(),
        cwd: prep.cwd.as_ref().map_or(std::ptr::null(), |c| c.as_ptr()),
        ctty,
        stage: 0,
        errno: 0,
    };
    let mut stack = vec![0u8; CHILD_STACK];

    let pid = {
        let mut table = lock(&reaper().table);
        // CLONE_VM | CLONE_VFORK, like posix_spawn: no page-table copy (fork is slow
        // under TCG), and this thread is suspended until the child has exec'd or
        // exited, so `args` and `stack` outlive its use of them.
        // SAFETY: the stack is valid and 16-byte aligned at its top; the child only
        // makes async-signal-safe calls on memory prepared above.
        let pid = unsafe {
            let top = stack.as_mut_ptr().add(CHILD_STACK);
            let top = top.sub(top as usize % 16);
            libc::clone(
                child_main,
                top.cast(),
                libc::CLONE_VM | libc::CLONE_VFORK | libc::SIGCHLD,
                (&mut args as *mut ChildArgs).cast(),
            )
        };
        if pid < 0 {
            return Err(io::Error::last_os_error());
        }
        table.insert(pid, slot.clone());
        pid
    };
    drop(stack);
    drop(fds);

    // SAFETY: the child wrote these (if at all) before exec/_exit released us.
    let (stage, errno) = unsafe {
        (
            std::ptr::read_volatile(&args.stage),
            std::ptr::read_volatile(&args.errno),
        )
    };
    if stage != 0 {
        // The child failed before exec; the reaper collects it and nobody listens.
        let what = match stage {
            STAGE_CWD => format!(
                "cannot change directory to `{}`",
                prep.cwd
                    .as_ref()
                    .map(|c| c.to_string_lossy().into_owned())
                    .unwrap_or_default()
            ),
            STAGE_SETUP => "cannot set up the child process".to_string(),
            _ => "cannot execute".to_string(),
        };
        return Err(io::Error::other(format!(
            "{what}: {} (errno {errno})",
            sys::strerror(errno)
        )));
    }
    Ok((pid, slot))
}

/// Entry point of the cloned child: set up, then exec; on failure record the stage and
/// errno in the shared [`ChildArgs`] and `_exit(127)`.
extern "C" fn child_main(arg: *mut libc::c_void) -> libc::c_int {
    // SAFETY: `arg` is the parent's ChildArgs, alive while the parent is suspended;
    // everything below is async-signal-safe.
    unsafe {
        let a = &mut *(arg as *mut ChildArgs);
        let errno = || io::Error::last_os_error().raw_os_error().unwrap_or(0);
        let fail = |a: &mut ChildArgs, stage: i32, e: i32| -> ! {
            std::ptr::write_volatile(&mut a.errno, e);
            std::ptr::write_volatile(&mut a.stage, stage);
            libc::_exit(127)
        };
        // Undo what the agent did to its own signal state (the child has its own copy
        // of the handler table: no CLONE_SIGHAND).
        for sig in sys::HANDLED_SIGNALS {
            libc::signal(sig, libc::SIG_DFL);
        }
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        libc::signal(libc::SIGIO, libc::SIG_DFL);
        let mut empty: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut empty);
        libc::pthread_sigmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut());
        if libc::setsid() < 0 {
            fail(a, STAGE_SETUP, errno());
        }
        for (i, fd) in a.fds.iter().enumerate() {
            if libc::dup2(*fd, i as libc::c_int) < 0 {
                fail(a, STAGE_SETUP, errno());
            }
        }
        if a.ctty && libc::ioctl(0, libc::TIOCSCTTY, 0) < 0 {
            fail(a, STAGE_SETUP, errno());
        }
        let dir = if a.cwd.is_null() {
            c"/".as_ptr()
        } else {
            a.cwd
        };
        if libc::chdir(dir) < 0 && !a.cwd.is_null() {
            fail(a, STAGE_CWD, errno());
        }
        let mut saved = libc::ENOENT;
        for i in 0..a.n_candidates {
            libc::execve(*a.candidates.add(i), a.argv, a.envp);
            let e = errno();
            // Like execvp: keep going on "not here", remember anything more telling.
            if e != libc::ENOENT && e != libc::ENOTDIR {
                saved = e;
            }
        }
        fail(a, STAGE_EXEC, saved)
    }
}

pub fn decode_status(status: i32) -> ExitStatus {
    if libc::WIFEXITED(status) {
        ExitStatus {
            code: Some(libc::WEXITSTATUS(status)),
            signal: None,
            timed_out: false,
        }
    } else if libc::WIFSIGNALED(status) {
        ExitStatus {
            code: None,
            signal: Some(libc::WTERMSIG(status)),
            timed_out: false,
        }
    } else {
        ExitStatus {
            code: None,
            signal: None,
            timed_out: false,
        }
    }
}

/// How long to keep reading output after the command exited, when no more arrives
/// (background processes may hold the pipes open).
const DRAIN_IDLE: Duration = Duration::from_millis(50);

/// Pump a command's output to the host, then report its exit. Runs on its own thread.
pub fn pump(
    child: Child,
    stream: u32,
    gen: u64,
    timeout: Option<Duration>,
    out: Outbox,
    registry: Registry,
) {
    let deadline = timeout.map(|t| Instant::now() + t);
    let mut timed_out = false;
    let mut fds = [
        sys::pollfd(child.stdout.as_raw_fd(), libc::POLLIN),
        sys::pollfd(
            child.stderr.as_ref().map_or(-1, |fd| fd.as_raw_fd()),
            libc::POLLIN,
        ),
        sys::pollfd(child.slot.notify.as_raw_fd(), libc::POLLIN),
    ];
    let mut buf = vec![0u8; MAX_CHUNK];
    let mut exited = child.slot.status().is_some();
    loop {
        if fds[0].fd < 0 && fds[1].fd < 0 && exited {
            break;
        }
        let wait = if exited {
            Some(DRAIN_IDLE)
        } else {
            deadline.map(|d| d.saturating_duration_since(Instant::now()))
        };
        let n = match sys::poll(&mut fds, wait) {
            Ok(n) => n,
            Err(e) => {
                crate::console!("stream {stream}: poll failed: {e}");
                std::thread::sleep(Duration::from_millis(10));
                continue;
            }
        };
        if n == 0 {
            if exited {
                break;
            }
            if deadline.is_some_and(|d| Instant::now() >= d) && !timed_out {
                timed_out = true;
                sys::kill_group(child.pid);
            }
            continue;
        }
        for (i, kind) in [(0, Kind::Stdout), (1, Kind::Stderr)] {
            if fds[i].fd < 0 || fds[i].revents == 0 {
                continue;
            }
            match sys::read(fds[i].fd, &mut buf) {
                Ok(0) | Err(_) => fds[i].fd = -1,
                Ok(len) => {
                    let _ = out.send(gen, Frame::new(kind, stream, buf[..len].to_vec()));
                }
            }
        }
        if fds[2].revents != 0 {
            sys::eventfd_take(fds[2].fd);
            exited = child.slot.status().is_some();
            if exited {
                fds[2].fd = -1;
            }
        }
    }
    // Exited for sure: the loop only ends once the status is there.
    let mut status = child
        .slot
        .status()
        .map(decode_status)
        .unwrap_or(ExitStatus {
            code: None,
            signal: None,
            timed_out: false,
        });
    status.timed_out = timed_out;
    // Free the stream id before the host can see Exit and reuse it.
    registry.remove(stream, gen);
    let _ = out.send(gen, Frame::json(Kind::Exit, stream, &status));
}

/// Feed a command's stdin from the host's Stdin frames. Runs on its own thread;
/// closing the channel closes the pipe.
pub fn feed_stdin(fd: OwnedFd, rx: Receiver<Vec<u8>>) {
    let mut broken = false;
    for data in rx {
        if broken {
            continue;
        }
        let mut rest = &data[..];
        while !rest.is_empty() {
            match sys::write(fd.as_raw_fd(), rest) {
                Ok(n) => rest = &rest[n..],
                Err(_) => {
                    broken = true;
                    break;
                }
            }
        }
    }
}

pub fn stdin_channel() -> (Sender<Vec<u8>>, Receiver<Vec<u8>>) {
    mpsc::channel()
}

/// Start a command in the background with its output on the agent's stderr (the
/// console), e.g. `poweroff` in service mode. Its exit status is collected by the reaper.
pub fn spawn_detached(argv: &[&str]) -> Result<i32, String> {
    let req = ExecRequest {
        command: Command::Argv(argv.iter().map(|s| s.to_string()).collect()),
        env: Vec::new(),
        cwd: None,
        stdin: false,
        timeout_ms: None,
        pty: None,
    };
    let start = || -> io::Result<i32> {
        let prep = prepare(&req)?;
        let stdin = sys::open_c(c"/dev/null", libc::O_RDONLY)?;
        let out = sys::dup_cloexec(2)?;
        let err = sys::dup_cloexec(2)?;
        clone_exec(&prep, [stdin, out, err], false).map(|(pid, _)| pid)
    };
    start().map_err(|e| format!("failed to start `{}`: {e}", argv.join(" ")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(command: Command) -> ExecRequest {
        ExecRequest {
            command,
            env: vec![("PATH".into(), "/nonexistent:/usr/bin:/bin".into())],
            cwd: None,
            stdin: false,
            timeout_ms: None,
            pty: None,
        }
    }

    #[test]
    fn prepare_env_and_candidates() {
        let mut r = req(Command::Argv(vec!["ls".into()]));
        r.env.push(("FOO".into(), "bar".into()));
        let p = prepare(&r).unwrap_or_else(|e| panic!("{e}"));
        let env: Vec<_> = p.envp.iter().map(|c| c.to_str().unwrap_or("")).collect();
        assert_eq!(
            env,
            [
                "PATH=/nonexistent:/usr/bin:/bin",
                "HOME=/root",
                "TERM=dumb",
                "FOO=bar"
            ]
        );
        let cands: Vec<_> = p
            .candidates
            .iter()
            .map(|c| c.to_str().unwrap_or(""))
            .collect();
        // Only where the program exists (here /usr/bin/ls and/or /bin/ls).
        assert!(
            !cands.is_empty() && !cands.contains(&"/nonexistent/ls"),
            "{cands:?}"
        );
        r.command = Command::Argv(vec!["no-such-program-here".into()]);
        let p = prepare(&r).unwrap_or_else(|e| panic!("{e}"));
        let cands: Vec<_> = p
            .candidates
            .iter()
            .map(|c| c.to_str().unwrap_or(""))
            .collect();
        assert_eq!(
            cands,
            [
                "/nonexistent/no-such-program-here",
                "/usr/bin/no-such-program-here",
                "/bin/no-such-program-here"
            ]
        );
    }

    #[test]
    fn prepare_rejects_bad_input() {
        assert!(prepare(&req(Command::Argv(vec![]))).is_err());
        assert!(prepare(&req(Command::Argv(vec!["a\0b".into()]))).is_err());
        let mut r = req(Command::Shell("true".into()));
        r.env.push(("A=B".into(), "c".into()));
        assert!(prepare(&r).is_err());
    }

    #[test]
    fn status_decoding() {
        assert_eq!(decode_status(3 << 8).code, Some(3));
        assert_eq!(decode_status(9).signal, Some(9));
    }
}

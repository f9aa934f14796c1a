//! Child processes (qemu, and later vde_switch) that can never outlive the driver.
//!
//! Every child is spawned from one long-lived thread with `PR_SET_PDEATHSIG = SIGKILL`
//! (the signal fires when the *thread* that forked dies, so it must be a thread that
//! lives as long as the process), in its own process group so a terminal's Ctrl-C reaches
//! only the driver, which then shuts machines down in order. A [`Process`] is closed with
//! SIGTERM, a grace period, then SIGKILL; dropping it kills the child as a backstop.

use std::io;
use std::process::ExitStatus;
use std::sync::{mpsc as std_mpsc, Mutex, OnceLock};
use std::time::Duration;

use tokio::process::{Child, Command};
use tokio::runtime::Handle;
use tokio::sync::{mpsc, oneshot, watch};

struct SpawnRequest {
    command: Command,
    runtime: Handle,
    reply: oneshot::Sender<io::Result<Child>>,
}

fn spawner() -> &'static Mutex<std_mpsc::Sender<SpawnRequest>> {
    static SPAWNER: OnceLock<Mutex<std_mpsc::Sender<SpawnRequest>>> = OnceLock::new();
    SPAWNER.get_or_init(|| {
        let (tx, rx) = std_mpsc::channel::<SpawnRequest>();
        // Detached on purpose: this thread must outlive every child it forks.
        std::thread::Builder::new()
            .name("flotilla-spawner".into())
            .spawn(move || {
                for mut req in rx {
                    let _guard = req.runtime.enter();
                    let result = req.command.spawn();
                    let _ = req.reply.send(result);
                }
            })
            .map(|_| ())
            .unwrap_or_else(|e| eprintln!("flotilla: cannot start the spawner thread: {e}"));
        Mutex::new(tx)
    })
}

/// A running child process with a monitor task; see the module docs.
#[derive(Debug)]
pub struct Process {
    pid: u32,
    signals: mpsc::UnboundedSender<i32>,
    exit: watch::Receiver<Option<ExitStatus>>,
}

/// What was given to [`Process::spawn`]: the child's stdio handles, taken out of it.
#[derive(Debug)]
pub struct Stdio {
    pub stdin: Option<tokio::process::ChildStdin>,
    pub stdout: Option<tokio::process::ChildStdout>,
    pub stderr: Option<tokio::process::ChildStderr>,
}

impl Process {
    /// Spawns `command` as a child that dies with the driver.
    pub async fn spawn(name: &str, mut command: Command) -> io::Result<(Process, Stdio)> {
        let parent = std::process::id() as libc::pid_t;
        command.kill_on_drop(true);
        // SAFETY: only async-signal-safe calls (prctl, getppid, setpgid, umask) run in the
        // child.
        unsafe {
            command.pre_exec(move || {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) != 0 {
                    return Err(io::Error::last_os_error());
                }
                // The parent may have died between fork and prctl.
                if libc::getppid() != parent {
                    return Err(io::Error::other("parent exited during spawn"));
                }
                if libc::setpgid(0, 0) != 0 {
                    return Err(io::Error::last_os_error());
                }
                // What the child creates (QEMU's sockets, captures, screenshots) is the
                // user's alone.
                libc::umask(0o077);
                Ok(())
            });
        }
        let (reply, rx) = oneshot::channel();
        let req = SpawnRequest {
            command,
            runtime: Handle::current(),
            reply,
        };
        spawner()
            .lock()
            .map_err(|_| io::Error::other("spawner lock poisoned"))?
            .send(req)
            .map_err(|_| io::Error::other("spawner thread is gone"))?;
        let mut child = rx
            .await
            .map_err(|_| io::Error::other("spawner thread dropped the request"))??;
        let pid = child
            .id()
            .ok_or_else(|| io::Error::other("child exited at once"))?;
        let stdio = Stdio {
            stdin: child.stdin.take(),
            stdout: child.stdout.take(),
            stderr: child.stderr.take(),
        };
        let (signals, mut signal_rx) = mpsc::unbounded_channel::<i32>();
        let (exit_tx, exit) = watch::channel(None);
        tokio::spawn(async move {
            let status = loop {
                tokio::select! {
                    status = child.wait() => break status,
                    sig = signal_rx.recv() => match sig {
                        // `child.id()` is None once reaped, so a recycled pid is never hit.
                        Some(sig) => if let Some(pid) = child.id() {
                            // SAFETY: plain kill(2) on our own unreaped child.
                            unsafe { libc::kill(pid as libc::pid_t, sig) };
                        },
                        None => {
                            let _ = child.start_kill();
                            break child.wait().await;
                        }
                    },
                }
            };
            match status {
                Ok(status) => {
                    let _ = exit_tx.send(Some(status));
                }
                Err(e) => {
                    tracing::debug!("waiting for child {pid}: {e}");
                    let _ = exit_tx.send(Some(std::os::unix::process::ExitStatusExt::from_raw(
                        libc::SIGKILL,
                    )));
                }
            }
        });
        tracing::debug!("spawned {name} as pid {pid}");
        Ok((Process { pid, signals, exit }, stdio))
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The exit status, if the child has exited.
    pub fn status(&self) -> Option<ExitStatus> {
        *self.exit.borrow()
    }

    /// Whether the child is stopped by a signal (SIGSTOP, SIGTSTP...) or a tracer: it
    /// then answers nothing, and dies of SIGKILL alone until it is continued.
    pub fn is_stopped(&self) -> bool {
        if self.status().is_some() {
            return false;
        }
        // Unreaped while the status is unknown, so the pid is still this child's.
        read_stat(self.pid)
            .ok()
            .and_then(|stat| stopped_in_stat(&stat))
            .unwrap_or(false)
    }

    /// Sends a signal unless the child has already exited.
    pub fn signal(&self, sig: i32) {
        let _ = self.signals.send(sig);
    }

    /// Resolves when the child has exited.
    pub async fn exited(&self) -> ExitStatus {
        self.exit_watch().exited().await
    }

    /// A handle that tells when the child exits, for a task that does not own the
    /// [`Process`].
    pub fn exit_watch(&self) -> ExitWatch {
        ExitWatch {
            pid: self.pid,
            exit: self.exit.clone(),
        }
    }

    /// SIGTERM, then SIGKILL after `grace`. Idempotent.
    pub async fn close(&self, grace: Duration) -> ExitStatus {
        if let Some(status) = self.status() {
            return status;
        }
        self.signal(libc::SIGTERM);
        match tokio::time::timeout(grace, self.exited()).await {
            Ok(status) => status,
            Err(_) => {
                self.signal(libc::SIGKILL);
                self.exited().await
            }
        }
    }
}

/// Whether (and how) a [`Process`] exited, without owning it: see
/// [`Process::exit_watch`].
#[derive(Debug, Clone)]
pub struct ExitWatch {
    pid: u32,
    exit: watch::Receiver<Option<ExitStatus>>,
}

impl ExitWatch {
    /// The exit status, if the child has exited and been reaped.
    pub fn status(&self) -> Option<ExitStatus> {
        *self.exit.borrow()
    }

    /// Resolves when the child has exited.
    pub async fn exited(&self) -> ExitStatus {
        let mut rx = self.exit.clone();
        loop {
            if let Some(status) = *rx.borrow_and_update() {
                return status;
            }
            if rx.changed().await.is_err() {
                // The monitor task is gone (runtime shutting down): the child was killed.
                return std::os::unix::process::ExitStatusExt::from_raw(libc::SIGKILL);
            }
        }
    }

    /// Whether the child has exited, reaped or not yet: a zombie, or a process that
    /// is gone while its monitor task has not said so yet, has exited too.
    pub fn has_exited(&self) -> bool {
        if self.status().is_some() {
            return true;
        }
        match read_stat(self.pid) {
            Ok(stat) => state_in_stat(&stat).is_some_and(|s| matches!(s, "Z" | "X")),
            Err(_) => true,
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if self.status().is_none() {
            self.signal(libc::SIGKILL);
        }
    }
}

/// The `/proc/PID/stat` line of `pid`.
fn read_stat(pid: u32) -> io::Result<String> {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
}

/// The state field of a `/proc/PID/stat` line (`R`, `S`, `T`, `Z`, ...); `None` if the
/// line is not one. The line is `PID (COMM) STATE ...`, and COMM may itself hold `) `.
fn state_in_stat(stat: &str) -> Option<&str> {
    stat.get(stat.rfind(')')? + 1..)?.split_whitespace().next()
}

/// Whether a `/proc/PID/stat` line shows a stopped process (state `T`, or `t` for a
/// tracing stop); `None` if the line is not one.
fn stopped_in_stat(stat: &str) -> Option<bool> {
    state_in_stat(stat).map(|state| matches!(state, "T" | "t"))
}

/// Describes an exit status in words: "exited with status 1", "was killed by signal 9".
pub fn describe_status(status: ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exited with status {code}"),
        (None, Some(sig)) => format!("was killed by signal {sig} ({})", signal_name(sig)),
        _ => "exited".to_owned(),
    }
}

pub fn signal_name(sig: i32) -> &'static str {
    match sig {
        libc::SIGHUP => "SIGHUP",
        libc::SIGINT => "SIGINT",
        libc::SIGQUIT => "SIGQUIT",
        libc::SIGILL => "SIGILL",
        libc::SIGABRT => "SIGABRT",
        libc::SIGBUS => "SIGBUS",
        libc::SIGFPE => "SIGFPE",
        libc::SIGKILL => "SIGKILL",
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGPIPE => "SIGPIPE",
        libc::SIGALRM => "SIGALRM",
        libc::SIGTERM => "SIGTERM",
        libc::SIGUSR1 => "SIGUSR1",
        libc::SIGUSR2 => "SIGUSR2",
        _ => "signal",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn close_terminates_and_is_idempotent() {
        let mut cmd = Command::new("sleep");
        cmd.arg("30");
        let (p, _io) = Process::spawn("sleep", cmd).await.unwrap();
        // `sleep` dies of SIGTERM at once; the grace only has to outlast a busy host's
        // scheduling, or the SIGKILL below it would be reported instead.
        let status = p.close(Duration::from_secs(30)).await;
        assert_eq!(describe_status(status), "was killed by signal 15 (SIGTERM)");
        let again = p.close(Duration::from_secs(30)).await;
        assert_eq!(status, again);
    }

    #[tokio::test]
    async fn close_escalates_to_sigkill() {
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "trap '' TERM; echo trapped; sleep 30"])
            .stdout(std::process::Stdio::piped());
        let (p, io) = Process::spawn("stubborn", cmd).await.unwrap();
        // Once sh says so, its trap is installed.
        let mut said = String::new();
        let mut stdout = tokio::io::BufReader::new(io.stdout.unwrap());
        tokio::time::timeout(
            Duration::from_secs(30),
            tokio::io::AsyncBufReadExt::read_line(&mut stdout, &mut said),
        )
        .await
        .expect("sh did not install its trap within 30 s")
        .unwrap();
        assert_eq!(said, "trapped\n");
        let status = p.close(Duration::from_millis(300)).await;
        assert_eq!(describe_status(status), "was killed by signal 9 (SIGKILL)");
    }

    #[test]
    fn a_stopped_process_is_told_from_its_stat_line() {
        assert_eq!(
            stopped_in_stat("42 (qemu-system-x86) T 1 42 42 0"),
            Some(true)
        );
        assert_eq!(stopped_in_stat("42 (a) b) t 1"), Some(true));
        assert_eq!(stopped_in_stat("42 (qemu) S 1 42 42 0"), Some(false));
        assert_eq!(stopped_in_stat("42 (T) R 1"), Some(false));
        assert_eq!(stopped_in_stat("garbage"), None);
    }

    #[tokio::test]
    async fn a_sigstopped_child_is_seen_stopped_and_dies_of_sigkill() {
        let mut cmd = Command::new("sleep");
        cmd.arg("30");
        let (p, _io) = Process::spawn("sleep", cmd).await.unwrap();
        assert!(!p.is_stopped());
        p.signal(libc::SIGSTOP);
        let started = std::time::Instant::now();
        while !p.is_stopped() {
            assert!(started.elapsed() < Duration::from_secs(30), "never stopped");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        p.signal(libc::SIGKILL);
        let status = tokio::time::timeout(Duration::from_secs(30), p.exited())
            .await
            .expect("a stopped child dies of SIGKILL");
        assert_eq!(describe_status(status), "was killed by signal 9 (SIGKILL)");
        assert!(!p.is_stopped());
    }

    #[tokio::test]
    async fn drop_kills_the_child() {
        let mut cmd = Command::new("sleep");
        cmd.arg("30");
        let (p, _io) = Process::spawn("sleep", cmd).await.unwrap();
        let pid = p.pid() as libc::pid_t;
        drop(p);
        // Killed and reaped at once; 30 s leaves room for a busy host.
        let started = std::time::Instant::now();
        while started.elapsed() < Duration::from_secs(30) {
            // SAFETY: signal 0 only probes for existence.
            if unsafe { libc::kill(pid, 0) } != 0 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("child {pid} survived the drop of its Process by 30 s");
    }
}

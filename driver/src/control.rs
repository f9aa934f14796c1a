//! The control socket of `flotilla run`: other processes of the same user reach the
//! running machines through it (`flotilla shell <machine>`).
//!
//! Sockets live in [`runtime_dir`] (`$XDG_RUNTIME_DIR/flotilla`, else
//! `/tmp/flotilla-<uid>`, mode 0700) as `<run>.sock`, where the run's name is the
//! spec's name, or `<name>-2`, `<name>-3`, ... while an earlier run of the same spec
//! is alive. A run holds an exclusive lock on `<run>.lock` for as long as it lives, so
//! a socket whose lock is free is stale (its run was killed) and is replaced; a live
//! run's socket is never touched.
//!
//! The wire format is the agent's ([`flotilla_agent::proto`]) frames: the client sends
//! [`Kind::Exec`] on stream 1 with a [`SessionRequest`] body, then [`Kind::Stdin`],
//! [`Kind::StdinClose`], [`Kind::Resize`] or [`Kind::Kill`]; the server answers with
//! the command's [`Kind::Stdout`], [`Kind::Stderr`] and [`Kind::Exit`], or one
//! [`Kind::Error`]. Closing the connection kills the command. Both ends read and write
//! with the agent connection's codec, and treat bytes that are not a frame as it does
//! (`FrameCodec`: garbage and frames of unknown kinds are skipped, an oversized
//! length or a frame cut short ends the session).
//!
//! ```no_run
//! # async fn demo() -> Result<(), flotilla_driver::Error> {
//! use flotilla_driver::control::{self, SessionRequest};
//! use flotilla_driver::ExecEvent;
//!
//! let socket = control::find_run(None)?;
//! let mut session = control::Session::open(&socket, &SessionRequest::shell("server", None, None)).await?;
//! session.write_stdin(b"hostname; exit 3\n").await?;
//! session.close_stdin().await?;
//! loop {
//!     match session.next().await? {
//!         ExecEvent::Stdout(bytes) | ExecEvent::Stderr(bytes) => print!("{}", String::from_utf8_lossy(&bytes)),
//!         ExecEvent::Exit(status) => break assert_eq!(status.code, Some(3)),
//!     }
//! }
//! # Ok(()) }
//! ```

use std::collections::BTreeMap;
use std::fs::File;
use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use flotilla_agent::proto::{self, Command, ErrorBody, ExecRequest, Frame, Kind};
use futures::{SinkExt, StreamExt};
use serde::{Deserialize, Serialize};
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{UnixListener, UnixStream};
use tokio_util::codec::{FramedRead, FramedWrite};

use crate::agent_client::{ExecEvent, FrameCodec};
use crate::error::Error;
use crate::log::Log;
use crate::machine::Machine;

pub use flotilla_agent::proto::{ExitStatus, WindowSize};

/// How many runs of one spec may live side by side.
const MAX_RUNS: usize = 100;
/// The stream id of the one command a control connection carries.
const STREAM: u32 = 1;

/// Body of the first frame of a control connection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionRequest {
    /// The machine to run in.
    pub machine: String,
    /// What to run, with what input and terminal.
    pub exec: ExecRequest,
}

impl SessionRequest {
    /// `command` (a shell command line) in `machine`, or else a shell: a login shell
    /// (bash if there is one) on a terminal, `/bin/sh` reading commands from its stdin
    /// otherwise. With `pty`, it runs on a terminal of that size, with `TERM` from this
    /// process's environment.
    pub fn shell(machine: &str, command: Option<&str>, pty: Option<WindowSize>) -> SessionRequest {
        let term = std::env::var("TERM").unwrap_or_else(|_| "xterm".into());
        let env = match pty {
            Some(_) => vec![("TERM".to_owned(), term)],
            None => Vec::new(),
        };
        let command = match (command, pty) {
            (Some(c), _) => Command::Shell(c.to_owned()),
            (None, Some(_)) => Command::Shell(
                "if [ -x /bin/bash ]; then exec /bin/bash -l; else exec /bin/sh -l; fi".into(),
            ),
            (None, None) => Command::Argv(vec!["/bin/sh".into()]),
        };
        SessionRequest {
            machine: machine.to_owned(),
            exec: ExecRequest {
                command,
                env,
                cwd: None,
                stdin: true,
                timeout_ms: None,
                pty,
            },
        }
    }
}

/// Where the control sockets are: `$XDG_RUNTIME_DIR/flotilla`, else
/// `/tmp/flotilla-<uid>`.
pub fn runtime_dir_path() -> PathBuf {
    match std::env::var_os("XDG_RUNTIME_DIR") {
        Some(d) if Path::new(&d).is_absolute() => Path::new(&d).join("flotilla"),
        // SAFETY: no preconditions.
        _ => std::env::temp_dir().join(format!("flotilla-{}", unsafe { libc::getuid() })),
    }
}

/// [`runtime_dir_path`], made (0700) if missing; refused if another user could write
/// to it.
pub fn runtime_dir() -> Result<PathBuf, Error> {
    let dir = runtime_dir_path();
    match std::fs::DirBuilder::new().mode(0o700).create(&dir) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(source) => {
            return Err(Error::Io {
                what: format!("creating the control socket folder {}", dir.display()),
                source,
            })
        }
    }
    check_private(&dir)?;
    Ok(dir)
}

/// Refuses a folder that is not ours alone: another user could plant a fake run.
fn check_private(dir: &Path) -> Result<(), Error> {
    // SAFETY: no preconditions.
    let uid = unsafe { libc::getuid() };
    let io_err = |what: &str, source| Error::Io {
        what: format!("{what} the control socket folder {}", dir.display()),
        source,
    };
    let meta = std::fs::symlink_metadata(dir).map_err(|e| io_err("inspecting", e))?;
    if !meta.is_dir() || meta.uid() != uid || meta.mode() & 0o077 != 0 {
        return Err(Error::Setup {
            what: format!(
                "refusing the control socket folder {}: it must be a folder of uid {uid} with mode 0700 (it is {} of uid {}, mode {:o})",
                dir.display(),
                if meta.is_dir() { "a folder" } else { "not a folder" },
                meta.uid(),
                meta.mode() & 0o7777
            ),
            hint: "remove it, or set XDG_RUNTIME_DIR to a private folder".into(),
        });
    }
    Ok(())
}

/// A bound control socket; removed when dropped.
#[derive(Debug)]
pub struct ControlSocket {
    name: String,
    path: PathBuf,
    listener: std::os::unix::net::UnixListener,
    // Held for the run's lifetime: it tells other runs this name is taken.
    _lock: flotilla_host::lock::Locked,
}

impl ControlSocket {
    /// Binds the socket of a run of the spec `spec_name` in [`runtime_dir`]: the first
    /// of `name`, `name-2`, ... that no live run holds.
    pub fn bind(spec_name: &str) -> Result<ControlSocket, Error> {
        ControlSocket::bind_in(&runtime_dir()?, spec_name)
    }

    /// [`ControlSocket::bind`] in `dir`.
    pub fn bind_in(dir: &Path, spec_name: &str) -> Result<ControlSocket, Error> {
        for n in 1..=MAX_RUNS {
            let name = match n {
                1 => spec_name.to_owned(),
                n => format!("{spec_name}-{n}"),
            };
            let lock_path = dir.join(format!("{name}.lock"));
            let io_err = |what: &str, path: &Path, source| Error::Io {
                what: format!("{what} {}", path.display()),
                source,
            };
            let lock = std::fs::OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(&lock_path)
                .map_err(|e| io_err("opening", &lock_path, e))?;
            let Some(lock) = flotilla_host::lock::try_exclusive(lock)
                .map_err(|e| io_err("locking", &lock_path, e))?
            else {
                continue; // A live run has this name.
            };
            // The name is ours: whatever socket is there is a killed run's.
            let path = dir.join(format!("{name}.sock"));
            match std::fs::remove_file(&path) {
                Ok(()) => tracing::info!("replaced the stale control socket {}", path.display()),
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_err("removing the stale", &path, e)),
            }
            let listener = std::os::unix::net::UnixListener::bind(&path)
                .map_err(|e| io_err("binding", &path, e))?;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
                .map_err(|e| io_err("restricting", &path, e))?;
            return Ok(ControlSocket {
                name,
                path,
                listener,
                _lock: lock,
            });
        }
        Err(Error::Setup {
            what: format!("{MAX_RUNS} runs of `{spec_name}` are alive already"),
            hint: "stop some of them".into(),
        })
    }

    /// The run's name (what `flotilla shell --run` takes).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Where the socket is.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Serves sessions on `machines` until the future is dropped (which ends them all).
    pub async fn serve(&self, machines: BTreeMap<String, Arc<Machine>>, log: Log) {
        let listener = self.listener.try_clone().and_then(|l| {
            l.set_nonblocking(true)?;
            UnixListener::from_std(l)
        });
        let listener = match listener {
            Ok(l) => l,
            Err(e) => {
                log.info(&format!(
                    "control socket {}: cannot listen: {e}",
                    self.path.display()
                ));
                return std::future::pending().await;
            }
        };
        let machines = Arc::new(machines);
        let mut sessions = tokio::task::JoinSet::new();
        // The last accept error logged: one that repeats is logged once.
        let mut failing = None;
        loop {
            match listener.accept().await {
                Ok((stream, _)) => {
                    failing = None;
                    let machines = machines.clone();
                    let log = log.clone();
                    sessions.spawn(async move { serve_one(stream, &machines, &log).await });
                }
                Err(e) => {
                    let said = e.to_string();
                    if failing.as_ref() != Some(&said) {
                        log.file_only(&format!(
                            "control socket {}: accepting a connection: {said}",
                            self.path.display()
                        ));
                        failing = Some(said);
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
            // Collect finished sessions.
            while sessions.try_join_next().is_some() {}
        }
    }
}

impl Drop for ControlSocket {
    fn drop(&mut self) {
        // Still ours: the lock is released only after this.
        let _ = std::fs::remove_file(&self.path);
    }
}

/// One control connection: start the command, then relay until it exits or the
/// client goes away (which kills it).
async fn serve_one(stream: UnixStream, machines: &BTreeMap<String, Arc<Machine>>, log: &Log) {
    let (rd, wr) = stream.into_split();
    let (mut reader, mut wr) = framed(rd, wr);
    let request = match tokio::time::timeout(Duration::from_secs(10), reader.next()).await {
        Ok(Some(Ok(f))) if f.kind == Kind::Exec => f.parse_json::<SessionRequest>(),
        Ok(Some(Ok(f))) => {
            let message = format!("expected an Exec frame first, got {:?}", f.kind);
            return send_error(&mut wr, message).await;
        }
        // Gone, garbled or silent: nobody to tell.
        _ => return,
    };
    let request = match request {
        Ok(r) => r,
        Err(e) => return send_error(&mut wr, format!("bad session request: {e}")).await,
    };
    let Some(machine) = machines.get(&request.machine) else {
        let names: Vec<&str> = machines.keys().map(String::as_str).collect();
        let message = format!(
            "no machine `{}` in this run (its machines: {})",
            request.machine,
            names.join(", ")
        );
        return send_error(&mut wr, message).await;
    };
    let mut session = match machine.start_session(&request.exec).await {
        Ok(s) => s,
        Err(e) => return send_error(&mut wr, crate::error::chain(&e)).await,
    };
    let what = if request.exec.pty.is_some() {
        "a terminal session"
    } else {
        "a session"
    };
    log.machine(
        &request.machine,
        &format!("{what} started from the control socket"),
    );
    let ended = loop {
        tokio::select! {
            frame = reader.next() => {
                let frame = match frame {
                    Some(Ok(f)) => f,
                    None => break "the client went away".to_owned(),
                    Some(Err(e)) => break format!("the client sent a bad frame ({e})"),
                };
                let sent = match frame.kind {
                    Kind::Stdin => session.write_stdin(&frame.payload).await,
                    Kind::StdinClose => session.close_stdin().await,
                    Kind::Resize => match frame.parse_json::<WindowSize>() {
                        Ok(size) => session.resize(size).await,
                        Err(e) => break format!("the client sent a bad resize ({e})"),
                    },
                    Kind::Kill => break "the client killed it".to_owned(),
                    other => break format!("the client sent an unexpected {other:?} frame"),
                };
                if let Err(e) = sent {
                    send_error(&mut wr, format!("machine `{}`: agent: {e}", request.machine)).await;
                    break format!("the agent failed: {e}");
                }
            }
            event = session.next() => {
                let frame = match event {
                    Ok(ExecEvent::Stdout(b)) => Frame::new(Kind::Stdout, STREAM, b),
                    Ok(ExecEvent::Stderr(b)) => Frame::new(Kind::Stderr, STREAM, b),
                    Ok(ExecEvent::Exit(status)) => {
                        let _ = wr.send(Frame::json(Kind::Exit, STREAM, &status)).await;
                        break describe(&status);
                    }
                    Err(e) => {
                        send_error(&mut wr, format!("machine `{}`: agent: {e}", request.machine)).await;
                        break format!("the agent failed: {e}");
                    }
                };
                if wr.send(frame).await.is_err() {
                    break "the client went away".to_owned();
                }
            }
        }
    };
    log.machine(&request.machine, &format!("{what} ended: {ended}"));
}

fn describe(status: &ExitStatus) -> String {
    match (status.code, status.signal) {
        (Some(c), _) => format!("exit status {c}"),
        (None, Some(s)) => format!("signal {s}"),
        _ => "no status".into(),
    }
}

async fn send_error(wr: &mut FrameWriter, message: String) {
    let _ = wr.send(Frame::error(STREAM, message)).await;
}

/// Frames from a control connection, with [`FrameCodec`]; cancel-safe (bytes read
/// stay in the buffer).
type FrameReader = FramedRead<OwnedReadHalf, FrameCodec>;
/// Frames to a control connection, with [`FrameCodec`].
type FrameWriter = FramedWrite<OwnedWriteHalf, FrameCodec>;

/// Both halves of a control connection, framed.
fn framed(rd: OwnedReadHalf, wr: OwnedWriteHalf) -> (FrameReader, FrameWriter) {
    (
        FramedRead::new(rd, FrameCodec::default()),
        FramedWrite::new(wr, FrameCodec::default()),
    )
}

/// The control socket of a live run: `run` is a run's name (`flotilla run` prints it)
/// or a socket's path; without it, the only live run.
pub fn find_run(run: Option<&str>) -> Result<PathBuf, Error> {
    if let Some(run) = run.filter(|r| r.contains('/')) {
        return Ok(PathBuf::from(run));
    }
    find_run_in(&runtime_dir_path(), run)
}

/// [`find_run`] in `dir`.
pub fn find_run_in(dir: &Path, run: Option<&str>) -> Result<PathBuf, Error> {
    if let Some(run) = run.filter(|r| r.contains('/')) {
        return Ok(PathBuf::from(run));
    }
    let live = if dir.exists() {
        check_private(dir)?;
        live_runs(dir)?
    } else {
        Vec::new()
    };
    let none_hint =
        "start one with `flotilla run <spec>` (as the same user, with the same XDG_RUNTIME_DIR)";
    match run {
        Some(name) if live.iter().any(|l| l == name) => Ok(dir.join(format!("{name}.sock"))),
        Some(name) => Err(Error::Setup {
            what: format!(
                "no live run named `{name}` in {} (live runs: {})",
                dir.display(),
                if live.is_empty() {
                    "none".to_owned()
                } else {
                    live.join(", ")
                }
            ),
            hint: none_hint.into(),
        }),
        None => match live.as_slice() {
            [one] => Ok(dir.join(format!("{one}.sock"))),
            [] => Err(Error::Setup {
                what: format!(
                    "no `flotilla run` is running (no live control socket in {})",
                    dir.display()
                ),
                hint: none_hint.into(),
            }),
            many => Err(Error::Setup {
                what: format!("{} runs are live: {}", many.len(), many.join(", ")),
                hint: "pick one with --run NAME".into(),
            }),
        },
    }
}

/// Names of the runs whose lock is held, sorted.
fn live_runs(dir: &Path) -> Result<Vec<String>, Error> {
    let entries = std::fs::read_dir(dir).map_err(|source| Error::Io {
        what: format!("listing {}", dir.display()),
        source,
    })?;
    let mut live = Vec::new();
    for entry in entries.flatten() {
        let file = entry.file_name().to_string_lossy().into_owned();
        let Some(name) = file.strip_suffix(".lock") else {
            continue;
        };
        let Ok(lock) = File::open(entry.path()) else {
            continue;
        };
        let free = flotilla_host::lock::is_free(&lock);
        if !free && dir.join(format!("{name}.sock")).exists() {
            live.push(name.to_owned());
        }
    }
    live.sort();
    Ok(live)
}

/// A command running in a machine of a live run, driven through its control socket.
#[derive(Debug)]
pub struct Session {
    reader: FrameReader,
    writer: FrameWriter,
    done: bool,
    /// Events read while a write failed, given out by [`Session::next`] first.
    ahead: std::collections::VecDeque<ExecEvent>,
}

impl Session {
    /// Connects to the run at `socket` and starts `request`.
    pub async fn open(socket: &Path, request: &SessionRequest) -> Result<Session, Error> {
        let stream = UnixStream::connect(socket)
            .await
            .map_err(|source| Error::Io {
                what: format!(
                    "connecting to the run's control socket {}",
                    socket.display()
                ),
                source,
            })?;
        let (rd, wr) = stream.into_split();
        let (reader, writer) = framed(rd, wr);
        let mut session = Session {
            reader,
            writer,
            done: false,
            ahead: Default::default(),
        };
        session
            .send(Frame::json(Kind::Exec, STREAM, request))
            .await?;
        Ok(session)
    }

    async fn send(&mut self, frame: Frame) -> Result<(), Error> {
        let Err(source) = self.writer.send(frame).await else {
            return Ok(());
        };
        // The run may have refused the session and hung up: its reason says more. Or
        // the command ended (its exit is on the way, maybe after some output) and the
        // run closed the session: what was being sent no longer matters.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(1);
        loop {
            match tokio::time::timeout_at(deadline, self.read_event()).await {
                Ok(Ok(ExecEvent::Exit(status))) => {
                    self.ahead.push_back(ExecEvent::Exit(status));
                    return Ok(());
                }
                Ok(Ok(event)) => self.ahead.push_back(event),
                Ok(Err(e @ Error::Run(_))) => return Err(e),
                _ => break,
            }
        }
        Err(Error::Io {
            what: "writing to the run's control socket".into(),
            source,
        })
    }

    /// Feeds the command's stdin.
    pub async fn write_stdin(&mut self, data: &[u8]) -> Result<(), Error> {
        for chunk in data.chunks(proto::MAX_CHUNK) {
            self.send(Frame::new(Kind::Stdin, STREAM, chunk.to_vec()))
                .await?;
        }
        Ok(())
    }

    /// Ends the command's input.
    pub async fn close_stdin(&mut self) -> Result<(), Error> {
        self.send(Frame::new(Kind::StdinClose, STREAM, Vec::new()))
            .await
    }

    /// Resizes the command's terminal.
    pub async fn resize(&mut self, size: WindowSize) -> Result<(), Error> {
        self.send(Frame::json(Kind::Resize, STREAM, &size)).await
    }

    /// The next output or the exit; cancel-safe. An error ends the session.
    pub async fn next(&mut self) -> Result<ExecEvent, Error> {
        if let Some(event) = self.ahead.pop_front() {
            return Ok(event);
        }
        self.read_event().await
    }

    /// The next event from the socket.
    async fn read_event(&mut self) -> Result<ExecEvent, Error> {
        let lost = |why: String| Error::Io {
            what: "the run's control socket".into(),
            source: io::Error::new(io::ErrorKind::ConnectionAborted, why),
        };
        if self.done {
            return Err(lost("the session is over".into()));
        }
        let frame = match self.reader.next().await {
            Some(Ok(f)) => f,
            None => {
                self.done = true;
                return Err(lost(
                    "the run ended the session (did `flotilla run` stop?)".into(),
                ));
            }
            Some(Err(e)) => {
                self.done = true;
                return Err(lost(e.to_string()));
            }
        };
        let bad = |e: proto::ProtoError| lost(e.to_string());
        match frame.kind {
            Kind::Stdout => Ok(ExecEvent::Stdout(frame.payload)),
            Kind::Stderr => Ok(ExecEvent::Stderr(frame.payload)),
            Kind::Exit => {
                self.done = true;
                Ok(ExecEvent::Exit(frame.parse_json().map_err(bad)?))
            }
            Kind::Error => {
                self.done = true;
                let body: ErrorBody = frame.parse_json().map_err(bad)?;
                Err(Error::Run(body.message))
            }
            other => Err(lost(format!("unexpected {other:?} frame"))),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn shell_requests() {
        let plain = SessionRequest::shell("vm", None, None);
        assert_eq!(plain.exec.command, Command::Argv(vec!["/bin/sh".into()]));
        assert!(plain.exec.stdin && plain.exec.pty.is_none());
        let tty = SessionRequest::shell("vm", None, Some(WindowSize { rows: 5, cols: 7 }));
        assert!(tty.exec.env.iter().any(|(k, _)| k == "TERM"));
        let back: SessionRequest = Frame::json(Kind::Exec, 1, &tty).parse_json().unwrap();
        assert_eq!(back, tty);
    }

    #[test]
    fn runs_get_their_own_names_and_stale_sockets_are_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755)).unwrap();
        let err = find_run_in(d, None).unwrap_err().to_string();
        assert!(err.contains("refusing the control socket folder"), "{err}");
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o700)).unwrap();
        let err = find_run_in(d, None).unwrap_err().to_string();
        assert!(err.contains("no `flotilla run` is running"), "{err}");
        // A killed run left its socket and an unlocked lock file.
        drop(std::os::unix::net::UnixListener::bind(d.join("spec.sock")).unwrap());
        std::fs::write(d.join("spec.lock"), "").unwrap();
        assert!(find_run_in(d, None).is_err(), "a stale socket is not a run");

        let first = ControlSocket::bind_in(d, "spec").unwrap();
        assert_eq!(first.name(), "spec");
        let mode = std::fs::metadata(first.path()).unwrap().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(find_run_in(d, None).unwrap(), first.path());
        let second = ControlSocket::bind_in(d, "spec").unwrap();
        assert_eq!(second.name(), "spec-2");
        assert!(first.path().exists(), "the first run keeps its socket");
        let err = find_run_in(d, None).unwrap_err().to_string();
        assert!(err.contains("2 runs are live: spec, spec-2"), "{err}");
        assert_eq!(find_run_in(d, Some("spec-2")).unwrap(), second.path());
        let err = find_run_in(d, Some("other")).unwrap_err().to_string();
        assert!(err.contains("no live run named `other`"), "{err}");
        drop(first);
        assert_eq!(find_run_in(d, None).unwrap(), second.path());
        // The freed name is taken again.
        assert_eq!(ControlSocket::bind_in(d, "spec").unwrap().name(), "spec");
    }
}

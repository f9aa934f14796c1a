//! Host side of the agent protocol: one connection task owns the socket and routes
//! frames by stream id; each command waits on its own channel.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Buf, BytesMut};
use flotilla_agent::proto::{
    self, Decoded, ErrorBody, ExecRequest, ExitStatus, FileDone, FileInfo, FilePull, FilePush,
    Frame, Hello, HelloReply, Kind, NetConfig, ShutdownRequest,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;
use tokio::sync::mpsc;

/// Why a call to the agent failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AgentError {
    #[error("connecting to the agent at {path}")]
    Connect {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the agent connection closed")]
    Closed,
    #[error("the agent speaks protocol version {agent}, this driver speaks {host}")]
    Version { agent: u32, host: u32 },
    #[error("the agent answered with an unexpected {0:?} frame")]
    Unexpected(Kind),
    #[error("the agent reported: {0}")]
    Remote(String),
    #[error("bad reply from the agent")]
    Decode(#[source] proto::ProtoError),
    #[error("{path}")]
    Local {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("no answer from the agent within {0:?}")]
    Timeout(Duration),
}

type Routes = Arc<Mutex<HashMap<u32, mpsc::UnboundedSender<Frame>>>>;

/// A connected, handshaken agent.
#[derive(Debug)]
pub struct AgentConn {
    writer: mpsc::Sender<Vec<u8>>,
    routes: Routes,
    next_stream: AtomicU32,
    pub hello: HelloReply,
}

/// The output of a finished command.
#[derive(Debug, Clone)]
pub struct ExecOutput {
    pub status: ExitStatus,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

impl AgentConn {
    /// Connects to the agent's socket and performs the version handshake.
    pub async fn connect(path: &Path, timeout: Duration) -> Result<AgentConn, AgentError> {
        let stream = UnixStream::connect(path)
            .await
            .map_err(|source| AgentError::Connect {
                path: path.display().to_string(),
                source,
            })?;
        let (mut rd, mut wr) = stream.into_split();
        let routes: Routes = Arc::default();
        // Bounded: a large push waits for the socket instead of filling memory.
        let (writer, mut write_rx) = mpsc::channel::<Vec<u8>>(64);
        tokio::spawn(async move {
            while let Some(bytes) = write_rx.recv().await {
                if wr.write_all(&bytes).await.is_err() {
                    break;
                }
            }
        });
        let (control_tx, control_rx) = mpsc::unbounded_channel::<Frame>();
        routes
            .lock()
            .map_err(|_| AgentError::Closed)?
            .insert(0, control_tx);
        let task_routes = routes.clone();
        tokio::spawn(async move {
            let mut buf = BytesMut::with_capacity(64 * 1024);
            'read: loop {
                match rd.read_buf(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
                loop {
                    match proto::decode(&buf) {
                        Decoded::Frame(frame, used) => {
                            buf.advance(used);
                            let Ok(routes) = task_routes.lock() else {
                                break 'read;
                            };
                            if let Some(tx) = routes.get(&frame.stream) {
                                let _ = tx.send(frame);
                            } else {
                                tracing::debug!("agent frame for unknown stream {}", frame.stream);
                            }
                        }
                        Decoded::Incomplete => break,
                        Decoded::Skip(n) => {
                            tracing::warn!("skipping {n} bytes of garbage from the agent");
                            buf.advance(n);
                        }
                        Decoded::Invalid {
                            consumed, error, ..
                        } => {
                            tracing::warn!("invalid frame from the agent: {error}");
                            buf.advance(consumed);
                        }
                    }
                }
            }
            // Dropping every sender wakes every waiter with "closed".
            if let Ok(mut routes) = task_routes.lock() {
                routes.clear();
            }
        });
        let mut conn = AgentConn {
            writer,
            routes,
            next_stream: AtomicU32::new(1),
            hello: HelloReply {
                version: 0,
                agent_version: String::new(),
                boot_ms: 0,
                features: Vec::new(),
            },
        };
        let mut control = control_rx;
        conn.send(&Frame::json(
            Kind::Hello,
            0,
            &Hello {
                version: proto::PROTOCOL_VERSION,
            },
        ))
        .await?;
        // Hello again every 2 s until the agent answers: a Hello sent in the instant
        // the host side connects has been seen to go unanswered on a loaded machine;
        // a repeated Hello is harmless (it restarts the session, and a late second
        // reply is ignored).
        let deadline = tokio::time::Instant::now() + timeout;
        let reply = loop {
            let wait = deadline
                .saturating_duration_since(tokio::time::Instant::now())
                .min(Duration::from_secs(2));
            match tokio::time::timeout(wait, control.recv()).await {
                Ok(reply) => break reply.ok_or(AgentError::Closed)?,
                Err(_) if tokio::time::Instant::now() >= deadline => {
                    return Err(AgentError::Timeout(timeout))
                }
                Err(_) => {
                    tracing::debug!("no HelloReply yet; saying Hello again");
                    conn.send(&Frame::json(
                        Kind::Hello,
                        0,
                        &Hello {
                            version: proto::PROTOCOL_VERSION,
                        },
                    ))
                    .await?;
                }
            }
        };
        match reply.kind {
            Kind::HelloReply => {
                let hello: HelloReply = reply.parse_json().map_err(AgentError::Decode)?;
                if hello.version != proto::PROTOCOL_VERSION {
                    return Err(AgentError::Version {
                        agent: hello.version,
                        host: proto::PROTOCOL_VERSION,
                    });
                }
                conn.hello = hello;
            }
            Kind::Error => return Err(remote_error(&reply)),
            other => return Err(AgentError::Unexpected(other)),
        }
        // Later control frames (errors about garbage, shutdown acks) are logged.
        tokio::spawn(async move {
            while let Some(frame) = control.recv().await {
                if frame.kind == Kind::Error {
                    tracing::warn!("{}", remote_error(&frame));
                }
            }
        });
        Ok(conn)
    }

    async fn send(&self, frame: &Frame) -> Result<(), AgentError> {
        self.writer
            .send(frame.to_bytes())
            .await
            .map_err(|_| AgentError::Closed)
    }

    /// For `Drop`: best effort, never waits.
    fn try_send(&self, frame: &Frame) {
        let _ = self.writer.try_send(frame.to_bytes());
    }

    fn open_stream(&self) -> Result<(u32, mpsc::UnboundedReceiver<Frame>), AgentError> {
        let id = self.next_stream.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = mpsc::unbounded_channel();
        let mut routes = self.routes.lock().map_err(|_| AgentError::Closed)?;
        // An empty route table means the connection task has ended.
        if routes.is_empty() {
            return Err(AgentError::Closed);
        }
        routes.insert(id, tx);
        Ok((id, rx))
    }

    fn close_stream(&self, id: u32) {
        if let Ok(mut routes) = self.routes.lock() {
            routes.remove(&id);
        }
    }

    /// Runs a command to completion. `on_output` sees stdout/stderr chunks as they come
    /// (`true` for stderr). Dropping the future kills the command in the guest.
    pub async fn exec(
        &self,
        request: &ExecRequest,
        mut on_output: impl FnMut(bool, &[u8]),
    ) -> Result<ExecOutput, AgentError> {
        let (id, mut rx) = self.open_stream()?;
        let mut guard = StreamGuard {
            conn: self,
            id,
            finished: false,
        };
        self.send(&Frame::json(Kind::Exec, id, request)).await?;
        let mut stdout = Vec::new();
        let mut stderr = Vec::new();
        while let Some(frame) = rx.recv().await {
            match frame.kind {
                Kind::Stdout => {
                    on_output(false, &frame.payload);
                    stdout.extend_from_slice(&frame.payload);
                }
                Kind::Stderr => {
                    on_output(true, &frame.payload);
                    stderr.extend_from_slice(&frame.payload);
                }
                Kind::Exit => {
                    guard.finished = true;
                    let status = frame.parse_json().map_err(AgentError::Decode)?;
                    return Ok(ExecOutput {
                        status,
                        stdout,
                        stderr,
                    });
                }
                Kind::Error => {
                    guard.finished = true;
                    return Err(remote_error(&frame));
                }
                other => return Err(AgentError::Unexpected(other)),
            }
        }
        Err(AgentError::Closed)
    }

    /// Starts a command whose input, terminal size and output the caller handles
    /// ([`ExecSession`]); dropping the session kills the command.
    pub async fn start(&self, request: &ExecRequest) -> Result<ExecSession, AgentError> {
        let (id, rx) = self.open_stream()?;
        let session = ExecSession {
            id,
            writer: self.writer.clone(),
            routes: self.routes.clone(),
            rx,
            exited: false,
        };
        session.send(Frame::json(Kind::Exec, id, request)).await?;
        Ok(session)
    }

    /// Whether the agent listed `feature` (e.g. [`proto::FEATURE_NET_CONFIG`]) in its
    /// HelloReply.
    pub fn has_feature(&self, feature: &str) -> bool {
        self.hello.features.iter().any(|f| f == feature)
    }

    /// Configures the guest's network without a process (needs
    /// [`proto::FEATURE_NET_CONFIG`]; older agents answer an error).
    pub async fn net_config(&self, config: &NetConfig) -> Result<(), AgentError> {
        let (id, mut rx) = self.open_stream()?;
        let mut guard = StreamGuard {
            conn: self,
            id,
            finished: false,
        };
        self.send(&Frame::json(Kind::NetConfig, id, config)).await?;
        let frame = rx.recv().await.ok_or(AgentError::Closed)?;
        guard.finished = true;
        match frame.kind {
            Kind::NetConfigDone => Ok(()),
            Kind::Error => Err(remote_error(&frame)),
            other => Err(AgentError::Unexpected(other)),
        }
    }

    /// Asks the guest to power off (or reboot). The caller waits for QEMU to exit.
    pub async fn shutdown(&self, reboot: bool) -> Result<(), AgentError> {
        self.send(&Frame::json(Kind::Shutdown, 0, &ShutdownRequest { reboot }))
            .await
    }

    /// Copies the host file `local` to `remote` in the guest (parents created), keeping
    /// `mode`; streamed in chunks. Returns the bytes written.
    pub async fn push_file(
        &self,
        local: &Path,
        remote: &str,
        mode: u32,
    ) -> Result<u64, AgentError> {
        let mut file = tokio::fs::File::open(local)
            .await
            .map_err(|source| AgentError::Local {
                path: local.display().to_string(),
                source,
            })?;
        let (id, mut rx) = self.open_stream()?;
        let mut guard = StreamGuard {
            conn: self,
            id,
            finished: false,
        };
        let push = FilePush {
            path: remote.to_owned(),
            mode,
            create_dirs: true,
        };
        self.send(&Frame::json(Kind::FilePush, id, &push)).await?;
        let mut buf = vec![0u8; proto::MAX_CHUNK];
        loop {
            // An early error from the agent (say, a read-only path) ends the push.
            if let Ok(frame) = rx.try_recv() {
                guard.finished = true;
                return Err(match frame.kind {
                    Kind::Error => remote_error(&frame),
                    other => AgentError::Unexpected(other),
                });
            }
            let n = file
                .read(&mut buf)
                .await
                .map_err(|source| AgentError::Local {
                    path: local.display().to_string(),
                    source,
                })?;
            if n == 0 {
                break;
            }
            self.send(&Frame::new(Kind::FileData, id, buf[..n].to_vec()))
                .await?;
        }
        self.send(&Frame::new(Kind::FileEnd, id, Vec::new()))
            .await?;
        let frame = rx.recv().await.ok_or(AgentError::Closed)?;
        guard.finished = true;
        match frame.kind {
            Kind::FileDone => Ok(frame
                .parse_json::<FileDone>()
                .map_err(AgentError::Decode)?
                .size),
            Kind::Error => Err(remote_error(&frame)),
            other => Err(AgentError::Unexpected(other)),
        }
    }

    /// Copies `remote` from the guest to the host file `local` (written whole, then
    /// renamed into place), streamed. Returns the size and the guest file's mode.
    pub async fn pull_file(&self, remote: &str, local: &Path) -> Result<(u64, u32), AgentError> {
        let (id, mut rx) = self.open_stream()?;
        let mut guard = StreamGuard {
            conn: self,
            id,
            finished: false,
        };
        let pull = FilePull {
            path: remote.to_owned(),
        };
        self.send(&Frame::json(Kind::FilePull, id, &pull)).await?;
        let local_err = |source| AgentError::Local {
            path: local.display().to_string(),
            source,
        };
        let first = rx.recv().await.ok_or(AgentError::Closed)?;
        let info: FileInfo = match first.kind {
            Kind::FileInfo => first.parse_json().map_err(AgentError::Decode)?,
            Kind::Error => {
                guard.finished = true;
                return Err(remote_error(&first));
            }
            other => return Err(AgentError::Unexpected(other)),
        };
        if let Some(parent) = local.parent() {
            tokio::fs::create_dir_all(parent).await.map_err(local_err)?;
        }
        let partial = local.with_extension("flotilla-partial");
        let mut file = tokio::fs::File::create(&partial).await.map_err(local_err)?;
        let mut size = 0u64;
        loop {
            let frame = rx.recv().await.ok_or(AgentError::Closed)?;
            match frame.kind {
                Kind::FileData => {
                    size += frame.payload.len() as u64;
                    file.write_all(&frame.payload).await.map_err(local_err)?;
                }
                Kind::FileEnd => break,
                Kind::Error => {
                    guard.finished = true;
                    let _ = tokio::fs::remove_file(&partial).await;
                    return Err(remote_error(&frame));
                }
                other => return Err(AgentError::Unexpected(other)),
            }
        }
        guard.finished = true;
        file.flush().await.map_err(local_err)?;
        drop(file);
        let perms = std::os::unix::fs::PermissionsExt::from_mode(info.mode & 0o7777);
        tokio::fs::set_permissions(&partial, perms)
            .await
            .map_err(local_err)?;
        tokio::fs::rename(&partial, local)
            .await
            .map_err(local_err)?;
        Ok((size, info.mode))
    }
}

/// What a command started with [`AgentConn::start`] produced.
#[derive(Debug)]
pub enum ExecEvent {
    Stdout(Vec<u8>),
    Stderr(Vec<u8>),
    /// The command ended; nothing follows.
    Exit(ExitStatus),
}

/// A running command; see [`AgentConn::start`]. Dropping it kills the command.
#[derive(Debug)]
pub struct ExecSession {
    id: u32,
    writer: mpsc::Sender<Vec<u8>>,
    routes: Routes,
    rx: mpsc::UnboundedReceiver<Frame>,
    exited: bool,
}

impl ExecSession {
    async fn send(&self, frame: Frame) -> Result<(), AgentError> {
        self.writer
            .send(frame.to_bytes())
            .await
            .map_err(|_| AgentError::Closed)
    }

    /// Feeds the command's stdin (the request asked for `stdin`).
    pub async fn write_stdin(&self, data: &[u8]) -> Result<(), AgentError> {
        for chunk in data.chunks(proto::MAX_CHUNK) {
            self.send(Frame::new(Kind::Stdin, self.id, chunk.to_vec()))
                .await?;
        }
        Ok(())
    }

    /// Closes the command's stdin (on a terminal: stops input only).
    pub async fn close_stdin(&self) -> Result<(), AgentError> {
        self.send(Frame::new(Kind::StdinClose, self.id, Vec::new()))
            .await
    }

    /// Resizes the command's terminal (the request asked for `pty`).
    pub async fn resize(&self, size: proto::WindowSize) -> Result<(), AgentError> {
        self.send(Frame::json(Kind::Resize, self.id, &size)).await
    }

    /// The next output, or the exit. After [`ExecEvent::Exit`] or an error, the
    /// session is over.
    pub async fn next(&mut self) -> Result<ExecEvent, AgentError> {
        if self.exited {
            return Err(AgentError::Closed);
        }
        let frame = self.rx.recv().await.ok_or(AgentError::Closed)?;
        match frame.kind {
            Kind::Stdout => Ok(ExecEvent::Stdout(frame.payload)),
            Kind::Stderr => Ok(ExecEvent::Stderr(frame.payload)),
            Kind::Exit => {
                self.exited = true;
                Ok(ExecEvent::Exit(
                    frame.parse_json().map_err(AgentError::Decode)?,
                ))
            }
            Kind::Error => Err(remote_error(&frame)),
            other => Err(AgentError::Unexpected(other)),
        }
    }
}

impl Drop for ExecSession {
    fn drop(&mut self) {
        if !self.exited {
            let _ = self
                .writer
                .try_send(Frame::new(Kind::Kill, self.id, Vec::new()).to_bytes());
        }
        if let Ok(mut routes) = self.routes.lock() {
            routes.remove(&self.id);
        }
    }
}

struct StreamGuard<'a> {
    conn: &'a AgentConn,
    id: u32,
    finished: bool,
}

impl Drop for StreamGuard<'_> {
    fn drop(&mut self) {
        if !self.finished {
            self.conn
                .try_send(&Frame::new(Kind::Kill, self.id, Vec::new()));
        }
        self.conn.close_stream(self.id);
    }
}

fn remote_error(frame: &Frame) -> AgentError {
    match frame.parse_json::<ErrorBody>() {
        Ok(body) => AgentError::Remote(body.message),
        Err(e) => AgentError::Decode(e),
    }
}

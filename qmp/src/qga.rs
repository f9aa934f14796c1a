//! The guest agent's dialect of QMP (QGA), spoken by `qemu-ga` inside a guest.
//!
//! Differences from QMP that shape this module:
//! - no greeting and no capability negotiation;
//! - no events, and the agent runs one command at a time, so calls are
//!   serialized over one connection instead of multiplexed;
//! - the channel (a virtio-serial port) outlives both ends: replies to a command
//!   whose caller gave up can arrive much later, and a guest reboot can leave a
//!   half-written line. Before the first command, and after any timeout,
//!   cancellation or garbage, the client resynchronizes with
//!   `guest-sync-delimited`: it sends a `0xFF` byte (which resets the agent's
//!   parser) and a random id; the agent answers with `0xFF` followed by that id,
//!   and everything before it is discarded.
//!
//! ```no_run
//! use std::time::Duration;
//! use flotilla_qmp::qga::GuestAgent;
//!
//! # async fn run() -> Result<(), flotilla_qmp::Error> {
//! // QEMU: -chardev socket,id=qga0,path=/tmp/vm/qga.sock,server=on,wait=off
//! //       -device virtio-serial -device virtserialport,chardev=qga0,name=org.qemu.guest_agent.0
//! let agent = GuestAgent::connect_unix("/tmp/vm/qga.sock").await?;
//! agent.wait_ready(Duration::from_secs(60)).await?;
//! let out = agent.run("/bin/uname", &["-r"], Duration::from_secs(10)).await?;
//! println!("guest kernel {}", String::from_utf8_lossy(&out.stdout));
//! # Ok(())
//! # }
//! ```

use std::fmt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::{BufMut, BytesMut};
use futures::{SinkExt, StreamExt};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::Mutex;
use tokio_util::codec::{Decoder, Encoder, Framed};
use tracing::{debug, warn};

use crate::base64;
use crate::codec::{
    end_of_stream, parse_message, Message, Outgoing, QmpCodec, DEFAULT_MAX_LINE_LEN,
};
use crate::commands::{self, command, no_arg_command, Command, Empty};
use crate::error::{snippet, Error};
use crate::socket::connect_socket;
use crate::timeout::{within, within_since};

/// The byte QGA uses to delimit a sync reply (and to reset its parser).
pub(crate) const DELIMITER: u8 = 0xFF;

/// Default time allowed for one agent command, sync included.
pub(crate) const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// What the QGA decoder yields.
#[derive(Debug)]
pub(crate) enum QgaFrame {
    /// A `0xFF` byte: whatever came before it was discarded.
    Delimiter,
    /// A well-formed message.
    Message(Message),
    /// A line that is not a QGA message; not fatal (the client resyncs).
    Invalid(Error),
}

/// Codec for QGA: newline-separated JSON plus `0xFF` delimiters.
#[derive(Debug, Clone)]
pub(crate) struct QgaCodec {
    max_line_len: usize,
}

impl Default for QgaCodec {
    fn default() -> Self {
        Self {
            max_line_len: DEFAULT_MAX_LINE_LEN,
        }
    }
}

impl QgaCodec {
    /// A codec accepting lines up to `max_line_len` bytes.
    pub(crate) fn with_max_line_len(max_line_len: usize) -> Self {
        Self { max_line_len }
    }
}

/// A command for [`QgaCodec`]'s encoder, optionally preceded by [`DELIMITER`].
#[derive(Debug, Clone)]
pub(crate) struct QgaRequest {
    /// The command.
    pub(crate) command: Outgoing,
    /// Send `0xFF` first (for `guest-sync-delimited`).
    pub(crate) delimit: bool,
}

impl Decoder for QgaCodec {
    type Item = QgaFrame;
    type Error = Error;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<QgaFrame>, Error> {
        loop {
            let Some(pos) = src.iter().position(|&b| b == b'\n' || b == DELIMITER) else {
                if src.len() > self.max_line_len.saturating_add(1) {
                    return Err(Error::LineTooLong {
                        limit: self.max_line_len,
                    });
                }
                return Ok(None);
            };
            if src[pos] == DELIMITER {
                let junk = src.split_to(pos + 1);
                if junk.len() > 1 && !junk[..pos].iter().all(u8::is_ascii_whitespace) {
                    debug!(junk = %snippet(&junk[..pos]), "discarded bytes before a qga delimiter");
                }
                return Ok(Some(QgaFrame::Delimiter));
            }
            let mut line = src.split_to(pos + 1);
            line.truncate(pos);
            if line.last() == Some(&b'\r') {
                line.truncate(line.len() - 1);
            }
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            if line.len() > self.max_line_len {
                return Err(Error::LineTooLong {
                    limit: self.max_line_len,
                });
            }
            return Ok(Some(match parse_message(&line) {
                Ok(m) => QgaFrame::Message(m),
                Err(e) => QgaFrame::Invalid(e),
            }));
        }
    }

    fn decode_eof(&mut self, src: &mut BytesMut) -> Result<Option<QgaFrame>, Error> {
        if let Some(frame) = self.decode(src)? {
            return Ok(Some(frame));
        }
        end_of_stream(src).map(|()| None)
    }
}

impl Encoder<&QgaRequest> for QgaCodec {
    type Error = Error;

    fn encode(&mut self, item: &QgaRequest, dst: &mut BytesMut) -> Result<(), Error> {
        if item.delimit {
            dst.put_u8(DELIMITER);
        }
        QmpCodec::new().encode(&item.command, dst)
    }
}

trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

struct State {
    framed: Framed<Box<dyn Stream>, QgaCodec>,
    /// True when the stream is known to hold nothing but replies to come for
    /// commands we send from now on.
    synced: bool,
    /// True after EOF or an I/O error.
    closed: bool,
}

/// A client for the guest agent. Cheap to clone; calls are serialized.
#[derive(Clone)]
pub struct GuestAgent {
    state: Arc<Mutex<State>>,
    next_id: Arc<AtomicU64>,
    timeout: Duration,
}

impl fmt::Debug for GuestAgent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GuestAgent")
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

/// Commands the agent does not answer on success.
const NO_SUCCESS_REPLY: [&str; 4] = [
    "guest-shutdown",
    "guest-suspend-disk",
    "guest-suspend-ram",
    "guest-suspend-hybrid",
];

impl GuestAgent {
    /// Wraps a connected stream. No I/O happens until the first call, which
    /// synchronizes first.
    pub fn new<S>(stream: S) -> GuestAgent
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let boxed: Box<dyn Stream> = Box::new(stream);
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1)
            ^ u64::from(std::process::id()) << 32;
        GuestAgent {
            state: Arc::new(Mutex::new(State {
                framed: Framed::new(boxed, QgaCodec::default()),
                synced: false,
                closed: false,
            })),
            // Ids stay below 2^53 so that any JSON implementation keeps them exact.
            next_id: Arc::new(AtomicU64::new(seed & ((1 << 40) - 1))),
            timeout: DEFAULT_TIMEOUT,
        }
    }

    /// Connects to the host end of the agent's channel (QEMU's chardev socket, or
    /// `qemu-ga -m unix-listen`). Does not wait for the agent: see
    /// [`GuestAgent::wait_ready`].
    pub async fn connect_unix(path: impl AsRef<Path>) -> Result<GuestAgent, Error> {
        let stream = connect_socket(path.as_ref()).await?;
        Ok(Self::new(stream))
    }

    /// The same agent with another per-call timeout (default 30 s).
    pub fn with_timeout(mut self, timeout: Duration) -> GuestAgent {
        self.timeout = timeout;
        self
    }

    /// Synchronizes with the agent: after this, the stream holds no stale replies.
    pub async fn sync(&self, timeout: Duration) -> Result<(), Error> {
        let mut state = self.state.lock().await;
        self.sync_locked(&mut state, timeout).await
    }

    /// Retries [`GuestAgent::sync`] (1 s per try) until the agent answers or
    /// `within` passes: the agent starts late in the guest's boot.
    pub async fn wait_ready(&self, within: Duration) -> Result<(), Error> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let attempt = left.min(Duration::from_secs(1));
            match self.sync(attempt).await {
                Ok(()) => return Ok(()),
                Err(Error::Timeout { .. }) if !left.is_zero() => continue,
                Err(Error::Timeout { .. }) => {
                    return Err(Error::Timeout {
                        command: "guest-sync-delimited".to_owned(),
                        after: within,
                    })
                }
                Err(e) => return Err(e),
            }
        }
    }

    async fn sync_locked(&self, state: &mut State, timeout: Duration) -> Result<(), Error> {
        if state.closed {
            return Err(Error::Disconnected);
        }
        state.synced = false;
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let request = QgaRequest {
            command: Outgoing {
                command: "guest-sync-delimited".to_owned(),
                arguments: Some(json!({ "id": id })),
                id: None,
                oob: false,
            },
            delimit: true,
        };
        let exchange = async {
            send(state, &request).await?;
            let mut after_delimiter = false;
            loop {
                match next(state).await? {
                    QgaFrame::Delimiter => after_delimiter = true,
                    QgaFrame::Message(Message::Return { value, .. })
                        if after_delimiter && value.as_u64() == Some(id) =>
                    {
                        return Ok::<(), Error>(());
                    }
                    QgaFrame::Message(m) => {
                        debug!(message = ?m, "discarded while syncing with the agent");
                        after_delimiter = false;
                    }
                    QgaFrame::Invalid(e) => {
                        debug!(error = %e, "discarded while syncing with the agent");
                        after_delimiter = false;
                    }
                }
            }
        };
        within("guest-sync-delimited", timeout, exchange).await?;
        state.synced = true;
        Ok(())
    }

    /// Runs `command` with the default timeout.
    pub async fn execute_raw(
        &self,
        command: &str,
        arguments: Option<Value>,
    ) -> Result<Value, Error> {
        self.execute_raw_timeout(command, arguments, self.timeout)
            .await
    }

    /// Runs `command`, syncing first if needed; the whole exchange is bounded by
    /// `timeout`. A timeout or a dropped future leaves the connection usable: the
    /// next call resyncs and the late reply is discarded.
    pub async fn execute_raw_timeout(
        &self,
        command: &str,
        arguments: Option<Value>,
        timeout: Duration,
    ) -> Result<Value, Error> {
        let start = tokio::time::Instant::now();
        let mut state = self.state.lock().await;
        if !state.synced {
            self.sync_locked(&mut state, timeout).await?;
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let request = QgaRequest {
            command: Outgoing {
                command: command.to_owned(),
                arguments,
                id: Some(json!(id)),
                oob: false,
            },
            delimit: false,
        };
        // Until the reply is read the stream may hold a reply nobody wants.
        state.synced = false;
        let no_reply = NO_SUCCESS_REPLY.contains(&command);
        let exchange = async {
            send(&mut state, &request).await?;
            loop {
                match next(&mut state).await {
                    Ok(QgaFrame::Message(Message::Return { id: rid, value }))
                        if rid.is_none() || rid == Some(json!(id)) =>
                    {
                        return Ok(value);
                    }
                    Ok(QgaFrame::Message(Message::Error { id: rid, error }))
                        if rid.is_none() || rid == Some(json!(id)) =>
                    {
                        return Err(Error::Qmp {
                            command: command.to_owned(),
                            class: error.class,
                            desc: error.desc,
                        });
                    }
                    Ok(QgaFrame::Message(m)) => debug!(message = ?m, "stale agent reply discarded"),
                    Ok(QgaFrame::Delimiter) => {}
                    Ok(QgaFrame::Invalid(e)) => warn!(error = %e, "garbage from the agent"),
                    // The guest powering off closes the channel: success.
                    Err(Error::Disconnected) if no_reply => return Ok(Value::Null),
                    Err(e) => return Err(e),
                }
            }
        };
        let result = if no_reply {
            // Success means silence; give an error reply a moment to arrive.
            tokio::time::timeout(timeout.min(Duration::from_secs(1)), exchange)
                .await
                .unwrap_or(Ok(Value::Null))
        } else {
            // The time spent syncing counts too.
            within_since(command, start, timeout, exchange).await
        };
        match &result {
            Ok(_) => state.synced = !no_reply,
            Err(Error::Qmp { .. }) => state.synced = true,
            Err(_) => {}
        }
        result
    }

    /// Runs a typed agent command.
    pub async fn execute<C: Command>(&self, cmd: &C) -> Result<C::Output, Error> {
        let arguments = commands::arguments(cmd)?;
        let value = self.execute_raw(C::NAME, arguments).await?;
        if NO_SUCCESS_REPLY.contains(&C::NAME) && value.is_null() {
            return commands::output::<C>(json!({}));
        }
        commands::output::<C>(value)
    }

    /// `guest-ping`.
    pub async fn ping(&self) -> Result<(), Error> {
        self.execute(&GuestPing {}).await.map(drop)
    }

    /// `guest-info`: agent version and commands.
    pub async fn info(&self) -> Result<GuestAgentInfo, Error> {
        self.execute(&GuestInfo {}).await
    }

    /// `guest-exec` of `path` with `args`, capturing output; returns the pid.
    pub async fn exec(&self, path: &str, args: &[&str]) -> Result<i64, Error> {
        let cmd = GuestExec {
            path: path.to_owned(),
            arg: Some(args.iter().map(|a| (*a).to_owned()).collect()),
            env: None,
            input_data: None,
            capture_output: Some(true),
        };
        Ok(self.execute(&cmd).await?.pid)
    }

    /// `guest-exec-status` of `pid`.
    pub async fn exec_status(&self, pid: i64) -> Result<GuestExecStatus, Error> {
        self.execute(&GuestExecStatusCmd { pid }).await
    }

    /// Runs a program to completion (polling `guest-exec-status`) and returns
    /// its exit status and decoded output.
    pub async fn run(
        &self,
        path: &str,
        args: &[&str],
        timeout: Duration,
    ) -> Result<ExecOutput, Error> {
        let pid = self.exec(path, args).await?;
        let deadline = tokio::time::Instant::now() + timeout;
        let mut pause = Duration::from_millis(5);
        loop {
            let status = self.exec_status(pid).await?;
            if status.exited {
                return status.output();
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(Error::Timeout {
                    command: format!("guest-exec {path}"),
                    after: timeout,
                });
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(200));
        }
    }

    /// Reads a whole file from the guest (`guest-file-open`/`read`/`close`).
    pub async fn read_file(&self, path: &str) -> Result<Vec<u8>, Error> {
        let handle = self
            .execute(&GuestFileOpen {
                path: path.to_owned(),
                mode: Some("r".into()),
            })
            .await?;
        let result = async {
            let mut data = Vec::new();
            loop {
                let chunk = self
                    .execute(&GuestFileRead {
                        handle,
                        count: Some(1 << 20),
                    })
                    .await?;
                data.extend(chunk.bytes()?);
                if chunk.eof || chunk.count == 0 {
                    return Ok::<_, Error>(data);
                }
            }
        }
        .await;
        let closed = self.execute(&GuestFileClose { handle }).await;
        let data = result?;
        closed?;
        Ok(data)
    }

    /// Writes (creates or truncates) a file in the guest.
    pub async fn write_file(&self, path: &str, data: &[u8]) -> Result<(), Error> {
        let handle = self
            .execute(&GuestFileOpen {
                path: path.to_owned(),
                mode: Some("w".into()),
            })
            .await?;
        let result = async {
            for chunk in data.chunks(1 << 20) {
                let cmd = GuestFileWrite {
                    handle,
                    buf_b64: base64::encode(chunk),
                    count: None,
                };
                let written = self.execute(&cmd).await?;
                if written.count != chunk.len() as i64 {
                    return Err(Error::InvalidReply {
                        command: GuestFileWrite::NAME.to_owned(),
                        reason: format!("wrote {} of {} bytes", written.count, chunk.len()),
                    });
                }
            }
            self.execute(&GuestFileFlush { handle }).await.map(drop)
        }
        .await;
        let closed = self.execute(&GuestFileClose { handle }).await;
        result?;
        closed.map(drop)
    }

    /// `guest-shutdown` (`powerdown`, `halt` or `reboot`; `None` = powerdown).
    /// The agent does not answer on success; an error reply within a second is
    /// reported.
    pub async fn shutdown(&self, mode: Option<&str>) -> Result<(), Error> {
        self.execute(&GuestShutdown {
            mode: mode.map(str::to_owned),
        })
        .await
        .map(drop)
    }

    /// `guest-network-get-interfaces`.
    pub async fn network_interfaces(&self) -> Result<Vec<GuestNetworkInterface>, Error> {
        self.execute(&GuestNetworkGetInterfaces {}).await
    }
}

async fn send(state: &mut State, request: &QgaRequest) -> Result<(), Error> {
    match state.framed.send(request).await {
        Ok(()) => Ok(()),
        Err(e @ Error::Io(_)) => {
            state.closed = true;
            debug!(error = %e, "agent connection lost");
            Err(Error::Disconnected)
        }
        Err(e) => Err(e),
    }
}

async fn next(state: &mut State) -> Result<QgaFrame, Error> {
    match state.framed.next().await {
        Some(Ok(frame)) => Ok(frame),
        Some(Err(e)) if e.is_connection_lost() => {
            state.closed = true;
            debug!(error = %e, "agent connection lost");
            Err(Error::Disconnected)
        }
        Some(Err(e)) => {
            state.closed = true;
            Err(Error::Protocol(Arc::new(e)))
        }
        None => {
            state.closed = true;
            Err(Error::Disconnected)
        }
    }
}

no_arg_command!(
    /// `guest-ping`.
    GuestPing, "guest-ping", Empty
);

no_arg_command!(
    /// `guest-info`.
    GuestInfo, "guest-info", GuestAgentInfo
);

/// The reply of `guest-info`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GuestAgentInfo {
    /// Agent version.
    pub version: String,
    /// Every command and whether it is enabled.
    pub supported_commands: Vec<GuestAgentCommandInfo>,
}

/// One entry of [`GuestAgentInfo::supported_commands`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GuestAgentCommandInfo {
    /// Command name.
    pub name: String,
    /// False when blocked with `qemu-ga -b`.
    pub enabled: bool,
    /// False for commands that do not answer on success.
    #[serde(rename = "success-response")]
    pub success_response: bool,
}

/// `guest-exec`: start a program in the guest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct GuestExec {
    /// Program path.
    pub path: String,
    /// Arguments (without argv\[0\]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arg: Option<Vec<String>>,
    /// Environment, `NAME=value` entries.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env: Option<Vec<String>>,
    /// Standard input, base64.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input_data: Option<String>,
    /// Capture stdout and stderr.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capture_output: Option<bool>,
}
command!(GuestExec, "guest-exec", GuestExecPid);

/// The reply of `guest-exec`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct GuestExecPid {
    /// Guest process id.
    pub pid: i64,
}

/// `guest-exec-status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct GuestExecStatusCmd {
    /// Process id from `guest-exec`.
    pub pid: i64,
}
command!(GuestExecStatusCmd, "guest-exec-status", GuestExecStatus);

/// The reply of `guest-exec-status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct GuestExecStatus {
    /// Whether the process has finished.
    pub exited: bool,
    /// Exit code, if it exited normally.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exitcode: Option<i64>,
    /// Signal number, if it was killed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signal: Option<i64>,
    /// Captured stdout, base64.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub out_data: Option<String>,
    /// Captured stderr, base64.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub err_data: Option<String>,
    /// Stdout was cut (the agent keeps at most 16 MiB).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub out_truncated: Option<bool>,
    /// Stderr was cut.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub err_truncated: Option<bool>,
}

/// A finished guest process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecOutput {
    /// Exit code, if it exited normally.
    pub exitcode: Option<i64>,
    /// Signal number, if it was killed.
    pub signal: Option<i64>,
    /// Decoded stdout.
    pub stdout: Vec<u8>,
    /// Decoded stderr.
    pub stderr: Vec<u8>,
    /// Whether stdout or stderr was cut by the agent.
    pub truncated: bool,
}

impl ExecOutput {
    /// Exit code 0.
    pub fn success(&self) -> bool {
        self.exitcode == Some(0)
    }
}

impl GuestExecStatus {
    /// Decodes the captured output.
    pub fn output(&self) -> Result<ExecOutput, Error> {
        let decode = |data: &Option<String>| match data {
            None => Ok(Vec::new()),
            Some(text) => base64::decode(text).ok_or_else(|| Error::InvalidReply {
                command: "guest-exec-status".to_owned(),
                reason: format!("output is not base64: {}", snippet(text.as_bytes())),
            }),
        };
        Ok(ExecOutput {
            exitcode: self.exitcode,
            signal: self.signal,
            stdout: decode(&self.out_data)?,
            stderr: decode(&self.err_data)?,
            truncated: self.out_truncated == Some(true) || self.err_truncated == Some(true),
        })
    }
}

/// `guest-file-open`: returns a handle.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GuestFileOpen {
    /// Guest path.
    pub path: String,
    /// `fopen` mode (`r` by default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
}
command!(GuestFileOpen, "guest-file-open", i64);

/// `guest-file-read`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct GuestFileRead {
    /// Handle from `guest-file-open`.
    pub handle: i64,
    /// Maximum bytes (agent default 4 KiB, limit 48 MiB).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count: Option<i64>,
}
command!(GuestFileRead, "guest-file-read", GuestFileReadResult);

/// The reply of `guest-file-read`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GuestFileReadResult {
    /// Bytes read.
    pub count: i64,
    /// The data, base64.
    #[serde(rename = "buf-b64")]
    pub buf_b64: String,
    /// End of file reached.
    pub eof: bool,
}

impl GuestFileReadResult {
    /// The decoded data.
    pub fn bytes(&self) -> Result<Vec<u8>, Error> {
        base64::decode(&self.buf_b64).ok_or_else(|| Error::InvalidReply {
            command: GuestFileRead::NAME.to_owned(),
            reason: "buf-b64 is not base64".to_owned(),
        })
    }
}

/// `guest-file-write`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GuestFileWrite {
    /// Handle from `guest-file-open`.
    pub handle: i64,
    /// The data, base64.
    #[serde(rename = "buf-b64")]
    pub buf_b64: String,
    /// Bytes to write (default: all).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count: Option<i64>,
}
command!(GuestFileWrite, "guest-file-write", GuestFileWriteResult);

/// The reply of `guest-file-write`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct GuestFileWriteResult {
    /// Bytes written.
    pub count: i64,
    /// End of file.
    pub eof: bool,
}

/// `guest-file-flush`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct GuestFileFlush {
    /// Handle.
    pub handle: i64,
}
command!(GuestFileFlush, "guest-file-flush", Empty);

/// `guest-file-close`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct GuestFileClose {
    /// Handle.
    pub handle: i64,
}
command!(GuestFileClose, "guest-file-close", Empty);

/// `guest-file-seek` (`whence`: `set`, `cur` or `end`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GuestFileSeek {
    /// Handle.
    pub handle: i64,
    /// Offset.
    pub offset: i64,
    /// `set`, `cur` or `end`.
    pub whence: String,
}
command!(GuestFileSeek, "guest-file-seek", GuestFileSeekResult);

/// The reply of `guest-file-seek`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct GuestFileSeekResult {
    /// New position.
    pub position: i64,
    /// At end of file.
    pub eof: bool,
}

/// `guest-shutdown`; no reply on success.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct GuestShutdown {
    /// `powerdown` (default), `halt` or `reboot`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
}
command!(GuestShutdown, "guest-shutdown", Empty);

no_arg_command!(
    /// `guest-network-get-interfaces`.
    GuestNetworkGetInterfaces, "guest-network-get-interfaces", Vec<GuestNetworkInterface>
);

/// One guest network interface.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct GuestNetworkInterface {
    /// Interface name, e.g. `eth0`.
    pub name: String,
    /// MAC address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hardware_address: Option<String>,
    /// Addresses.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip_addresses: Option<Vec<GuestIpAddress>>,
    /// Counters (kept as JSON).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub statistics: Option<Value>,
}

/// One address of a [`GuestNetworkInterface`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct GuestIpAddress {
    /// The address.
    pub ip_address: String,
    /// `ipv4` or `ipv6`.
    pub ip_address_type: String,
    /// Prefix length.
    pub prefix: i64,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames(input: &[u8]) -> Vec<String> {
        let mut codec = QgaCodec::default();
        let mut buf = BytesMut::from(input);
        let mut out = Vec::new();
        while let Ok(Some(frame)) = codec.decode(&mut buf) {
            out.push(match frame {
                QgaFrame::Delimiter => "DELIM".to_owned(),
                QgaFrame::Message(Message::Return { value, .. }) => format!("return {value}"),
                QgaFrame::Message(m) => format!("{m:?}"),
                QgaFrame::Invalid(_) => "invalid".to_owned(),
            });
        }
        out
    }

    #[test]
    fn delimiter_discards_what_precedes_it() {
        let out = frames(b"{\"return\": {\"half\xff{\"return\": 42}\n");
        assert_eq!(out, vec!["DELIM", "return 42"]);
    }

    #[test]
    fn garbage_is_not_fatal() {
        let out = frames(b"junk\n{\"return\": 1}\r\n");
        assert_eq!(out, vec!["invalid", "return 1"]);
    }

    #[test]
    fn sync_request_starts_with_the_delimiter() {
        let mut codec = QgaCodec::default();
        let mut dst = BytesMut::new();
        let request = QgaRequest {
            command: Outgoing {
                command: "guest-sync-delimited".into(),
                arguments: Some(json!({"id": 5})),
                id: None,
                oob: false,
            },
            delimit: true,
        };
        codec.encode(&request, &mut dst).expect("encodes");
        assert_eq!(
            &dst[..],
            b"\xff{\"execute\":\"guest-sync-delimited\",\"arguments\":{\"id\":5}}\r\n"
        );
    }

    #[test]
    fn exec_status_decodes_output() {
        let status: GuestExecStatus = serde_json::from_value(
            json!({"exitcode": 0, "out-data": "aGkK", "out-truncated": false, "exited": true}),
        )
        .expect("decodes");
        let out = status.output().expect("base64");
        assert_eq!(out.stdout, b"hi\n");
        assert!(out.success() && !out.truncated);
    }
}

//! The wire protocol between the host driver and the in-guest agent.
//!
//! Everything travels as frames over one virtio-serial port (named [`PORT_NAME`]).
//! A frame is a fixed 16-byte header followed by a payload:
//!
//! ```text
//! offset  size  field
//!      0     4  magic, always "FLA1"
//!      4     1  kind (see [`Kind`])
//!      5     1  flags, sent as 0 (ignored on receipt)
//!      6     2  reserved, sent as 0 (ignored on receipt)
//!      8     4  stream id, little endian (0 = session, N > 0 = one command or transfer)
//!     12     4  payload length, little endian, at most [`MAX_PAYLOAD`]
//! ```
//!
//! Control payloads are JSON ([`Hello`], [`ExecRequest`], ...); data payloads
//! ([`Kind::Stdout`], [`Kind::Stderr`], [`Kind::Stdin`], [`Kind::FileData`]) are raw bytes.
//!
//! # Decoding
//!
//! [`decode`] is a pure function over a byte buffer: it looks at most at one frame at
//! the start of the buffer and tells the caller how many bytes to drop, so any reader,
//! blocking or async, can drive it. It never panics, and every answer but
//! [`Decoded::Incomplete`] consumes at least one byte:
//!
//! * garbage (bytes that do not start with the magic): [`Decoded::Skip`] up to the next
//!   magic, or up to a tail that may be the start of one;
//! * a header whose kind byte is unknown, with an acceptable length:
//!   [`Decoded::Invalid`] covering the whole frame, once all of it has arrived, so a
//!   newer peer's frames are stepped over;
//! * a header whose length exceeds [`MAX_PAYLOAD`]: [`Decoded::Invalid`] covering the
//!   header only; the payload behind it is then garbage up to the next magic (and a
//!   magic inside it is taken for the start of a frame).
//!
//! `decode` reports nothing itself: what to do about a Skip or an Invalid is up to the
//! reader. The agent's read loop drops those bytes, answers each with a [`Kind::Error`]
//! frame (on stream 0 for a Skip, so one run of garbage arriving in pieces may get
//! several; on the header's stream for an Invalid) and goes on reading. When the host
//! disconnects, the agent forgets any partial frame it holds.
//!
//! The host reads every agent connection, and both ends of `flotilla shell`'s control
//! socket, through one codec over `decode` (`FrameCodec` in `flotilla-driver`), with
//! one policy: garbage and well-formed frames of an unknown kind are skipped, counted
//! and logged, and reading goes on; a length over [`MAX_PAYLOAD`] ends the connection
//! (an agent never sends one, so the stream can no longer be trusted), and so does a
//! stream that ends inside a frame.
//!
//! # Session
//!
//! 1. Host sends [`Kind::Hello`] on stream 0; the agent answers [`Kind::HelloReply`].
//!    A new Hello restarts the session: commands of the previous one are killed.
//! 2. [`Kind::Exec`] on a host-chosen stream N > 0 starts a command. The agent sends
//!    [`Kind::Stdout`]/[`Kind::Stderr`] chunks (at most [`MAX_CHUNK`] bytes) as output is
//!    produced, then exactly one [`Kind::Exit`]. If the command cannot be started the
//!    agent sends one [`Kind::Error`] on N instead and no Exit.
//! 3. [`Kind::Stdin`] / [`Kind::StdinClose`] feed a command started with `stdin: true`;
//!    [`Kind::Kill`] sends SIGKILL to its process group.
//! 4. A command started with `pty` runs on a new pseudo-terminal (its controlling
//!    terminal, in a session of its own): the terminal is its stdin, stdout and stderr,
//!    so all output arrives as [`Kind::Stdout`]. [`Kind::Resize`] ([`WindowSize`])
//!    changes the terminal's size (the command gets SIGWINCH). [`Kind::StdinClose`]
//!    only stops input (send the terminal's EOF character, `^D`, to end it). When the
//!    host disconnects, the agent kills the process groups of terminal commands.
//! 5. [`Kind::Shutdown`] is answered with [`Kind::ShutdownAck`], then the guest powers
//!    off (or reboots).
//! 6. [`Kind::NetConfig`] ([`NetConfig`]) on a stream N > 0 configures the guest's
//!    network without starting a process: host name, each NIC (found by MAC; with
//!    [`NicConfig::from_mac`], found by that MAC and given its new one) up with its
//!    addresses, forwarding, `/etc/hosts`. The agent checks the whole request and finds
//!    every NIC first, then applies it in that order, and answers one
//!    [`Kind::NetConfigDone`] (empty) on N, or one [`Kind::Error`] naming what failed
//!    (a step that failed leaves the earlier ones done). Only agents that list
//!    [`FEATURE_NET_CONFIG`] know it; older ones answer an Error.
//! 7. [`Kind::ScreenText`] (empty) on a stream N > 0 reads the foreground virtual
//!    console without a process: the agent answers one [`Kind::ScreenTextReply`]
//!    ([`ScreenText`]: its size, cursor, text, and whether it is in graphics mode) on N,
//!    or one [`Kind::Error`] naming what failed. Only agents that list
//!    [`FEATURE_SCREEN_TEXT`] know it; older ones answer an Error.
//!
//! # File transfer
//!
//! * Push (host → guest): host sends [`Kind::FilePush`] ([`FilePush`]) on stream N, then
//!   any number of [`Kind::FileData`] chunks on N, then [`Kind::FileEnd`] (empty payload).
//!   The agent writes to a temporary file next to the target and renames it into place
//!   on FileEnd, then answers [`Kind::FileDone`] ([`FileDone`]). On failure the agent
//!   answers one [`Kind::Error`] on N and ignores the rest of that transfer.
//! * Pull (guest → host): host sends [`Kind::FilePull`] ([`FilePull`]) on stream N; the
//!   agent answers [`Kind::FileInfo`] ([`FileInfo`]), the contents as [`Kind::FileData`]
//!   chunks (at most [`MAX_CHUNK`] bytes each), then [`Kind::FileEnd`]. An error ends the
//!   transfer with one [`Kind::Error`] instead, possibly after FileInfo and some data.
//! * Push and pull use the host's stream ids like commands; a stream id may be reused
//!   once the transfer ended (FileDone, FileEnd or Error).
//!
//! # Compatibility
//!
//! [`PROTOCOL_VERSION`] changes only with incompatible changes. The agent answers every
//! [`Hello`] it can parse with its own version in [`HelloReply`], whatever the host's;
//! refusing a mismatch is the host's part. Additions stay compatible: new JSON fields have defaults (and older peers
//! ignore unknown ones), [`decode`] steps over a frame of a kind it does not know (an
//! older agent answers it with a [`Kind::Error`] on its stream), and
//! [`HelloReply::features`] lists the optional capabilities an agent has (e.g.
//! [`FEATURE_PTY`]), so a host can refuse a request an older agent would misunderstand.
//!
//! ```
//! use flotilla_agent::proto::{decode, Decoded, Frame, Hello, Kind, PROTOCOL_VERSION};
//!
//! let mut wire = Vec::new();
//! Frame::json(Kind::Hello, 0, &Hello { version: PROTOCOL_VERSION }).encode(&mut wire);
//! match decode(&wire) {
//!     Decoded::Frame(frame, used) => {
//!         assert_eq!(used, wire.len());
//!         let hello: Hello = frame.parse_json().unwrap();
//!         assert_eq!(hello.version, PROTOCOL_VERSION);
//!     }
//!     other => panic!("unexpected {other:?}"),
//! }
//! ```

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// Version carried in [`Hello`] and [`HelloReply`].
pub const PROTOCOL_VERSION: u32 = 1;
/// The agent prints a line starting with this on the serial console once it serves the port.
pub const READY_PREFIX: &str = "FLOTILLA-AGENT-READY";
/// Name of the virtio-serial port (`-device virtserialport,name=...`).
pub const PORT_NAME: &str = "org.flotilla.agent.0";
/// First four bytes of every frame.
pub(crate) const MAGIC: [u8; 4] = *b"FLA1";
/// Size of the fixed frame header.
pub const HEADER_LEN: usize = 16;
/// Largest payload a frame may carry.
pub const MAX_PAYLOAD: u32 = 1 << 20;
/// [`HelloReply::features`] entry: the agent honours [`ExecRequest::pty`] and [`Kind::Resize`].
pub const FEATURE_PTY: &str = "pty";
/// [`HelloReply::features`] entry: the agent answers [`Kind::NetConfig`].
pub const FEATURE_NET_CONFIG: &str = "net-config";
/// [`HelloReply::features`] entry: the agent honours [`NicConfig::from_mac`] (a NIC
/// found by the MAC it has now is given [`NicConfig::mac`]).
pub const FEATURE_NET_SET_MAC: &str = "net-set-mac";
/// [`HelloReply::features`] entry: the agent answers [`Kind::ScreenText`].
pub const FEATURE_SCREEN_TEXT: &str = "screen-text";
/// Largest data chunk ([`Kind::Stdout`], [`Kind::Stderr`], [`Kind::FileData`]) the agent sends.
pub const MAX_CHUNK: usize = 64 * 1024;

/// Frame kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Kind {
    /// Host → agent, stream 0, [`Hello`].
    Hello = 0x01,
    /// Agent → host, stream 0, [`HelloReply`].
    HelloReply = 0x02,
    /// Host → agent, stream N, [`ExecRequest`].
    Exec = 0x10,
    /// Agent → host, stream N, raw bytes.
    Stdout = 0x11,
    /// Agent → host, stream N, raw bytes.
    Stderr = 0x12,
    /// Agent → host, stream N, [`ExitStatus`].
    Exit = 0x13,
    /// Host → agent, stream N, raw bytes for the command's stdin.
    Stdin = 0x14,
    /// Host → agent, stream N, empty: close the command's stdin.
    StdinClose = 0x15,
    /// Host → agent, stream N, empty: SIGKILL the command's process group.
    Kill = 0x16,
    /// Host → agent, stream N, [`WindowSize`]: the new size of the command's terminal.
    Resize = 0x17,
    /// Host → agent, stream 0, [`ShutdownRequest`].
    Shutdown = 0x20,
    /// Agent → host, stream 0, empty.
    ShutdownAck = 0x21,
    /// Host → agent, stream N, [`FilePush`]: start writing a file.
    FilePush = 0x31,
    /// Host → agent, stream N, [`FilePull`]: read a file.
    FilePull = 0x32,
    /// Either direction, stream N, raw bytes of a file being transferred.
    FileData = 0x33,
    /// Either direction, stream N, empty: end of file contents.
    FileEnd = 0x34,
    /// Agent → host, stream N, [`FileInfo`]: answer to FilePull, before the data.
    FileInfo = 0x35,
    /// Agent → host, stream N, [`FileDone`]: a pushed file is in place.
    FileDone = 0x36,
    /// Host → agent, stream N, [`NetConfig`]: configure the guest's network.
    NetConfig = 0x40,
    /// Agent → host, stream N, empty: the [`Kind::NetConfig`] request is done.
    NetConfigDone = 0x41,
    /// Host → agent, stream N, empty: read the foreground virtual console.
    ScreenText = 0x50,
    /// Agent → host, stream N, [`ScreenText`]: the answer to [`Kind::ScreenText`].
    ScreenTextReply = 0x51,
    /// Either direction, stream 0 or N, [`ErrorBody`].
    Error = 0x7f,
}

impl Kind {
    /// All kinds, in wire-value order.
    pub(crate) const ALL: [Kind; 23] = [
        Kind::Hello,
        Kind::HelloReply,
        Kind::Exec,
        Kind::Stdout,
        Kind::Stderr,
        Kind::Exit,
        Kind::Stdin,
        Kind::StdinClose,
        Kind::Kill,
        Kind::Resize,
        Kind::Shutdown,
        Kind::ShutdownAck,
        Kind::FilePush,
        Kind::FilePull,
        Kind::FileData,
        Kind::FileEnd,
        Kind::FileInfo,
        Kind::FileDone,
        Kind::NetConfig,
        Kind::NetConfigDone,
        Kind::ScreenText,
        Kind::ScreenTextReply,
        Kind::Error,
    ];
}

impl TryFrom<u8> for Kind {
    type Error = ProtoError;

    fn try_from(value: u8) -> Result<Kind, ProtoError> {
        Kind::ALL
            .iter()
            .copied()
            .find(|k| *k as u8 == value)
            .ok_or(ProtoError::UnknownKind(value))
    }
}

/// What went wrong with a frame.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProtoError {
    /// The header's kind byte is not a known [`Kind`].
    #[error("unknown frame kind 0x{0:02x}")]
    UnknownKind(u8),
    /// The header announces a payload larger than [`MAX_PAYLOAD`].
    #[error("frame payload of {0} bytes exceeds the limit of {MAX_PAYLOAD} bytes")]
    PayloadTooLarge(u32),
    /// The JSON body of a frame does not match the expected schema.
    #[error("bad json body in {kind:?} frame: {source}\n  body: {body}")]
    Json {
        /// Kind of the frame whose body failed to parse.
        kind: Kind,
        /// The body, lossily decoded and truncated, for diagnosis.
        body: String,
        /// The parse error.
        #[source]
        source: serde_json::Error,
    },
}

/// One protocol frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// What the frame is.
    pub kind: Kind,
    /// 0 for the session, N > 0 for a command or transfer.
    pub stream: u32,
    /// Raw payload (JSON for control frames).
    pub payload: Vec<u8>,
}

impl Frame {
    /// A frame with a raw payload.
    pub fn new(kind: Kind, stream: u32, payload: Vec<u8>) -> Frame {
        Frame {
            kind,
            stream,
            payload,
        }
    }

    /// A frame whose payload is `body` serialized as JSON.
    pub fn json<T: Serialize>(kind: Kind, stream: u32, body: &T) -> Frame {
        // Serializing our own plain structs into a Vec cannot fail; fall back to `null`
        // rather than panicking if a caller passes something exotic (e.g. a non-string map key).
        let payload = serde_json::to_vec(body).unwrap_or_else(|_| b"null".to_vec());
        Frame::new(kind, stream, payload)
    }

    /// An [`Kind::Error`] frame carrying `message`.
    pub fn error(stream: u32, message: impl Into<String>) -> Frame {
        Frame::json(
            Kind::Error,
            stream,
            &ErrorBody {
                message: message.into(),
            },
        )
    }

    /// Parse the payload as JSON.
    pub fn parse_json<T: DeserializeOwned>(&self) -> Result<T, ProtoError> {
        serde_json::from_slice(&self.payload).map_err(|source| {
            let shown = &self.payload[..self.payload.len().min(256)];
            ProtoError::Json {
                kind: self.kind,
                body: String::from_utf8_lossy(shown).into_owned(),
                source,
            }
        })
    }

    /// Append the encoded frame to `out`.
    ///
    /// Payloads larger than [`MAX_PAYLOAD`] are the caller's bug: [`decode`] answers
    /// [`Decoded::Invalid`] for them.
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.reserve(HEADER_LEN + self.payload.len());
        out.extend_from_slice(&MAGIC);
        out.push(self.kind as u8);
        out.push(0);
        out.extend_from_slice(&[0, 0]);
        out.extend_from_slice(&self.stream.to_le_bytes());
        let len = u32::try_from(self.payload.len()).unwrap_or(u32::MAX);
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&self.payload);
    }

    /// The encoded frame as a new buffer.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.encode(&mut out);
        out
    }
}

/// Result of [`decode`].
#[derive(Debug)]
pub enum Decoded {
    /// A complete frame and the number of bytes it used.
    Frame(Frame, usize),
    /// More bytes are needed.
    Incomplete,
    /// Drop this many bytes of garbage. What follows them, if anything, is a magic or
    /// the start of one.
    Skip(usize),
    /// A header that starts with the magic but cannot be accepted: drop `consumed`
    /// bytes and decode on.
    ///
    /// For an unknown kind with an acceptable length, `consumed` covers the whole frame
    /// (so newer peers' frames are skipped cleanly). For an oversized length only the
    /// header is consumed, and what follows decodes as garbage up to the next magic.
    Invalid {
        /// Bytes to drop.
        consumed: usize,
        /// Stream id from the header.
        stream: u32,
        /// What was wrong.
        error: ProtoError,
    },
}

/// Decode one frame from the start of `buf` (see "Decoding" in the module docs).
/// Pure; never panics; anything but [`Decoded::Incomplete`] consumes at least one byte.
pub fn decode(buf: &[u8]) -> Decoded {
    if !buf.starts_with(&MAGIC) {
        // Either too short to tell, or garbage. Find the next possible frame start.
        if MAGIC.starts_with(buf) {
            return Decoded::Incomplete;
        }
        return match find_magic(&buf[1..]) {
            Some(at) => Decoded::Skip(at + 1),
            None => {
                // Keep the longest suffix that may be the beginning of a magic.
                let keep = (1..MAGIC.len())
                    .rev()
                    .find(|&n| n <= buf.len() && buf[buf.len() - n..] == MAGIC[..n])
                    .unwrap_or(0);
                if keep == buf.len() {
                    Decoded::Incomplete
                } else {
                    Decoded::Skip(buf.len() - keep)
                }
            }
        };
    }
    let Some(header) = buf.get(..HEADER_LEN) else {
        return Decoded::Incomplete;
    };
    let kind_byte = header[4];
    let stream = u32::from_le_bytes([header[8], header[9], header[10], header[11]]);
    let len = u32::from_le_bytes([header[12], header[13], header[14], header[15]]);
    if len > MAX_PAYLOAD {
        return Decoded::Invalid {
            consumed: HEADER_LEN,
            stream,
            error: ProtoError::PayloadTooLarge(len),
        };
    }
    let total = HEADER_LEN + len as usize;
    let Some(payload) = buf.get(HEADER_LEN..total) else {
        return Decoded::Incomplete;
    };
    match Kind::try_from(kind_byte) {
        Ok(kind) => Decoded::Frame(Frame::new(kind, stream, payload.to_vec()), total),
        Err(error) => Decoded::Invalid {
            consumed: total,
            stream,
            error,
        },
    }
}

fn find_magic(buf: &[u8]) -> Option<usize> {
    buf.windows(MAGIC.len()).position(|w| w == MAGIC)
}

/// Body of [`Kind::Hello`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    /// The host's [`PROTOCOL_VERSION`].
    pub version: u32,
}

/// Body of [`Kind::HelloReply`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HelloReply {
    /// The agent's [`PROTOCOL_VERSION`].
    pub version: u32,
    /// The agent's crate version.
    pub agent_version: String,
    /// Milliseconds from kernel start until the agent was ready (from `/proc/uptime`).
    pub boot_ms: u64,
    /// Optional capabilities (e.g. [`FEATURE_PTY`]); empty from agents older than them.
    #[serde(default)]
    pub features: Vec<String>,
}

/// What to run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Command {
    /// Run a program directly; `argv[0]` is looked up in `PATH` unless it contains `/`.
    /// Serialized as `{"argv": [...]}`.
    Argv(Vec<String>),
    /// Run `/bin/sh -c <string>`. Serialized as `{"shell": "..."}`.
    Shell(String),
}

/// Body of [`Kind::Exec`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecRequest {
    /// What to run.
    pub command: Command,
    /// Added to (and overriding) the default environment
    /// (`PATH`, `HOME=/root`, `TERM=dumb`).
    #[serde(default)]
    pub env: Vec<(String, String)>,
    /// Working directory; `/` when absent.
    #[serde(default)]
    pub cwd: Option<String>,
    /// Whether the host will send [`Kind::Stdin`]; when false stdin is `/dev/null`.
    #[serde(default)]
    pub stdin: bool,
    /// Kill the process group after this many milliseconds.
    #[serde(default)]
    pub timeout_ms: Option<u64>,
    /// Run on a new pseudo-terminal of this size (see the module docs); pipes when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pty: Option<WindowSize>,
}

/// Body of [`Kind::Resize`], and [`ExecRequest::pty`]: a terminal's size in characters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct WindowSize {
    /// Lines.
    pub rows: u16,
    /// Columns.
    pub cols: u16,
}

/// Body of [`Kind::Exit`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExitStatus {
    /// Exit code, when the command exited normally.
    pub code: Option<i32>,
    /// Signal number, when the command was killed by a signal.
    pub signal: Option<i32>,
    /// Whether the agent killed the command because `timeout_ms` elapsed.
    pub timed_out: bool,
}

/// Body of [`Kind::Error`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// What went wrong, as a lowercase sentence fragment.
    pub message: String,
}

/// Body of [`Kind::Shutdown`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShutdownRequest {
    /// Reboot instead of powering off.
    #[serde(default)]
    pub reboot: bool,
}

/// Body of [`Kind::FilePush`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FilePush {
    /// Absolute path in the guest.
    pub path: String,
    /// Permission bits (e.g. `0o755`), applied before the rename.
    pub mode: u32,
    /// Create missing parent directories (mode 0755).
    #[serde(default)]
    pub create_dirs: bool,
}

/// Body of [`Kind::FilePull`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FilePull {
    /// Absolute path in the guest.
    pub path: String,
}

/// Body of [`Kind::FileInfo`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileInfo {
    /// Size in bytes when the transfer started.
    pub size: u64,
    /// Permission bits.
    pub mode: u32,
}

/// Body of [`Kind::FileDone`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileDone {
    /// Bytes written.
    pub size: u64,
}

/// Body of [`Kind::NetConfig`]: the guest's network, applied in field order.
///
/// Every field has a default, so `{}` is a valid request that does nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetConfig {
    /// Set the host name (`sethostname(2)`); left alone when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    /// Interfaces to bring up and address.
    #[serde(default)]
    pub nics: Vec<NicConfig>,
    /// Turn on IPv4 and IPv6 forwarding (`ip_forward`, `conf/all/forwarding`).
    #[serde(default)]
    pub forwarding: bool,
    /// The whole new contents of `/etc/hosts`; left alone when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hosts: Option<String>,
}

/// One interface of a [`NetConfig`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NicConfig {
    /// The interface's MAC address, `52:54:00:12:01:02` (either case).
    pub mac: String,
    /// The MAC the interface has now, when it is to be given [`NicConfig::mac`]
    /// (`SIOCSIFHWADDR`, the link taken down for it): a machine restored from another
    /// machine's snapshot has that machine's MACs. Only agents that list
    /// [`FEATURE_NET_SET_MAC`] know it (older ones look the interface up by `mac`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from_mac: Option<String>,
    /// An IPv4 address and prefix length, `192.168.1.2/24`: the interface's primary
    /// IPv4 address (`SIOCSIFADDR`), replacing the one it had, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipv4: Option<String>,
    /// An IPv6 address and prefix length to add, `2001:db8:1::2/64`; duplicate address
    /// detection is turned off on the interface first, so it is usable at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipv6: Option<String>,
}

/// Body of [`Kind::ScreenTextReply`]: the foreground virtual console (`/dev/vcsa` for
/// size and cursor, `/dev/vcsu` for the characters).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScreenText {
    /// Lines of the console.
    pub rows: u16,
    /// Columns of the console.
    pub cols: u16,
    /// The cursor's line, from 0.
    pub cursor_row: u16,
    /// The cursor's column, from 0.
    pub cursor_col: u16,
    /// The console is in graphics mode (`KDGETMODE` is `KD_GRAPHICS`): something
    /// draws on the screen itself and `text` is not what it shows.
    pub graphics: bool,
    /// The characters, a line per row (at most `rows` lines of at most `cols`
    /// characters), each line's trailing blanks and the trailing empty lines removed.
    pub text: String,
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn bytes(kind: Kind, stream: u32, payload: &[u8]) -> Vec<u8> {
        Frame::new(kind, stream, payload.to_vec()).to_bytes()
    }

    #[test]
    fn header_layout() {
        let b = bytes(Kind::Stdout, 0x0102_0304, b"hi");
        assert_eq!(
            b,
            [b'F', b'L', b'A', b'1', 0x11, 0, 0, 0, 4, 3, 2, 1, 2, 0, 0, 0, b'h', b'i']
        );
    }

    #[test]
    fn round_trip_every_kind() {
        for kind in Kind::ALL {
            let payload: Vec<u8> = (0..=255u8).collect();
            let b = bytes(kind, 7, &payload);
            match decode(&b) {
                Decoded::Frame(f, n) => {
                    assert_eq!(n, b.len());
                    assert_eq!(f, Frame::new(kind, 7, payload));
                }
                other => panic!("{other:?}"),
            }
            assert_eq!(Kind::try_from(kind as u8).unwrap(), kind);
        }
    }

    #[test]
    fn json_round_trip() {
        let req = ExecRequest {
            command: Command::Argv(vec!["uname".into(), "-r".into()]),
            env: vec![("A".into(), "b".into())],
            cwd: None,
            stdin: false,
            timeout_ms: Some(5),
            pty: None,
        };
        let f = Frame::json(Kind::Exec, 3, &req);
        let text = String::from_utf8(f.payload.clone()).unwrap();
        assert!(
            text.contains(r#""command":{"argv":["uname","-r"]}"#),
            "{text}"
        );
        assert!(text.contains(r#""env":[["A","b"]]"#), "{text}");
        assert_eq!(f.parse_json::<ExecRequest>().unwrap(), req);
        let shell: ExecRequest =
            serde_json::from_str(r#"{"command":{"shell":"echo hi"}}"#).unwrap();
        assert_eq!(shell.command, Command::Shell("echo hi".into()));
        assert!(!shell.stdin && shell.env.is_empty() && shell.pty.is_none());
        // No `pty` key on the wire unless asked: older agents see the same requests.
        assert!(!text.contains("pty"), "{text}");
        let tty: ExecRequest = serde_json::from_str(
            r#"{"command":{"argv":["sh"]},"stdin":true,"pty":{"rows":24,"cols":80}}"#,
        )
        .unwrap();
        assert_eq!(tty.pty, Some(WindowSize { rows: 24, cols: 80 }));
        // Replies of older agents have no `features`.
        let old: HelloReply =
            serde_json::from_str(r#"{"version":1,"agent_version":"0.1.0","boot_ms":5}"#).unwrap();
        assert!(old.features.is_empty());
    }

    #[test]
    fn net_config_json() {
        let cfg = NetConfig {
            hostname: Some("router".into()),
            nics: vec![NicConfig {
                mac: "52:54:00:12:01:02".into(),
                from_mac: None,
                ipv4: Some("192.168.1.2/24".into()),
                ipv6: None,
            }],
            forwarding: true,
            hosts: Some("127.0.0.1 localhost\n".into()),
        };
        let f = Frame::json(Kind::NetConfig, 4, &cfg);
        let text = String::from_utf8(f.payload.clone()).unwrap();
        assert!(
            !text.contains("ipv6") && !text.contains("from_mac"),
            "{text}"
        );
        assert_eq!(f.parse_json::<NetConfig>().unwrap(), cfg);
        // Everything has a default: `{}` asks for nothing.
        assert_eq!(
            serde_json::from_str::<NetConfig>("{}").unwrap(),
            NetConfig::default()
        );
        let nic: NicConfig = serde_json::from_str(r#"{"mac":"52:54:00:ff:00:01"}"#).unwrap();
        assert!(nic.ipv4.is_none() && nic.ipv6.is_none() && nic.from_mac.is_none());
        let moved: NicConfig =
            serde_json::from_str(r#"{"mac":"52:54:00:ff:00:02","from_mac":"52:54:00:ff:00:01"}"#)
                .unwrap();
        assert_eq!(moved.from_mac.as_deref(), Some("52:54:00:ff:00:01"));
        // Malformed bodies are errors that show the body, never panics.
        for bad in [
            &b"{\"nics\":[{\"ipv4\":\"10.0.2.15/24\"}]}"[..],
            b"{\"nics\":{}}",
            b"{\"forwarding\":\"yes\"}",
            b"{\"hostname\":7}",
            b"\"all\"",
            b"",
            b"\xff\xfe",
        ] {
            let f = Frame::new(Kind::NetConfig, 1, bad.to_vec());
            let err = f.parse_json::<NetConfig>().unwrap_err().to_string();
            assert!(err.contains("NetConfig"), "{err}");
            assert!(err.contains(&*String::from_utf8_lossy(bad)), "{err}");
        }
    }

    #[test]
    fn json_error_keeps_body() {
        let f = Frame::new(Kind::Exec, 1, b"{nope".to_vec());
        let err = f.parse_json::<ExecRequest>().unwrap_err();
        assert!(err.to_string().contains("{nope"), "{err}");
    }

    #[test]
    fn incomplete_at_every_prefix() {
        let b = bytes(Kind::Exit, 1, b"{\"code\":0}");
        for n in 0..b.len() {
            assert!(matches!(decode(&b[..n]), Decoded::Incomplete), "prefix {n}");
        }
    }

    #[test]
    fn garbage_is_skipped_up_to_magic() {
        let mut b = b"xxFLyyy".to_vec();
        let frame = bytes(Kind::Hello, 0, b"{}");
        b.extend_from_slice(&frame);
        match decode(&b) {
            Decoded::Skip(n) => assert_eq!(n, 7),
            other => panic!("{other:?}"),
        }
        assert!(matches!(decode(&b[7..]), Decoded::Frame(_, n) if n == frame.len()));
    }

    #[test]
    fn garbage_keeps_possible_magic_prefix() {
        assert!(matches!(decode(b"zzzFL"), Decoded::Skip(3)));
        assert!(matches!(decode(b"zzzz"), Decoded::Skip(4)));
        assert!(matches!(decode(b"FL"), Decoded::Incomplete));
        assert!(matches!(decode(b"FLX"), Decoded::Skip(3)));
        assert!(matches!(decode(b""), Decoded::Incomplete));
    }

    #[test]
    fn oversized_length_is_invalid_and_resyncs() {
        let mut b = bytes(Kind::Stdin, 9, b"");
        b[12..16].copy_from_slice(&(MAX_PAYLOAD + 1).to_le_bytes());
        let good = bytes(Kind::Kill, 9, b"");
        b.extend_from_slice(&good);
        match decode(&b) {
            Decoded::Invalid {
                consumed,
                stream,
                error: ProtoError::PayloadTooLarge(n),
            } => {
                assert_eq!((consumed, stream, n), (HEADER_LEN, 9, MAX_PAYLOAD + 1));
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(decode(&b[HEADER_LEN..]), Decoded::Frame(f, _) if f.kind == Kind::Kill));
    }

    #[test]
    fn max_payload_is_accepted() {
        let b = bytes(Kind::FileData, 1, &vec![0u8; MAX_PAYLOAD as usize]);
        assert!(matches!(decode(&b), Decoded::Frame(_, n) if n == b.len()));
    }

    #[test]
    fn unknown_kind_skips_whole_frame() {
        let mut b = bytes(Kind::Stdout, 5, b"abc");
        b[4] = 0x55;
        let total = b.len();
        b.extend_from_slice(&bytes(Kind::Kill, 5, b""));
        match decode(&b) {
            Decoded::Invalid {
                consumed,
                stream,
                error: ProtoError::UnknownKind(0x55),
            } => assert_eq!((consumed, stream), (total, 5)),
            other => panic!("{other:?}"),
        }
        // Incomplete until the whole unknown frame is there.
        assert!(matches!(decode(&b[..total - 1]), Decoded::Incomplete));
    }

    #[test]
    fn decoding_random_bytes_never_panics_and_progresses() {
        let mut x: u32 = 12345;
        let mut buf = Vec::new();
        for _ in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            buf.push(if x % 7 == 0 {
                MAGIC[(x as usize / 7) % 4]
            } else {
                x as u8
            });
        }
        let mut rest = &buf[..];
        while let Decoded::Frame(_, n) | Decoded::Skip(n) | Decoded::Invalid { consumed: n, .. } =
            decode(rest)
        {
            assert!(n > 0 && n <= rest.len());
            rest = &rest[n..];
        }
        assert!(rest.len() < HEADER_LEN + MAX_PAYLOAD as usize);
    }
}

//! The crate's one error type.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// How much of an offending line is kept in an error message.
pub(crate) const SNIPPET_LEN: usize = 1024;

/// Everything that can go wrong talking QMP (or QGA).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The Unix socket could not be opened.
    #[error("qmp: connecting to {}", path.display())]
    Connect {
        /// The socket path.
        path: PathBuf,
        /// Why it failed.
        #[source]
        source: std::io::Error,
    },

    /// Reading from or writing to the socket failed.
    #[error("qmp: i/o on the socket")]
    Io(#[source] std::io::Error),

    /// A line from QEMU is not a QMP message.
    #[error("qmp: cannot decode a message from qemu: {reason}\n  line: {line}")]
    Decode {
        /// What was wrong with it.
        reason: String,
        /// The line, cut to 1 KiB, with its full length noted when cut.
        line: String,
    },

    /// A line from QEMU exceeded the codec's limit.
    #[error("qmp: a line from qemu is longer than the {limit}-byte limit")]
    LineTooLong {
        /// The limit in bytes.
        limit: usize,
    },

    /// The peer closed the connection in the middle of a line.
    #[error("qmp: connection closed in the middle of a line\n  line: {line}")]
    Truncated {
        /// The partial line, cut to 1 KiB.
        line: String,
    },

    /// Arguments of a command could not be turned into JSON.
    #[error("qmp: encoding the arguments of `{command}`")]
    Encode {
        /// The command.
        command: String,
        /// The serializer's complaint.
        #[source]
        source: serde_json::Error,
    },

    /// The greeting or capability negotiation went wrong.
    #[error("qmp: handshake: {0}")]
    Handshake(String),

    /// No greeting or negotiation reply within the handshake timeout.
    #[error(
        "qmp: handshake: no greeting or negotiation reply within {0:?}\n\
         hint: QEMU serves one client per QMP socket; is another one connected?"
    )]
    HandshakeTimeout(Duration),

    /// QEMU answered a command with an `error` reply.
    #[error("qmp: `{command}` failed: {class}: {desc}")]
    Qmp {
        /// The command that failed.
        command: String,
        /// QEMU's error class (usually `GenericError`).
        class: String,
        /// QEMU's description.
        desc: String,
    },

    /// A reply parsed but its content makes no sense (bad base64, short write).
    #[error("qmp: the reply to `{command}` is invalid: {reason}")]
    InvalidReply {
        /// The command.
        command: String,
        /// What is wrong with it.
        reason: String,
    },

    /// A reply did not have the shape the typed command expects.
    #[error("qmp: the reply to `{command}` does not have the expected shape\n  reply: {reply}")]
    UnexpectedReply {
        /// The command.
        command: String,
        /// The reply, cut to 1 KiB.
        reply: String,
        /// The deserializer's complaint.
        #[source]
        source: serde_json::Error,
    },

    /// No reply within the per-call timeout. The connection stays usable; a late
    /// reply is discarded.
    #[error("qmp: `{command}` got no reply within {after:?}")]
    Timeout {
        /// The command.
        command: String,
        /// The timeout that expired.
        after: Duration,
    },

    /// The connection is gone: QEMU closed it, exited, or it failed earlier.
    /// Every pending call fails with this and later calls fail at once.
    #[error("qmp: connection to qemu is closed")]
    Disconnected,

    /// The connection was closed because QEMU sent something that breaks the
    /// protocol (undecodable or too long line). Pending calls at that moment get
    /// this; later calls get [`Error::Disconnected`].
    #[error("qmp: connection dropped after a protocol error")]
    Protocol(#[source] Arc<Error>),

    /// No matching event arrived in time.
    #[error("qmp: no matching event within {0:?}")]
    EventTimeout(Duration),

    /// An event subscriber fell behind and events were dropped for it.
    #[error("qmp: event subscriber fell behind and lost {0} events")]
    EventsLost(u64),

    /// An event's `data` did not have the expected shape.
    #[error("qmp: the data of event `{event}` does not have the expected shape\n  data: {data}")]
    EventData {
        /// The event name.
        event: String,
        /// The data, cut to 1 KiB.
        data: String,
        /// The deserializer's complaint.
        #[source]
        source: serde_json::Error,
    },
}

impl Error {
    /// True when the error means the connection is gone ([`Error::Disconnected`]
    /// or [`Error::Protocol`]), e.g. because QEMU exited.
    pub fn is_disconnected(&self) -> bool {
        matches!(self, Error::Disconnected | Error::Protocol(_))
    }

    /// For an error reading the socket: true when it means the peer went away
    /// (an I/O error, or the stream ended in the middle of a line), false when the
    /// peer broke the protocol (an undecodable or too long line). Both clients
    /// close the connection either way; only the reason they give differs.
    pub(crate) fn is_connection_lost(&self) -> bool {
        matches!(self, Error::Io(_) | Error::Truncated { .. })
    }
}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Self {
        Error::Io(e)
    }
}

/// Lossy text of `bytes`, cut to [`SNIPPET_LEN`] with the full length noted.
pub(crate) fn snippet(bytes: &[u8]) -> String {
    if bytes.len() <= SNIPPET_LEN {
        return String::from_utf8_lossy(bytes).into_owned();
    }
    let head = String::from_utf8_lossy(&bytes[..SNIPPET_LEN]);
    format!("{head}... ({} bytes)", bytes.len())
}

/// [`snippet`] of a JSON value.
pub(crate) fn value_snippet(value: &serde_json::Value) -> String {
    snippet(value.to_string().as_bytes())
}

//! Framing for QMP: one JSON object per line.
//!
//! QEMU ends every message with `\r\n`; a bare `\n` is accepted too. Each line is
//! parsed into a [`Message`] by looking at which of the keys `QMP`, `return`,
//! `error` or `event` it carries. Nothing here does I/O or keeps protocol state
//! beyond the line being assembled, so the codec can be driven by any
//! `Framed`/`FramedRead` or fed bytes directly (the fuzz target does that).

use bytes::{BufMut, BytesMut};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use tokio_util::codec::{Decoder, Encoder};

use crate::error::{snippet, Error};

/// Longest line accepted by [`QmpCodec::new`]: 16 MiB.
///
/// Plenty for every reply except a screendump sent inline (QMP never does that)
/// or `query-qmp-schema` on very large builds; raise it with
/// [`QmpCodec::with_max_line_len`] if needed.
pub const DEFAULT_MAX_LINE_LEN: usize = 16 * 1024 * 1024;

/// One message received from QEMU.
#[derive(Debug, Clone, PartialEq)]
pub enum Message {
    /// The first line QEMU sends: `{"QMP": {...}}`.
    Greeting(Greeting),
    /// A successful reply: `{"return": ..., "id": ...}`.
    Return {
        /// The `id` echoed from the command, if it had one.
        id: Option<Value>,
        /// The reply payload (`{}` for commands without a result).
        value: Value,
    },
    /// A failed command: `{"error": {"class": ..., "desc": ...}, "id": ...}`.
    Error {
        /// The `id` echoed from the command; QEMU omits it when it could not
        /// parse the command at all.
        id: Option<Value>,
        /// What went wrong.
        error: QmpErrorBody,
    },
    /// An asynchronous event.
    Event(Event),
}

/// The body of a QMP `error` reply.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QmpErrorBody {
    /// The error class, nearly always `GenericError`.
    pub class: String,
    /// Human-readable description.
    pub desc: String,
}

/// QEMU's greeting: its version and the capabilities it offers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Greeting {
    /// The QEMU version.
    pub version: VersionInfo,
    /// Capabilities that may be enabled with `qmp_capabilities` (e.g. `oob`).
    #[serde(default)]
    pub capabilities: Vec<String>,
}

/// A QEMU version, as in the greeting and in `query-version`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionInfo {
    /// The numeric version.
    pub qemu: VersionTriple,
    /// Distribution package string, e.g. `Debian 1:7.2+dfsg-7`.
    #[serde(default)]
    pub package: String,
}

/// `major.minor.micro`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct VersionTriple {
    /// Major version.
    pub major: i64,
    /// Minor version.
    pub minor: i64,
    /// Micro version.
    pub micro: i64,
}

impl std::fmt::Display for VersionTriple {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.micro)
    }
}

/// An asynchronous QMP event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// The event name, e.g. `STOP`; the `events` module has constants for them.
    pub event: String,
    /// The payload; an empty object when QEMU sent none.
    #[serde(default = "empty_object")]
    pub data: Value,
    /// When QEMU emitted the event.
    pub timestamp: Timestamp,
}

fn empty_object() -> Value {
    Value::Object(Map::new())
}

/// An event time stamp. QEMU sends `-1` for both fields when the host clock
/// could not be read, hence the signed fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Timestamp {
    /// Seconds since the Unix epoch.
    pub seconds: i64,
    /// Microseconds within the second.
    pub microseconds: i64,
}

impl Timestamp {
    /// The time as a [`std::time::SystemTime`]; `None` for QEMU's `-1`
    /// ("clock unavailable") or other out-of-range values.
    pub fn to_system_time(&self) -> Option<std::time::SystemTime> {
        let seconds = u64::try_from(self.seconds).ok()?;
        let micros = u32::try_from(self.microseconds)
            .ok()
            .filter(|m| *m < 1_000_000)?;
        let since_epoch = std::time::Duration::new(seconds, micros * 1000);
        std::time::UNIX_EPOCH.checked_add(since_epoch)
    }
}

/// One command to send to QEMU.
#[derive(Debug, Clone, PartialEq)]
pub struct Outgoing {
    /// Command name, e.g. `query-status`.
    pub command: String,
    /// Arguments, if any (must be an object for QEMU to accept it).
    pub arguments: Option<Value>,
    /// Id echoed back in the reply.
    pub id: Option<Value>,
    /// Send as `exec-oob` instead of `execute`.
    pub oob: bool,
}

impl Serialize for Outgoing {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let len = 1 + usize::from(self.arguments.is_some()) + usize::from(self.id.is_some());
        let mut map = serializer.serialize_map(Some(len))?;
        let key = if self.oob { "exec-oob" } else { "execute" };
        map.serialize_entry(key, &self.command)?;
        if let Some(arguments) = &self.arguments {
            map.serialize_entry("arguments", arguments)?;
        }
        if let Some(id) = &self.id {
            map.serialize_entry("id", id)?;
        }
        map.end()
    }
}

/// A [`Decoder`]/[`Encoder`] for QMP's newline-separated JSON.
#[derive(Debug, Clone)]
pub struct QmpCodec {
    max_line_len: usize,
    /// How many bytes at the front of the buffer are known to hold no `\n`.
    scanned: usize,
}

impl Default for QmpCodec {
    fn default() -> Self {
        Self::new()
    }
}

impl QmpCodec {
    /// A codec accepting lines up to [`DEFAULT_MAX_LINE_LEN`].
    pub fn new() -> Self {
        Self::with_max_line_len(DEFAULT_MAX_LINE_LEN)
    }

    /// A codec accepting lines up to `max_line_len` bytes (terminator excluded).
    pub fn with_max_line_len(max_line_len: usize) -> Self {
        Self {
            max_line_len,
            scanned: 0,
        }
    }

    /// The longest line this codec accepts.
    pub fn max_line_len(&self) -> usize {
        self.max_line_len
    }

    /// Takes the next complete line out of `src`, without its terminator.
    /// Empty lines are skipped.
    fn next_line(&mut self, src: &mut BytesMut) -> Result<Option<BytesMut>, Error> {
        loop {
            let from = self.scanned.min(src.len());
            match src[from..].iter().position(|&b| b == b'\n') {
                Some(offset) => {
                    let end = from + offset;
                    self.scanned = 0;
                    let mut line = src.split_to(end + 1);
                    line.truncate(end);
                    if line.last() == Some(&b'\r') {
                        line.truncate(line.len() - 1);
                    }
                    if line.len() > self.max_line_len {
                        return Err(Error::LineTooLong {
                            limit: self.max_line_len,
                        });
                    }
                    if line.iter().all(u8::is_ascii_whitespace) {
                        continue;
                    }
                    return Ok(Some(line));
                }
                None => {
                    // The terminator may still come as `\r\n`: allow one byte of slack.
                    if src.len() > self.max_line_len.saturating_add(1) {
                        return Err(Error::LineTooLong {
                            limit: self.max_line_len,
                        });
                    }
                    self.scanned = src.len();
                    return Ok(None);
                }
            }
        }
    }
}

/// Parses one line (without terminator) into a [`Message`]: what the decoder does
/// for each line, and the guest agent's codec too.
pub(crate) fn parse_message(line: &[u8]) -> Result<Message, Error> {
    let fail = |reason: String| Error::Decode {
        reason,
        line: snippet(line),
    };
    let value: Value =
        serde_json::from_slice(line).map_err(|e| fail(format!("invalid json: {e}")))?;
    let Value::Object(mut object) = value else {
        return Err(fail("expected a json object".to_owned()));
    };
    if let Some(body) = object.remove("QMP") {
        let greeting =
            Greeting::deserialize(body).map_err(|e| fail(format!("malformed greeting: {e}")))?;
        return Ok(Message::Greeting(greeting));
    }
    if let Some(value) = object.remove("return") {
        let id = object.remove("id");
        return Ok(Message::Return { id, value });
    }
    if let Some(body) = object.remove("error") {
        let id = object.remove("id");
        let error = QmpErrorBody::deserialize(body)
            .map_err(|e| fail(format!("malformed error reply: {e}")))?;
        return Ok(Message::Error { id, error });
    }
    if object.contains_key("event") {
        let event = Event::deserialize(Value::Object(object))
            .map_err(|e| fail(format!("malformed event: {e}")))?;
        return Ok(Message::Event(event));
    }
    Err(fail(
        "object has none of the keys `QMP`, `return`, `error`, `event`".to_owned(),
    ))
}

impl Decoder for QmpCodec {
    type Item = Message;
    type Error = Error;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Message>, Error> {
        match self.next_line(src)? {
            Some(line) => parse_message(&line).map(Some),
            None => Ok(None),
        }
    }

    fn decode_eof(&mut self, src: &mut BytesMut) -> Result<Option<Message>, Error> {
        if let Some(message) = self.decode(src)? {
            return Ok(Some(message));
        }
        // `src` is empty after this, whatever it held.
        self.scanned = 0;
        end_of_stream(src).map(|()| None)
    }
}

/// What a decoder does with the bytes left after its last complete frame when the
/// stream ends: whitespace is a clean end, anything else a line cut short
/// ([`Error::Truncated`], with the partial line). `src` is empty afterwards.
///
/// Shared by [`QmpCodec`] and the guest agent's codec, so both end a stream alike.
pub(crate) fn end_of_stream(src: &mut BytesMut) -> Result<(), Error> {
    if src.iter().all(u8::is_ascii_whitespace) {
        src.clear();
        return Ok(());
    }
    let line = src.split();
    Err(Error::Truncated {
        line: snippet(&line),
    })
}

impl Encoder<&Outgoing> for QmpCodec {
    type Error = Error;

    fn encode(&mut self, item: &Outgoing, dst: &mut BytesMut) -> Result<(), Error> {
        let mut writer = dst.writer();
        serde_json::to_writer(&mut writer, item).map_err(|source| Error::Encode {
            command: item.command.clone(),
            source,
        })?;
        writer.into_inner().put_slice(b"\r\n");
        Ok(())
    }
}

impl Encoder<Outgoing> for QmpCodec {
    type Error = Error;

    fn encode(&mut self, item: Outgoing, dst: &mut BytesMut) -> Result<(), Error> {
        self.encode(&item, dst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn decode_all(codec: &mut QmpCodec, bytes: &[u8]) -> Vec<Result<Message, String>> {
        let mut buf = BytesMut::from(bytes);
        let mut out = Vec::new();
        loop {
            match codec.decode(&mut buf) {
                Ok(Some(m)) => out.push(Ok(m)),
                Ok(None) => break,
                Err(e) => {
                    out.push(Err(e.to_string()));
                    break;
                }
            }
        }
        out
    }

    const GREETING: &str = r#"{"QMP": {"version": {"qemu": {"micro": 0, "minor": 2, "major": 7}, "package": "Debian 1:7.2+dfsg-7"}, "capabilities": ["oob"]}}"#;

    #[test]
    fn greeting_with_crlf() {
        let mut codec = QmpCodec::new();
        let input = format!("{GREETING}\r\n");
        let out = decode_all(&mut codec, input.as_bytes());
        let [Ok(Message::Greeting(g))] = out.as_slice() else {
            panic!("unexpected {out:?}");
        };
        assert_eq!(
            g.version.qemu,
            VersionTriple {
                major: 7,
                minor: 2,
                micro: 0
            }
        );
        assert_eq!(g.version.package, "Debian 1:7.2+dfsg-7");
        assert_eq!(g.capabilities, vec!["oob".to_owned()]);
    }

    #[test]
    fn routes_by_key_with_lf_and_blank_lines() {
        let mut codec = QmpCodec::new();
        let input = concat!(
            "{\"return\": {}, \"id\": 1}\n",
            "\r\n",
            "{\"error\": {\"class\": \"GenericError\", \"desc\": \"nope\"}}\n",
            "{\"timestamp\": {\"seconds\": -1, \"microseconds\": -1}, \"event\": \"STOP\"}\r\n",
        );
        let out = decode_all(&mut codec, input.as_bytes());
        assert_eq!(out.len(), 3, "{out:?}");
        assert_eq!(
            out[0],
            Ok(Message::Return {
                id: Some(json!(1)),
                value: json!({})
            })
        );
        assert_eq!(
            out[1],
            Ok(Message::Error {
                id: None,
                error: QmpErrorBody {
                    class: "GenericError".into(),
                    desc: "nope".into()
                }
            })
        );
        let Ok(Message::Event(e)) = &out[2] else {
            panic!("{out:?}")
        };
        assert_eq!(e.event, "STOP");
        assert_eq!(e.data, json!({}));
        assert_eq!(
            e.timestamp,
            Timestamp {
                seconds: -1,
                microseconds: -1
            }
        );
    }

    #[test]
    fn partial_lines_wait_for_more() {
        let mut codec = QmpCodec::new();
        let mut buf = BytesMut::from(&b"{\"return\": "[..]);
        assert!(matches!(codec.decode(&mut buf), Ok(None)));
        buf.extend_from_slice(b"42, \"id\": \"a\"}\r");
        assert!(matches!(codec.decode(&mut buf), Ok(None)));
        buf.extend_from_slice(b"\n{\"ret");
        let m = codec.decode(&mut buf).expect("decodes").expect("a message");
        assert_eq!(
            m,
            Message::Return {
                id: Some(json!("a")),
                value: json!(42)
            }
        );
        assert_eq!(&buf[..], b"{\"ret");
    }

    #[test]
    fn garbage_keeps_the_line() {
        let mut codec = QmpCodec::new();
        let out = decode_all(&mut codec, b"this is not json\n");
        let [Err(e)] = out.as_slice() else {
            panic!("{out:?}")
        };
        assert!(e.contains("invalid json"), "{e}");
        assert!(e.contains("this is not json"), "{e}");
    }

    #[test]
    fn unknown_shape_is_an_error() {
        for (input, want) in [
            (&b"[1,2]\n"[..], "expected a json object"),
            (b"{\"hello\": 1}\n", "none of the keys"),
            (b"{\"error\": \"x\"}\n", "malformed error reply"),
            (b"{\"event\": \"X\"}\n", "malformed event"),
            (b"{\"QMP\": {}}\n", "malformed greeting"),
        ] {
            let out = decode_all(&mut QmpCodec::new(), input);
            let [Err(e)] = out.as_slice() else {
                panic!("{out:?}")
            };
            assert!(e.contains(want), "{e} should contain {want}");
        }
    }

    #[test]
    fn long_garbage_is_truncated_in_the_message() {
        let mut input = vec![b'x'; 100_000];
        input.push(b'\n');
        let out = decode_all(&mut QmpCodec::new(), &input);
        let [Err(e)] = out.as_slice() else {
            panic!("{out:?}")
        };
        assert!(e.len() < 2_000, "message is {} bytes", e.len());
        assert!(e.contains("100000 bytes"), "{e}");
    }

    #[test]
    fn too_long_line_fails_without_newline() {
        let mut codec = QmpCodec::with_max_line_len(64);
        let mut buf = BytesMut::from(&[b'a'; 65][..]);
        assert!(
            matches!(codec.decode(&mut buf), Ok(None)),
            "one byte of slack for \\r"
        );
        buf.extend_from_slice(b"a");
        let e = codec.decode(&mut buf).expect_err("too long");
        assert!(matches!(e, Error::LineTooLong { limit: 64 }), "{e}");
    }

    #[test]
    fn too_long_line_with_newline() {
        let mut codec = QmpCodec::with_max_line_len(8);
        let mut buf = BytesMut::from(&b"{\"return\": 1}\n"[..]);
        let e = codec.decode(&mut buf).expect_err("too long");
        assert!(matches!(e, Error::LineTooLong { limit: 8 }), "{e}");
    }

    #[test]
    fn eof_with_partial_line() {
        let mut codec = QmpCodec::new();
        let mut buf = BytesMut::from(&b"{\"return\": {}, \"id\""[..]);
        let e = codec.decode_eof(&mut buf).expect_err("truncated");
        assert!(matches!(e, Error::Truncated { .. }), "{e}");
        assert!(e.to_string().contains("\"id\""), "{e}");

        let mut buf = BytesMut::from(&b"{\"return\": {}}\n  \r"[..]);
        assert!(matches!(
            codec.decode_eof(&mut buf),
            Ok(Some(Message::Return { .. }))
        ));
        assert!(matches!(codec.decode_eof(&mut buf), Ok(None)));
    }

    #[test]
    fn encodes_execute_and_oob() {
        let mut codec = QmpCodec::new();
        let mut dst = BytesMut::new();
        let cmd = Outgoing {
            command: "device_del".into(),
            arguments: Some(json!({"id": "x"})),
            id: Some(json!(7)),
            oob: false,
        };
        codec.encode(&cmd, &mut dst).expect("encodes");
        assert_eq!(
            &dst[..],
            b"{\"execute\":\"device_del\",\"arguments\":{\"id\":\"x\"},\"id\":7}\r\n"
        );
        dst.clear();
        let cmd = Outgoing {
            command: "x".into(),
            arguments: None,
            id: None,
            oob: true,
        };
        codec.encode(cmd, &mut dst).expect("encodes");
        assert_eq!(&dst[..], b"{\"exec-oob\":\"x\"}\r\n");
    }

    #[test]
    fn never_panics_on_odd_bytes() {
        let inputs: [&[u8]; 6] = [
            b"\xff\xfe\n",
            b"{\"return\": \"\xff\"}\n",
            b"\n\n\n\r\r\n",
            b"{\"event\": \"X\", \"timestamp\": {\"seconds\": 1e99, \"microseconds\": 0}}\n",
            b"{\"QMP\": {\"version\": {\"qemu\": {\"major\": -1, \"minor\": 0, \"micro\": 0}}}}\n",
            b"\r",
        ];
        for input in inputs {
            let mut codec = QmpCodec::new();
            let _ = decode_all(&mut codec, input);
            let mut buf = BytesMut::from(input);
            let _ = codec.decode_eof(&mut buf);
        }
    }
}

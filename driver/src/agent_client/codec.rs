//! The agent protocol's framing on the host: [`FrameCodec`], one
//! `tokio_util::codec::{Decoder, Encoder}` over [`proto::decode`] and
//! [`Frame::encode`]. Every host-side reader and writer of frames uses it: the agent
//! connection, and both ends of the control socket (`flotilla shell`).

use std::io;

use bytes::{Buf, BytesMut};
use flotilla_agent::proto::{self, Decoded, Frame, ProtoError};
use tokio_util::codec::{Decoder, Encoder};

/// Frames of [`flotilla_agent::proto`] over a byte stream.
///
/// What the host does with bytes that are not a frame it can take:
///
/// - **Garbage** (bytes that do not start with the magic): skipped up to the next magic,
///   or up to what may be the start of one; each skip is logged as a warning and
///   counted in [`FrameCodec::garbage_bytes`]. Decoding goes on.
/// - **A well-formed frame of an unknown kind** (a newer peer's): skipped whole, logged
///   as a warning and counted in [`FrameCodec::unknown_frames`]. Decoding goes on; the
///   codec answers nothing.
/// - **A header announcing more than [`proto::MAX_PAYLOAD`] bytes**: an error
///   ([`io::ErrorKind::InvalidData`]). The peer is broken, its framing can no longer be
///   trusted: readers end the connection.
/// - **The end of the input**: the end of the stream at a frame boundary; an error
///   ([`io::ErrorKind::UnexpectedEof`]) in the middle of a frame.
///
/// Every reader stops at the first error. Encoding writes the frame as it is (callers
/// keep payloads within [`proto::MAX_CHUNK`] or [`proto::MAX_PAYLOAD`]).
#[derive(Debug, Default)]
pub struct FrameCodec {
    garbage_bytes: u64,
    unknown_frames: u64,
}

impl FrameCodec {
    /// How many bytes of garbage were skipped so far.
    pub fn garbage_bytes(&self) -> u64 {
        self.garbage_bytes
    }

    /// How many well-formed frames of unknown kinds were skipped so far.
    pub fn unknown_frames(&self) -> u64 {
        self.unknown_frames
    }
}

impl Decoder for FrameCodec {
    type Item = Frame;
    type Error = io::Error;

    fn decode(&mut self, buf: &mut BytesMut) -> io::Result<Option<Frame>> {
        loop {
            match proto::decode(buf) {
                Decoded::Frame(frame, used) => {
                    buf.advance(used);
                    return Ok(Some(frame));
                }
                Decoded::Incomplete => return Ok(None),
                Decoded::Skip(n) => {
                    tracing::debug!("skipping {n} bytes of garbage between frames");
                    self.garbage_bytes += n as u64;
                    buf.advance(n);
                }
                Decoded::Invalid {
                    consumed,
                    stream,
                    error: error @ ProtoError::UnknownKind(_),
                } => {
                    tracing::debug!("skipping a frame on stream {stream}: {error}");
                    self.unknown_frames += 1;
                    buf.advance(consumed);
                }
                Decoded::Invalid { error, .. } => {
                    return Err(io::Error::new(io::ErrorKind::InvalidData, error))
                }
            }
        }
    }

    fn decode_eof(&mut self, buf: &mut BytesMut) -> io::Result<Option<Frame>> {
        match self.decode(buf)? {
            Some(frame) => Ok(Some(frame)),
            None if buf.is_empty() => Ok(None),
            None => Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "connection closed in the middle of a frame",
            )),
        }
    }
}

impl Encoder<Frame> for FrameCodec {
    type Error = io::Error;

    fn encode(&mut self, frame: Frame, dst: &mut BytesMut) -> io::Result<()> {
        dst.extend_from_slice(&frame.to_bytes());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use flotilla_agent::proto::Kind;
    use futures::StreamExt;
    use tokio::io::AsyncWriteExt;
    use tokio_util::codec::FramedRead;

    fn wire(frames: &[Frame]) -> Vec<u8> {
        let mut out = Vec::new();
        for f in frames {
            f.encode(&mut out);
        }
        out
    }

    fn stdout(stream: u32, text: &str) -> Frame {
        Frame::new(Kind::Stdout, stream, text.as_bytes().to_vec())
    }

    /// Everything a reader gets from `bytes`, split into `chunk`-sized reads.
    async fn read_all(bytes: Vec<u8>, chunk: usize) -> (Vec<io::Result<Frame>>, FrameCodec) {
        let (mut tx, rx) = tokio::io::duplex(chunk.max(1));
        let writer = tokio::spawn(async move {
            for piece in bytes.chunks(chunk.max(1)) {
                // The reader stops at its first error.
                if tx.write_all(piece).await.is_err() {
                    break;
                }
                tokio::task::yield_now().await;
            }
        });
        let mut frames = FramedRead::new(rx, FrameCodec::default());
        let mut out = Vec::new();
        while let Some(item) = frames.next().await {
            let failed = item.is_err();
            out.push(item);
            if failed {
                break;
            }
        }
        let codec = frames.decoder();
        let counts = FrameCodec {
            garbage_bytes: codec.garbage_bytes(),
            unknown_frames: codec.unknown_frames(),
        };
        drop(frames);
        writer.await.unwrap();
        (out, counts)
    }

    #[tokio::test]
    async fn frames_survive_any_split_of_the_reads() {
        let frames = vec![
            Frame::json(Kind::Hello, 0, &proto::Hello { version: 1 }),
            stdout(3, "hello"),
            Frame::new(Kind::FileEnd, 4, Vec::new()),
        ];
        for chunk in [1, 2, 3, 7, 16, 17, 1000] {
            let (got, codec) = read_all(wire(&frames), chunk).await;
            let got: Vec<Frame> = got.into_iter().map(Result::unwrap).collect();
            assert_eq!(got, frames, "reads of {chunk} bytes");
            assert_eq!(codec.garbage_bytes(), 0);
        }
    }

    #[tokio::test]
    async fn garbage_between_frames_is_skipped_and_counted() {
        let mut bytes = b"noise".to_vec();
        bytes.extend(wire(&[stdout(1, "a")]));
        bytes.extend(b"FLA"); // a magic cut short, then more noise
        bytes.extend(b"xyz");
        bytes.extend(wire(&[stdout(1, "b")]));
        for chunk in [1, 5, 64] {
            let (got, codec) = read_all(bytes.clone(), chunk).await;
            let got: Vec<Frame> = got.into_iter().map(Result::unwrap).collect();
            assert_eq!(
                got,
                [stdout(1, "a"), stdout(1, "b")],
                "reads of {chunk} bytes"
            );
            assert_eq!(codec.garbage_bytes(), 11, "reads of {chunk} bytes");
        }
    }

    #[tokio::test]
    async fn unknown_kinds_are_skipped_whole() {
        let mut unknown = wire(&[stdout(2, "FLA1 inside the payload")]);
        unknown[4] = 0x66; // no such kind
        let mut bytes = unknown;
        bytes.extend(wire(&[stdout(2, "after")]));
        let (got, codec) = read_all(bytes, 3).await;
        let got: Vec<Frame> = got.into_iter().map(Result::unwrap).collect();
        assert_eq!(got, [stdout(2, "after")]);
        assert_eq!((codec.unknown_frames(), codec.garbage_bytes()), (1, 0));
    }

    #[tokio::test]
    async fn an_oversized_length_is_an_error() {
        let mut bytes = wire(&[stdout(1, "ok")]);
        let mut big = wire(&[stdout(1, "")]);
        big[12..16].copy_from_slice(&(proto::MAX_PAYLOAD + 1).to_le_bytes());
        bytes.extend(big);
        bytes.extend(wire(&[stdout(1, "never read")]));
        let (got, _) = read_all(bytes, 4).await;
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].as_ref().unwrap(), &stdout(1, "ok"));
        let err = got[1].as_ref().unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        assert!(err.to_string().contains("exceeds the limit"), "{err}");
    }

    #[tokio::test]
    async fn a_truncated_frame_is_an_error_and_a_clean_end_is_not() {
        let whole = wire(&[stdout(1, "one"), stdout(1, "two")]);
        let (got, _) = read_all(whole[..whole.len() - 2].to_vec(), 5).await;
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].as_ref().unwrap(), &stdout(1, "one"));
        let err = got[1].as_ref().unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
        let (got, _) = read_all(whole, 5).await;
        assert_eq!(got.len(), 2);
        assert!(got.iter().all(Result::is_ok));
        // A header cut short too.
        let (got, _) = read_all(wire(&[stdout(1, "x")])[..10].to_vec(), 3).await;
        assert_eq!(got.len(), 1);
        assert_eq!(
            got[0].as_ref().unwrap_err().kind(),
            io::ErrorKind::UnexpectedEof
        );
    }

    #[test]
    fn encoding_is_the_protocol_s() {
        let frame = Frame::json(Kind::Exec, 7, &"x");
        let mut dst = BytesMut::new();
        FrameCodec::default()
            .encode(frame.clone(), &mut dst)
            .unwrap();
        assert_eq!(&dst[..], &frame.to_bytes()[..]);
        assert_eq!(FrameCodec::default().decode(&mut dst).unwrap(), Some(frame));
        assert!(dst.is_empty());
    }
}

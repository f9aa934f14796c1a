//! Capturing a whole VLAN: a `vde_plug` joined to the VLAN's switch (switched to hub
//! mode, so it sees every frame) streams the frames on its stdout, each behind a 2-byte
//! big-endian length; [`StreamDecoder`] splits them and [`PcapWriter`] writes the
//! classic pcap format that tcpdump and tshark read.

use std::io::{self, Write};
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

/// The `vde_plug` command that streams the frames of the switch at `switch_dir`. Its
/// stdin must stay open; its stdout carries the frames.
pub fn plug_command(switch_dir: &Path) -> std::process::Command {
    let mut cmd = std::process::Command::new("vde_plug");
    cmd.arg(switch_dir);
    cmd
}

/// Splits a `vde_plug` stream into frames.
#[derive(Debug, Default)]
pub struct StreamDecoder {
    buf: Vec<u8>,
}

impl StreamDecoder {
    /// Adds bytes; returns the complete frames they finish.
    pub fn push(&mut self, bytes: &[u8]) -> Vec<Vec<u8>> {
        self.buf.extend_from_slice(bytes);
        let mut frames = Vec::new();
        let mut at = 0;
        while self.buf.len() >= at + 2 {
            let len = usize::from(u16::from_be_bytes([self.buf[at], self.buf[at + 1]]));
            if self.buf.len() < at + 2 + len {
                break;
            }
            frames.push(self.buf[at + 2..at + 2 + len].to_vec());
            at += 2 + len;
        }
        self.buf.drain(..at);
        frames
    }
}

/// Writes Ethernet frames as a pcap file.
#[derive(Debug)]
pub struct PcapWriter<W: Write> {
    out: W,
}

impl<W: Write> PcapWriter<W> {
    /// Writes the file header.
    pub fn new(mut out: W) -> io::Result<PcapWriter<W>> {
        let mut header = Vec::with_capacity(24);
        header.extend_from_slice(&0xa1b2_c3d4u32.to_le_bytes());
        header.extend_from_slice(&2u16.to_le_bytes());
        header.extend_from_slice(&4u16.to_le_bytes());
        header.extend_from_slice(&0i32.to_le_bytes());
        header.extend_from_slice(&0u32.to_le_bytes());
        header.extend_from_slice(&65535u32.to_le_bytes());
        header.extend_from_slice(&1u32.to_le_bytes()); // LINKTYPE_ETHERNET
        out.write_all(&header)?;
        Ok(PcapWriter { out })
    }

    /// Writes one frame stamped with the current time.
    pub fn frame(&mut self, frame: &[u8]) -> io::Result<()> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let len = frame.len() as u32;
        let mut record = Vec::with_capacity(16 + frame.len());
        record.extend_from_slice(&(now.as_secs() as u32).to_le_bytes());
        record.extend_from_slice(&now.subsec_micros().to_le_bytes());
        record.extend_from_slice(&len.to_le_bytes());
        record.extend_from_slice(&len.to_le_bytes());
        record.extend_from_slice(frame);
        self.out.write_all(&record)
    }

    /// Flushes and returns the writer.
    pub fn finish(mut self) -> io::Result<W> {
        self.out.flush()?;
        Ok(self.out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decoder_splits_across_reads() {
        let mut d = StreamDecoder::default();
        assert!(d.push(&[0, 3, b'a']).is_empty());
        let frames = d.push(&[b'b', b'c', 0, 1, b'x', 0]);
        assert_eq!(frames, vec![b"abc".to_vec(), b"x".to_vec()]);
        assert_eq!(d.push(&[2, b'y', b'z']), vec![b"yz".to_vec()]);
    }

    #[test]
    fn pcap_layout() {
        let mut w = PcapWriter::new(Vec::new()).unwrap();
        w.frame(&[1, 2, 3]).unwrap();
        let bytes = w.finish().unwrap();
        assert_eq!(&bytes[..4], &[0xd4, 0xc3, 0xb2, 0xa1]);
        assert_eq!(bytes.len(), 24 + 16 + 3);
        assert_eq!(&bytes[32..36], &3u32.to_le_bytes());
    }
}

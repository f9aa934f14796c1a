//! The one writer of the agent port, and the handle everyone sends frames through.
//!
//! A single writer thread owns all writes so frames never interleave. Every outgoing
//! frame carries the session generation it belongs to; frames of an older session are
//! dropped, so a reconnecting host only sees its own session.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, Sender, SyncSender};
use std::sync::Arc;
use std::time::Duration;

use flotilla_agent::proto::{Frame, HEADER_LEN};

use crate::{sys, threads};

enum Out {
    Frame(u64, Frame),
    Flush(Sender<()>),
}

/// Handle for sending frames to the host.
#[derive(Clone)]
pub struct Outbox {
    tx: SyncSender<Out>,
    gen: Arc<AtomicU64>,
}

impl Outbox {
    /// Start the thread that writes to `port`; `gen` is the current session.
    pub fn start(port: Arc<OwnedFd>, gen: Arc<AtomicU64>) -> io::Result<Outbox> {
        // Bounded: at most this many frames (of up to 64 KiB of output each) in flight;
        // producers block, which throttles the commands writing into their pipes.
        let (tx, rx) = sync_channel(8);
        {
            let gen = gen.clone();
            threads::spawn("writer", move || writer(port, rx, gen))?;
        }
        Ok(Outbox { tx, gen })
    }

    /// Queue `frame` for the session `gen`; dropped (and false returned) if that
    /// session is over.
    pub fn send(&self, gen: u64, frame: Frame) -> bool {
        gen == self.gen.load(Ordering::Acquire) && self.tx.send(Out::Frame(gen, frame)).is_ok()
    }

    /// Wait until everything queued so far has been written (or dropped).
    pub fn flush(&self) {
        let (tx, rx) = std::sync::mpsc::channel();
        if self.tx.send(Out::Flush(tx)).is_ok() {
            let _ = rx.recv_timeout(Duration::from_secs(5));
        }
    }

    pub fn current_gen(&self) -> u64 {
        self.gen.load(Ordering::Acquire)
    }
}

fn writer(port: Arc<OwnedFd>, rx: Receiver<Out>, gen: Arc<AtomicU64>) {
    let mut buf = Vec::with_capacity(HEADER_LEN + 64 * 1024);
    for msg in rx {
        match msg {
            Out::Flush(ack) => {
                let _ = ack.send(());
            }
            Out::Frame(g, frame) => {
                if g != gen.load(Ordering::Acquire) {
                    continue;
                }
                buf.clear();
                frame.encode(&mut buf);
                write_frame(port.as_raw_fd(), &buf);
                if buf.capacity() > 256 * 1024 {
                    buf = Vec::with_capacity(HEADER_LEN + 64 * 1024);
                }
            }
        }
    }
}

/// Write one whole frame, or drop it if the host is not connected. Never sends half a
/// frame into a new connection: a hang-up mid-frame drops the rest.
fn write_frame(fd: RawFd, mut buf: &[u8]) {
    while !buf.is_empty() {
        let mut p = [sys::pollfd(fd, libc::POLLOUT)];
        if sys::poll(&mut p, None).is_err() {
            return;
        }
        if p[0].revents & libc::POLLHUP != 0 {
            return;
        }
        if p[0].revents & libc::POLLOUT == 0 {
            continue;
        }
        match sys::write(fd, buf) {
            Ok(n) => buf = &buf[n..],
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => {
                crate::console!("writing to the agent port: {e}");
                std::thread::sleep(Duration::from_millis(100));
                return;
            }
        }
    }
}

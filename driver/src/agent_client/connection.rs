//! A connection to flotilla-agent: one task owns the socket's read half and routes
//! frames by stream id, another writes; each request waits on its own stream.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use flotilla_agent::proto::{
    self, Frame, Hello, HelloReply, Kind, NetConfig, ScreenText, ShutdownRequest,
};
use futures::{SinkExt, StreamExt};
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::UnixStream;
use tokio::sync::mpsc;
use tokio_util::codec::{FramedRead, FramedWrite};

use super::codec::FrameCodec;
use super::error::AgentError;

/// Where the frames of each open stream go; stream 0 is the session's.
type Routes = Arc<Mutex<HashMap<u32, mpsc::UnboundedSender<Frame>>>>;

/// Where a connection says what happened to it outside any request (it broke, the
/// agent complained, garbage was skipped): the machine's log, naming the machine.
pub(crate) type Notes = Arc<dyn Fn(&str) + Send + Sync>;

/// A connected, handshaken flotilla-agent.
#[derive(Debug)]
pub struct AgentConnection {
    writer: mpsc::Sender<Frame>,
    routes: Routes,
    next_stream: AtomicU32,
    pub hello: HelloReply,
}

impl AgentConnection {
    /// Connects to the agent's socket and performs the version handshake; what later
    /// happens to the connection outside a request goes to `notes`.
    pub async fn connect(
        path: &Path,
        timeout: Duration,
        notes: Notes,
    ) -> Result<AgentConnection, AgentError> {
        let stream = UnixStream::connect(path)
            .await
            .map_err(|source| AgentError::Connect {
                path: path.display().to_string(),
                source,
            })?;
        let (rd, wr) = stream.into_split();
        let routes: Routes = Arc::default();
        // Bounded: a large push waits for the socket instead of filling memory.
        let (writer, write_rx) = mpsc::channel::<Frame>(64);
        tokio::spawn(write_frames(wr, write_rx));
        let (control_tx, control_rx) = mpsc::unbounded_channel::<Frame>();
        routes
            .lock()
            .map_err(|_| AgentError::Closed)?
            .insert(0, control_tx);
        tokio::spawn(route_frames(rd, routes.clone(), notes.clone()));
        let mut conn = AgentConnection {
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
        let hello = Frame::json(
            Kind::Hello,
            0,
            &Hello {
                version: proto::PROTOCOL_VERSION,
            },
        );
        conn.send(hello.clone()).await?;
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
                    conn.send(hello.clone()).await?;
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
            Kind::Error => return Err(AgentError::remote(&reply)),
            other => return Err(AgentError::Unexpected(other)),
        }
        // Later control frames (errors about garbage, shutdown acks): the errors are
        // noted.
        tokio::spawn(async move {
            while let Some(frame) = control.recv().await {
                if frame.kind == Kind::Error {
                    notes(&format!(
                        "the agent reported: {}",
                        AgentError::remote(&frame)
                    ));
                }
            }
        });
        Ok(conn)
    }

    async fn send(&self, frame: Frame) -> Result<(), AgentError> {
        self.writer
            .send(frame)
            .await
            .map_err(|_| AgentError::Closed)
    }

    /// A new stream for one request, and where its frames arrive.
    pub(super) fn open_stream(
        &self,
    ) -> Result<(Stream, mpsc::UnboundedReceiver<Frame>), AgentError> {
        let id = self.next_stream.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = mpsc::unbounded_channel();
        let mut routes = self.routes.lock().map_err(|_| AgentError::Closed)?;
        // An empty route table means the connection task has ended.
        if routes.is_empty() {
            return Err(AgentError::Closed);
        }
        routes.insert(id, tx);
        let stream = Stream {
            id,
            writer: self.writer.clone(),
            routes: self.routes.clone(),
            finished: false,
        };
        Ok((stream, rx))
    }

    /// Whether the agent listed `feature` (e.g. [`proto::FEATURE_NET_CONFIG`]) in its
    /// HelloReply.
    pub fn has_feature(&self, feature: &str) -> bool {
        self.hello.features.iter().any(|f| f == feature)
    }

    /// Configures the guest's network without a process (needs
    /// [`proto::FEATURE_NET_CONFIG`]; older agents answer an error).
    pub async fn net_config(&self, config: &NetConfig) -> Result<(), AgentError> {
        let frame = self
            .one_reply(Frame::json(Kind::NetConfig, 0, config))
            .await?;
        match frame.kind {
            Kind::NetConfigDone => Ok(()),
            other => Err(AgentError::Unexpected(other)),
        }
    }

    /// Reads the guest's foreground virtual console (needs
    /// [`proto::FEATURE_SCREEN_TEXT`]; older agents answer an error).
    pub async fn screen_text(&self) -> Result<ScreenText, AgentError> {
        let frame = self
            .one_reply(Frame::new(Kind::ScreenText, 0, Vec::new()))
            .await?;
        match frame.kind {
            Kind::ScreenTextReply => frame.parse_json().map_err(AgentError::Decode),
            other => Err(AgentError::Unexpected(other)),
        }
    }

    /// Sends `request` on a new stream (its stream id is set here) and returns the
    /// one frame that answers it; an Error frame is the agent's error.
    async fn one_reply(&self, mut request: Frame) -> Result<Frame, AgentError> {
        let (mut stream, mut rx) = self.open_stream()?;
        request.stream = stream.id;
        stream.send(request).await?;
        let frame = rx.recv().await.ok_or(AgentError::Closed)?;
        stream.finished = true;
        match frame.kind {
            Kind::Error => Err(AgentError::remote(&frame)),
            _ => Ok(frame),
        }
    }

    /// Asks the guest to power off (or reboot). The caller waits for QEMU to exit.
    pub async fn shutdown(&self, reboot: bool) -> Result<(), AgentError> {
        self.send(Frame::json(Kind::Shutdown, 0, &ShutdownRequest { reboot }))
            .await
    }
}

/// The writing task: frames from `frames` to the socket, until either ends.
async fn write_frames(wr: OwnedWriteHalf, mut frames: mpsc::Receiver<Frame>) {
    let mut sink = FramedWrite::new(wr, FrameCodec::default());
    while let Some(frame) = frames.recv().await {
        if sink.send(frame).await.is_err() {
            break;
        }
    }
}

/// The reading task: each frame to its stream's route (frames of closed streams are
/// dropped), until the connection ends; then every route is dropped, which wakes
/// every waiter with "closed". A connection that breaks (rather than closes) and the
/// bytes it skipped are noted.
async fn route_frames(rd: OwnedReadHalf, routes: Routes, notes: Notes) {
    let mut frames = FramedRead::new(rd, FrameCodec::default());
    while let Some(frame) = frames.next().await {
        let frame = match frame {
            Ok(frame) => frame,
            Err(e) => {
                notes(&broken(&e));
                break;
            }
        };
        let Ok(routes) = routes.lock() else {
            break;
        };
        if let Some(tx) = routes.get(&frame.stream) {
            let _ = tx.send(frame);
        } else {
            tracing::debug!("agent frame for unknown stream {}", frame.stream);
        }
    }
    let codec = frames.decoder();
    if codec.garbage_bytes() > 0 || codec.unknown_frames() > 0 {
        notes(&format!(
            "agent connection ended; it skipped {} bytes of garbage and {} frames of unknown kinds",
            codec.garbage_bytes(),
            codec.unknown_frames()
        ));
    }
    if let Ok(mut routes) = routes.lock() {
        routes.clear();
    }
}

/// What a broken agent connection says: "agent connection reset by peer" when QEMU
/// went away with data unread (it was killed), else the error.
fn broken(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::ConnectionReset => "agent connection reset by peer".into(),
        _ => format!("agent connection broken: {e}"),
    }
}

/// One request's stream: its route is removed when it is dropped, and what runs on it
/// is killed in the guest unless it `finished`.
#[derive(Debug)]
pub(super) struct Stream {
    pub(super) id: u32,
    writer: mpsc::Sender<Frame>,
    routes: Routes,
    /// The request ended (its last frame arrived): nothing to kill.
    pub(super) finished: bool,
}

impl Stream {
    pub(super) async fn send(&self, frame: Frame) -> Result<(), AgentError> {
        self.writer
            .send(frame)
            .await
            .map_err(|_| AgentError::Closed)
    }
}

impl Drop for Stream {
    fn drop(&mut self) {
        if !self.finished {
            // Best effort, never waits.
            let _ = self
                .writer
                .try_send(Frame::new(Kind::Kill, self.id, Vec::new()));
        }
        if let Ok(mut routes) = self.routes.lock() {
            routes.remove(&self.id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The notes a connection made, in order.
    fn collecting() -> (Notes, Arc<Mutex<Vec<String>>>) {
        let seen: Arc<Mutex<Vec<String>>> = Arc::default();
        let sink = seen.clone();
        let notes: Notes = Arc::new(move |n: &str| {
            if let Ok(mut s) = sink.lock() {
                s.push(n.to_owned());
            }
        });
        (notes, seen)
    }

    #[tokio::test]
    async fn skipped_garbage_is_noted_when_the_connection_ends() {
        let (host, agent) = UnixStream::pair().expect("a socket pair");
        let (rd, _wr) = host.into_split();
        let (notes, seen) = collecting();
        let routes: Routes = Arc::default();
        let reading = tokio::spawn(route_frames(rd, routes, notes));
        {
            use tokio::io::AsyncWriteExt;
            let mut agent = agent;
            agent
                .write_all(b"not a frame at all")
                .await
                .expect("written");
        }
        tokio::time::timeout(Duration::from_secs(30), reading)
            .await
            .expect("the reader ends with the connection")
            .expect("no panic");
        let seen = seen.lock().expect("not poisoned").clone();
        assert_eq!(seen.len(), 1, "{seen:?}");
        assert!(
            seen[0].starts_with("agent connection ended; it skipped ")
                && seen[0].contains(" bytes of garbage and 0 frames of unknown kinds"),
            "{seen:?}"
        );
    }

    #[test]
    fn a_broken_connection_says_how() {
        let reset = std::io::Error::from(std::io::ErrorKind::ConnectionReset);
        assert_eq!(broken(&reset), "agent connection reset by peer");
        let other = std::io::Error::new(std::io::ErrorKind::InvalidData, "frame too large");
        assert_eq!(broken(&other), "agent connection broken: frame too large");
    }
}

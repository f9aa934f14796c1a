//! The task that owns the socket.
//!
//! [`handshake`] reads the greeting and negotiates capabilities; [`spawn`] then
//! moves the framed socket into a task that numbers outgoing commands, matches
//! replies to callers by id and fans events out to subscribers. When the peer
//! goes away the task fails every pending call and marks the connection closed.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{broadcast, mpsc, oneshot, watch};
use tokio_util::codec::Framed;
use tracing::{debug, trace, warn, Instrument};

use crate::codec::{Event, Greeting, Message, Outgoing, QmpCodec};
use crate::error::Error;

/// A command on its way to the connection task.
#[derive(Debug)]
pub(crate) struct Request {
    pub command: String,
    pub arguments: Option<Value>,
    pub oob: bool,
    pub reply: oneshot::Sender<Result<Value, Error>>,
}

/// What the client side keeps of a running connection.
#[derive(Debug)]
pub(crate) struct Handle {
    pub requests: mpsc::Sender<Request>,
    pub events: broadcast::WeakSender<Event>,
    pub closed: watch::Receiver<bool>,
    pub close_reason: Arc<Mutex<Option<Arc<Error>>>>,
}

/// Reads the greeting and sends `qmp_capabilities`, enabling `oob` when offered
/// and wanted. Returns the greeting and whether `oob` is on.
pub(crate) async fn handshake<S>(
    framed: &mut Framed<S, QmpCodec>,
    enable_oob: bool,
    timeout: Duration,
) -> Result<(Greeting, bool), Error>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let exchange = async {
        let greeting = match framed.next().await {
            Some(Ok(Message::Greeting(greeting))) => greeting,
            Some(Ok(other)) => {
                return Err(Error::Handshake(format!(
                    "expected a greeting, got {other:?}"
                )))
            }
            Some(Err(e)) => return Err(e),
            None => {
                return Err(Error::Handshake(
                    "connection closed before the greeting".to_owned(),
                ))
            }
        };
        let oob = enable_oob && greeting.capabilities.iter().any(|c| c == "oob");
        let arguments = oob.then(|| json!({ "enable": ["oob"] }));
        let negotiate = Outgoing {
            command: "qmp_capabilities".to_owned(),
            arguments,
            id: Some(json!("negotiate")),
            oob: false,
        };
        framed.send(&negotiate).await?;
        loop {
            match framed.next().await {
                Some(Ok(Message::Return { .. })) => return Ok((greeting, oob)),
                Some(Ok(Message::Error { error, .. })) => {
                    return Err(Error::Qmp {
                        command: "qmp_capabilities".to_owned(),
                        class: error.class,
                        desc: error.desc,
                    })
                }
                Some(Ok(Message::Event(event))) => {
                    debug!(event = %event.event, "event during negotiation");
                }
                Some(Ok(Message::Greeting(_))) => {
                    return Err(Error::Handshake(
                        "a second greeting during negotiation".to_owned(),
                    ))
                }
                Some(Err(e)) => return Err(e),
                None => {
                    return Err(Error::Handshake(
                        "connection closed during capability negotiation".to_owned(),
                    ))
                }
            }
        }
    };
    tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| Error::HandshakeTimeout(timeout))?
}

/// Starts the connection task on an already negotiated socket.
pub(crate) fn spawn<S>(
    framed: Framed<S, QmpCodec>,
    event_capacity: usize,
    span: tracing::Span,
) -> Handle
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (requests_tx, requests_rx) = mpsc::channel(64);
    let (events_tx, _) = broadcast::channel(event_capacity.max(1));
    let (closed_tx, closed_rx) = watch::channel(false);
    let close_reason = Arc::new(Mutex::new(None));
    let handle = Handle {
        requests: requests_tx,
        events: events_tx.downgrade(),
        closed: closed_rx,
        close_reason: Arc::clone(&close_reason),
    };
    let task = Task {
        framed,
        requests: requests_rx,
        events: events_tx,
        closed: closed_tx,
        close_reason,
        pending: BTreeMap::new(),
        next_id: 1,
    };
    tokio::spawn(task.run().instrument(span));
    handle
}

struct Pending {
    command: String,
    reply: oneshot::Sender<Result<Value, Error>>,
}

struct Task<S> {
    framed: Framed<S, QmpCodec>,
    requests: mpsc::Receiver<Request>,
    events: broadcast::Sender<Event>,
    closed: watch::Sender<bool>,
    close_reason: Arc<Mutex<Option<Arc<Error>>>>,
    /// Sent commands waiting for a reply, by id (ordered: oldest first).
    pending: BTreeMap<u64, Pending>,
    next_id: u64,
}

/// Why the task stopped.
enum End {
    /// EOF or an I/O error: plain disconnect.
    Disconnected(Option<Error>),
    /// QEMU sent something that is not QMP.
    Protocol(Error),
    /// Every client handle was dropped.
    Dropped,
}

impl<S> Task<S>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    async fn run(mut self) {
        let end = loop {
            tokio::select! {
                incoming = self.framed.next() => match incoming {
                    None => break End::Disconnected(None),
                    Some(Ok(message)) => self.dispatch(message),
                    Some(Err(e)) if e.is_connection_lost() => break End::Disconnected(Some(e)),
                    Some(Err(e)) => break End::Protocol(e),
                },
                request = self.requests.recv() => match request {
                    None => break End::Dropped,
                    Some(request) => {
                        if let Err(e) = self.send_queued(request).await {
                            break End::Disconnected(Some(e));
                        }
                    }
                },
            }
        };
        self.finish(end);
    }

    /// Writes `first` and whatever else is already queued, then flushes once
    /// (concurrent callers share a write). Errors only when the socket is unusable.
    async fn send_queued(&mut self, first: Request) -> Result<(), Error> {
        self.feed(first).await?;
        for _ in 0..64 {
            match self.requests.try_recv() {
                Ok(request) => self.feed(request).await?,
                Err(_) => break,
            }
        }
        futures::SinkExt::<&Outgoing>::flush(&mut self.framed).await
    }

    /// Buffers one command.
    async fn feed(&mut self, request: Request) -> Result<(), Error> {
        if request.reply.is_closed() {
            return Ok(()); // the caller gave up before we got to it
        }
        let id = self.next_id;
        self.next_id += 1;
        let outgoing = Outgoing {
            command: request.command,
            arguments: request.arguments,
            id: Some(json!(id)),
            oob: request.oob,
        };
        trace!(id, command = %outgoing.command, oob = outgoing.oob, "sending");
        if self.pending.len() >= 256 {
            // Drop entries of callers that went away (timeouts, cancellations)
            // whose replies never came.
            self.pending.retain(|_, p| !p.reply.is_closed());
        }
        // Registered before writing: if the write fails the caller learns the
        // command may have reached QEMU (matters for `quit`).
        self.pending.insert(
            id,
            Pending {
                command: outgoing.command.clone(),
                reply: request.reply,
            },
        );
        match self.framed.feed(&outgoing).await {
            Ok(()) => Ok(()),
            Err(e @ Error::Io(_)) => Err(e),
            Err(e) => {
                if let Some(p) = self.pending.remove(&id) {
                    let _ = p.reply.send(Err(e));
                }
                Ok(())
            }
        }
    }

    fn dispatch(&mut self, message: Message) {
        match message {
            Message::Return { id, value } => self.reply(id, Ok(value)),
            Message::Error { id: None, error } => {
                // QEMU omits the id only when it could not parse the command;
                // in-band replies come in order, so it belongs to the oldest one.
                match self.pending.pop_first() {
                    Some((id, p)) => {
                        warn!(id, command = %p.command, class = %error.class, desc = %error.desc,
                            "error reply without id; giving it to the oldest pending command");
                        let _ = p.reply.send(Err(Error::Qmp {
                            command: p.command,
                            class: error.class,
                            desc: error.desc,
                        }));
                    }
                    None => warn!(class = %error.class, desc = %error.desc,
                        "error reply without id and no command pending; ignored"),
                }
            }
            Message::Error {
                id: Some(id),
                error,
            } => self.reply(Some(id), Err(error)),
            Message::Event(event) => {
                trace!(event = %event.event, "event");
                // No subscribers is fine: nobody asked.
                let _ = self.events.send(event);
            }
            Message::Greeting(_) => warn!("unexpected greeting after negotiation; ignored"),
        }
    }

    fn reply(&mut self, id: Option<Value>, result: Result<Value, crate::codec::QmpErrorBody>) {
        let Some(key) = id.as_ref().and_then(Value::as_u64) else {
            warn!(id = ?id, "reply with an id this client never sent; ignored");
            return;
        };
        let Some(p) = self.pending.remove(&key) else {
            debug!(id = key, "reply for a command nobody waits for; discarded");
            return;
        };
        let result = result.map_err(|error| Error::Qmp {
            command: p.command.clone(),
            class: error.class,
            desc: error.desc,
        });
        if p.reply.send(result).is_err() {
            debug!(id = key, command = %p.command, "late reply discarded");
        }
    }

    fn finish(mut self, end: End) {
        let (reason, protocol) = match end {
            End::Dropped => {
                debug!("all client handles dropped; closing");
                (None, false)
            }
            End::Disconnected(None) => {
                debug!("peer closed the connection");
                (None, false)
            }
            End::Disconnected(Some(e)) => {
                debug!(error = %e, "connection lost");
                (Some(Arc::new(e)), false)
            }
            End::Protocol(e) => {
                warn!(error = %e, "closing the connection after a protocol error");
                (Some(Arc::new(e)), true)
            }
        };
        if let Ok(mut slot) = self.close_reason.lock() {
            slot.clone_from(&reason);
        }
        // Refuse new requests, then tell everyone.
        self.requests.close();
        let _ = self.closed.send(true);
        for (_, p) in std::mem::take(&mut self.pending) {
            let error = match &reason {
                Some(r) if protocol => Error::Protocol(Arc::clone(r)),
                _ => Error::Disconnected,
            };
            let _ = p.reply.send(Err(error));
        }
        // Requests queued but never written: dropping their reply senders tells
        // the callers the command was not sent.
        while self.requests.try_recv().is_ok() {}
    }
}

//! The cloneable handle callers use: commands, events, connection state.

use std::fmt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use futures::stream::BoxStream;
use serde_json::Value;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{broadcast, oneshot};
use tokio_util::codec::Framed;
use tracing::Instrument;

use crate::codec::{Event, Greeting, QmpCodec, DEFAULT_MAX_LINE_LEN};
use crate::commands::{self, Command, StatusInfo};
use crate::connection::{self, Handle, Request};
use crate::error::Error;
use crate::socket::connect_socket;
use crate::timeout::within;

/// Knobs for [`Client::connect_with`] and [`Client::connect_unix_with`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ConnectOptions {
    /// Longest line accepted from QEMU (default 16 MiB).
    pub max_line_len: usize,
    /// Time allowed for the greeting and `qmp_capabilities` (default 10 s).
    pub handshake_timeout: Duration,
    /// Events buffered per subscriber before it is told it lagged (default 1024).
    pub event_capacity: usize,
    /// Enable out-of-band execution when QEMU offers it (default true).
    pub enable_oob: bool,
}

impl Default for ConnectOptions {
    fn default() -> Self {
        Self {
            max_line_len: DEFAULT_MAX_LINE_LEN,
            handshake_timeout: Duration::from_secs(10),
            event_capacity: 1024,
            enable_oob: true,
        }
    }
}

impl ConnectOptions {
    /// Sets [`ConnectOptions::max_line_len`].
    pub fn max_line_len(mut self, bytes: usize) -> Self {
        self.max_line_len = bytes;
        self
    }

    /// Sets [`ConnectOptions::handshake_timeout`].
    pub fn handshake_timeout(mut self, timeout: Duration) -> Self {
        self.handshake_timeout = timeout;
        self
    }

    /// Sets [`ConnectOptions::event_capacity`].
    pub fn event_capacity(mut self, events: usize) -> Self {
        self.event_capacity = events;
        self
    }

    /// Sets [`ConnectOptions::enable_oob`].
    pub fn enable_oob(mut self, enable: bool) -> Self {
        self.enable_oob = enable;
        self
    }
}

/// A connected, negotiated QMP session. Cheap to clone; all clones share one
/// connection. The connection closes when the last clone is dropped or QEMU
/// goes away.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

struct Inner {
    greeting: Greeting,
    oob: bool,
    handle: Handle,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("qemu", &self.inner.greeting.version.qemu)
            .field("oob", &self.inner.oob)
            .field("closed", &self.is_closed())
            .finish()
    }
}

/// Why a round trip failed: before or after the command was handed to the socket.
enum CallError {
    NotSent,
    Failed(Error),
}

impl From<CallError> for Error {
    fn from(e: CallError) -> Self {
        match e {
            CallError::NotSent => Error::Disconnected,
            CallError::Failed(e) => e,
        }
    }
}

impl Client {
    /// Connects to QEMU's QMP Unix socket and negotiates capabilities.
    pub async fn connect_unix(path: impl AsRef<Path>) -> Result<Client, Error> {
        Self::connect_unix_with(path, ConnectOptions::default()).await
    }

    /// [`Client::connect_unix`] with options.
    pub async fn connect_unix_with(
        path: impl AsRef<Path>,
        options: ConnectOptions,
    ) -> Result<Client, Error> {
        let stream = connect_socket(path.as_ref()).await?;
        Self::connect_with(stream, options).await
    }

    /// Connects to a socket that may not exist yet, retrying every 20 ms until
    /// `within` has passed; what QEMU started with `server=on,wait=off` needs.
    pub async fn connect_unix_retry(
        path: impl AsRef<Path>,
        within: Duration,
    ) -> Result<Client, Error> {
        Self::connect_unix_retry_with(path, within, ConnectOptions::default()).await
    }

    /// [`Client::connect_unix_retry`] with options. QEMU listens on its socket as soon
    /// as it has parsed its options but greets only once its machine is made (memory,
    /// kernel and initrd loaded): on a busy host that can take longer than the default
    /// [`ConnectOptions::handshake_timeout`].
    pub async fn connect_unix_retry_with(
        path: impl AsRef<Path>,
        within: Duration,
        options: ConnectOptions,
    ) -> Result<Client, Error> {
        let path = path.as_ref();
        let deadline = tokio::time::Instant::now() + within;
        loop {
            match connect_socket(path).await {
                Ok(stream) => {
                    let label = path.display().to_string();
                    return Self::connect_labeled(stream, options, label).await;
                }
                Err(e) if tokio::time::Instant::now() >= deadline => return Err(e),
                Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
    }

    /// Runs QMP over any byte stream (tests use an in-memory duplex).
    pub async fn connect<S>(stream: S) -> Result<Client, Error>
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        Self::connect_with(stream, ConnectOptions::default()).await
    }

    /// [`Client::connect`] with options.
    pub async fn connect_with<S>(stream: S, options: ConnectOptions) -> Result<Client, Error>
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        Self::connect_labeled(stream, options, "stream".to_owned()).await
    }

    async fn connect_labeled<S>(
        stream: S,
        options: ConnectOptions,
        label: String,
    ) -> Result<Client, Error>
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let span = tracing::debug_span!("qmp", peer = %label);
        let mut framed = Framed::new(stream, QmpCodec::with_max_line_len(options.max_line_len));
        let (greeting, oob) =
            connection::handshake(&mut framed, options.enable_oob, options.handshake_timeout)
                .instrument(span.clone())
                .await?;
        span.in_scope(|| tracing::debug!(qemu = %greeting.version.qemu, oob, "qmp negotiated"));
        let handle = connection::spawn(framed, options.event_capacity, span);
        Ok(Client {
            inner: Arc::new(Inner {
                greeting,
                oob,
                handle,
            }),
        })
    }

    /// QEMU's greeting: version and offered capabilities.
    pub fn greeting(&self) -> &Greeting {
        &self.inner.greeting
    }

    /// Whether out-of-band execution was negotiated.
    pub fn oob_enabled(&self) -> bool {
        self.inner.oob
    }

    async fn call(
        &self,
        command: &str,
        arguments: Option<Value>,
        oob: bool,
    ) -> Result<Value, CallError> {
        let (reply, rx) = oneshot::channel();
        let request = Request {
            command: command.to_owned(),
            arguments,
            oob,
            reply,
        };
        self.inner
            .handle
            .requests
            .send(request)
            .await
            .map_err(|_| CallError::NotSent)?;
        match rx.await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(e)) => Err(CallError::Failed(e)),
            Err(_) => Err(CallError::NotSent),
        }
    }

    /// Runs `command` with optional JSON `arguments` and returns the `return`
    /// value. An `error` reply becomes [`Error::Qmp`].
    pub async fn execute_raw(
        &self,
        command: &str,
        arguments: Option<Value>,
    ) -> Result<Value, Error> {
        Ok(self.call(command, arguments, false).await?)
    }

    /// [`Client::execute_raw`] that gives up after `timeout` with
    /// [`Error::Timeout`]. The connection stays usable; a late reply is dropped.
    pub async fn execute_raw_timeout(
        &self,
        command: &str,
        arguments: Option<Value>,
        timeout: Duration,
    ) -> Result<Value, Error> {
        within(command, timeout, self.execute_raw(command, arguments)).await
    }

    /// Runs `command` out of band (`exec-oob`): QEMU answers it even while an
    /// in-band command is still running. Only commands marked `allow-oob` in the
    /// schema qualify (e.g. `migrate-pause`, `x-oob-test`), and only when
    /// [`Client::oob_enabled`]; otherwise QEMU replies with an error.
    pub async fn execute_oob(
        &self,
        command: &str,
        arguments: Option<Value>,
    ) -> Result<Value, Error> {
        Ok(self.call(command, arguments, true).await?)
    }

    /// Runs a typed command.
    pub async fn execute<C: Command>(&self, cmd: &C) -> Result<C::Output, Error> {
        let arguments = commands::arguments(cmd)?;
        let value = self.execute_raw(C::NAME, arguments).await?;
        commands::output::<C>(value)
    }

    /// [`Client::execute`] with a timeout, like [`Client::execute_raw_timeout`].
    pub async fn execute_timeout<C: Command>(
        &self,
        cmd: &C,
        timeout: Duration,
    ) -> Result<C::Output, Error> {
        within(C::NAME, timeout, self.execute(cmd)).await
    }

    /// `query-status`: whether the guest CPUs run and the VM's run state.
    pub async fn query_status(&self) -> Result<StatusInfo, Error> {
        self.execute(&commands::QueryStatus {}).await
    }

    /// `query-version`.
    pub async fn query_version(&self) -> Result<crate::codec::VersionInfo, Error> {
        self.execute(&commands::QueryVersion {}).await
    }

    /// `stop`: pause the guest CPUs (a `STOP` event follows).
    pub async fn stop(&self) -> Result<(), Error> {
        self.execute(&commands::Stop {}).await.map(drop)
    }

    /// `cont`: resume the guest CPUs (a `RESUME` event follows).
    pub async fn cont(&self) -> Result<(), Error> {
        self.execute(&commands::Cont {}).await.map(drop)
    }

    /// `system_powerdown`: press the ACPI power button (the guest decides).
    pub async fn system_powerdown(&self) -> Result<(), Error> {
        self.execute(&commands::SystemPowerdown {}).await.map(drop)
    }

    /// `system_reset`: hard reset.
    pub async fn system_reset(&self) -> Result<(), Error> {
        self.execute(&commands::SystemReset {}).await.map(drop)
    }

    /// `query-commands`: names of every command this QEMU accepts.
    pub async fn query_commands(&self) -> Result<Vec<String>, Error> {
        let list = self.execute(&commands::QueryCommands {}).await?;
        Ok(list.into_iter().map(|c| c.name).collect())
    }

    /// `query-name`: the `-name` of the VM, if any.
    pub async fn query_name(&self) -> Result<Option<String>, Error> {
        Ok(self.execute(&commands::QueryName {}).await?.name)
    }

    /// `screendump` of the primary console to `path` on the host, as PNG.
    pub async fn screendump_png(&self, path: impl AsRef<Path>) -> Result<(), Error> {
        let cmd = commands::Screendump {
            filename: path.as_ref().to_string_lossy().into_owned(),
            device: None,
            head: None,
            format: Some(commands::ImageFormat::Png),
        };
        self.execute(&cmd).await.map(drop)
    }

    /// `send-key`: press `qcodes` together (e.g. `["ctrl", "alt", "delete"]`).
    pub async fn send_keys(&self, qcodes: &[&str]) -> Result<(), Error> {
        let keys = qcodes
            .iter()
            .map(|k| commands::KeyValue::qcode(k))
            .collect();
        self.execute(&commands::SendKey {
            keys,
            hold_time: None,
        })
        .await
        .map(drop)
    }

    /// `human-monitor-command`: run an HMP command line and return its output.
    pub async fn human_monitor_command(&self, command_line: &str) -> Result<String, Error> {
        let cmd = commands::HumanMonitorCommand {
            command_line: command_line.to_owned(),
            cpu_index: None,
        };
        self.execute(&cmd).await
    }

    /// `set_link`: NIC or netdev `name` link up or down.
    pub async fn set_link(&self, name: &str, up: bool) -> Result<(), Error> {
        self.execute(&commands::SetLink {
            name: name.to_owned(),
            up,
        })
        .await
        .map(drop)
    }

    /// `device_del`: request unplug of `id`; wait for
    /// [`events::DEVICE_DELETED`](crate::events::DEVICE_DELETED) to know it is gone.
    pub async fn device_del(&self, id: &str) -> Result<(), Error> {
        self.execute(&commands::DeviceDel { id: id.to_owned() })
            .await
            .map(drop)
    }

    /// `query-cpus-fast`.
    pub async fn query_cpus_fast(&self) -> Result<Vec<commands::CpuInfoFast>, Error> {
        self.execute(&commands::QueryCpusFast {}).await
    }

    /// `quit`: make QEMU exit. QEMU may close the socket right after replying or
    /// before the reply is read; a disconnect after the command was sent counts
    /// as success. Fails with [`Error::Disconnected`] if the connection was
    /// already closed.
    pub async fn quit(&self) -> Result<(), Error> {
        match self.call("quit", None, false).await {
            Ok(_) => Ok(()),
            Err(CallError::Failed(e)) if e.is_disconnected() => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// A stream of every event from now on.
    pub fn subscribe(&self) -> EventStream {
        EventStream {
            rx: self.receiver(),
            names: None,
        }
    }

    /// A stream of the events whose name is in `names`.
    pub fn subscribe_filtered<I, N>(&self, names: I) -> EventStream
    where
        I: IntoIterator<Item = N>,
        N: Into<String>,
    {
        let names = names.into_iter().map(Into::into).collect();
        EventStream {
            rx: self.receiver(),
            names: Some(names),
        }
    }

    fn receiver(&self) -> broadcast::Receiver<Event> {
        match self.inner.handle.events.upgrade() {
            Some(sender) => sender.subscribe(),
            // Connection gone: a receiver that is already closed.
            None => broadcast::channel(1).1,
        }
    }

    /// Waits for the first event, from now on, for which `filter` is true.
    ///
    /// Only events emitted after this call are seen; to avoid a race with a
    /// command that triggers the event, [`Client::subscribe`] first and use
    /// [`EventStream::wait_for`].
    pub async fn wait_for_event(
        &self,
        filter: impl Fn(&Event) -> bool,
        timeout: Duration,
    ) -> Result<Event, Error> {
        self.subscribe().wait_for(filter, timeout).await
    }

    /// True once the connection is gone (QEMU exited, closed the socket, or sent
    /// something unreadable).
    pub fn is_closed(&self) -> bool {
        *self.inner.handle.closed.borrow() || self.inner.handle.requests.is_closed()
    }

    /// Resolves when the connection is gone; handy to notice QEMU dying.
    pub async fn closed(&self) {
        let mut closed = self.inner.handle.closed.clone();
        // An error means the task is gone, which is closed too.
        let _ = closed.wait_for(|&c| c).await;
    }

    /// Why the connection closed, when it closed on an error (an I/O error or a
    /// protocol violation); `None` while open or after a clean EOF.
    pub fn close_reason(&self) -> Option<Arc<Error>> {
        self.inner
            .handle
            .close_reason
            .lock()
            .ok()
            .and_then(|r| r.clone())
    }
}

/// Events lost by a subscriber that fell behind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("qmp: event subscriber fell behind and lost {0} events")]
pub struct Lagged(pub u64);

/// Events from one subscription; see [`Client::subscribe`].
#[derive(Debug)]
pub struct EventStream {
    rx: broadcast::Receiver<Event>,
    names: Option<Vec<String>>,
}

impl EventStream {
    /// The next event; `Some(Err(Lagged(n)))` if `n` events were dropped because
    /// this subscriber fell behind; `None` once the connection is closed and
    /// every buffered event was delivered.
    pub async fn recv(&mut self) -> Option<Result<Event, Lagged>> {
        loop {
            match self.rx.recv().await {
                Ok(event) => {
                    if let Some(names) = &self.names {
                        if !names.contains(&event.event) {
                            continue;
                        }
                    }
                    return Some(Ok(event));
                }
                Err(broadcast::error::RecvError::Lagged(n)) => return Some(Err(Lagged(n))),
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    }

    /// Waits for the first event for which `filter` is true. Fails with
    /// [`Error::EventTimeout`], [`Error::EventsLost`] if this subscriber lagged
    /// (the event may have been among the lost), or [`Error::Disconnected`].
    pub async fn wait_for(
        &mut self,
        filter: impl Fn(&Event) -> bool,
        timeout: Duration,
    ) -> Result<Event, Error> {
        let wait = async {
            loop {
                match self.recv().await {
                    Some(Ok(event)) if filter(&event) => return Ok(event),
                    Some(Ok(_)) => {}
                    Some(Err(Lagged(n))) => return Err(Error::EventsLost(n)),
                    None => return Err(Error::Disconnected),
                }
            }
        };
        tokio::time::timeout(timeout, wait)
            .await
            .map_err(|_| Error::EventTimeout(timeout))?
    }

    /// Turns this into a [`futures::Stream`].
    pub fn into_stream(self) -> BoxStream<'static, Result<Event, Lagged>> {
        Box::pin(futures::stream::unfold(self, |mut s| async move {
            let item = s.recv().await?;
            Some((item, s))
        }))
    }
}

//! Serving the protocol on the virtio-serial port.
//!
//! One thread (the caller of [`Server::serve`]) reads and dispatches frames; the
//! [`Outbox`]'s writer thread owns all writes; each command gets a thread pumping its
//! output (and one feeding its stdin when asked).

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use flotilla_agent::proto::{
    decode, Decoded, ExecRequest, Frame, Hello, HelloReply, Kind, NetConfig, ShutdownRequest,
    WindowSize, FEATURE_NET_CONFIG, FEATURE_NET_SET_MAC, FEATURE_PTY, FEATURE_SCREEN_TEXT,
    PORT_NAME, PROTOCOL_VERSION, READY_PREFIX,
};

use crate::outbox::Outbox;
use crate::registry::{Cmd, Registry};
use crate::{exec, files, net, screen, sys, threads};

/// Find the agent port's device node.
pub fn find_port() -> Option<PathBuf> {
    let by_name = Path::new("/dev/virtio-ports").join(PORT_NAME);
    if by_name.exists() {
        return Some(by_name);
    }
    let entries = std::fs::read_dir("/sys/class/virtio-ports").ok()?;
    for entry in entries.flatten() {
        let name = std::fs::read_to_string(entry.path().join("name")).unwrap_or_default();
        if name.trim_end() == PORT_NAME {
            let dev = Path::new("/dev").join(entry.file_name());
            if dev.exists() {
                return Some(dev);
            }
        }
    }
    None
}

/// Wait for the port to appear and open it. Never gives up.
pub fn open_port() -> OwnedFd {
    let start = std::time::Instant::now();
    let mut warned = false;
    loop {
        if let Some(path) = find_port() {
            match std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
                .open(&path)
            {
                Ok(file) => return OwnedFd::from(file),
                Err(e) => {
                    crate::console!("opening agent port {}: {e}", path.display());
                    std::thread::sleep(Duration::from_secs(1));
                    continue;
                }
            }
        }
        if !warned && start.elapsed() > Duration::from_secs(10) {
            warned = true;
            crate::console!(
                "virtio-serial port `{PORT_NAME}` did not appear within 10 s; still waiting\n  \
                 hint: qemu needs -device virtio-serial-pci -device virtserialport,name={PORT_NAME},... \
                 and the guest needs the virtio_pci and virtio_console drivers"
            );
        }
        let pause = if warned { 500 } else { 10 };
        std::thread::sleep(Duration::from_millis(pause));
    }
}

/// The first serial port, where the driver reads the console: the 8250 UART's on x86,
/// the PL011's on the arm64 `virt` machine (whose kernel has 8250 ports that lead
/// nowhere).
#[cfg(not(target_arch = "aarch64"))]
const SERIAL: &std::ffi::CStr = c"/dev/ttyS0";
#[cfg(target_arch = "aarch64")]
const SERIAL: &std::ffi::CStr = c"/dev/ttyAMA0";

/// Print the readiness line on the serial console.
pub fn announce_ready(boot_ms: u64) {
    let line = format!(
        "{READY_PREFIX} proto={PROTOCOL_VERSION} version={} boot_ms={boot_ms}\n",
        env!("CARGO_PKG_VERSION")
    );
    for path in [SERIAL, c"/dev/console"] {
        if let Ok(fd) = sys::open_c(path, libc::O_WRONLY | libc::O_NOCTTY) {
            sys::write_all_fd(fd.as_raw_fd(), line.as_bytes());
            return;
        }
    }
    sys::write_all_fd(2, line.as_bytes());
}

/// What to do on a Shutdown request.
pub type ShutdownFn = fn(reboot: bool);

pub struct Server {
    port: Arc<OwnedFd>,
    out: Outbox,
    gen: Arc<AtomicU64>,
    registry: Registry,
    files: files::Transfers,
    boot_ms: u64,
    shutdown: ShutdownFn,
}

impl Server {
    pub fn start(port: OwnedFd, boot_ms: u64, shutdown: ShutdownFn) -> io::Result<Server> {
        let port = Arc::new(port);
        let gen = Arc::new(AtomicU64::new(0));
        let out = Outbox::start(port.clone(), gen.clone())?;
        Ok(Server {
            port,
            out,
            gen,
            registry: Registry::default(),
            files: files::Transfers::default(),
            boot_ms,
            shutdown,
        })
    }

    /// Read and dispatch frames forever.
    pub fn serve(&mut self) -> ! {
        let fd = self.port.as_raw_fd();
        let mut buf: Vec<u8> = Vec::with_capacity(64 * 1024);
        let mut chunk = vec![0u8; 64 * 1024];
        let mut connected = false;
        let mut busy = false;
        // While the host is not connected, read() returns 0 at once; sleep until the
        // kernel signals a state change instead of polling (a 10 ms poll loop costs
        // ~8% of a host core under TCG).
        let sigio = match sys::sigio_to_this_thread(fd) {
            Ok(()) => true,
            Err(e) => {
                crate::console!("no SIGIO from the agent port ({e}); polling instead");
                false
            }
        };
        loop {
            let mut p = [sys::pollfd(fd, libc::POLLIN)];
            match sys::poll(&mut p, Some(Duration::from_secs(1))) {
                Ok(0) => {
                    // Idle for a second after some traffic: return memory to the kernel.
                    if std::mem::take(&mut busy) {
                        buf.shrink_to(64 * 1024);
                        sys::trim_heap();
                    }
                    continue;
                }
                Ok(_) => busy = true,
                Err(e) => {
                    crate::console!("polling the agent port: {e}");
                    std::thread::sleep(Duration::from_millis(100));
                    continue;
                }
            }
            match sys::read(fd, &mut chunk) {
                Ok(0) => {
                    // Host side not connected: forget any half frame and wait for it.
                    if connected {
                        connected = false;
                        self.registry.kill_terminals();
                        buf.clear();
                        buf.shrink_to(64 * 1024);
                        sys::trim_heap();
                    }
                    if sigio {
                        sys::wait_sigio(Duration::from_secs(1));
                    } else {
                        std::thread::sleep(Duration::from_millis(10));
                    }
                    continue;
                }
                Ok(n) => {
                    connected = true;
                    buf.extend_from_slice(&chunk[..n]);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => {
                    crate::console!("reading the agent port: {e}");
                    std::thread::sleep(Duration::from_millis(500));
                    continue;
                }
            }
            let mut start = 0;
            loop {
                match decode(&buf[start..]) {
                    Decoded::Incomplete => break,
                    Decoded::Frame(frame, used) => {
                        start += used;
                        self.dispatch(frame);
                    }
                    Decoded::Skip(n) => {
                        start += n;
                        self.error(
                            0,
                            format!("skipped {n} bytes of garbage looking for a frame"),
                        );
                    }
                    Decoded::Invalid {
                        consumed,
                        stream,
                        error,
                    } => {
                        start += consumed;
                        self.error(
                            stream,
                            format!("rejected frame on stream {stream}: {error}"),
                        );
                    }
                }
            }
            buf.drain(..start);
        }
    }

    fn gen(&self) -> u64 {
        self.gen.load(Ordering::Acquire)
    }

    fn send(&self, frame: Frame) {
        let _ = self.out.send(self.gen(), frame);
    }

    fn error(&self, stream: u32, message: String) {
        self.send(Frame::error(stream, message));
    }

    fn dispatch(&mut self, frame: Frame) {
        let stream = frame.stream;
        match frame.kind {
            Kind::Hello => self.hello(&frame),
            Kind::Exec => self.exec(&frame),
            Kind::Stdin => {
                let cmds = self.registry.cmds();
                match cmds.get(&stream) {
                    Some(Cmd {
                        stdin: Some(tx), ..
                    }) => {
                        let _ = tx.send(frame.payload);
                    }
                    Some(_) => {
                        drop(cmds);
                        self.error(stream, format!("stream {stream}: stdin is not open"));
                    }
                    // The command may just have finished; nothing to report.
                    None => {}
                }
            }
            Kind::StdinClose => {
                if let Some(cmd) = self.registry.cmds().get_mut(&stream) {
                    cmd.stdin = None;
                }
            }
            Kind::Kill => {
                if let Some(cmd) = self.registry.cmds().get(&stream) {
                    sys::kill_group(cmd.pid);
                }
            }
            Kind::Resize => self.resize(&frame),
            Kind::Shutdown => match frame.parse_json::<ShutdownRequest>() {
                Ok(req) => {
                    self.send(Frame::new(Kind::ShutdownAck, 0, Vec::new()));
                    self.out.flush();
                    (self.shutdown)(req.reboot);
                }
                Err(e) => self.error(stream, e.to_string()),
            },
            Kind::FilePush | Kind::FilePull | Kind::FileData | Kind::FileEnd => {
                self.files.dispatch(frame, &self.out);
            }
            Kind::NetConfig => self.net_config(&frame),
            Kind::ScreenText => self.screen_text(&frame),
            Kind::HelloReply
            | Kind::Stdout
            | Kind::Stderr
            | Kind::Exit
            | Kind::ShutdownAck
            | Kind::FileInfo
            | Kind::FileDone
            | Kind::NetConfigDone
            | Kind::ScreenTextReply => {
                self.error(
                    stream,
                    format!(
                        "unexpected {:?} frame from the host on stream {stream}",
                        frame.kind
                    ),
                );
            }
            Kind::Error => {
                let body = String::from_utf8_lossy(&frame.payload);
                crate::console!("host reported an error on stream {stream}: {body}");
            }
        }
    }

    fn hello(&mut self, frame: &Frame) {
        if let Err(e) = frame.parse_json::<Hello>() {
            self.error(0, e.to_string());
            return;
        }
        // A new session: forget the previous one.
        let gen = self.gen.fetch_add(1, Ordering::AcqRel) + 1;
        self.registry.kill_all();
        self.files.clear();
        let _ = self.out.send(
            gen,
            Frame::json(
                Kind::HelloReply,
                0,
                &HelloReply {
                    version: PROTOCOL_VERSION,
                    agent_version: env!("CARGO_PKG_VERSION").into(),
                    boot_ms: self.boot_ms,
                    features: vec![
                        FEATURE_PTY.into(),
                        FEATURE_NET_CONFIG.into(),
                        FEATURE_NET_SET_MAC.into(),
                        FEATURE_SCREEN_TEXT.into(),
                    ],
                },
            ),
        );
    }

    /// Configure the network right here: a few syscalls, quicker than a thread.
    fn net_config(&self, frame: &Frame) {
        let stream = frame.stream;
        if stream == 0 {
            return self.error(0, "net config needs a stream id greater than 0".into());
        }
        let result = frame
            .parse_json::<NetConfig>()
            .map_err(|e| e.to_string())
            .and_then(|cfg| net::configure(&cfg).map_err(|e| format!("net config: {e}")));
        match result {
            Ok(()) => self.send(Frame::new(Kind::NetConfigDone, stream, Vec::new())),
            Err(message) => self.error(stream, message),
        }
    }

    /// Read the console right here: a few small reads and an ioctl.
    fn screen_text(&self, frame: &Frame) {
        let stream = frame.stream;
        if stream == 0 {
            return self.error(0, "screen text needs a stream id greater than 0".into());
        }
        match screen::read() {
            Ok(text) => self.send(Frame::json(Kind::ScreenTextReply, stream, &text)),
            Err(message) => self.error(stream, format!("screen text: {message}")),
        }
    }

    fn resize(&self, frame: &Frame) {
        let stream = frame.stream;
        let size: WindowSize = match frame.parse_json() {
            Ok(s) => s,
            Err(e) => return self.error(stream, e.to_string()),
        };
        let cmds = self.registry.cmds();
        let result = match cmds.get(&stream) {
            Some(Cmd { pty: Some(fd), .. }) => {
                sys::set_window_size(fd.as_raw_fd(), size.rows, size.cols)
                    .map_err(|e| format!("stream {stream}: resizing the terminal: {e}"))
            }
            Some(_) => Err(format!(
                "stream {stream}: the command has no terminal to resize"
            )),
            // The command may just have finished; nothing to report.
            None => Ok(()),
        };
        drop(cmds);
        if let Err(message) = result {
            self.error(stream, message);
        }
    }

    fn exec(&mut self, frame: &Frame) {
        let stream = frame.stream;
        if stream == 0 {
            self.error(0, "exec needs a stream id greater than 0".into());
            return;
        }
        let req: ExecRequest = match frame.parse_json() {
            Ok(r) => r,
            Err(e) => return self.error(stream, e.to_string()),
        };
        if self.registry.cmds().contains_key(&stream) {
            self.error(
                stream,
                format!("stream {stream} is already running a command"),
            );
            return;
        }
        let mut child = match exec::spawn(&req) {
            Ok(c) => c,
            Err(msg) => return self.error(stream, msg),
        };
        let gen = self.gen();
        let stdin_tx = match child.stdin.take() {
            Some(fd) => {
                let (tx, rx) = exec::stdin_channel();
                if let Err(e) = threads::spawn("stdin", move || exec::feed_stdin(fd, rx)) {
                    sys::kill_group(child.pid);
                    return self.error(stream, format!("cannot start a stdin thread: {e}"));
                }
                Some(tx)
            }
            None => None,
        };
        let pid = child.pid;
        self.registry.cmds().insert(
            stream,
            Cmd {
                pid,
                gen,
                stdin: stdin_tx,
                pty: child.pty.take(),
            },
        );
        let out = self.out.clone();
        let registry = self.registry.clone();
        let timeout = req.timeout_ms.map(Duration::from_millis);
        if let Err(e) = threads::spawn("command", move || {
            exec::pump(child, stream, gen, timeout, out, registry)
        }) {
            sys::kill_group(pid);
            self.registry.remove(stream, gen);
            self.error(stream, format!("cannot start an output thread: {e}"));
        }
    }
}

//! Shared helpers: a real QEMU in a guard, and a scriptable fake QMP server.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use flotilla_qmp::{Client, ConnectOptions};
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, DuplexStream, ReadHalf, WriteHalf};
use tokio::process::{Child, Command};

use crate::bare_qemu;

/// Upper bound for anything a test awaits, so a bug shows as a failure, not a hang.
pub const LIMIT: Duration = Duration::from_secs(20);

/// Awaits `f` for at most [`LIMIT`].
pub async fn bounded<F: std::future::Future>(what: &str, f: F) -> F::Output {
    match tokio::time::timeout(LIMIT, f).await {
        Ok(v) => v,
        Err(_) => panic!("{what}: still waiting after {LIMIT:?}"),
    }
}

/// A QEMU started with `-S` and a QMP socket, killed when dropped.
pub struct Qemu {
    pub child: Child,
    pub socket: PathBuf,
    _dir: tempfile::TempDir,
}

impl Qemu {
    /// Starts a paused q35 machine with no devices and no display.
    pub fn start() -> Qemu {
        Self::start_with(&[])
    }

    /// [`Qemu::start`] with extra command-line arguments.
    pub fn start_with(extra: &[&str]) -> Qemu {
        Self::start_program(Path::new(bare_qemu::QEMU), extra)
    }

    /// [`Qemu::start_with`] with the QEMU binary `program`.
    pub fn start_program(program: &Path, extra: &[&str]) -> Qemu {
        let dir = tempfile::tempdir().expect("temp dir");
        let socket = dir.path().join("qmp.sock");
        let child = Command::from(bare_qemu::command(program, extra, [&socket]))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("qemu-system-x86_64 starts (is it installed?)");
        Qemu {
            child,
            socket,
            _dir: dir,
        }
    }

    /// Connects, waiting for the socket to appear.
    pub async fn connect(&self) -> Client {
        bounded(
            "connecting",
            Client::connect_unix_retry(&self.socket, Duration::from_secs(15)),
        )
        .await
        .expect("qmp connects")
    }
}

impl Drop for Qemu {
    fn drop(&mut self) {
        // kill_on_drop is the backstop; be explicit anyway.
        let _ = self.child.start_kill();
    }
}

/// The server end of an in-memory QMP connection.
pub struct FakeServer {
    reader: BufReader<ReadHalf<DuplexStream>>,
    writer: WriteHalf<DuplexStream>,
}

pub const GREETING: &str = r#"{"QMP": {"version": {"qemu": {"micro": 0, "minor": 2, "major": 7}, "package": "fake"}, "capabilities": ["oob"]}}"#;

impl FakeServer {
    pub fn new(stream: DuplexStream) -> FakeServer {
        let (r, w) = tokio::io::split(stream);
        FakeServer {
            reader: BufReader::new(r),
            writer: w,
        }
    }

    pub async fn send_raw(&mut self, bytes: &[u8]) {
        // The client may have hung up already; tests check what the client saw.
        let _ = self.writer.write_all(bytes).await;
        let _ = self.writer.flush().await;
    }

    pub async fn send(&mut self, line: &str) {
        self.send_raw(format!("{line}\r\n").as_bytes()).await;
    }

    pub async fn send_json(&mut self, value: Value) {
        self.send(&value.to_string()).await;
    }

    /// Reads one command line from the client; `None` on EOF.
    pub async fn recv(&mut self) -> Option<Value> {
        let mut line = String::new();
        let n = bounded("reading a command", self.reader.read_line(&mut line))
            .await
            .expect("read from duplex");
        if n == 0 {
            return None;
        }
        Some(serde_json::from_str(&line).expect("client sends json"))
    }

    /// Reads a command and checks its name; returns its id.
    pub async fn expect(&mut self, command: &str) -> Value {
        let cmd = self.recv().await.expect("a command");
        assert_eq!(cmd["execute"], json!(command), "{cmd}");
        cmd["id"].clone()
    }

    /// Replies `{}` to `id`.
    pub async fn ok(&mut self, id: &Value) {
        self.send_json(json!({"return": {}, "id": id})).await;
    }

    pub async fn event(&mut self, name: &str, data: Value) {
        self.send_json(json!({
            "event": name, "data": data,
            "timestamp": {"seconds": 1700000000, "microseconds": 5}
        }))
        .await;
    }

    /// Greets and answers qmp_capabilities.
    pub async fn handshake(&mut self) -> Value {
        self.send(GREETING).await;
        let cmd = self.recv().await.expect("qmp_capabilities");
        assert_eq!(cmd["execute"], json!("qmp_capabilities"), "{cmd}");
        self.ok(&cmd["id"]).await;
        cmd
    }
}

/// A client connected to a fake server that has done the handshake.
pub async fn fake_pair(options: ConnectOptions) -> (Client, FakeServer) {
    let (a, b) = tokio::io::duplex(1 << 20);
    let mut server = FakeServer::new(b);
    let (client, _) = bounded("handshake", async {
        tokio::join!(Client::connect_with(a, options), server.handshake())
    })
    .await;
    (client.expect("handshake succeeds"), server)
}

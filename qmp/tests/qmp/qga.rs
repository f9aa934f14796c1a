//! The guest agent dialect: against `qemu-ga` running on the host in a temp
//! dir (with every command that could disturb the host blocked), and against a
//! fake agent for stale replies and garbage.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use flotilla_qmp::qga::{self, GuestAgent};
use flotilla_qmp::Command as _;
use flotilla_qmp::Error;
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, Command};

use crate::util::bounded;

/// Commands a host-side agent must never run in a test.
const BLOCKED: &str = "guest-shutdown,guest-suspend-disk,guest-suspend-ram,guest-suspend-hybrid,\
guest-set-time,guest-fsfreeze-freeze,guest-fsfreeze-freeze-list,guest-fsfreeze-thaw,guest-fstrim,\
guest-set-user-password,guest-set-vcpus,guest-set-memory-blocks,guest-ssh-add-authorized-keys,\
guest-ssh-remove-authorized-keys";

/// `qemu-ga -m unix-listen` in a temp dir, killed on drop.
struct HostAgent {
    _child: Child,
    socket: PathBuf,
    dir: tempfile::TempDir,
}

impl HostAgent {
    /// Panics when qemu-ga is not installed: the tests need the real agent.
    fn start() -> HostAgent {
        let dir = tempfile::tempdir().expect("temp dir");
        let socket = dir.path().join("qga.sock");
        let mut command = Command::new("qemu-ga");
        crate::bare_qemu::die_with_parent(command.as_std_mut());
        let spawned = command
            .args(["-m", "unix-listen", "-p"])
            .arg(&socket)
            .arg("-t")
            .arg(dir.path())
            .arg("-f")
            .arg(dir.path().join("qga.pid"))
            .args(["-b", BLOCKED])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn();
        match spawned {
            Ok(child) => HostAgent {
                _child: child,
                socket,
                dir,
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                panic!("qemu-ga is not installed: run scripts/setup (it installs qemu-guest-agent)")
            }
            Err(e) => panic!("starting qemu-ga: {e}"),
        }
    }

    async fn connect(&self) -> GuestAgent {
        GuestAgent::new(self.connect_stream().await).with_timeout(Duration::from_secs(10))
    }

    /// The agent's socket, once qemu-ga listens on it (within 10 s, else a panic).
    async fn connect_stream(&self) -> tokio::net::UnixStream {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            match tokio::net::UnixStream::connect(&self.socket).await {
                Ok(stream) => return stream,
                Err(e) if tokio::time::Instant::now() > deadline => {
                    panic!("qemu-ga does not listen on {}: {e}", self.socket.display())
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
    }

    fn path(&self, name: &str) -> String {
        self.dir.path().join(name).to_string_lossy().into_owned()
    }
}

#[tokio::test]
async fn real_agent_commands() {
    let host = HostAgent::start();
    let agent = host.connect().await;
    bounded("ready", agent.wait_ready(Duration::from_secs(10)))
        .await
        .expect("agent syncs");
    bounded("ping", agent.ping()).await.expect("ping");

    let info = bounded("info", agent.info()).await.expect("guest-info");
    // qemu-ga of QEMU 7.2 (bookworm) or newer (10.0 on trixie or from backports).
    let major: u32 = info
        .version
        .split('.')
        .next()
        .and_then(|m| m.parse().ok())
        .unwrap_or(0);
    assert!(major >= 7, "{}", info.version);
    // Every typed command exists in this agent (drift check).
    let typed = [
        qga::GuestPing::NAME,
        qga::GuestInfo::NAME,
        qga::GuestExec::NAME,
        qga::GuestExecStatusCmd::NAME,
        qga::GuestFileOpen::NAME,
        qga::GuestFileRead::NAME,
        qga::GuestFileWrite::NAME,
        qga::GuestFileFlush::NAME,
        qga::GuestFileClose::NAME,
        qga::GuestFileSeek::NAME,
        qga::GuestShutdown::NAME,
        qga::GuestNetworkGetInterfaces::NAME,
        "guest-sync-delimited",
    ];
    for name in typed {
        assert!(
            info.supported_commands.iter().any(|c| c.name == name),
            "agent lacks {name}"
        );
    }
    let shutdown = info
        .supported_commands
        .iter()
        .find(|c| c.name == "guest-shutdown");
    let shutdown = shutdown.expect("guest-shutdown is listed");
    assert!(!shutdown.enabled && !shutdown.success_response);

    let out = bounded(
        "run",
        agent.run("/bin/echo", &["hello", "agent"], Duration::from_secs(10)),
    )
    .await
    .expect("echo runs");
    assert!(out.success(), "{out:?}");
    assert_eq!(out.stdout, b"hello agent\n");
    let out = bounded(
        "run",
        agent.run(
            "/bin/sh",
            &["-c", "echo oops >&2; exit 3"],
            Duration::from_secs(10),
        ),
    )
    .await
    .expect("sh runs");
    assert_eq!(out.exitcode, Some(3));
    assert_eq!(out.stderr, b"oops\n");
    let e = bounded("exec", agent.exec("/nonexistent/binary", &[]))
        .await
        .expect_err("no binary");
    assert!(matches!(e, Error::Qmp { .. }), "{e}");

    let data: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let path = host.path("file.bin");
    bounded("write", agent.write_file(&path, &data))
        .await
        .expect("write_file");
    assert_eq!(std::fs::read(&path).expect("file on disk"), data);
    let back = bounded("read", agent.read_file(&path))
        .await
        .expect("read_file");
    assert_eq!(back, data);
    let e = bounded("read", agent.read_file(&host.path("missing")))
        .await
        .expect_err("missing");
    assert!(e.to_string().contains("guest-file-open"), "{e}");

    let interfaces = bounded("net", agent.network_interfaces())
        .await
        .expect("interfaces");
    let lo = interfaces
        .iter()
        .find(|i| i.name == "lo")
        .expect("lo is listed");
    let addresses = lo.ip_addresses.clone().unwrap_or_default();
    assert!(
        addresses
            .iter()
            .any(|a| a.ip_address == "127.0.0.1" && a.prefix == 8),
        "{lo:?}"
    );
}

#[tokio::test]
async fn real_agent_sync_skips_stale_replies() {
    let host = HostAgent::start();
    // Leave unread replies, garbage and a half-written command in the channel,
    // as a previous user of a virtio-serial port would.
    let mut stream = host.connect_stream().await;
    stream
        .write_all(b"{\"execute\":\"guest-info\"}\n{\"execute\":\"guest-ping\",\"id\":777}\nnonsense\n{\"execute\":\"guest-pi")
        .await
        .expect("write");
    // Wait until the agent has answered all three (the info, the ping with its id,
    // an error for the garbage) and the answers wait unread, so that the client
    // starts on a channel that holds stale replies.
    let pending = bounded("stale replies", async {
        loop {
            let pending = peek(&stream);
            if pending.contains("\"id\": 777") && pending.contains("\"error\"") {
                return pending;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    assert!(pending.contains("\"version\""), "{pending}");
    let agent = GuestAgent::new(stream).with_timeout(Duration::from_secs(10));
    let info = bounded("info", agent.info())
        .await
        .expect("guest-info after resync");
    assert!(!info.supported_commands.is_empty());
    bounded("ping", agent.ping()).await.expect("ping");

    // A call cut short by its caller leaves the stream out of sync; the next
    // call resyncs.
    let cut = agent.execute_raw_timeout("guest-info", None, Duration::from_nanos(1));
    let _ = bounded("cut", cut).await;
    let out = bounded("run", agent.run("/bin/true", &[], Duration::from_secs(10))).await;
    assert!(out.expect("runs").success());
}

/// What waits unread on `stream`, left there.
fn peek(stream: &tokio::net::UnixStream) -> String {
    use std::os::fd::AsRawFd;
    let mut buf = vec![0u8; 1 << 16];
    // SAFETY: recv into a buffer we own, of the length given; MSG_PEEK leaves the data.
    let n = unsafe {
        libc::recv(
            stream.as_raw_fd(),
            buf.as_mut_ptr().cast(),
            buf.len(),
            libc::MSG_PEEK | libc::MSG_DONTWAIT,
        )
    };
    buf.truncate(usize::try_from(n).unwrap_or(0));
    String::from_utf8_lossy(&buf).into_owned()
}

/// A fake agent: reads lines (answering `guest-sync-delimited` the way qemu-ga
/// does, delimiter included) and hands other commands to the test.
struct FakeAgent {
    reader: BufReader<tokio::io::ReadHalf<tokio::io::DuplexStream>>,
    writer: tokio::io::WriteHalf<tokio::io::DuplexStream>,
}

impl FakeAgent {
    fn pair() -> (GuestAgent, FakeAgent) {
        let (a, b) = tokio::io::duplex(1 << 16);
        let (r, w) = tokio::io::split(b);
        let agent = GuestAgent::new(a).with_timeout(Duration::from_secs(2));
        (
            agent,
            FakeAgent {
                reader: BufReader::new(r),
                writer: w,
            },
        )
    }

    async fn write(&mut self, bytes: &[u8]) {
        let _ = self.writer.write_all(bytes).await;
    }

    /// Next command, skipping the `0xFF` bytes the client sends.
    async fn recv(&mut self) -> Option<Value> {
        let mut line = Vec::new();
        let n = bounded("fake agent read", self.reader.read_until(b'\n', &mut line))
            .await
            .expect("read");
        if n == 0 {
            return None;
        }
        line.retain(|&b| b != 0xFF);
        Some(serde_json::from_slice(&line).expect("json from client"))
    }

    /// Expects a sync and answers it after `junk`.
    async fn sync(&mut self, junk: &[u8]) {
        let cmd = self.recv().await.expect("sync");
        assert_eq!(cmd["execute"], "guest-sync-delimited", "{cmd}");
        self.write(junk).await;
        let reply = format!("\u{0}{{\"return\": {}}}\n", cmd["arguments"]["id"]);
        let mut bytes = reply.into_bytes();
        bytes[0] = 0xFF;
        self.write(&bytes).await;
    }
}

#[tokio::test]
async fn fake_agent_stale_replies_and_garbage_are_discarded() {
    let (agent, mut fake) = FakeAgent::pair();
    let serve = async {
        // Leftovers from an earlier session, a parse error for the 0xFF, a
        // half line cut by a reboot: all before the delimiter.
        fake.sync(b"{\"return\": {\"pid\": 99}}\n{\"error\": {\"class\": \"GenericError\", \"desc\": \"JSON parse error\"}}\n{\"retu")
            .await;
        let cmd = fake.recv().await.expect("ping");
        assert_eq!(cmd["execute"], "guest-ping");
        // A stale reply with another id, then garbage, then ours.
        fake.write(b"{\"return\": 5, \"id\": 12345}\nnot json\n")
            .await;
        fake.write(format!("{}\n", json!({"return": {}, "id": cmd["id"]})).as_bytes())
            .await;
    };
    let (result, ()) = bounded("ping", async { tokio::join!(agent.ping(), serve) }).await;
    result.expect("ping ok");
}

#[tokio::test]
async fn fake_agent_timeout_then_resync() {
    let (agent, mut fake) = FakeAgent::pair();
    let slow = async {
        fake.sync(b"").await;
        let cmd = fake.recv().await.expect("command");
        cmd["id"].clone()
    };
    let (result, slow_id) = bounded("slow", async {
        tokio::join!(
            agent.execute_raw_timeout("guest-slow", None, Duration::from_millis(200)),
            slow
        )
    })
    .await;
    let e = result.expect_err("timeout");
    assert!(matches!(e, Error::Timeout { .. }), "{e}");

    let serve = async {
        // The late reply lands before the next sync reply.
        fake.write(format!("{}\n", json!({"return": "late", "id": slow_id})).as_bytes())
            .await;
        fake.sync(b"").await;
        let cmd = fake.recv().await.expect("ping");
        fake.write(format!("{}\n", json!({"return": {"fresh": 1}, "id": cmd["id"]})).as_bytes())
            .await;
    };
    let (value, ()) = bounded("after", async {
        tokio::join!(agent.execute_raw("guest-x", None), serve)
    })
    .await;
    assert_eq!(value.expect("fresh reply"), json!({"fresh": 1}));
}

#[tokio::test]
async fn fake_agent_shutdown_and_disconnect() {
    // Success: no reply, the channel just closes.
    let (agent, mut fake) = FakeAgent::pair();
    let serve = async {
        fake.sync(b"").await;
        let cmd = fake.recv().await.expect("shutdown");
        assert_eq!(cmd["execute"], "guest-shutdown");
        assert_eq!(cmd["arguments"], json!({"mode": "reboot"}));
        drop(fake);
    };
    let (r, ()) = bounded("shutdown", async {
        tokio::join!(agent.shutdown(Some("reboot")), serve)
    })
    .await;
    r.expect("shutdown ok");
    let e = bounded("after", agent.ping()).await.expect_err("closed");
    assert!(matches!(e, Error::Disconnected), "{e}");

    // Refused: the error reply is reported.
    let (agent, mut fake) = FakeAgent::pair();
    let serve = async {
        fake.sync(b"").await;
        let cmd = fake.recv().await.expect("shutdown");
        let reply =
            json!({"error": {"class": "CommandNotFound", "desc": "disabled"}, "id": cmd["id"]});
        fake.write(format!("{reply}\n").as_bytes()).await;
        fake
    };
    let (r, _fake) = bounded("shutdown", async {
        tokio::join!(agent.shutdown(None), serve)
    })
    .await;
    let e = r.expect_err("refused");
    assert!(
        matches!(&e, Error::Qmp { class, .. } if class == "CommandNotFound"),
        "{e}"
    );

    // Agent never answers the sync: a timeout, not a hang.
    let (agent, mut fake) = FakeAgent::pair();
    let e = bounded("sync", agent.wait_ready(Duration::from_millis(300)))
        .await
        .expect_err("silent");
    assert!(matches!(e, Error::Timeout { .. }), "{e}");
    let mut sink = Vec::new();
    let _ = tokio::time::timeout(
        Duration::from_millis(50),
        fake.reader.read_to_end(&mut sink),
    )
    .await;
}

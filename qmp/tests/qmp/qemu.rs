//! Against a real `qemu-system-x86_64`.

use std::time::Duration;

use flotilla_qmp::{commands, events, Error, RunState};

use crate::util::{bounded, Qemu};

#[tokio::test]
async fn lifecycle_against_real_qemu() {
    let mut qemu = Qemu::start();
    let qmp = qemu.connect().await;

    let greeting = qmp.greeting().clone();
    assert!(greeting.version.qemu.major >= 7, "{greeting:?}");
    assert!(
        greeting.capabilities.iter().any(|c| c == "oob"),
        "{greeting:?}"
    );
    assert!(qmp.oob_enabled());
    let version = bounded("query-version", qmp.query_version())
        .await
        .expect("query-version");
    assert_eq!(version, greeting.version);

    let status = bounded("query-status", qmp.query_status())
        .await
        .expect("query-status");
    assert!(!status.running);
    assert!(
        matches!(status.status, RunState::Prelaunch | RunState::Paused),
        "{status:?}"
    );

    let mut lifecycle = qmp.subscribe_filtered([events::STOP, events::RESUME]);
    bounded("cont", qmp.cont()).await.expect("cont");
    let resume = lifecycle
        .wait_for(|_| true, Duration::from_secs(10))
        .await
        .expect("RESUME");
    assert_eq!(resume.event, events::RESUME);
    let status = bounded("query-status", qmp.query_status())
        .await
        .expect("query-status");
    assert!(status.running);
    assert_eq!(status.status, RunState::Running);

    bounded("stop", qmp.stop()).await.expect("stop");
    let stop = lifecycle
        .wait_for(|_| true, Duration::from_secs(10))
        .await
        .expect("STOP");
    assert_eq!(stop.event, events::STOP);
    assert!(stop.timestamp.seconds > 0, "{stop:?}");
    let status = bounded("query-status", qmp.query_status())
        .await
        .expect("query-status");
    assert_eq!(status.status, RunState::Paused);

    // Errors from QEMU come back as Error::Qmp and leave the connection usable.
    let e = bounded("bogus", qmp.execute_raw("no-such-command", None))
        .await
        .expect_err("unknown command");
    match &e {
        Error::Qmp { command, class, .. } => {
            assert_eq!(command, "no-such-command");
            assert_eq!(class, "CommandNotFound");
        }
        other => panic!("want Error::Qmp, got {other}"),
    }
    let name = bounded("query-name", qmp.execute_raw("query-name", None))
        .await
        .expect("ok");
    assert!(name.is_object(), "{name}");

    // Many concurrent callers on one connection.
    let calls: Vec<_> = (0..16)
        .map(|_| {
            let q = qmp.clone();
            tokio::spawn(async move { q.query_status().await })
        })
        .collect();
    for call in calls {
        bounded("concurrent", call)
            .await
            .expect("joins")
            .expect("query-status");
    }

    let mut shutdown = qmp.subscribe_filtered([events::SHUTDOWN]);
    bounded("quit", qmp.quit()).await.expect("quit");
    bounded("closed", qmp.closed()).await;
    assert!(qmp.is_closed());
    let status = bounded("exit", qemu.child.wait()).await.expect("wait");
    assert!(status.success(), "qemu exited with {status}");
    // QEMU announces the shutdown before it closes the socket, and the client hands
    // every event read before the end to its subscribers.
    let event = bounded("SHUTDOWN", shutdown.recv())
        .await
        .expect("a SHUTDOWN event before the socket closed")
        .expect("SHUTDOWN event");
    let data: events::Shutdown = event.parse_data().expect("SHUTDOWN data");
    assert_eq!(data.reason, "host-qmp-quit");
    assert!(!data.guest);
    let e = qmp.query_status().await.expect_err("gone");
    assert!(matches!(e, Error::Disconnected), "{e}");
}

#[tokio::test]
async fn qemu_dying_fails_calls_and_resolves_closed() {
    let mut qemu = Qemu::start();
    let qmp = qemu.connect().await;
    bounded("query-status", qmp.query_status())
        .await
        .expect("query-status");

    qemu.child.start_kill().expect("kill qemu");
    bounded("closed", qmp.closed()).await;
    let e = bounded("after death", qmp.query_status())
        .await
        .expect_err("dead");
    assert!(e.is_disconnected(), "{e}");
    assert!(
        qmp.quit().await.is_err(),
        "quit on a dead connection reports it"
    );
}

#[tokio::test]
async fn system_reset_and_powerdown_emit_events() {
    let qemu = Qemu::start();
    let qmp = qemu.connect().await;
    let mut events = qmp.subscribe_filtered([events::RESET, events::POWERDOWN]);
    bounded("system_reset", qmp.system_reset())
        .await
        .expect("system_reset");
    let reset = events
        .wait_for(|_| true, Duration::from_secs(10))
        .await
        .expect("RESET");
    let data: events::Reset = reset.parse_data().expect("RESET data");
    assert!(!data.guest);
    assert_eq!(data.reason, "host-qmp-system-reset");

    bounded("system_powerdown", qmp.system_powerdown())
        .await
        .expect("system_powerdown");
    let powerdown = events
        .wait_for(|_| true, Duration::from_secs(10))
        .await
        .expect("POWERDOWN");
    assert_eq!(powerdown.event, events::POWERDOWN);
    bounded("quit", qmp.quit()).await.expect("quit");
}

#[tokio::test]
async fn typed_commands_against_real_qemu() {
    let dir = tempfile::tempdir().expect("temp dir");
    let qemu = Qemu::start_with(&[
        "-name",
        "flotilla-test",
        "-device",
        "VGA",
        "-device",
        "pcie-root-port,id=rp0,bus=pcie.0,chassis=1",
    ]);
    let qmp = qemu.connect().await;

    let commands = bounded("query-commands", qmp.query_commands())
        .await
        .expect("ok");
    assert!(commands.iter().any(|c| c == "query-status"), "{commands:?}");
    assert_eq!(
        bounded("query-name", qmp.query_name())
            .await
            .expect("ok")
            .as_deref(),
        Some("flotilla-test")
    );
    let hmp = bounded("hmp", qmp.human_monitor_command("info status"))
        .await
        .expect("ok");
    assert!(hmp.contains("paused") || hmp.contains("prelaunch"), "{hmp}");
    let cpus = bounded("query-cpus-fast", qmp.query_cpus_fast())
        .await
        .expect("ok");
    assert_eq!(cpus.len(), 1, "{cpus:?}");
    assert_eq!(cpus[0].target, "x86_64");
    let chardevs = bounded("query-chardev", qmp.execute(&commands::QueryChardev {}))
        .await
        .expect("ok");
    assert!(!chardevs.is_empty(), "the qmp monitor's chardev is listed");
    let blocks = bounded("query-block", qmp.execute(&commands::QueryBlock {}))
        .await
        .expect("ok");
    assert!(blocks.is_empty(), "-nodefaults has no drives: {blocks:?}");
    let migration = bounded("query-migrate", qmp.execute(&commands::QueryMigrate {}))
        .await
        .expect("ok");
    assert!(migration.status.is_none() || migration.status.as_deref() == Some("none"));

    // Out-of-band: query-yank is allowed there.
    let yank = bounded("exec-oob", qmp.execute_oob("query-yank", None))
        .await
        .expect("oob ok");
    assert!(yank.is_array(), "{yank}");
    // A command not allowed out of band gives QEMU's error, not a hang.
    let e = bounded("exec-oob", qmp.execute_oob("query-status", None))
        .await
        .expect_err("no oob");
    assert!(matches!(e, Error::Qmp { .. }), "{e}");

    // Display: run a little so the VGA has a mode, then a PNG screendump.
    bounded("cont", qmp.cont()).await.expect("cont");
    let png = dir.path().join("screen.png");
    bounded("screendump", qmp.screendump_png(&png))
        .await
        .expect("screendump");
    let bytes = std::fs::read(&png).expect("screendump written");
    assert!(bytes.starts_with(b"\x89PNG\r\n\x1a\n"), "not a png");
    bounded("send-key", qmp.send_keys(&["ctrl", "alt", "delete"]))
        .await
        .expect("send-key");
    let events = vec![
        commands::InputEvent::key("a", true),
        commands::InputEvent::key("a", false),
    ];
    bounded(
        "input-send-event",
        qmp.execute(&commands::InputSendEvent {
            device: None,
            head: None,
            events,
        }),
    )
    .await
    .expect("input-send-event");

    // QOM objects and devices.
    let mut props = serde_json::Map::new();
    props.insert("size".into(), serde_json::json!(1 << 20));
    let add = commands::ObjectAdd {
        qom_type: "memory-backend-ram".into(),
        id: "mem0".into(),
        properties: props,
    };
    bounded("object-add", qmp.execute(&add))
        .await
        .expect("object-add");
    bounded(
        "object-del",
        qmp.execute(&commands::ObjectDel { id: "mem0".into() }),
    )
    .await
    .expect("object-del");
    let add = commands::DeviceAdd {
        driver: "virtio-rng-pci".into(),
        bus: Some("rp0".into()),
        id: Some("rng0".into()),
        properties: serde_json::Map::new(),
    };
    bounded("device_add", qmp.execute(&add))
        .await
        .expect("device_add");
    let e = bounded("device_add", qmp.execute(&add))
        .await
        .expect_err("duplicate id");
    assert!(matches!(e, Error::Qmp { .. }), "{e}");
    let e = bounded("set_link", qmp.set_link("nonexistent", false))
        .await
        .expect_err("no nic");
    assert!(matches!(e, Error::Qmp { .. }), "{e}");
    bounded("quit", qmp.quit()).await.expect("quit");
}

#[tokio::test]
async fn second_client_on_a_busy_socket_times_out_with_a_hint() {
    let qemu = Qemu::start();
    let first = qemu.connect().await;
    let options =
        flotilla_qmp::ConnectOptions::default().handshake_timeout(Duration::from_millis(500));
    let e = bounded(
        "second",
        flotilla_qmp::Client::connect_unix_with(&qemu.socket, options),
    )
    .await
    .expect_err("qemu serves one client");
    assert!(matches!(e, Error::HandshakeTimeout(_)), "{e}");
    assert!(e.to_string().contains("\nhint: "), "{e}");
    // The first connection is unaffected.
    bounded("first", first.query_status())
        .await
        .expect("first still works");
}

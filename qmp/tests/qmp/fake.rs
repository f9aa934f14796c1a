//! Edge cases a real QEMU will not produce on demand, against a fake server.

use std::time::Duration;

use flotilla_qmp::{events, Client, ConnectOptions, Error, Lagged, RunState};
use serde_json::json;

use crate::util::{bounded, fake_pair, FakeServer, GREETING};

fn defaults() -> ConnectOptions {
    ConnectOptions::default()
}

#[tokio::test]
async fn negotiates_oob_when_offered() {
    let (a, b) = tokio::io::duplex(1 << 16);
    let mut server = FakeServer::new(b);
    let (client, cmd) = bounded("handshake", async {
        tokio::join!(Client::connect(a), server.handshake())
    })
    .await;
    let client = client.expect("connects");
    assert_eq!(cmd["arguments"], json!({"enable": ["oob"]}));
    assert!(client.oob_enabled());
    assert_eq!(client.greeting().version.qemu.to_string(), "7.2.0");
    assert_eq!(client.greeting().version.package, "fake");
}

#[tokio::test]
async fn no_oob_when_not_offered() {
    let (a, b) = tokio::io::duplex(1 << 16);
    let mut server = FakeServer::new(b);
    let serve = async {
        server.send(r#"{"QMP": {"version": {"qemu": {"micro": 1, "minor": 0, "major": 6}, "package": ""}, "capabilities": []}}"#).await;
        let cmd = server.recv().await.expect("negotiation");
        server.ok(&cmd["id"]).await;
        cmd
    };
    let (client, cmd) = bounded("handshake", async {
        tokio::join!(Client::connect(a), serve)
    })
    .await;
    assert!(cmd.get("arguments").is_none(), "{cmd}");
    assert!(!client.expect("connects").oob_enabled());
}

#[tokio::test]
async fn handshake_errors_are_clear() {
    // Something that is not a greeting first.
    let (a, b) = tokio::io::duplex(1 << 16);
    let mut server = FakeServer::new(b);
    server.send(r#"{"return": {}}"#).await;
    let e = bounded("connect", Client::connect(a))
        .await
        .expect_err("not a greeting");
    assert!(matches!(e, Error::Handshake(_)), "{e}");
    assert!(e.to_string().contains("expected a greeting"), "{e}");

    // Silence.
    let (a, _b) = tokio::io::duplex(1 << 16);
    let options = defaults().handshake_timeout(Duration::from_millis(100));
    let e = bounded("connect", Client::connect_with(a, options))
        .await
        .expect_err("silence");
    assert!(matches!(e, Error::HandshakeTimeout(_)), "{e}");

    // Negotiation refused.
    let (a, b) = tokio::io::duplex(1 << 16);
    let mut server = FakeServer::new(b);
    let serve = async {
        server.send(GREETING).await;
        let _ = server.recv().await;
        server
            .send(r#"{"error": {"class": "GenericError", "desc": "no"}, "id": "negotiate"}"#)
            .await;
    };
    let (r, ()) = bounded("connect", async { tokio::join!(Client::connect(a), serve) }).await;
    let e = r.expect_err("refused");
    assert!(
        matches!(&e, Error::Qmp { command, .. } if command == "qmp_capabilities"),
        "{e}"
    );

    // Hang-up before the greeting.
    let (a, b) = tokio::io::duplex(1 << 16);
    drop(b);
    let e = bounded("connect", Client::connect(a))
        .await
        .expect_err("eof");
    assert!(e.to_string().contains("before the greeting"), "{e}");

    // No socket.
    let e = Client::connect_unix("/nonexistent/qmp.sock")
        .await
        .expect_err("no socket");
    assert!(
        e.to_string()
            .starts_with("qmp: connecting to /nonexistent/qmp.sock"),
        "{e}"
    );
}

#[tokio::test]
async fn replies_are_matched_by_id() {
    let (client, mut server) = fake_pair(defaults()).await;
    let c1 = client.clone();
    let c2 = client.clone();
    let first = tokio::spawn(async move { c1.execute_raw("one", None).await });
    let id1 = server.expect("one").await;
    let second = tokio::spawn(async move { c2.execute_raw("two", Some(json!({"x": 1}))).await });
    let cmd2 = server.recv().await.expect("two");
    assert_eq!(cmd2["arguments"], json!({"x": 1}));
    assert_ne!(id1, cmd2["id"]);
    // Answer out of order.
    server
        .send_json(json!({"return": "second", "id": cmd2["id"]}))
        .await;
    server
        .send_json(json!({"return": "first", "id": id1}))
        .await;
    let second = bounded("second", second).await.expect("joins").expect("ok");
    let first = bounded("first", first).await.expect("joins").expect("ok");
    assert_eq!((first, second), (json!("first"), json!("second")));
}

#[tokio::test]
async fn qmp_error_reply_names_the_command() {
    let (client, mut server) = fake_pair(defaults()).await;
    let call = tokio::spawn(async move { client.execute_raw("device_del", None).await });
    let id = server.expect("device_del").await;
    server
        .send_json(
            json!({"error": {"class": "DeviceNotFound", "desc": "Device 'x' not found"}, "id": id}),
        )
        .await;
    let e = bounded("call", call)
        .await
        .expect("joins")
        .expect_err("qmp error");
    assert_eq!(
        e.to_string(),
        "qmp: `device_del` failed: DeviceNotFound: Device 'x' not found"
    );
}

#[tokio::test]
async fn garbage_line_fails_pending_calls_with_the_line() {
    let (client, mut server) = fake_pair(defaults()).await;
    let c = client.clone();
    let call = tokio::spawn(async move { c.query_status().await });
    server.expect("query-status").await;
    server.send("this is {not json").await;
    let e = bounded("call", call)
        .await
        .expect("joins")
        .expect_err("protocol error");
    let Error::Protocol(cause) = &e else {
        panic!("want Protocol, got {e}")
    };
    assert!(e.is_disconnected());
    let text = cause.to_string();
    assert!(
        text.contains("invalid json") && text.contains("this is {not json"),
        "{text}"
    );
    assert!(client.is_closed());
    bounded("closed", client.closed()).await;
    assert!(client.close_reason().is_some());
    let later = client.query_status().await.expect_err("closed");
    assert!(matches!(later, Error::Disconnected), "{later}");
}

#[tokio::test]
async fn truncated_line_then_eof_is_a_disconnect() {
    let (client, mut server) = fake_pair(defaults()).await;
    let c = client.clone();
    let call = tokio::spawn(async move { c.execute_raw("query-name", None).await });
    server.expect("query-name").await;
    server.send_raw(br#"{"return": {"name": "vm"#).await;
    drop(server);
    let e = bounded("call", call)
        .await
        .expect("joins")
        .expect_err("disconnected");
    assert!(matches!(e, Error::Disconnected), "{e}");
    let reason = client.close_reason().expect("a reason");
    assert!(matches!(*reason, Error::Truncated { .. }), "{reason}");
    assert!(
        reason.to_string().contains(r#"{"return": {"name": "vm"#),
        "{reason}"
    );
}

#[tokio::test]
async fn unknown_id_reply_is_ignored() {
    let (client, mut server) = fake_pair(defaults()).await;
    let c = client.clone();
    let call = tokio::spawn(async move { c.execute_raw("query-name", None).await });
    let id = server.expect("query-name").await;
    server
        .send_json(json!({"return": "stray", "id": 987654}))
        .await;
    server
        .send_json(json!({"return": "stray", "id": "not-ours"}))
        .await;
    server.send_json(json!({"return": "stray"})).await;
    server
        .send_json(json!({"return": {"name": "vm"}, "id": id}))
        .await;
    let value = bounded("call", call).await.expect("joins").expect("ok");
    assert_eq!(value, json!({"name": "vm"}));
    assert!(!client.is_closed());
}

#[tokio::test]
async fn error_without_id_goes_to_the_oldest_pending_call() {
    let (client, mut server) = fake_pair(defaults()).await;
    let c = client.clone();
    let call = tokio::spawn(async move { c.execute_raw("bogus", None).await });
    server.expect("bogus").await;
    server
        .send(r#"{"error": {"class": "GenericError", "desc": "JSON parse error"}}"#)
        .await;
    let e = bounded("call", call)
        .await
        .expect("joins")
        .expect_err("error");
    assert!(
        matches!(&e, Error::Qmp { command, .. } if command == "bogus"),
        "{e}"
    );
    // With nothing pending it is dropped, and the connection lives on.
    server
        .send(r#"{"error": {"class": "GenericError", "desc": "again"}}"#)
        .await;
    let c = client.clone();
    let call = tokio::spawn(async move { c.execute_raw("query-name", None).await });
    let id = server.expect("query-name").await;
    server.send_json(json!({"return": {}, "id": id})).await;
    bounded("call", call).await.expect("joins").expect("ok");
}

#[tokio::test]
async fn huge_line_is_refused_without_buffering_it_all() {
    let options = defaults().max_line_len(4096);
    let (client, mut server) = fake_pair(options).await;
    let c = client.clone();
    let call = tokio::spawn(async move { c.execute_raw("query-name", None).await });
    server.expect("query-name").await;
    // 64 KiB and no newline: must fail as soon as the limit is passed.
    server.send_raw(&vec![b'x'; 64 * 1024]).await;
    let e = bounded("call", call)
        .await
        .expect("joins")
        .expect_err("too long");
    let Error::Protocol(cause) = &e else {
        panic!("want Protocol, got {e}")
    };
    assert!(
        matches!(**cause, Error::LineTooLong { limit: 4096 }),
        "{cause}"
    );
}

#[tokio::test]
async fn disconnect_mid_call() {
    let (client, mut server) = fake_pair(defaults()).await;
    let calls: Vec<_> = (0..3)
        .map(|_| {
            let c = client.clone();
            tokio::spawn(async move { c.query_status().await })
        })
        .collect();
    for _ in 0..3 {
        server.expect("query-status").await;
    }
    drop(server);
    for call in calls {
        let e = bounded("call", call)
            .await
            .expect("joins")
            .expect_err("disconnected");
        assert!(matches!(e, Error::Disconnected), "{e}");
    }
    bounded("closed", client.closed()).await;
    assert!(client.is_closed());
    assert!(client.close_reason().is_none(), "clean eof has no reason");
    let e = bounded("later", client.stop()).await.expect_err("closed");
    assert!(matches!(e, Error::Disconnected), "{e}");
}

#[tokio::test]
async fn timeout_and_cancellation_keep_the_connection() {
    let (client, mut server) = fake_pair(defaults()).await;
    let e = {
        let timed = client.execute_raw_timeout("slow", None, Duration::from_millis(50));
        let (r, id) = tokio::join!(timed, server.expect("slow"));
        (r, id)
    };
    let (result, slow_id) = e;
    let err = result.expect_err("timed out");
    assert!(
        matches!(&err, Error::Timeout { command, .. } if command == "slow"),
        "{err}"
    );

    // A cancelled call: its future is dropped before the reply.
    let c = client.clone();
    let cancelled = tokio::spawn(async move { c.execute_raw("cancelled", None).await });
    let cancelled_id = server.expect("cancelled").await;
    cancelled.abort();
    let _ = cancelled.await;

    // Late replies for both are discarded, the next call gets its own reply.
    server
        .send_json(json!({"return": "late", "id": slow_id}))
        .await;
    server
        .send_json(json!({"return": "late", "id": cancelled_id}))
        .await;
    let c = client.clone();
    let next = tokio::spawn(async move { c.query_status().await });
    let id = server.expect("query-status").await;
    server
        .send_json(json!({"return": {"running": true, "status": "running"}, "id": id}))
        .await;
    let status = bounded("next", next).await.expect("joins").expect("ok");
    assert_eq!(status.status, RunState::Running);
    assert!(status.running);
}

#[tokio::test]
async fn quit_counts_a_hang_up_as_success() {
    let (client, mut server) = fake_pair(defaults()).await;
    let c = client.clone();
    let quit = tokio::spawn(async move { c.quit().await });
    server.expect("quit").await;
    drop(server); // no reply at all
    bounded("quit", quit)
        .await
        .expect("joins")
        .expect("quit succeeds");
    // But quitting a closed connection is an error.
    let e = client.quit().await.expect_err("already closed");
    assert!(matches!(e, Error::Disconnected), "{e}");
}

#[tokio::test]
async fn events_fan_out_while_commands_wait() {
    let (client, mut server) = fake_pair(defaults()).await;
    let mut all = client.subscribe();
    let mut stops = client.subscribe_filtered([events::STOP]);
    let c = client.clone();
    let call = tokio::spawn(async move { c.stop().await });
    let id = server.expect("stop").await;
    server.event("RTC_CHANGE", json!({"offset": 1})).await;
    server.event(events::STOP, json!({})).await;
    server.ok(&id).await;
    bounded("stop", call).await.expect("joins").expect("ok");

    let first = bounded("event", all.recv())
        .await
        .expect("open")
        .expect("no lag");
    assert_eq!(first.event, "RTC_CHANGE");
    assert_eq!(first.data, json!({"offset": 1}));
    assert_eq!(first.timestamp.seconds, 1_700_000_000);
    let second = bounded("event", all.recv())
        .await
        .expect("open")
        .expect("no lag");
    assert!(second.is(events::STOP));
    let stop = bounded("event", stops.recv())
        .await
        .expect("open")
        .expect("no lag");
    assert_eq!(stop.event, "STOP");

    // wait_for on a subscription made before the trigger.
    let mut resets = client.subscribe();
    server
        .event(
            events::RESET,
            json!({"guest": true, "reason": "guest-reset"}),
        )
        .await;
    let reset = resets
        .wait_for(|e| e.is(events::RESET), Duration::from_secs(5))
        .await
        .expect("reset event");
    let data: flotilla_qmp::events::Reset = reset.parse_data().expect("typed");
    assert!(data.guest);

    // Streams end when the connection does.
    drop(server);
    let mut rest = Vec::new();
    while let Some(item) = bounded("drain", all.recv()).await {
        rest.push(item);
    }
    assert_eq!(rest.len(), 1, "the RESET, then end: {rest:?}");
    let e = bounded(
        "wait",
        client.wait_for_event(|_| true, Duration::from_secs(5)),
    )
    .await
    .expect_err("closed");
    assert!(matches!(e, Error::Disconnected), "{e}");
}

#[tokio::test]
async fn slow_subscriber_is_told_how_many_it_lost() {
    let options = defaults().event_capacity(4);
    let (client, mut server) = fake_pair(options).await;
    let mut slow = client.subscribe();
    for i in 0..10 {
        server.event("TICK", json!({"i": i})).await;
    }
    // Round trip so the connection task has handled every event.
    let c = client.clone();
    let call = tokio::spawn(async move { c.execute_raw("sync", None).await });
    let id = server.expect("sync").await;
    server.ok(&id).await;
    bounded("sync", call).await.expect("joins").expect("ok");

    let lagged = bounded("recv", slow.recv()).await.expect("open");
    assert_eq!(lagged, Err(Lagged(6)));
    let next = bounded("recv", slow.recv())
        .await
        .expect("open")
        .expect("event");
    assert_eq!(next.data, json!({"i": 6}));

    let mut waiting = client.subscribe();
    for i in 0..10 {
        server.event("TICK", json!({"i": i})).await;
    }
    let e = waiting
        .wait_for(|e| e.is("NEVER"), Duration::from_secs(5))
        .await
        .expect_err("lost events");
    assert!(matches!(e, Error::EventsLost(6)), "{e}");
}

#[tokio::test]
async fn wait_for_event_times_out() {
    let (client, _server) = fake_pair(defaults()).await;
    let e = client
        .wait_for_event(|e| e.is(events::SHUTDOWN), Duration::from_millis(50))
        .await
        .expect_err("timeout");
    assert!(matches!(e, Error::EventTimeout(_)), "{e}");
}

#[tokio::test]
async fn dropping_every_client_closes_the_socket() {
    let (client, mut server) = fake_pair(defaults()).await;
    drop(client);
    assert_eq!(server.recv().await, None, "server sees eof");
}

/// A QMP socket that appears after `appear` and greets each client after `greet`, as a
/// QEMU does that listens at once but greets only once its machine is made.
async fn slow_qemu(path: std::path::PathBuf, appear: Duration, greet: Duration) {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    tokio::time::sleep(appear).await;
    let listener = tokio::net::UnixListener::bind(&path).expect("bind");
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            return;
        };
        tokio::spawn(async move {
            let (r, mut w) = stream.into_split();
            tokio::time::sleep(greet).await;
            let _ = w.write_all(format!("{GREETING}\n").as_bytes()).await;
            let mut lines = BufReader::new(r).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                let cmd: serde_json::Value = serde_json::from_str(&line).expect("json");
                let reply = json!({"return": {}, "id": cmd["id"]});
                let _ = w.write_all(format!("{reply}\n").as_bytes()).await;
            }
        });
    }
}

#[tokio::test]
async fn a_late_socket_and_a_late_greeting_wait_as_long_as_asked() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("qmp.sock");
    let server = tokio::spawn(slow_qemu(
        path.clone(),
        Duration::from_millis(200),
        Duration::from_millis(600),
    ));
    // The default handshake limit would do here; a short one shows which limit counts.
    let short = defaults().handshake_timeout(Duration::from_millis(100));
    let e = bounded(
        "connect",
        Client::connect_unix_retry_with(&path, Duration::from_secs(10), short),
    )
    .await
    .expect_err("greeted too late");
    assert!(matches!(e, Error::HandshakeTimeout(_)), "{e}");
    let long = defaults().handshake_timeout(Duration::from_secs(10));
    let client = bounded(
        "connect",
        Client::connect_unix_retry_with(&path, Duration::from_secs(10), long),
    )
    .await
    .expect("a late greeting within the limit");
    assert_eq!(client.greeting().version.package, "fake");
    server.abort();
}

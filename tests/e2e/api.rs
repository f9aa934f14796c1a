//! The machine API's waits and failure paths on a real VM.

use std::time::{Duration, Instant};

use flotilla_driver::Network;

use super::spec;

#[tokio::test(flavor = "multi_thread")]
async fn waits_pause_crash_reboot_and_panic() {
    let dir = tempfile::tempdir().unwrap();
    let (spec, options) = spec(&dir, "[machines.m]\n");
    let net = Network::new(&spec, options).unwrap();
    let m = net.machine("m").unwrap();
    let wait = Duration::from_secs(30);
    m.start().await.unwrap();

    // Console text, including lines printed before the call.
    let line = m
        .wait_for_console_text("AGENT-READY proto=\\d+", wait)
        .await
        .unwrap();
    assert!(line.starts_with("FLOTILLA-AGENT-READY"), "{line}");
    assert!(m.console_log().contains("FLOTILLA-AGENT-READY"));
    let e = m
        .wait_for_console_text("never printed", Duration::from_secs(1))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("did not finish within 1 s"), "{e}");

    // Files and ports that appear later.
    m.succeed("(sleep 1; touch /tmp/later) > /dev/null 2>&1 &")
        .await
        .unwrap();
    m.wait_for_file("/tmp/later", wait).await.unwrap();
    m.succeed("(sleep 1; httpd -p 8080 -h /tmp) > /dev/null 2>&1 &")
        .await
        .unwrap();
    m.wait_for_open_port(8080, wait).await.unwrap();
    m.succeed("killall httpd").await.unwrap();
    m.wait_for_closed_port(8080, wait).await.unwrap();

    // A paused VM turns the waiting call into an error within a second.
    let qmp = m.qmp().await.unwrap();
    let sleeper = {
        let m = m.clone();
        tokio::spawn(async move { m.succeed("sleep 30").await })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    qmp.stop().await.unwrap();
    let stopped = Instant::now();
    let e = tokio::time::timeout(Duration::from_secs(5), sleeper)
        .await
        .unwrap()
        .unwrap()
        .unwrap_err();
    assert!(
        stopped.elapsed() < Duration::from_secs(1),
        "{:?}",
        stopped.elapsed()
    );
    assert!(
        e.to_string().contains("machine `m`: the VM was paused"),
        "{e}"
    );
    qmp.cont().await.unwrap();
    m.succeed("true").await.unwrap();

    // A crash stops QEMU; the next command boots a new one.
    let first = m.qemu_pid().unwrap();
    m.crash().await.unwrap();
    assert_eq!(m.succeed("echo again").await.unwrap(), "again\n");
    assert_ne!(m.qemu_pid().unwrap(), first);
    // A reboot powers off cleanly and boots again.
    let second = m.qemu_pid().unwrap();
    m.reboot(wait).await.unwrap();
    assert_ne!(m.qemu_pid().unwrap(), second);
    m.succeed("true").await.unwrap();

    // A guest kernel panic ends the call at once, quoting the console.
    let started = Instant::now();
    let e = m
        .succeed("echo c > /proc/sysrq-trigger; sleep 60")
        .await
        .unwrap_err()
        .to_string();
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "{:?}",
        started.elapsed()
    );
    assert!(e.contains("machine `m`: the guest kernel panicked"), "{e}");
    assert!(e.contains("qemu exited"), "{e}");
    assert!(e.contains("Kernel panic"), "{e}");
    net.stop_all().await;
}

//! The machine API's waits and failure paths on a real VM.

use std::time::{Duration, Instant};

use flotilla_driver::{Error, Fleet};

use super::{assert_gone, fails_within, network, run_script, spec};

#[tokio::test(flavor = "multi_thread")]
async fn waits_pause_crash_reboot_and_panic() {
    let dir = tempfile::tempdir().unwrap();
    let net = network(&dir, "[machines.m]\n");
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
    // Pause once the command runs in the guest.
    flotilla_driver::retry(wait, || m.succeed("pidof sleep"))
        .await
        .unwrap();
    qmp.stop().await.unwrap();
    let stopped = Instant::now();
    let e = tokio::time::timeout(Duration::from_secs(20), sleeper)
        .await
        .expect("the paused VM still held the call after 20 s")
        .unwrap()
        .unwrap_err();
    // The promise is "within a second" of the pause (it is the STOP event, not the
    // command's 30 s, that ends the call); 3 s leaves room for a busy host.
    assert!(
        stopped.elapsed() < Duration::from_secs(3),
        "{:?}",
        stopped.elapsed()
    );
    assert!(
        e.to_string().contains("machine `m`: the VM was paused"),
        "{e}"
    );
    qmp.cont().await.unwrap();
    m.succeed("true").await.unwrap();
    // A call right after `cont` runs: the RESUME may reach the driver's event watcher
    // after `cont` returns, and the call must not fail on the pause already over.
    for _ in 0..20 {
        qmp.stop().await.unwrap();
        qmp.cont().await.unwrap();
        m.succeed("true").await.unwrap();
    }

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
    let e = fails_within(
        Duration::from_secs(20),
        m.succeed("echo c > /proc/sysrq-trigger; sleep 60"),
    )
    .await
    .to_string();
    assert!(e.contains("machine `m`: the guest kernel panicked"), "{e}");
    // pvpanic reported it and paused the VM, so the evidence is still there.
    assert!(e.contains("the guest panicked (qmp GUEST_PANICKED"), "{e}");
    assert!(e.contains("Kernel panic"), "{e}");
    // No `display`: no screen to take a picture of, and the error says how to get one.
    let e = m.screenshot("after-panic").await.unwrap_err().to_string();
    assert!(e.contains("give it `display = true`"), "{e}");
    // Every further call fails at once instead of waiting on the dead guest (its
    // command timeout): no round trip at all, so 5 s is room for a busy host only.
    let started = Instant::now();
    let e = m.succeed("true").await.unwrap_err().to_string();
    assert!(started.elapsed() < Duration::from_secs(5), "{e}");
    assert!(e.contains("GUEST_PANICKED"), "{e}");
    net.stop_all().await;
}

/// A guest that cannot react to the power-off request (its vCPUs are stopped through
/// QMP, so the request waits unread) makes `shutdown` an error that names the machine
/// and the limit; QEMU is stopped all the same, and the next command boots again.
#[tokio::test(flavor = "multi_thread")]
async fn shutdown_that_has_to_stop_qemu_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let net = network(&dir, "[machines.stuck]\n");
    let m = net.machine("stuck").unwrap();
    m.start().await.unwrap();
    let first = m.qemu_pid().unwrap();
    m.qmp().await.unwrap().stop().await.unwrap();
    let e = fails_within(Duration::from_secs(15), m.shutdown(Duration::from_secs(3))).await;
    let message = e.to_string();
    assert!(matches!(e, Error::PowerOff { .. }), "{e:?}");
    assert!(
        message.starts_with("machine `stuck`: shutdown: the guest did not power off within 3 s;"),
        "{message}"
    );
    assert!(message.ends_with("qemu was stopped"), "{message}");
    assert_gone(&m).await;
    assert_eq!(m.succeed("echo back").await.unwrap(), "back\n");
    assert_ne!(m.qemu_pid().unwrap(), first);
    net.stop_all().await;
}

/// The width and height in a PNG's IHDR chunk.
fn png_size(bytes: &[u8]) -> (u32, u32) {
    assert!(bytes.starts_with(b"\x89PNG\r\n\x1a\n"), "not a PNG");
    let be = |at: usize| u32::from_be_bytes(bytes[at..at + 4].try_into().unwrap());
    (be(16), be(20))
}

#[tokio::test(flavor = "multi_thread")]
async fn screenshots_and_typing() {
    let dir = tempfile::tempdir().unwrap();
    // `m` has a screen (SeaBIOS and VGA); `k` boots through qboot without one, and its
    // keyboard works all the same.
    let (spec, options) = spec(&dir, "[machines.m]\ndisplay = true\n[machines.k]\n");
    let log_dir = options.log_dir.clone();
    let net = Fleet::new(&spec, options).unwrap();
    let m = net.machine("m").unwrap();
    let k = net.machine("k").unwrap();
    net.start_all().await.unwrap();

    let blank = m.screenshot("blank").await.unwrap();
    assert_eq!(blank, log_dir.join("m").join("blank.png"));
    // The VGA text console: 80x25 cells of 9x16 pixels.
    assert_eq!(png_size(&std::fs::read(&blank).unwrap()), (720, 400));
    m.succeed("for i in $(seq 20); do echo 'Flotilla screen test line' $i; done > /dev/tty1")
        .await
        .unwrap();
    let text = m.screenshot("text.png").await.unwrap();
    assert_eq!(text, log_dir.join("m").join("text.png"));
    let (blank, text) = (
        std::fs::read(&blank).unwrap(),
        std::fs::read(&text).unwrap(),
    );
    // Text compresses worse than an empty screen.
    assert!(
        text.len() > blank.len() + 1000,
        "{} vs {}",
        text.len(),
        blank.len()
    );
    assert!(m.screenshot("../escape").await.is_err());
    let e = k.screenshot("none").await.unwrap_err().to_string();
    assert!(e.contains("machine `k` has no screen"), "{e}");

    // Typing reaches the console's terminal (tty1) like a person at the keyboard.
    k.succeed("(head -n 2 /dev/tty1 > /tmp/typed.part && mv /tmp/typed.part /tmp/typed) > /dev/null 2>&1 &")
        .await
        .unwrap();
    k.succeed("sleep 0.5").await.unwrap();
    k.send_chars("Hello, World! a|b & \"q\" ~_+\n", Duration::from_millis(5))
        .await
        .unwrap();
    // backspace removes the `x`; `ret` ends the line.
    k.send_chars("abx", Duration::ZERO).await.unwrap();
    k.send_key("backspace").await.unwrap();
    k.send_key("ret").await.unwrap();
    k.wait_for_file("/tmp/typed", Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(
        k.succeed("cat /tmp/typed").await.unwrap(),
        "Hello, World! a|b & \"q\" ~_+\nab\n"
    );
    let e = k.send_key("ctrl-").await.unwrap_err().to_string();
    assert!(e.contains("machine `k`: send_key"), "{e}");
    let e = m
        .send_chars("é", Duration::ZERO)
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("no key for 'é'"), "{e}");
    net.stop_all().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn polling_conditions_fail_the_step_that_breaks_them() {
    // From a script: the condition holds for two steps, then a step breaks it and the
    // next step fails, naming the condition and the line.
    let dir = tempfile::tempdir().unwrap();
    let err = run_script(
        &dir,
        "script = \"t.rhai\"\n[machines.m]\n",
        r#"fn marker() { "/tmp/ok" }
m.succeed("touch " + marker());
let checks = 0;
polling_condition("the marker file exists", || {
    checks += 1;
    m.succeed("test -e " + marker());
});
m.succeed("echo step 1");
m.succeed("rm " + marker());
if checks != 2 { throw `checked ${checks} times`; }
m.succeed("echo step 2");
"#,
    )
    .await
    .unwrap_err()
    .to_string();
    let script = dir.path().join("t.rhai");
    assert!(
        err.starts_with(&format!("{}:11:", script.display())),
        "{err}"
    );
    assert!(
        err.contains("polling condition `the marker file exists` failed"),
        "{err}"
    );
    assert!(err.contains("test -e /tmp/ok"), "{err}");

    // From the library: checked between the tries of a wait, at most once per interval.
    let dir = tempfile::tempdir().unwrap();
    let net = network(&dir, "[machines.m]\n");
    let m = net.machine("m").unwrap();
    m.start().await.unwrap();
    let checks = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let (c, probe) = (checks.clone(), m.clone());
    net.polling_condition("the guest answers", Duration::ZERO, move || {
        let (c, probe) = (c.clone(), probe.clone());
        async move {
            // The fourth check makes the file the wait below is for: the wait ends only
            // if the condition is checked between its tries, however slow they are.
            let n = c.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
            let command = if n == 4 { "touch /tmp/later" } else { "true" };
            probe.succeed(command).await.map(drop)
        }
    });
    m.wait_for_file("/tmp/later", Duration::from_secs(60))
        .await
        .expect("the polling condition was not checked between the tries of a wait");
    // One check before each command: at least four tries.
    let n = checks.load(std::sync::atomic::Ordering::SeqCst);
    assert!(n >= 4, "{n} checks");
    net.polling_condition("never", Duration::from_secs(3600), || async {
        Err(flotilla_driver::Error::Usage("it broke".into()))
    });
    let e = m.succeed("true").await.unwrap_err().to_string();
    assert_eq!(e, "polling condition `never` failed: it broke");
    // Checked at most once an hour: the next command runs.
    m.succeed("true").await.unwrap();
    net.stop_all().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn timeouts_are_overridable_and_named() {
    // Per-call limits from a script, and wait_until_fails.
    let dir = tempfile::tempdir().unwrap();
    run_script(
        &dir,
        "script = \"t.rhai\"\n[machines.m]\n",
        r#"fn expect_timeout(f, text) {
    try { f.call(); } catch (e) {
        if !e.contains(text) { throw `wrong error: ${e}`; }
        return;
    }
    throw `no timeout: ${text}`;
}
m.succeed("touch /tmp/f; (sleep 1; rm /tmp/f) > /dev/null 2>&1 &");
m.wait_until_fails("test -e /tmp/f", 30);
expect_timeout(|| m.succeed("sleep 10", 1), "command `sleep 10` did not finish within 1 s (timeout)");
expect_timeout(|| m.execute("sleep 10", 1), "command `sleep 10` did not finish within 1 s (timeout)");
// A wait whose last try is cut at its deadline times out with the wait's own limit.
expect_timeout(|| m.wait_until_succeeds("sleep 10", 2), "waiting until `sleep 10` succeeds (1 tries, the last still running at the limit) did not finish within 2 s (timeout)");
expect_timeout(|| m.wait_for_file("/nope", 2), "waiting until `test -e '/nope'` succeeds");
expect_timeout(|| m.wait_for_open_port(9, 1), "within 1 s (timeout)");
expect_timeout(|| m.wait_for_console_text("never", 1), "waiting for console text matching `never` did not finish within 1 s");
m.succeed("echo still fine", 5);
m.fail("false", 5);
// A limit under a second is a mistake, said as such (it used to become 1 s).
expect_timeout(|| m.succeed("true", 0), "a time limit of 0 s: give 1 s or more");
expect_timeout(|| m.wait_for_file("/nope", -5), "a time limit of -5 s: give 1 s or more");
expect_timeout(|| retry(|| 1, -1), "a time limit of -1 s: give 1 s or more");
"#,
    )
    .await
    .unwrap();

    // The global timeout ends a test that hangs, and says so.
    let dir = tempfile::tempdir().unwrap();
    let e = fails_within(
        Duration::from_secs(25),
        run_script(
            &dir,
            "script = \"t.rhai\"\ntimeout = 15\n[machines.m]\n",
            "m.succeed(\"sleep 600\");\n",
        ),
    )
    .await;
    // It names what was under way: the machine and its command.
    let m = e.to_string();
    assert!(
        m.starts_with(
            "the test did not finish within its timeout of 15 s; still running: m: running `sleep 600` ("
        ),
        "{m}"
    );

    // The spec's default limits for boots and commands.
    let dir = tempfile::tempdir().unwrap();
    // Booted: a restore from a snapshot can be ready within the second.
    let net = network(&dir, "boot_timeout = 1\n[machines.m]\nsnapshot = false\n");
    let e = net.machine("m").unwrap().start().await.unwrap_err();
    assert!(
        e.to_string()
            .contains("machine `m`: no readiness line from the agent within 1 s (boot_timeout)"),
        "{e}"
    );
    net.stop_all().await;
    let net = network(&dir, "command_timeout = 2\n[machines.m]\n");
    let e = net
        .machine("m")
        .unwrap()
        .succeed("sleep 10")
        .await
        .unwrap_err();
    assert!(
        e.to_string()
            .contains("machine `m`: command `sleep 10` did not finish within 2 s (timeout)"),
        "{e}"
    );
    net.stop_all().await;
}

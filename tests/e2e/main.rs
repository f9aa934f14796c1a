//! End-to-end tests of the driver library: real QEMU, real kernel, real busybox.
//! They need `scripts/setup` to have run (CI's `.ci/run` does), and `cc` and `dpkg-deb`
//! (which a host that builds Rust on Debian has) for the Debian machines' own program.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use flotilla_driver::{run_test, Error, Fleet, FleetOptions, Machine, Spec};

mod api;
mod arm64;
mod book_sample;
mod debian;
mod debian_arm64;
mod debian_machines;
mod debian_releases;
mod disk;
mod files;
mod helper_deaths;
mod net;
mod nixos;
mod screen;
mod snapshot;
mod snapshot_debian;
mod start;
use tokio_util::sync::CancellationToken;

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Runs a host program that must succeed (`what` names it in the failure, with what it
/// printed); its output.
fn host_run(what: &str, cmd: &mut std::process::Command) -> std::process::Output {
    let out = cmd.output().unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(
        out.status.success(),
        "{what}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Options for a run with its log folder in `dir/out`, not on a terminal.
fn options(dir: &Path) -> FleetOptions {
    let mut options = FleetOptions::new(dir.join("out"));
    options.terminal = false;
    options
}

/// A spec from text, with its log folder in a fresh temporary directory.
fn spec(dir: &tempfile::TempDir, text: &str) -> (Spec, FleetOptions) {
    let path = dir.path().join("flotilla.toml");
    std::fs::write(&path, text).unwrap();
    let spec = Spec::load(&path).unwrap();
    (spec, options(dir.path()))
}

/// The network of the spec `text`, with its log folder in `dir`.
fn network(dir: &tempfile::TempDir, text: &str) -> Fleet {
    let (spec, options) = spec(dir, text);
    Fleet::new(&spec, options).unwrap()
}

/// Runs the test of the spec `text`, whose script is `t.rhai` with `script` in it.
async fn run_script(dir: &tempfile::TempDir, text: &str, script: &str) -> Result<(), Error> {
    std::fs::write(dir.path().join("t.rhai"), script).unwrap();
    let (spec, options) = spec(dir, text);
    run_test(&spec, options, CancellationToken::new()).await
}

/// Runs the test of `spec` with its log folder in a temporary directory; it must
/// pass. The driver's log.
async fn run_passing(spec: &Spec) -> String {
    let dir = tempfile::tempdir().unwrap();
    let result = run_test(spec, options(dir.path()), CancellationToken::new()).await;
    let log = std::fs::read_to_string(dir.path().join("out/driver.log")).unwrap();
    assert!(result.is_ok(), "{}\n{log}", result.unwrap_err());
    log
}

/// Awaits `call`, which must fail within `limit`; its error.
async fn fails_within<T: std::fmt::Debug>(
    limit: Duration,
    call: impl std::future::Future<Output = Result<T, Error>>,
) -> Error {
    let started = Instant::now();
    let e = call.await.unwrap_err();
    assert!(started.elapsed() < limit, "{:?}", started.elapsed());
    e
}

/// Whether a process is gone (reaped, or never existed).
fn gone(pid: u32) -> bool {
    !Path::new(&format!("/proc/{pid}")).exists()
        || std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map(|s| s.contains(") Z "))
            .unwrap_or(true)
}

async fn assert_gone(machine: &Machine) {
    let pid = machine.qemu_pid().expect("qemu was started");
    // Callers stopped it already: it is gone at once, or within 30 s on a busy host.
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(30) {
        if gone(pid) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!(
        "qemu {pid} of `{}` is still running 30 s after it was stopped",
        machine.name()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn library_boots_a_machine_and_runs_commands() {
    let dir = tempfile::tempdir().unwrap();
    let net = network(&dir, "[machines.vm]\nmemory = 256\n");
    let vm = net.machine("vm").unwrap();

    let uname = vm.succeed("uname -sr").await.unwrap();
    assert!(uname.starts_with("Linux 6."), "{uname}");
    assert_eq!(vm.succeed("hostname").await.unwrap(), "vm\n");
    // The default image's modules load without their signatures (docs/src/default-image.md):
    // taint E only.
    let taint: u64 = vm
        .succeed("cat /proc/sys/kernel/tainted")
        .await
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert_eq!(taint, 1 << 13, "only TAINT_UNSIGNED_MODULE");
    assert_eq!(vm.succeed("echo out; echo err >&2").await.unwrap(), "out\n");

    let r = vm.execute("echo partial; exit 7").await.unwrap();
    assert_eq!((r.code, r.stdout.as_str()), (Some(7), "partial\n"));
    let r = vm.execute("kill -KILL $$").await.unwrap();
    assert_eq!((r.code, r.signal), (None, Some(9)));

    let e = vm.succeed("echo oops >&2; exit 4").await.unwrap_err();
    let m = e.to_string();
    assert!(m.contains("machine `vm`"), "{m}");
    assert!(
        m.contains("`echo oops >&2; exit 4` was expected to succeed"),
        "{m}"
    );
    assert!(m.contains("exit status 4") && m.contains("oops"), "{m}");
    let e = vm.fail("true").await.unwrap_err();
    assert!(e.to_string().contains("expected to fail"), "{e}");

    // Many commands at once over the one agent channel.
    let jobs = (0..8).map(|i| {
        let vm = vm.clone();
        async move { vm.succeed(&format!("sleep 0.2; echo {i}")).await }
    });
    let outs = futures::future::join_all(jobs).await;
    for (i, out) in outs.into_iter().enumerate() {
        assert_eq!(out.unwrap(), format!("{i}\n"));
    }

    // The console and QEMU's stderr are in the log folder.
    let console = std::fs::read_to_string(dir.path().join("out/vm/console.log")).unwrap();
    assert!(console.contains("FLOTILLA-AGENT-READY"), "{console}");
    let driver_log = std::fs::read_to_string(dir.path().join("out/driver.log")).unwrap();
    assert!(
        driver_log.contains("vm: must succeed: uname -sr"),
        "{driver_log}"
    );

    // The run's directory and the sockets QEMU made in it are the user's alone.
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    let run_dir = net.run_dir().to_path_buf();
    assert_eq!(mode(&run_dir), 0o700, "{}", run_dir.display());
    for socket in ["qmp.sock", "agent.sock", "qga.sock"] {
        let path = run_dir.join("vm").join(socket);
        assert_eq!(
            mode(&path) & 0o077,
            0,
            "{}: {:o}",
            path.display(),
            mode(&path)
        );
    }

    net.stop_all().await;
    assert_gone(&vm).await;
    drop(net);
    assert!(!run_dir.exists(), "{}", run_dir.display());
}

/// Runs `examples/<name>` through the library; it must pass.
async fn run_example(name: &str) {
    let spec = Spec::load(&workspace().join("examples").join(name)).unwrap();
    let log = run_passing(&spec).await;
    assert!(log.contains(&format!("test `{name}` passed")), "{log}");
}

#[tokio::test(flavor = "multi_thread")]
async fn hello_example_passes_through_the_library() {
    run_example("hello").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn qemu_killed_before_readiness_fails_within_seconds() {
    let dir = tempfile::tempdir().unwrap();
    // A cold boot: the test kills QEMU before the agent is ready.
    let net = network(&dir, "[machines.victim]\nsnapshot = false\n");
    let victim = net.machine("victim").unwrap();
    let booting = {
        let victim = victim.clone();
        tokio::spawn(async move { victim.start().await })
    };
    let waiting = Instant::now();
    let pid = loop {
        if let Some(pid) = victim.qemu_pid() {
            break pid;
        }
        assert!(
            waiting.elapsed() < Duration::from_secs(60),
            "qemu was not spawned within 60 s"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    // Once QEMU made its QMP socket, give the driver a moment to connect and the kernel
    // to start, then kill QEMU from outside, long before readiness (the quiet kernel's
    // first console line is the agent's readiness: none yet).
    let qmp_socket = net.run_dir().join("victim/qmp.sock");
    while !qmp_socket.exists() {
        assert!(
            waiting.elapsed() < Duration::from_secs(60),
            "qemu made no QMP socket within 60 s"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(victim.console_log(), "", "ready before it could be killed");
    let killed_at = Instant::now();
    // SAFETY: plain kill(2) of the child we just saw spawned.
    assert_eq!(unsafe { libc::kill(pid as i32, libc::SIGKILL) }, 0);
    let err = tokio::time::timeout(Duration::from_secs(30), booting)
        .await
        .expect("start() returned within 30 s of QEMU's death")
        .unwrap()
        .unwrap_err();
    // The promise: QEMU's exit ends the boot wait (well under a second normally), not
    // the 120 s boot timeout. 10 s leaves room for a busy host and still tells the two
    // apart.
    assert!(
        killed_at.elapsed() < Duration::from_secs(10),
        "{:?}",
        killed_at.elapsed()
    );
    let m = err.to_string();
    assert!(matches!(err, Error::Boot { .. }), "{m}");
    assert!(
        m.contains(
            "machine `victim`: qemu was killed by signal 9 (SIGKILL) before the agent was ready"
        ),
        "{m}"
    );
    net.stop_all().await;
    assert_gone(&victim).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn qemu_killed_between_calls_fails_the_next_call_instead_of_booting_again() {
    let dir = tempfile::tempdir().unwrap();
    let net = network(&dir, "[machines.victim]\n");
    let victim = net.machine("victim").unwrap();
    victim.succeed("true").await.unwrap();
    let pid = victim.qemu_pid().expect("a running machine has a QEMU");
    // SAFETY: plain kill(2) of the machine's QEMU, while no call waits on it.
    assert_eq!(unsafe { libc::kill(pid as i32, libc::SIGKILL) }, 0);
    let waiting = Instant::now();
    // Gone from /proc once the driver has reaped it (and so knows its status).
    while Path::new(&format!("/proc/{pid}")).exists() {
        assert!(
            waiting.elapsed() < Duration::from_secs(10),
            "QEMU was not reaped"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    // The next call names the machine and the signal; it boots no new QEMU.
    let err = fails_within(Duration::from_secs(30), victim.succeed("true")).await;
    let m = err.to_string();
    assert!(matches!(err, Error::MachineDied { .. }), "{m}");
    assert!(
        m.contains("machine `victim`: qemu was killed by signal 9 (SIGKILL) before this call"),
        "{m}"
    );
    net.stop_all().await;
    assert_gone(&victim).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn kernel_that_cannot_find_init_quotes_the_panic() {
    let dir = tempfile::tempdir().unwrap();
    let net = network(
        &dir,
        "[machines.broken]\nkernel_args = \"rdinit=/no/such/init\"\n",
    );
    let broken = net.machine("broken").unwrap();
    // Fail fast: the panic, not the 120 s boot timeout, ends the wait.
    let err = fails_within(Duration::from_secs(60), broken.start()).await;
    let m = err.to_string();
    assert!(
        m.contains("machine `broken`: the guest kernel panicked before the agent was ready"),
        "{m}"
    );
    assert!(m.contains("Kernel panic - not syncing"), "{m}");
    assert!(m.contains("last console lines:\n  | "), "{m}");
    net.stop_all().await;
    assert_gone(&broken).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failed_test_stops_its_machines_and_names_the_line() {
    let dir = tempfile::tempdir().unwrap();
    // A tag on the kernel command line finds this test's QEMU among the processes.
    let tag = format!(
        "flotilla.e2e_tag={}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    );
    let watch_tag = tag.clone();
    let watcher = tokio::spawn(async move {
        // Its QEMU, seen while the test runs: the search below does find it.
        loop {
            if !qemus_with(&watch_tag).is_empty() {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    let err = run_script(
        &dir,
        &format!("script = \"t.rhai\"\n[machines.a]\nkernel_args = \"{tag}\"\n"),
        "a.succeed(\"true\");\n\nlet x = a.succeed(\"exit 2\");\n",
    )
    .await
    .unwrap_err();
    let m = err.to_string();
    let script = dir.path().join("t.rhai");
    assert!(m.starts_with(&format!("{}:3:", script.display())), "{m}");
    assert!(
        m.contains("machine `a`: command `exit 2` was expected to succeed"),
        "{m}"
    );
    assert!(err.is_test_failure());
    let log = std::fs::read_to_string(dir.path().join("out/driver.log")).unwrap();
    assert!(log.contains("test `"), "{log}");
    assert!(
        tokio::time::timeout(Duration::from_secs(1), watcher)
            .await
            .is_ok_and(|seen| seen.unwrap()),
        "the test's QEMU (tagged {tag}) was never seen running"
    );
    // The run stopped QEMU before returning: no process with the tag remains.
    assert_eq!(qemus_with(&tag), Vec::<u32>::new(), "QEMU left running");
}

/// Live (not zombie) processes whose command line contains `needle`.
fn qemus_with(needle: &str) -> Vec<u32> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        if !String::from_utf8_lossy(&cmdline).contains(needle) {
            continue;
        }
        let stat = std::fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
        if !stat.contains(") Z ") {
            out.push(pid);
        }
    }
    out
}

#[test]
fn script_syntax_errors_name_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let err = runtime
        .block_on(run_script(
            &dir,
            "script = \"t.rhai\"\n[machines.a]\n",
            "let a = 1;\nlet = ;\n",
        ))
        .unwrap_err();
    let m = err.to_string();
    assert!(
        m.starts_with(&format!("{}:2:", dir.path().join("t.rhai").display())),
        "{m}"
    );
    assert!(
        !err.is_test_failure(),
        "a syntax error means the test could not run: {m}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn agent_as_pid1_reaps_orphans_and_powers_off_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let net = network(&dir, "[machines.init]\n");
    let vm = net.machine("init").unwrap();
    // The agent is PID 1 and mounted what a guest needs.
    assert_eq!(vm.succeed("cat /proc/1/comm").await.unwrap(), "init\n");
    let mounts = vm.succeed("cat /proc/mounts").await.unwrap();
    for fs in [
        " /proc proc",
        " /sys sysfs",
        " /dev devtmpfs",
        " /tmp tmpfs",
    ] {
        assert!(mounts.contains(fs), "{fs} missing from {mounts}");
    }
    // Orphans are re-parented to PID 1, which must reap them: wait (30 s at most) until
    // no `sleep`, running or zombie, is left; a zombie that is never reaped fails it.
    vm.succeed(
        "for i in 1 2 3 4 5; do (sleep 0.1 &) ; done; n=0; \
         while cat /proc/[0-9]*/stat 2>/dev/null | grep -q '(sleep) '; do \
         n=$((n + 1)); [ $n -lt 300 ] || exit 1; usleep 100000; done",
    )
    .await
    .unwrap();
    vm.succeed("! grep -l ') Z ' /proc/[0-9]*/stat")
        .await
        .unwrap();

    // A clean power-off (no "no power-off within" below) takes seconds; 60 s is room
    // for a busy host.
    let started = Instant::now();
    // An error here means the guest did not power itself off and qemu was stopped.
    if let Err(e) = vm.shutdown(Duration::from_secs(60)).await {
        panic!("{e}");
    }
    assert!(started.elapsed() < Duration::from_secs(60));
    assert_gone(&vm).await;
    let log = std::fs::read_to_string(dir.path().join("out/driver.log")).unwrap();
    assert!(log.contains("init: shutting down"), "{log}");
}

#[tokio::test(flavor = "multi_thread")]
async fn library_has_subtests_retry_and_junit() {
    let dir = tempfile::tempdir().unwrap();
    let net = network(&dir, "[machines.vm]\n");
    let vm = net.machine("vm").unwrap();
    net.subtest("outer", async {
        net.subtest("boot", vm.start()).await?;
        // Fails once, then succeeds: retry returns the second try's value.
        let got = flotilla_driver::retry(Duration::from_secs(20), || {
            vm.succeed("test -e /tmp/flag || { touch /tmp/flag; exit 1; }; echo second")
        })
        .await?;
        assert_eq!(got, "second\n");
        Ok(())
    })
    .await
    .unwrap();
    let e = net
        .subtest("breaks", vm.succeed("exit 5"))
        .await
        .unwrap_err();
    // retry gives the last error once time is up.
    let started = Instant::now();
    let last = flotilla_driver::retry(Duration::from_secs(2), || vm.succeed("exit 3"))
        .await
        .unwrap_err();
    // Its 2 s, plus the try under way then (a round trip, seconds on a busy host).
    assert!(started.elapsed() < Duration::from_secs(20));
    assert!(last.to_string().contains("exit status 3"), "{last}");

    let list = net.subtests();
    let names: Vec<&str> = list.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["outer / boot", "outer", "breaks"]);
    assert!(list[2]
        .failure
        .as_deref()
        .unwrap()
        .contains("exit status 5"));
    let xml = flotilla_driver::junit_xml("lib", &list, 1.0, Some(&e));
    assert!(
        xml.contains("<testcase classname=\"lib\" name=\"outer / boot\""),
        "{xml}"
    );
    assert!(xml.contains("failures=\"1\""), "{xml}");
    net.stop_all().await;
    let log = std::fs::read_to_string(dir.path().join("out/driver.log")).unwrap();
    assert!(log.contains("  subtest: boot ok ("), "{log}");
    assert!(log.contains("subtest: breaks FAILED ("), "{log}");
}

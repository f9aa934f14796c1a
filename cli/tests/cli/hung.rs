//! A machine that hangs while a test runs: its QEMU stopped with SIGSTOP, or its guest
//! no longer answering (the agent frozen in the guest). The run ends within seconds of
//! the limit that fired, says why, leaves no QEMU behind, and its output, which is not
//! a terminal, has no colour codes and no tracing lines of the driver's internals.

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use super::{flotilla_test, tag, tagged_qemus, wait_for_log, wait_within, write_spec};

/// The limit of the call that hangs.
const LIMIT: Duration = Duration::from_secs(5);

/// How long after the limit the run may take to end: a few seconds are promised (the
/// book's `docs/src/failures.md`), the rest is room for a loaded host.
const BOUND: Duration = Duration::from_secs(8);

/// Runs the test in `dir` (with `args` after `flotilla test`'s own) whose script
/// hangs in `server.succeed("sleep 30", 5)`; `hang` runs once that call has started,
/// with QEMU's pid. The run's exit code, its
/// output, its driver.log, the time from the call's start to its end and QEMU's pid.
fn run_hanging(dir: &Path, args: &[&str], script: &str, hang: impl FnOnce(u32)) -> Hung {
    let tag = tag();
    write_spec(dir, "script = \"t.rhai\"\n[machines.server]\n", script);
    let output = dir.join("output.txt");
    let file = std::fs::File::create(&output).unwrap();
    let mut child = flotilla_test(dir, &dir.join("out"), &tag)
        .args(args)
        .env_remove("RUST_LOG")
        .env_remove("NO_COLOR")
        .stdout(Stdio::from(file.try_clone().unwrap()))
        .stderr(Stdio::from(file))
        .spawn()
        .unwrap();
    wait_for_log(dir, "server: must succeed: sleep 30");
    let started = Instant::now();
    let qemus = tagged_qemus(&tag);
    assert_eq!(qemus.len(), 1, "{qemus:?}");
    hang(qemus[0]);
    let status = wait_within(&mut child, LIMIT + Duration::from_secs(60));
    let took = started.elapsed();
    eprintln!(
        "measured: the run ended {:.2} s after the call started ({:.2} s after its {} s limit)",
        took.as_secs_f64(),
        took.as_secs_f64() - LIMIT.as_secs_f64(),
        LIMIT.as_secs()
    );
    Hung {
        code: status.code(),
        output: std::fs::read_to_string(&output).unwrap(),
        log: std::fs::read_to_string(dir.join("out/driver.log")).unwrap(),
        took,
        qemu: qemus[0],
    }
}

struct Hung {
    code: Option<i32>,
    output: String,
    log: String,
    took: Duration,
    qemu: u32,
}

impl Hung {
    /// What every hung run shows: it failed at the call's limit, naming the machine,
    /// soon after it, with plain output, and no QEMU left.
    fn check(&self) {
        let (output, log) = (&self.output, &self.log);
        assert_eq!(self.code, Some(1), "{output}");
        assert!(
            output.contains(
                "machine `server`: command `sleep 30` did not finish within 5 s (timeout)"
            ),
            "{output}"
        );
        assert!(
            self.took < LIMIT + BOUND,
            "the run ended {:?} after the call started\n{log}",
            self.took
        );
        // Not a terminal: no colour codes, and no tracing lines of the driver's
        // internals (the connection's breaking is in driver.log, as the product says it).
        assert!(!output.contains('\x1b'), "{output:?}");
        assert!(!output.contains("flotilla_driver::"), "{output}");
        assert!(!output.contains(" WARN "), "{output}");
        // The run waited for its QEMU to die: it is gone, not stopped nor a zombie.
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.qemu));
        assert!(
            stat.is_err(),
            "qemu {} is left behind: {stat:?}\n{log}",
            self.qemu
        );
    }
}

#[test]
fn a_qemu_stopped_with_sigstop_ends_the_run_at_the_limit() {
    let dir = tempfile::tempdir().unwrap();
    let run = run_hanging(
        dir.path(),
        &[],
        "server.succeed(\"true\");\nserver.succeed(\"sleep 30\", 5);\n",
        |qemu| {
            // SAFETY: kill(2) on the QEMU of the run this test started.
            assert_eq!(unsafe { libc::kill(qemu as i32, libc::SIGSTOP) }, 0);
        },
    );
    run.check();
    // Said at the limit, not 2 s after it: a stopped QEMU cannot answer.
    assert!(
        run.log.contains(
            "server: (not reported killed at its limit of 5 s: qemu is stopped by a signal (SIGSTOP)"
        ),
        "{}",
        run.log
    );
    assert!(
        run.log
            .contains("server: qemu is stopped by a signal (SIGSTOP) and cannot answer: killed"),
        "{}",
        run.log
    );
}

#[test]
fn a_guest_that_stops_answering_ends_the_run_soon_after_the_limit() {
    let dir = tempfile::tempdir().unwrap();
    // The agent is the default guest's PID 1, which SIGSTOP does not stop: the cgroup
    // freezer does. It freezes a second after the call started (QEMU answers QMP on).
    let script = r#"server.succeed("mkdir -p /sys/fs/cgroup && mount -t cgroup2 none /sys/fs/cgroup && mkdir /sys/fs/cgroup/agent && echo 1 > /sys/fs/cgroup/agent/cgroup.procs");
server.execute("(sleep 1; echo 1 > /sys/fs/cgroup/agent/cgroup.freeze) </dev/null >/dev/null 2>&1 &");
server.succeed("sleep 30", 5);
"#;
    // With coverage, whose end would ask the guest to end its programs.
    let run = run_hanging(dir.path(), &["--coverage"], script, |_| {});
    run.check();
    assert!(
        run.log.contains(
            "server: (not reported killed at its limit of 5 s: no word from the guest 2 s after it"
        ),
        "{}",
        run.log
    );
    assert!(
        run.log
            .contains("server: coverage: programs not ended (the guest is not answering"),
        "{}",
        run.log
    );
    // QEMU itself answered: stopped with `quit`, not killed.
    assert!(
        !run.log.contains("cannot answer: killed") && !run.log.contains("did not answer QMP"),
        "{}",
        run.log
    );
}

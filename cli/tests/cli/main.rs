//! End-to-end tests of the `flotilla` binary: real QEMU, real kernel, real busybox.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

mod arm64;
mod coverage;
mod debian;
mod debug;
mod hung;
mod python;
mod report;
mod snapshot;
mod suite;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

fn flotilla() -> Command {
    Command::new(env!("CARGO_BIN_EXE_flotilla"))
}

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Runs `cmd` to its end and checks its exit code; its output as [`text`].
#[track_caller]
fn run_expecting(cmd: &mut Command, code: i32) -> String {
    let out = cmd.output().unwrap();
    let t = text(&out);
    assert_eq!(out.status.code(), Some(code), "{t}");
    t
}

/// Writes a spec folder: `flotilla.toml` and the script `t.rhai`.
fn write_spec(dir: &Path, spec: &str, script: &str) {
    std::fs::write(dir.join("flotilla.toml"), spec).unwrap();
    std::fs::write(dir.join("t.rhai"), script).unwrap();
}

/// `flotilla test SPEC --out OUT`, its qemus tagged with `tag`.
fn flotilla_test(spec: &Path, out: &Path, tag: &str) -> Command {
    let mut cmd = flotilla();
    cmd.arg("test")
        .arg(spec)
        .arg("--out")
        .arg(out)
        .env("FLOTILLA_TEST_TAG", tag);
    cmd
}

/// `flotilla run DIR --out DIR/out` with its control socket and history under
/// `runtime`, its qemus tagged with `tag`.
fn flotilla_run(dir: &Path, runtime: &Path, tag: &str) -> Command {
    let mut cmd = flotilla();
    cmd.arg("run")
        .arg(dir)
        .arg("--out")
        .arg(dir.join("out"))
        .env("XDG_RUNTIME_DIR", runtime)
        .env("XDG_STATE_HOME", runtime)
        .env("FLOTILLA_TEST_TAG", tag);
    cmd
}

/// A unique tag in the environment lets a test find every qemu its run started.
fn tag() -> String {
    format!(
        "t{}-{}",
        std::process::id(),
        Instant::now().elapsed().as_nanos() ^ rand_ish()
    )
}

fn rand_ish() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
}

/// Pids of live qemu processes whose environment carries `tag`.
fn tagged_qemus(tag: &str) -> Vec<u32> {
    tagged_programs(tag, b"qemu-system")
}

/// The live processes whose program's file name starts with `prefix` and whose
/// environment has `FLOTILLA_TEST_TAG=tag`.
fn tagged_programs(tag: &str, prefix: &[u8]) -> Vec<u32> {
    let needle = format!("FLOTILLA_TEST_TAG={tag}");
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        // The program's file name: FLOTILLA_QEMU may name it by its path.
        let program = cmdline.split(|b| *b == 0).next().unwrap_or_default();
        let name = program.rsplit(|b| *b == b'/').next().unwrap_or_default();
        if !name.starts_with(prefix) {
            continue;
        }
        let stat = std::fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
        if stat.contains(") Z ") {
            continue;
        }
        let environ = std::fs::read(entry.path().join("environ")).unwrap_or_default();
        if environ.split(|b| *b == 0).any(|kv| kv == needle.as_bytes()) {
            out.push(pid);
        }
    }
    out
}

fn assert_no_qemu_left(tag: &str) {
    // The run stopped them before it exited: gone at once, or within 30 s on a busy host.
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(30) {
        if tagged_qemus(tag).is_empty() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!(
        "qemu processes left running 30 s after the run: {:?}",
        tagged_qemus(tag)
    );
}

/// Waits for `child` to exit, `limit` at most; its status.
fn wait_within(child: &mut std::process::Child, limit: Duration) -> std::process::ExitStatus {
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(
            started.elapsed() < limit,
            "flotilla still running after {limit:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn hello_example_passes() {
    let out_dir = tempfile::tempdir().unwrap();
    let tag = tag();
    let t = run_expecting(
        flotilla_test(Path::new("examples/hello"), out_dir.path(), &tag).current_dir(workspace()),
        0,
    );
    assert!(t.contains("machine: must succeed: uname -r"), "{t}");
    // Booted (the console's lines go to the log), or restored from the state an
    // earlier run saved (snapshots are on by default).
    assert!(
        t.contains("machine # FLOTILLA-AGENT-READY") || t.contains("machine: snapshot: restored"),
        "{t}"
    );
    assert!(t.contains("PASSED: hello"), "{t}");
    // Not a terminal: plain lines, no colour and no status line.
    assert!(!t.contains('\x1b'), "{t}");
    assert!(out_dir.path().join("machine/console.log").is_file());
    assert_no_qemu_left(&tag);
}

#[test]
fn a_terminal_gets_colour_and_a_progress_line() {
    // script(1) runs flotilla on a pseudo-terminal and copies what it shows.
    let out_dir = tempfile::tempdir().unwrap();
    let tag = tag();
    // Booted, not restored: a boot lasts long enough to show in the status line.
    let command = format!(
        "{} test examples/hello --no-snapshot --out {}",
        env!("CARGO_BIN_EXE_flotilla"),
        out_dir.path().display()
    );
    let out = Command::new("script")
        .args(["-qec", &command, "/dev/null"])
        .current_dir(workspace())
        .env("FLOTILLA_TEST_TAG", &tag)
        .env("TERM", "xterm")
        .env_remove("NO_COLOR")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let t = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{t}");
    // Machine names are coloured; the boot shows in a dimmed status line that is
    // cleared before each log line and drawn again under it.
    assert!(t.contains("\x1b[1;38;5;"), "{t}");
    assert!(
        t.contains("\r\x1b[2K\x1b[2m… machine: booting (1 s)"),
        "{t}"
    );
    assert!(t.contains("\r\x1b[2K\x1b[1;38;5;"), "{t}");
    // Nothing is left drawn above the verdict.
    let before = &t[..t.find("PASSED: hello").unwrap()];
    assert!(
        before.ends_with('\n') || before.ends_with("\r\x1b[2K"),
        "{t}"
    );
    // The status line's steps are the report's timeline too.
    let events = std::fs::read_to_string(out_dir.path().join("events.jsonl")).unwrap();
    assert!(
        events.contains(r#""machine":"machine","kind":"boot""#),
        "{events}"
    );
    assert_no_qemu_left(&tag);
}

#[test]
fn bad_spec_names_file_line_and_column() {
    let dir = tempfile::tempdir().unwrap();
    let spec = dir.path().join("flotilla.toml");
    write_spec(
        dir.path(),
        "script = \"t.rhai\"\n\n[machines.vm]\nmemroy = 512\n",
        "",
    );
    let t = run_expecting(flotilla().arg("test").arg(dir.path()), 2);
    assert!(
        t.contains(&format!(
            "error: {}:4:1: unknown field `memroy`",
            spec.display()
        )),
        "{t}"
    );
}

#[test]
fn a_host_port_forwarded_twice_is_a_spec_error() {
    let dir = tempfile::tempdir().unwrap();
    let spec = dir.path().join("flotilla.toml");
    write_spec(
        dir.path(),
        "script = \"t.rhai\"\n\n[machines.web]\nforward = [{ host = 18080, guest = 80 }]\n\n\
         [machines.api]\nforward = [{ guest = 22 }, { host = 18080, guest = 8000 }]\n",
        "web.succeed(\"true\");\n",
    );
    let t = run_expecting(flotilla().arg("test").arg(dir.path()), 2);
    assert!(
        t.contains(&format!(
            "error: {}:7:37: machine `api`: forward: host port 18080 is already forwarded by machine `web` (each host port can be forwarded once)",
            spec.display()
        )),
        "{t}"
    );
}

#[test]
fn a_host_port_in_use_stops_the_test_before_its_script() {
    let dir = tempfile::tempdir().unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    write_spec(
        dir.path(),
        &format!(
            "script = \"t.rhai\"\n[machines.web]\nforward = [{{ host = {port}, guest = 80 }}]\n"
        ),
        "web.succeed(\"true\");\n",
    );
    let tag = tag();
    let out = dir.path().join("out");
    let t = run_expecting(&mut flotilla_test(dir.path(), &out, &tag), 2);
    assert!(
        t.contains(&format!(
            "error: machine `web`: forwarding 127.0.0.1:{port} to guest port 80: host port {port} is already in use\n\
             hint: stop what listens on 127.0.0.1:{port}, or forward another host port (0 or none picks a free one)\n"
        )),
        "{t}"
    );
    // Nothing booted: the script did not run.
    assert!(!out.join("web").exists(), "{t}");
    // The log folder's report says why.
    let page = std::fs::read_to_string(out.join("report.html")).unwrap();
    assert!(
        page.contains("<span class=\"verdict failed\">could not run</span>"),
        "{page}"
    );
    assert!(
        page.contains(&format!("host port {port} is already in use")),
        "{page}"
    );
    assert_no_qemu_left(&tag);
    drop(taken);
}

#[test]
fn missing_script_file_is_a_spec_error() {
    let dir = tempfile::tempdir().unwrap();
    let spec = dir.path().join("s.toml");
    std::fs::write(&spec, "[machines.vm]\n\nscript = 3\n").unwrap();
    run_expecting(flotilla().arg("test").arg(&spec), 2);
    std::fs::write(&spec, "script = \"gone.rhai\"\n[machines.vm]\n").unwrap();
    let t = run_expecting(flotilla().arg("test").arg(&spec), 2);
    assert!(
        t.contains(&format!("{}:1:10: script file", spec.display())),
        "{t}"
    );
    assert!(t.contains("gone.rhai does not exist"), "{t}");
    // A spec that cannot be read could not run either, for `run` as for `test`.
    let gone = dir.path().join("nothing-here.toml");
    for command in ["test", "run"] {
        let t = run_expecting(flotilla().arg(command).arg(&gone), 2);
        assert!(t.contains("error: reading spec"), "{t}");
    }
    std::fs::write(&spec, b"\xff\xfe not text").unwrap();
    let t = run_expecting(flotilla().arg("test").arg(&spec), 2);
    assert!(t.contains("valid UTF-8"), "{t}");
}

#[test]
fn failing_script_exits_1_naming_line_and_machine() {
    let dir = tempfile::tempdir().unwrap();
    let tag = tag();
    write_spec(
        dir.path(),
        "script = \"t.rhai\"\n[machines.server]\n",
        "server.succeed(\"true\");\nserver.fail(\"echo fine\");\n",
    );
    let t = run_expecting(
        flotilla_test(dir.path(), &dir.path().join("out"), &tag).arg("--quiet"),
        1,
    );
    let script = dir.path().join("t.rhai");
    assert!(
        t.contains(&format!(
            "error: {}:2:8: machine `server`: command `echo fine` was expected to fail but ended with exit status 0",
            script.display()
        )),
        "{t}"
    );
    assert!(t.contains("FAILED"), "{t}");
    // --quiet keeps the terminal short, the log folder complete.
    assert!(!t.contains("server # "), "{t}");
    let log = std::fs::read_to_string(dir.path().join("out/driver.log")).unwrap();
    assert!(log.contains("server: must fail: echo fine"), "{log}");
    assert_no_qemu_left(&tag);
}

fn start_sleeping_test(dir: &Path, tag: &str) -> std::process::Child {
    write_spec(
        dir,
        "script = \"t.rhai\"\n[machines.sleeper]\n",
        "sleeper.succeed(\"sleep 600\");\n",
    );
    flotilla_test(dir, &dir.join("out"), tag)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn wait_for_log(dir: &Path, text: &str) {
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(120) {
        let log = std::fs::read_to_string(dir.join("out/driver.log")).unwrap_or_default();
        if log.contains(text) {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("`{text}` did not appear in the log");
}

#[test]
fn ctrl_c_stops_the_machines_and_exits_130() {
    let dir = tempfile::tempdir().unwrap();
    let tag = tag();
    let mut child = start_sleeping_test(dir.path(), &tag);
    wait_for_log(dir.path(), "sleeper: ready: ");
    assert_eq!(tagged_qemus(&tag).len(), 1);
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    // Stopping a machine takes a second or two, not the script's 600 s sleep; 30 s is
    // room for a busy host.
    let status = wait_within(&mut child, Duration::from_secs(30));
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    assert_eq!(status.code(), Some(130), "{stderr}");
    assert!(stderr.contains("interrupted"), "{stderr}");
    // The report is written all the same, with the step that was running.
    let page = std::fs::read_to_string(dir.path().join("out/report.html")).unwrap();
    assert!(
        page.contains("<span class=\"verdict failed\">interrupted</span>"),
        "{page}"
    );
    assert!(page.contains("sleep 600"), "{page}");
    assert_no_qemu_left(&tag);
}

#[test]
fn qemu_dies_with_a_killed_driver() {
    let dir = tempfile::tempdir().unwrap();
    let tag = tag();
    let mut child = start_sleeping_test(dir.path(), &tag);
    wait_for_log(dir.path(), "sleeper: ready: ");
    assert_eq!(tagged_qemus(&tag).len(), 1);
    let log = std::fs::read_to_string(dir.path().join("out/driver.log")).unwrap();
    let run_dir = log
        .lines()
        .find_map(|l| {
            l.split_once("sockets in ")
                .map(|(_, p)| PathBuf::from(p.trim()))
        })
        .unwrap_or_else(|| panic!("no run directory in the log: {log}"));
    child.kill().unwrap(); // SIGKILL: no cleanup code runs in the driver.
    child.wait().unwrap();
    assert_no_qemu_left(&tag);
    // Its private run directory stays behind, until the next run removes it.
    assert!(
        run_dir.join("driver.lock").exists(),
        "{}",
        run_dir.display()
    );
    let next = tempfile::tempdir().unwrap();
    write_spec(
        next.path(),
        "script = \"t.rhai\"\n[machines.m]\n",
        "m.succeed(\"true\");\n",
    );
    run_expecting(
        &mut flotilla_test(next.path(), &next.path().join("out"), &tag),
        0,
    );
    assert!(!run_dir.exists(), "{} was not removed", run_dir.display());
}

#[test]
fn doctor_reports_each_requirement() {
    let t = run_expecting(flotilla().arg("doctor"), 0);
    let groups = [
        "boot (",
        "Python scripts (",
        "arm64 machines (",
        "disks and images (",
        "QGA (",
        "report tests (",
    ];
    let names = [
        &[
            "qemu",
            "kernel",
            "busybox",
            "vde_switch",
            "wirefilter",
            "accelerator",
        ][..],
        &["python3"][..],
        &["qemu", "kernel", "busybox", "gcc", "gcov", "libc.a"][..],
        &["qemu-img", "mke2fs", "debootstrap", "depmod"][..],
        &["qemu-ga"][..],
        &["chromium"][..],
    ];
    // Each group's header, then an `ok` line for each of its requirements.
    let lines: Vec<&str> = t.lines().collect();
    for (group, names) in groups.iter().zip(names) {
        let start = lines
            .iter()
            .position(|l| l.starts_with(group))
            .unwrap_or_else(|| panic!("no group {group}: {t}"));
        let end = lines[start + 1..]
            .iter()
            .position(|l| !l.starts_with("ok") && !l.starts_with(' '))
            .map_or(lines.len(), |n| start + 1 + n);
        for name in names {
            assert!(
                lines[start + 1..end]
                    .iter()
                    .any(|l| l.split_whitespace().take(2).eq(["ok", *name])),
                "{name} under {group}: {t}"
            );
        }
    }
    assert!(t.contains("QEMU emulator version"), "{t}");
    assert!(t.contains("qemu-img version"), "{t}");
    assert!(t.ends_with("all requirements are met\n"), "{t}");
}

#[test]
fn doctor_fails_when_kvm_is_forced_and_does_not_work() {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap();
    let hardware = cpuinfo
        .lines()
        .filter(|l| l.starts_with("flags"))
        .any(|l| l.split_whitespace().any(|f| f == "vmx" || f == "svm"));
    let kvm_opens = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .is_ok();
    let t = run_expecting(
        flotilla().arg("doctor").env("FLOTILLA_ACCEL", "kvm"),
        if hardware && kvm_opens { 0 } else { 1 },
    );
    if hardware && kvm_opens {
        assert!(t.contains("ok      accelerator kvm"), "{t}");
    } else {
        assert!(t.contains("MISSING accelerator kvm"), "{t}");
        assert!(t.contains("KVM does not work here"), "{t}");
        assert!(t.contains("hint: unset FLOTILLA_ACCEL"), "{t}");
    }
    // Without the override, the accelerator row never fails: TCG is always there.
    let t = run_expecting(flotilla().arg("doctor").env("FLOTILLA_ACCEL", "tcg"), 0);
    assert!(
        t.contains("ok      accelerator tcg (FLOTILLA_ACCEL=tcg)"),
        "{t}"
    );
}

#[test]
fn doctor_fails_when_something_is_missing() {
    let empty = tempfile::tempdir().unwrap();
    let t = run_expecting(
        flotilla()
            .arg("doctor")
            .env("FLOTILLA_QEMU", "/nonexistent/qemu")
            .env("FLOTILLA_KERNEL_DIR", empty.path()),
        1,
    );
    assert!(t.contains("MISSING qemu"), "{t}");
    assert!(t.contains("MISSING kernel"), "{t}");
    assert!(t.contains("hint: run scripts/setup"), "{t}");
    assert!(t.contains("2 requirement(s) missing"), "{t}");
}

#[test]
fn doctor_checks_the_machines_of_another_architecture() {
    // arm64's own variables: the host's group is untouched, arm64's names its kernel
    // and a busybox of the wrong architecture, with setup's hints.
    let empty = tempfile::tempdir().unwrap();
    let t = run_expecting(
        flotilla()
            .arg("doctor")
            .env("FLOTILLA_KERNEL_DIR_AARCH64", empty.path())
            .env("FLOTILLA_BUSYBOX_AARCH64", "/bin/busybox"),
        1,
    );
    let group = t
        .find("arm64 machines (")
        .unwrap_or_else(|| panic!("no arm64 group: {t}"));
    let arm64 = &t[group..];
    assert!(
        arm64.contains("MISSING kernel      no aarch64 kernel at"),
        "{t}"
    );
    assert!(
        arm64.contains("MISSING busybox     /bin/busybox is not a busybox for aarch64"),
        "{t}"
    );
    assert!(
        arm64.contains("hint: run scripts/setup: it fetches busybox-static for arm64"),
        "{t}"
    );
    assert!(t.contains("2 requirement(s) missing"), "{t}");
}

#[test]
fn doctor_checks_the_disk_and_qga_tools() {
    // A PATH with only QEMU and the VDE tools: qemu-img and qemu-ga, which Flotilla
    // starts from PATH, are missing, and so are Python scripts' python3, coverage's
    // gcc, gcov, genhtml and LLVM, arm64's cross gcc (and so its gcov), and the
    // report tests' chromium; the image builder's tools (and debugfs) are still found
    // in /usr/sbin and /sbin, where it looks too.
    let bin = tempfile::tempdir().unwrap();
    for tool in [
        "qemu-system-x86_64",
        "qemu-system-aarch64",
        "vde_switch",
        "wirefilter",
    ] {
        let found = std::env::split_paths(&std::env::var_os("PATH").unwrap())
            .map(|d| d.join(tool))
            .find(|p| p.is_file())
            .unwrap_or_else(|| panic!("{tool} is not installed"));
        std::os::unix::fs::symlink(found, bin.path().join(tool)).unwrap();
    }
    let t = run_expecting(flotilla().arg("doctor").env("PATH", bin.path()), 1);
    for name in [
        "qemu-img", "qemu-ga", "python3", "gcc", "gcov", "genhtml", "llvm", "chromium",
    ] {
        assert!(
            t.lines()
                .any(|l| l.starts_with(&format!("MISSING {name} "))),
            "{name}: {t}"
        );
    }
    assert!(t.contains("apt-get install qemu-utils"), "{t}");
    assert!(t.contains("apt-get install qemu-guest-agent"), "{t}");
    assert!(t.contains("apt-get install lcov"), "{t}");
    assert!(t.contains("apt-get install llvm-19"), "{t}");
    assert!(t.contains("apt-get install chromium"), "{t}");
    assert!(t.contains("apt-get install gcc-aarch64-linux-gnu"), "{t}");
    assert!(t.contains("apt-get install python3"), "{t}");
    assert!(t.contains("12 requirement(s) missing"), "{t}");
    for name in ["qemu", "vde_switch", "debootstrap", "mke2fs", "debugfs"] {
        assert!(
            t.lines()
                .any(|l| l.split_whitespace().take(2).eq(["ok", name])),
            "{name}: {t}"
        );
    }
}

#[test]
fn doctor_checks_the_ocr_tools() {
    let t = run_expecting(flotilla().arg("doctor"), 0);
    let group = t
        .find("screen text (OCR) (")
        .unwrap_or_else(|| panic!("no OCR group: {t}"));
    assert!(
        t[group..].contains("ok      tesseract   tesseract 5"),
        "{t}"
    );
    assert!(t[group..].contains("ok      tessdata    eng in /"), "{t}");
    // Without tesseract in PATH both are missing, and the hints name the packages.
    let bin = tempfile::tempdir().unwrap();
    let t = run_expecting(flotilla().arg("doctor").env("PATH", bin.path()), 1);
    assert!(t.contains("MISSING tesseract "), "{t}");
    assert!(
        t.contains("MISSING tessdata    cannot ask tesseract"),
        "{t}"
    );
    assert!(t.contains("apt-get install tesseract-ocr\n"), "{t}");
    assert!(t.contains("apt-get install tesseract-ocr-eng"), "{t}");
}

#[test]
fn a_vlan_spans_two_driver_processes() {
    let tag = tag();
    // Process 1: `flotilla run` keeps machine `alpha` up on VLAN 1.
    let one = tempfile::tempdir().unwrap();
    std::fs::write(one.path().join("flotilla.toml"), "[machines.alpha]\n").unwrap();
    let mut run = flotilla_run(one.path(), one.path(), &tag)
        .arg("--no-repl")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_for_log(one.path(), "alpha: ready: ");
    let log = std::fs::read_to_string(one.path().join("out/driver.log")).unwrap();
    let switch = log
        .lines()
        .find_map(|l| l.split("vlan 1: switch at ").nth(1))
        .and_then(|rest| rest.split(" (").next())
        .expect("the log names the switch")
        .to_owned();

    // Process 2: its machine `beta` joins that VLAN, numbered from 11 on.
    let two = tempfile::tempdir().unwrap();
    write_spec(
        two.path(),
        &format!(
            "script = \"t.rhai\"\n[network]\noffset = 10\n[[network.join]]\nvlan = 1\nswitch = \"{switch}\"\n[machines.beta]\n"
        ),
        "if beta.ip(1) != \"192.168.1.11\" { throw beta.ip(1); }\n\
         beta.wait_until_succeeds(\"ping -c 1 -W 2 192.168.1.1\", 30);\n",
    );
    let out = flotilla_test(two.path(), &two.path().join("out"), &tag)
        .output()
        .unwrap();
    let t = text(&out);
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(run.id() as i32, libc::SIGINT) };
    let status = run.wait().unwrap();
    assert_eq!(out.status.code(), Some(0), "{t}");
    assert!(t.contains(&format!("vlan 1: joined to {switch}")), "{t}");
    assert_eq!(status.code(), Some(0));
    assert_no_qemu_left(&tag);
}

#[test]
fn subtests_are_timed_logged_and_reported_as_junit() {
    let dir = tempfile::tempdir().unwrap();
    let tag = tag();
    write_spec(
        dir.path(),
        "script = \"t.rhai\"\n[machines.vm]\n",
        "subtest(\"boots\", || { vm.succeed(\"true\"); });\n\
         let got = retry(|| vm.succeed(\"test -e /tmp/flag || { touch /tmp/flag; exit 1; }; echo second\"));\n\
         if got != \"second\\n\" { throw got; }\n\
         subtest(\"outer\", || {\n\
             subtest(\"inner <ok>\", || { vm.succeed(\"echo fine\"); });\n\
             subtest(\"breaks\", || { vm.succeed(\"exit 5\"); });\n\
         });\n\
         vm.succeed(\"never reached\");\n",
    );
    let junit = dir.path().join("report.xml");
    let t = run_expecting(
        flotilla_test(dir.path(), &dir.path().join("out"), &tag)
            .arg("--junit")
            .arg(&junit),
        1,
    );
    assert!(t.contains("subtest: boots ok ("), "{t}");
    assert!(t.contains("  subtest: inner <ok> ok ("), "{t}");
    assert!(t.contains("  subtest: breaks FAILED ("), "{t}");
    assert!(t.contains("t.rhai:6:"), "the failing line: {t}");
    assert!(
        t.contains("retry: try 1 failed: machine `vm`: command"),
        "{t}"
    );
    assert!(!t.contains("must succeed: never reached"), "{t}");
    let xml = std::fs::read_to_string(&junit).unwrap();
    assert!(xml.contains("tests=\"4\" failures=\"2\""), "{xml}");
    assert!(xml.contains("name=\"outer / inner &lt;ok&gt;\""), "{xml}");
    assert!(
        xml.contains("<testcase classname=\"") && xml.contains("name=\"outer / breaks\""),
        "{xml}"
    );
    assert!(xml.contains("exit status 5"), "{xml}");
    assert_no_qemu_left(&tag);
}

#[test]
fn keep_state_carries_disks_from_one_test_to_the_next() {
    let dir = tempfile::tempdir().unwrap();
    let tag = tag();
    let spec = |script: &str| {
        let path = dir.path().join(format!("{script}.toml"));
        std::fs::write(
            &path,
            format!("name = \"keep\"\nscript = \"{script}.rhai\"\n[machines.vm]\n[[machines.vm.disks]]\nsize = \"8M\"\n"),
        )
        .unwrap();
        path
    };
    std::fs::write(
        dir.path().join("write.rhai"),
        "vm.succeed(\"printf kept | dd of=/dev/vda conv=fsync\");\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("read.rhai"),
        "let mark = vm.succeed(\"dd if=/dev/vda bs=4 count=1 2>/dev/null\");\n\
         if mark != \"kept\" { throw \"the disk is blank\"; }\n",
    )
    .unwrap();
    let state = dir.path().join("state");
    let run = |spec: &Path, keep: bool, code: i32| {
        let mut cmd = flotilla_test(spec, &dir.path().join("out"), &tag);
        if keep {
            cmd.arg("--keep-state").arg(&state);
        }
        run_expecting(&mut cmd, code)
    };
    run(&spec("write"), true, 0);
    let t = run(&spec("read"), true, 0);
    assert!(t.contains("vm: disk disk1: reusing "), "{t}");
    // Without --keep-state the disk is fresh.
    let t = run(&spec("read"), false, 1);
    assert!(t.contains("the disk is blank"), "{t}");
    assert_no_qemu_left(&tag);
}
/// `flotilla run DIR` with its control socket under `runtime`, commands on a pipe;
/// the caller must read its output (or it blocks when the pipes fill up).
fn start_run(dir: &Path, runtime: &Path, tag: &str) -> std::process::Child {
    flotilla_run(dir, runtime, tag)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

#[test]
fn run_evaluates_script_lines_from_stdin() {
    let dir = tempfile::tempdir().unwrap();
    let tag = tag();
    std::fs::write(
        dir.path().join("flotilla.toml"),
        "[machines.vm]\nforward = [{ guest = 80 }]\n",
    )
    .unwrap();
    let mut run = start_run(dir.path(), dir.path(), &tag);
    let lines = "vm.succeed(\"echo hi\")\n\
                 let x = 6 * 7;\n\
                 x + 1\n\
                 vm.no_such_call()\n\
                 vm.fail(\"true\")\n\
                 vm.succeed(\"echo got-\" + x)\n\
                 vm.execute(\"exit 3\").status\n\
                 let broken = ;\n\
                 \"still \" + \"here\"\n\
                 polling_condition(\"marker\", || vm.succeed(\"test -e /tmp/marker\"))\n\
                 vm.succeed(\"echo after\")\n";
    std::io::Write::write_all(&mut run.stdin.take().unwrap(), lines.as_bytes()).unwrap();
    // The end of input stops everything.
    let out = run.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    assert_eq!(stdout, "hi\n43\ngot-42\n3\nstill here\n", "{stderr}");
    // A polling condition set on one line is checked by the commands of later lines.
    for want in [
        "  vm  flotilla shell vm  127.0.0.1:",
        " -> guest:80\n",
        "error: Function not found: no_such_call (Machine)\n",
        "error: machine `vm`: command `true` was expected to fail but ended with exit status 0\n",
        "error: syntax error at column 14: ",
        "error: polling condition `marker` failed: machine `vm`: command `test -e /tmp/marker`",
        "stopping\n",
    ] {
        assert!(stderr.contains(want), "{want:?} in:\n{stderr}");
    }
    assert_no_qemu_left(&tag);
}

/// `flotilla run` on a one-machine spec (`vm`) reading `input`; its end stops the run.
fn run_with_input(input: &str) -> (Output, String) {
    let dir = tempfile::tempdir().unwrap();
    let tag = tag();
    std::fs::write(dir.path().join("flotilla.toml"), "[machines.vm]\n").unwrap();
    let mut run = start_run(dir.path(), dir.path(), &tag);
    std::io::Write::write_all(&mut run.stdin.take().unwrap(), input.as_bytes()).unwrap();
    let out = run.wait_with_output().unwrap();
    assert_no_qemu_left(&tag);
    let log = std::fs::read_to_string(dir.path().join("out/driver.log")).unwrap();
    (out, log)
}

#[test]
fn run_reads_a_statement_over_several_lines() {
    let (out, _) = run_with_input(
        "let seen = \"\";\n\
         for i in [1, 2, 3] {\n\
         \x20   seen += vm.succeed(\"echo line-\" + i);\n\
         }\n\
         seen\n\
         fn twice(cmd) {\n\
         \x20   vm.succeed(cmd) + vm.succeed(cmd)\n\
         }\n\
         twice(\"echo \" +\n\
         \x20   \"two\")\n\
         let broken = [1,\n\
         \x20   2 3];\n\
         \"after\"\n",
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    assert_eq!(
        stdout, "line-1\nline-2\nline-3\ntwo\ntwo\nafter\n",
        "{stderr}"
    );
    // A syntax error inside a statement is reported when its line comes, placed
    // within the statement.
    assert!(
        stderr.contains("error: syntax error at line 2, column 7: "),
        "{stderr}"
    );
}

#[test]
fn run_reports_a_statement_unfinished_at_the_end_of_input() {
    let (out, log) = run_with_input(
        "vm.succeed(\"echo before\")\n\
         if true {\n\
         \x20   vm.succeed(\"echo never\");\n",
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    assert_eq!(stdout, "before\n", "{stderr}");
    assert!(
        stderr.contains(
            "error: the input ended inside the unfinished statement from line 2: `if true {`\n"
        ),
        "{stderr}"
    );
    assert!(!log.contains("echo never"), "{log}");
}

/// Runs `flotilla shell ARGS` against the run under `runtime` with `input` on stdin;
/// killed (and so failing) if it has not ended within a minute.
fn shell(runtime: &Path, args: &[&str], input: &str) -> Output {
    let mut child = Command::new("timeout")
        .args(["-s", "KILL", "60", env!("CARGO_BIN_EXE_flotilla")])
        .arg("shell")
        .args(args)
        .env("XDG_RUNTIME_DIR", runtime)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), input.as_bytes()).unwrap();
    child.wait_with_output().unwrap()
}

#[test]
fn shell_reaches_a_machine_of_a_live_run() {
    let dir = tempfile::tempdir().unwrap();
    let runtime = dir.path().join("rt");
    std::fs::create_dir(&runtime).unwrap();
    let tag = tag();
    std::fs::write(dir.path().join("flotilla.toml"), "[machines.vm]\n").unwrap();
    let mut run = start_run(dir.path(), &runtime, &tag);
    let mut stderr = run.stderr.take().unwrap();
    let stderr = std::thread::spawn(move || {
        let mut text = String::new();
        std::io::Read::read_to_string(&mut stderr, &mut text).unwrap();
        text
    });
    wait_for_log(dir.path(), "vm: ready: ");

    // Piped stdin: /bin/sh reads it; the exit status is the shell's.
    let out = shell(&runtime, &["vm"], "hostname; echo oops >&2; exit 3\n");
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "vm\n");
    assert_eq!(String::from_utf8_lossy(&out.stderr), "oops\n");
    // A command instead of a shell; a forced terminal (the end of input is ^D).
    let out = shell(&runtime, &["vm", "--", "echo $((6 * 7)); exit 7"], "");
    assert_eq!(
        (out.status.code(), out.stdout.as_slice()),
        (Some(7), &b"42\n"[..]),
        "{}",
        text(&out)
    );
    let out = shell(&runtime, &["-t", "vm"], "tty; stty size; exit 6\n");
    let t = text(&out);
    assert_eq!(out.status.code(), Some(6), "{t}");
    assert!(
        t.contains("\r\n/dev/pts/") && t.contains("\r\n24 80\r\n"),
        "{t}"
    );
    // Piped input without `exit`: its end (^D, typed again until the shell takes it)
    // ends the shell.
    let out = shell(&runtime, &["-t", "vm"], "echo piped-$((1 + 1))\n");
    let t = text(&out);
    assert_eq!(out.status.code(), Some(0), "{t}");
    assert!(t.contains("\r\npiped-2\r\n"), "{t}");

    // Bad requests: a clear error and 255.
    let out = shell(&runtime, &["nosuch"], "");
    assert_eq!(out.status.code(), Some(255), "{}", text(&out));
    assert!(
        text(&out).contains("error: no machine `nosuch` in this run (its machines: vm)"),
        "{}",
        text(&out)
    );
    let out = shell(&runtime, &["--run", "other", "vm"], "");
    assert_eq!(out.status.code(), Some(255), "{}", text(&out));
    assert!(
        text(&out).contains("no live run named `other`"),
        "{}",
        text(&out)
    );

    local_terminal_session(&runtime);

    drop(run.stdin.take());
    let status = run.wait().unwrap();
    let stderr = stderr.join().unwrap();
    assert_eq!(status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains("vm: a terminal session ended: exit status 5"),
        "{stderr}"
    );
    assert_no_qemu_left(&tag);
    let out = shell(&runtime, &["vm"], "");
    assert_eq!(out.status.code(), Some(255), "{}", text(&out));
    assert!(
        text(&out).contains("error: no `flotilla run` is running"),
        "{}",
        text(&out)
    );
}

/// A pseudo-terminal: a child started on it has it as stdin, stdout, stderr and
/// controlling terminal; what the child shows accumulates in `output`.
struct Pty {
    master: std::os::fd::OwnedFd,
    slave: std::os::fd::OwnedFd,
    output: std::sync::Arc<std::sync::Mutex<String>>,
}

impl Pty {
    fn open(rows: u16, cols: u16) -> Pty {
        use std::os::fd::{FromRawFd, OwnedFd};
        let (mut master, mut slave) = (0, 0);
        let size = libc::winsize {
            ws_row: rows,
            ws_col: cols,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        // SAFETY: out-pointers to two ints and a winsize.
        let rc = unsafe {
            libc::openpty(
                &mut master,
                &mut slave,
                std::ptr::null_mut(),
                std::ptr::null(),
                &size,
            )
        };
        assert_eq!(rc, 0);
        // openpty's descriptors are inherited by every child: a `flotilla run` of this
        // or a parallel test holding this master would never see its terminal hang up,
        // and would outlive a failed test.
        for fd in [master, slave] {
            // SAFETY: fcntl on descriptors openpty just made.
            assert_eq!(
                unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) },
                0
            );
        }
        // SAFETY: openpty just made these descriptors.
        let (master, slave) =
            unsafe { (OwnedFd::from_raw_fd(master), OwnedFd::from_raw_fd(slave)) };
        let output = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let reader = master.try_clone().unwrap();
        let sink = output.clone();
        std::thread::spawn(move || {
            let mut file = std::fs::File::from(reader);
            let mut buf = [0u8; 4096];
            while let Ok(n) = std::io::Read::read(&mut file, &mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        Pty {
            master,
            slave,
            output,
        }
    }

    fn spawn(&self, cmd: &mut Command) -> std::process::Child {
        use std::os::unix::process::CommandExt;
        cmd.stdin(self.slave.try_clone().unwrap())
            .stdout(self.slave.try_clone().unwrap())
            .stderr(self.slave.try_clone().unwrap());
        // SAFETY: only async-signal-safe calls between fork and exec.
        unsafe {
            cmd.pre_exec(|| {
                libc::setsid();
                libc::ioctl(0, libc::TIOCSCTTY, 0);
                Ok(())
            });
        }
        cmd.spawn().unwrap()
    }

    fn seen(&self) -> String {
        self.output.lock().unwrap().clone()
    }

    /// Waits until `want` shows after byte `from` of the output; returns where it ends.
    fn wait_for(&self, from: usize, want: &str, limit: Duration) -> usize {
        let started = Instant::now();
        loop {
            if let Some(at) = self.output.lock().unwrap()[from..].find(want) {
                return from + at + want.len();
            }
            assert!(
                started.elapsed() < limit,
                "{want:?} did not appear in:\n{}",
                &self.seen()[from..]
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Types `keys`, then waits until `want` shows; returns where it ends.
    fn type_and_wait(&self, keys: &str, want: &str) -> usize {
        let from = self.output.lock().unwrap().len();
        let mut keyboard = std::fs::File::from(self.master.try_clone().unwrap());
        std::io::Write::write_all(&mut keyboard, keys.as_bytes()).unwrap();
        self.wait_for(from, want, Duration::from_secs(60))
    }
}

/// `flotilla shell` on a terminal of its own: raw mode (Ctrl-C reaches the guest),
/// the window size follows, and the terminal is as it was afterwards.
fn local_terminal_session(runtime: &Path) {
    use std::os::fd::{AsRawFd, OwnedFd};
    let pty = Pty::open(30, 100);
    let termios = |fd: &OwnedFd| {
        // SAFETY: tcgetattr writes a termios.
        let mut t: libc::termios = unsafe { std::mem::zeroed() };
        assert_eq!(unsafe { libc::tcgetattr(fd.as_raw_fd(), &mut t) }, 0);
        t.c_lflag
    };
    let before = termios(&pty.slave);
    let mut child = pty.spawn(
        flotilla()
            .args(["shell", "vm"])
            .env("XDG_RUNTIME_DIR", runtime)
            .env("TERM", "vt100"),
    );
    pty.type_and_wait("echo $TERM; stty size\r", "vt100\r\n30 100\r\n");
    let size = libc::winsize {
        ws_row: 40,
        ws_col: 120,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads a winsize; the client gets SIGWINCH.
    assert_eq!(
        unsafe { libc::ioctl(pty.master.as_raw_fd(), libc::TIOCSWINSZ, &size) },
        0
    );
    // The new size reaches the guest's terminal when the client has handled SIGWINCH:
    // ask until it shows (60 s at most).
    let started = Instant::now();
    'resized: loop {
        let from = pty.seen().len();
        pty.type_and_wait("stty size\r", "\r\n");
        loop {
            let seen = pty.seen()[from..].to_owned();
            if seen.contains("40 120\r\n") {
                break 'resized;
            }
            if seen.contains("30 100\r\n") {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "the new window size did not reach the guest within 60 s:\n{seen}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the new window size did not reach the guest within 60 s"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // Ctrl-C interrupts the guest's command, not `flotilla shell`. The command says
    // when it runs (a loaded guest may take a while to get there).
    pty.type_and_wait(
        "echo sleep-$((1 + 1)); sleep 60; echo slept\r",
        "sleep-2\r\n",
    );
    std::thread::sleep(Duration::from_millis(500));
    pty.type_and_wait("\x03", "^C");
    pty.type_and_wait("exit 5\r", "exit 5");
    let status = child.wait().unwrap();
    let seen = pty.seen();
    assert_eq!(status.code(), Some(5), "{seen}");
    // The command never finished: no line is its output `slept` (the typed line may be
    // echoed more than once: by the guest's terminal, then by the shell's line editor).
    assert!(!seen.lines().any(|l| l.trim_end() == "slept"), "{seen}");
    assert!(seen.contains("sleep 60; echo slept"), "{seen}");
    assert_eq!(
        termios(&pty.slave),
        before,
        "the terminal's settings are back"
    );
}

#[test]
fn the_terminal_prompt_reads_statements_over_lines_and_shows_the_log_above_itself() {
    let dir = tempfile::tempdir().unwrap();
    let tag = tag();
    std::fs::write(dir.path().join("flotilla.toml"), "[machines.vm]\n").unwrap();
    let pty = Pty::open(30, 100);
    let mut child = pty.spawn(
        flotilla_run(dir.path(), dir.path(), &tag)
            .env("TERM", "vt100")
            .env("NO_COLOR", "1"),
    );
    // Keys are typed once a prompt is up: the terminal is then in raw mode.
    let prompt = |from| pty.wait_for(from, "flotilla> ", Duration::from_secs(60));
    pty.wait_for(0, "flotilla> ", Duration::from_secs(180));

    // Enter inside a block goes on to the next line; the statement runs once closed.
    // (What is typed after an Enter that ends a statement, before the next prompt, is
    // lost: rustyline reads ahead. So each statement waits for its prompt.)
    let at = pty.type_and_wait("let n = 0; for i in [1, 2, 3] {\r    n += i;\r}\r", "}");
    prompt(at);
    let at = pty.type_and_wait("n * 10\r", "60\r\n");
    prompt(at);
    // Ctrl-C drops the whole unfinished statement.
    pty.type_and_wait("if true {\r    n = 100;\r", "n = 100;");
    pty.type_and_wait("\x03", "flotilla> ");
    let at = pty.type_and_wait("n + 1\r", "7\r\n");
    prompt(at);

    // A console line that comes while a statement is being typed is printed above the
    // prompt, which is drawn again with the text typed so far.
    let at = pty.type_and_wait(
        "vm.succeed(\"setsid sh -c 'sleep 3; echo console-ping >/dev/console' \
         </dev/null >/dev/null 2>&1 & echo started-$((40 + 2))\")\r",
        "started-42\r\n",
    );
    prompt(at);
    let at = pty.type_and_wait("vm.succ", "vm # console-ping\r\n");
    let at = prompt(at);
    let seen = pty.seen();
    assert!(seen[at..].starts_with("vm.succ"), "{:?}", &seen[at..]);
    assert!(!seen.contains("vm.succvm # "), "{seen:?}");

    pty.type_and_wait("\x03", "flotilla> ");
    pty.type_and_wait("\x04", "stopping");
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(0), "{}", pty.seen());
    assert_no_qemu_left(&tag);
    // The history has the statement of three lines as one entry, and not the one
    // dropped with Ctrl-C.
    let history = std::fs::read_to_string(dir.path().join("flotilla/history")).unwrap();
    assert!(
        history
            .lines()
            .any(|l| l == r"let n = 0; for i in [1, 2, 3] {\n    n += i;\n}"),
        "{history}"
    );
    assert!(!history.contains("if true"), "{history}");
}

#[test]
fn shell_without_a_run_says_so() {
    let runtime = tempfile::tempdir().unwrap();
    let t = run_expecting(
        flotilla()
            .args(["shell", "vm"])
            .env("XDG_RUNTIME_DIR", runtime.path())
            .stdin(Stdio::null()),
        255,
    );
    assert!(t.contains("error: no `flotilla run` is running"), "{t}");
    assert!(
        t.contains("hint: start one with `flotilla run <spec>`"),
        "{t}"
    );
}

#[test]
fn agent_install_puts_the_static_agent_and_its_services_into_a_tree() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    std::fs::create_dir(&root).unwrap();
    let t = run_expecting(
        flotilla().args(["agent", "install", "--root"]).arg(&root),
        0,
    );
    for file in [
        "usr/local/bin/flotilla-agent",
        "etc/systemd/system/multi-user.target.wants/flotilla-agent.service",
        "etc/init.d/flotilla-agent",
        "etc/rc2.d/S99flotilla-agent",
    ] {
        assert!(
            std::fs::symlink_metadata(root.join(file)).is_ok(),
            "{file}: {t}"
        );
        assert!(t.contains(file), "{file} not reported: {t}");
    }
    // The installed binary is the one `extract` writes: the static agent the flotilla
    // binary carries, which runs anywhere (no ELF interpreter) and says its version.
    let extracted = dir.path().join("flotilla-agent");
    let t = run_expecting(
        flotilla().args(["agent", "extract", "-o"]).arg(&extracted),
        0,
    );
    assert_eq!(t.trim(), extracted.display().to_string());
    let installed = std::fs::read(root.join("usr/local/bin/flotilla-agent")).unwrap();
    assert_eq!(installed, std::fs::read(&extracted).unwrap());
    let mode = std::fs::metadata(&extracted).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o755);
    assert!(
        !installed.windows(16).any(|w| w == b"/lib64/ld-linux-"),
        "dynamically linked"
    );
    let t = run_expecting(Command::new(&extracted).arg("--version"), 0);
    assert!(t.starts_with("flotilla-agent "), "{t}");
}

#[test]
fn agent_install_and_extract_for_arm64() {
    use flotilla_driver::image::{elf_machine, is_static_elf};
    const EM_AARCH64: u16 = 183;
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    std::fs::create_dir(&root).unwrap();
    // The host's agent installs the arm64 one, which cannot run here.
    let t = run_expecting(
        flotilla()
            .args(["agent", "install", "--arch", "aarch64", "--root"])
            .arg(&root),
        0,
    );
    for file in [
        "usr/local/bin/flotilla-agent",
        "etc/systemd/system/flotilla-agent.service",
        "etc/systemd/system/multi-user.target.wants/flotilla-agent.service",
        "etc/init.d/flotilla-agent",
        "etc/rc2.d/S99flotilla-agent",
        "etc/rc0.d/K01flotilla-agent",
    ] {
        assert!(
            std::fs::symlink_metadata(root.join(file)).is_ok(),
            "{file}: {t}"
        );
        assert!(t.contains(file), "{file} not reported: {t}");
    }
    let installed = std::fs::read(root.join("usr/local/bin/flotilla-agent")).unwrap();
    assert_eq!(elf_machine(&installed), Some(EM_AARCH64));
    assert!(is_static_elf(&installed), "dynamically linked");
    let mode = std::fs::metadata(root.join("usr/local/bin/flotilla-agent"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o755);

    // `extract --arch` writes the same binary; Debian's name works too.
    let extracted = dir.path().join("flotilla-agent-arm64");
    let t = run_expecting(
        flotilla()
            .args(["agent", "extract", "--arch", "arm64", "-o"])
            .arg(&extracted),
        0,
    );
    assert_eq!(t.trim(), extracted.display().to_string());
    assert_eq!(std::fs::read(&extracted).unwrap(), installed);

    // The host's agent is another file.
    let host = dir.path().join("flotilla-agent");
    run_expecting(flotilla().args(["agent", "extract", "-o"]).arg(&host), 0);
    let host = std::fs::read(&host).unwrap();
    assert_ne!(elf_machine(&host), Some(EM_AARCH64));
    assert!(is_static_elf(&host), "dynamically linked");
}

#[test]
fn agent_for_an_unknown_arch_is_a_usage_error_listing_the_known_ones() {
    let dir = tempfile::tempdir().unwrap();
    for args in [
        &["agent", "install", "--arch", "riscv64", "--root"][..],
        &["agent", "extract", "--arch", "riscv64", "-o"],
    ] {
        let t = run_expecting(flotilla().args(args).arg(dir.path().join("x")), 2);
        assert!(
            t.contains("unknown architecture `riscv64`; known: \"x86_64\", \"aarch64\""),
            "{t}"
        );
    }
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}

#[test]
fn agent_install_into_a_missing_tree_fails_naming_it() {
    let t = run_expecting(
        flotilla().args(["agent", "install", "--root", "/nonexistent/tree"]),
        2,
    );
    assert!(t.contains("/nonexistent/tree"), "{t}");
}

#[test]
fn a_script_naming_a_missing_machine_is_refused_before_anything_boots() {
    let dir = tempfile::tempdir().unwrap();
    write_spec(
        dir.path(),
        "script = \"t.rhai\"\n[machines.alpha]\n[machines.beta]\n",
        "alpha.succeed(\"true\");\nghost.succeed(\"true\");\n",
    );
    let tag = tag();
    let t = run_expecting(
        &mut flotilla_test(dir.path(), &dir.path().join("out"), &tag),
        2,
    );
    let script = dir.path().join("t.rhai");
    assert!(
        t.contains(&format!("{}:2:1: `ghost` is not defined", script.display())),
        "{t}"
    );
    assert!(t.contains("the machines are `alpha`, `beta`"), "{t}");
    // Refused before any machine booted (the log of a boot says `alpha: starting`).
    let log = std::fs::read_to_string(dir.path().join("out/driver.log")).unwrap_or_default();
    assert!(log.contains("test `"), "{log}");
    assert!(!log.contains("alpha: starting"), "{log}");
    assert!(tagged_qemus(&tag).is_empty());
}

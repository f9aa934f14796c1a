//! Python test scripts through the binary: NixOS's names on real machines, a failure
//! at its line, a syntax error before anything boots, a script that ends without a
//! verdict, the test's timeout, and Python beside Rhai in a suite.

use std::path::Path;

use super::{assert_no_qemu_left, flotilla_test, run_expecting, tag, tagged_programs};

/// Writes a spec folder: `flotilla.toml` (`spec`, with `script = "t.py"`) and `t.py`.
fn write_python_spec(dir: &Path, spec: &str, script: &str) {
    std::fs::write(
        dir.join("flotilla.toml"),
        format!("script = \"t.py\"\n{spec}"),
    )
    .unwrap();
    std::fs::write(dir.join("t.py"), script).unwrap();
}

/// No Python script of the run `tag` is left running.
fn assert_no_python_left(tag: &str) {
    let left = tagged_programs(tag, b"python3");
    assert!(left.is_empty(), "python3 processes left: {left:?}");
}

const TWO_MACHINES: &str = "[machines.server]\nvlans = [1]\n[machines.client]\nvlans = [1]\n";

#[test]
fn a_python_script_drives_machines_with_nixos_names() {
    let dir = tempfile::tempdir().unwrap();
    let tag = tag();
    std::fs::write(dir.path().join("data.txt"), "from the host\n").unwrap();
    write_python_spec(
        dir.path(),
        TWO_MACHINES,
        r#"import os
start_all()
assert [m.name for m in machines] == ["client", "server"], machines
assert vlans == [1], vlans
with subtest("commands"):
    t.assertEqual(server.succeed("echo a", "echo b"), "a\nb\n")
    t.assertEqual(client.execute("echo out; echo err >&2; exit 7"), (7, "out\n"))
    server.fail("false")
    client.wait_until_succeeds("touch /tmp/flag; test -e /tmp/flag", timeout=30)
with subtest("network"):
    server.succeed("mkdir -p /srv && echo hello > /srv/index.html")
    server.succeed("busybox httpd -p 80 -h /srv")
    server.wait_for_open_port(80)
    url = f"http://{server.ip(1)}/"
    t.assertEqual(client.succeed(f"wget -qO- {url}"), "hello\n")
    client.block()
    client.fail(f"timeout 3 wget -qO- {url}")
    client.unblock()
    client.wait_until_succeeds(f"timeout 3 wget -qO- {url}", timeout=60)
with subtest("files"):
    server.copy_from_host("data.txt", "/tmp/data.txt")
    t.assertEqual(server.succeed("cat /tmp/data.txt"), "from the host\n")
    copied = server.copy_from_vm("/tmp/data.txt", "copies")
    t.assertEqual(open(copied).read(), "from the host\n")
with subtest("console"):
    server.succeed("(head -n 1 /dev/ttyS0 > /tmp/typed) >/dev/null 2>&1 &")
    server.wait_until_succeeds("pidof head", timeout=30)
    server.send_console("typed on the console\n")
    server.wait_until_succeeds("grep -q 'typed on the console' /tmp/typed", timeout=30)
    server.wait_for_console_text("typed on the console", timeout=30)
tries = []
retry(lambda last: tries.append(last) or len(tries) == 3)
t.assertEqual(tries, [False, False, False])

@polling_condition(seconds_interval=0)
def server_runs():
    "the server runs"
    server.succeed("true")

with server_runs:
    client.succeed("true")
log("python says hi")
print("printed by the script")
client.succeed("(sleep 1; echo o > /proc/sysrq-trigger) >/dev/null 2>&1 &")
client.wait_for_shutdown(timeout=60)
assert not client.is_up()
client.succeed("true")
server.shutdown()
"#,
    );
    let out = dir.path().join("out");
    let junit = dir.path().join("report.xml");
    let t = run_expecting(
        flotilla_test(dir.path(), &out, &tag)
            .arg("--junit")
            .arg(&junit),
        0,
    );
    assert!(t.contains("subtest: network ok ("), "{t}");
    let xml = std::fs::read_to_string(&junit).unwrap();
    for name in ["commands", "network", "files", "console"] {
        assert!(xml.contains(&format!("name=\"{name}\"")), "{xml}");
    }
    assert!(xml.contains("failures=\"0\""), "{xml}");
    let log = std::fs::read_to_string(out.join("driver.log")).unwrap();
    for line in [
        "python says hi",
        "printed by the script",
        "server: must succeed: echo b",
        "client: must fail: timeout 3 wget",
    ] {
        assert!(log.contains(line), "{line:?} not in the log:\n{log}");
    }
    assert_eq!(
        std::fs::read_to_string(out.join("copies/data.txt")).unwrap(),
        "from the host\n"
    );
    // Every call is a step of the report's timeline.
    let events = std::fs::read_to_string(out.join("events.jsonl")).unwrap();
    assert!(events.contains("`echo a`"), "{events}");
    assert!(events.contains("\"label\":\"network\""), "{events}");
    assert!(std::fs::read_to_string(out.join("report.html"))
        .unwrap()
        .contains("passed"));
    assert_no_qemu_left(&tag);
    assert_no_python_left(&tag);
}

#[test]
fn a_failing_python_script_names_its_line_subtest_and_condition() {
    let dir = tempfile::tempdir().unwrap();
    let tag = tag();
    write_python_spec(
        dir.path(),
        "[machines.vm]\n",
        "vm.succeed(\"true\")\nwith subtest(\"outer\"):\n    vm.succeed(\"exit 4\")\n",
    );
    let out = dir.path().join("out");
    let junit = dir.path().join("report.xml");
    let t = run_expecting(
        flotilla_test(dir.path(), &out, &tag)
            .arg("--junit")
            .arg(&junit),
        1,
    );
    let script = dir.path().join("t.py");
    assert!(
        t.contains(&format!(
            "error: {}:3:5: machine `vm`: command `exit 4` was expected to succeed but ended with exit status 4",
            script.display()
        )),
        "{t}"
    );
    assert!(t.contains("subtest: outer FAILED"), "{t}");
    let xml = std::fs::read_to_string(&junit).unwrap();
    assert!(xml.contains("name=\"outer\""), "{xml}");
    assert!(
        xml.contains("<failure message=\"machine `vm`: command `exit 4`"),
        "{xml}"
    );
    // The report shows the failing line.
    let report = std::fs::read_to_string(out.join("report.html")).unwrap();
    assert!(
        report.contains("3 |     vm.succeed(&quot;exit 4&quot;)"),
        "{report}"
    );
    let log = std::fs::read_to_string(out.join("driver.log")).unwrap();
    assert!(log.contains("Python traceback"), "{log}");

    // A polling condition that stops holding fails the next call, naming it; a
    // Python exception names its type.
    write_python_spec(
        dir.path(),
        "[machines.vm]\n",
        r#"@polling_condition(seconds_interval=0)
def flag():
    "the flag file exists"
    vm.succeed("test -e /tmp/flag")

vm.succeed("touch /tmp/flag")
with flag:
    vm.succeed("rm /tmp/flag")
    vm.succeed("true")
"#,
    );
    let t = run_expecting(flotilla_test(dir.path(), &out, &tag).arg("--quiet"), 1);
    assert!(
        t.contains(&format!(
            "{}:9:5: Polling condition failed: the flag file exists",
            script.display()
        )),
        "{t}"
    );
    write_python_spec(dir.path(), "[machines.vm]\n", "x = {}\nx['missing']\n");
    let t = run_expecting(flotilla_test(dir.path(), &out, &tag).arg("--quiet"), 1);
    assert!(
        t.contains(&format!("{}:2:1: KeyError: 'missing'", script.display())),
        "{t}"
    );
    assert_no_qemu_left(&tag);
    assert_no_python_left(&tag);
}

#[test]
fn a_python_syntax_error_is_exit_2_before_anything_boots() {
    let dir = tempfile::tempdir().unwrap();
    let tag = tag();
    write_python_spec(
        dir.path(),
        "[machines.vm]\n",
        "vm.succeed('true')\nif True\n    pass\n",
    );
    let out = dir.path().join("out");
    let t = run_expecting(&mut flotilla_test(dir.path(), &out, &tag), 2);
    let script = dir.path().join("t.py");
    // --debug does not step into Python yet: refused before anything runs.
    let debug = run_expecting(flotilla_test(dir.path(), &out, &tag).arg("--debug"), 2);
    assert!(
        debug.contains("--debug does not step into Python scripts yet"),
        "{debug}"
    );
    assert!(
        t.contains(&format!(
            "error: {}:2:8: syntax error: expected ':'",
            script.display()
        )),
        "{t}"
    );
    let log = std::fs::read_to_string(out.join("driver.log")).unwrap();
    assert!(!log.contains("vm: "), "a machine was started:\n{log}");
    assert_no_qemu_left(&tag);
}

#[test]
fn a_python_script_that_ends_without_a_verdict_or_in_time_fails_and_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let tag = tag();
    write_python_spec(
        dir.path(),
        "[machines.vm]\n",
        "import os, sys\nvm.succeed('true')\nprint('dying', file=sys.stderr)\nos._exit(5)\n",
    );
    let out = dir.path().join("out");
    let t = run_expecting(flotilla_test(dir.path(), &out, &tag).arg("--quiet"), 1);
    assert!(
        t.contains("the Python script ended without a verdict: python3 exited with status 5"),
        "{t}"
    );
    assert!(t.contains("dying"), "{t}");
    // sys.exit(0) passes, another status fails.
    write_python_spec(dir.path(), "[machines.vm]\n", "import sys\nsys.exit(0)\n");
    run_expecting(flotilla_test(dir.path(), &out, &tag).arg("--quiet"), 0);
    write_python_spec(dir.path(), "[machines.vm]\n", "import sys\nsys.exit(3)\n");
    let t = run_expecting(flotilla_test(dir.path(), &out, &tag).arg("--quiet"), 1);
    assert!(t.contains("t.py:2:1: the script called sys.exit(3)"), "{t}");
    // The spec's timeout stops the script and its machine.
    write_python_spec(
        dir.path(),
        "timeout = 15\n[machines.vm]\n",
        "vm.succeed('true')\nvm.succeed('sleep 600')\n",
    );
    let t = run_expecting(flotilla_test(dir.path(), &out, &tag).arg("--quiet"), 1);
    assert!(
        t.contains("did not finish within its timeout of 15 s"),
        "{t}"
    );
    // The report shows where the script was.
    let report = std::fs::read_to_string(out.join("report.html")).unwrap();
    assert!(
        report.contains("2 | vm.succeed(&#39;sleep 600&#39;)"),
        "{report}"
    );
    assert_no_qemu_left(&tag);
    assert_no_python_left(&tag);
}

#[test]
fn a_suite_runs_python_tests_beside_rhai_ones() {
    let dir = tempfile::tempdir().unwrap();
    let tag = tag();
    let (py, rhai) = (dir.path().join("py"), dir.path().join("rhai"));
    std::fs::create_dir_all(&py).unwrap();
    std::fs::create_dir_all(&rhai).unwrap();
    write_python_spec(
        &py,
        "name = \"in-python\"\n[machines.vm]\n",
        "with subtest(\"greets\"):\n    vm.succeed(\"echo hi\")\n",
    );
    super::write_spec(
        &rhai,
        "name = \"in-rhai\"\nscript = \"t.rhai\"\n[machines.vm]\n",
        "subtest(\"greets\", || { vm.succeed(\"echo hi\"); });\n",
    );
    let junit = dir.path().join("report.xml");
    let mut cmd = super::flotilla();
    cmd.arg("test")
        .arg(&py)
        .arg(&rhai)
        .arg("--out")
        .arg(dir.path().join("out"))
        .arg("--junit")
        .arg(&junit)
        .env("FLOTILLA_TEST_TAG", &tag);
    let t = run_expecting(&mut cmd, 0);
    assert!(t.contains("2 passed"), "{t}");
    let xml = std::fs::read_to_string(&junit).unwrap();
    for (folder, name) in [(&py, "in-python"), (&rhai, "in-rhai")] {
        let suite = format!("classname=\"{}\"", folder.display());
        assert!(xml.contains(&format!("{suite} name=\"greets\"")), "{xml}");
        assert!(xml.contains(&format!("{suite} name=\"{name}\"")), "{xml}");
    }
    assert_no_qemu_left(&tag);
    assert_no_python_left(&tag);
}

/// A Python that has pytest: `python3` if it does, else Debian's (scripts/setup
/// installs python3-pytest).
fn python_with_pytest() -> String {
    for python in ["python3", "/usr/bin/python3"] {
        let has = std::process::Command::new(python)
            .args(["-c", "import pytest"])
            .status()
            .is_ok_and(|s| s.success());
        if has {
            return python.to_owned();
        }
    }
    panic!("no python3 with pytest: run scripts/setup (it installs python3-pytest)");
}

#[test]
fn the_pytest_plugin_gives_each_test_its_machines_log_folder_and_verdict() {
    let dir = tempfile::tempdir().unwrap();
    let tag = tag();
    std::fs::create_dir_all(dir.path().join("spec")).unwrap();
    std::fs::write(
        dir.path().join("spec/flotilla.toml"),
        "name = \"plugged\"\n[machines.vm]\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("test_vm.py"),
        r#"import pytest

@pytest.mark.flotilla("spec")
def test_passes(flotilla):
    with flotilla.subtest("kernel"):
        assert "cloud" in flotilla["vm"].succeed("uname -r")

@pytest.mark.flotilla("spec")
def test_fails(flotilla):
    flotilla["vm"].succeed("true")
    assert flotilla["vm"].succeed("echo 1") == "2\n"
"#,
    )
    .unwrap();
    let workspace = super::workspace();
    let out = std::process::Command::new(python_with_pytest())
        .args([
            "-m",
            "pytest",
            "-p",
            "flotilla.pytest_plugin",
            "-q",
            "-p",
            "no:cacheprovider",
        ])
        .arg("--flotilla-bin")
        .arg(env!("CARGO_BIN_EXE_flotilla"))
        .current_dir(dir.path())
        .env("PYTHONPATH", workspace.join("driver/python"))
        .env("FLOTILLA_TEST_TAG", &tag)
        .output()
        .unwrap();
    let t = super::text(&out);
    assert_eq!(out.status.code(), Some(1), "{t}");
    assert!(t.contains("1 failed, 1 passed"), "{t}");
    let logs = dir.path().join("flotilla-out/pytest");
    let passed = std::fs::read_to_string(logs.join("test_vm.py-test_passes/driver.log")).unwrap();
    assert!(passed.contains("test `plugged` passed"), "{passed}");
    assert!(passed.contains("subtest: kernel ok"), "{passed}");
    let failed = std::fs::read_to_string(logs.join("test_vm.py-test_fails/driver.log")).unwrap();
    let test_file = dir.path().join("test_vm.py");
    assert!(
        failed.contains(&format!(
            "{}:11:5: AssertionError: assert '1\\n' == '2\\n'",
            test_file.display()
        )),
        "{failed}"
    );
    assert!(logs.join("test_vm.py-test_fails/report.html").is_file());
    assert_no_qemu_left(&tag);
}

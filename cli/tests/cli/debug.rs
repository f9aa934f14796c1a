//! `flotilla test --debug`: a failed test's machines stay up, the error and the
//! failing line are shown, and the prompt goes on with the script's variables (at a
//! terminal) or the run waits for SIGTERM (without one); `flotilla shell` reaches the
//! machines meanwhile, and nothing is left afterwards.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use super::{
    assert_no_qemu_left, flotilla_test, shell, tag, text, wait_for_log, wait_within, write_spec,
    Pty,
};

/// `flotilla test --debug DIR --out DIR/out`, its control socket under DIR/rt.
pub(super) fn debug_test(dir: &Path, tag: &str) -> Command {
    let mut cmd = flotilla_test(dir, &dir.join("out"), tag);
    cmd.arg("--debug")
        .env("XDG_RUNTIME_DIR", dir.join("rt"))
        .env("XDG_STATE_HOME", dir.join("rt"));
    std::fs::create_dir_all(dir.join("rt")).unwrap();
    cmd
}

/// The machine answers `flotilla shell` from another process.
fn shell_reaches_m(dir: &Path) {
    let out = shell(&dir.join("rt"), &["m"], "echo from-$((1 + 1)); exit 3\n");
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "from-2\n");
}

/// driver.log has the session's start and end; its text.
fn assert_session_logged(dir: &Path) -> String {
    let log = std::fs::read_to_string(dir.join("out/driver.log")).unwrap();
    for want in [
        "debug session started",
        "debug session ended",
        "a session ended",
    ] {
        assert!(log.contains(want), "{want:?} in:\n{log}");
    }
    log
}

#[test]
fn debug_opens_the_prompt_with_the_scripts_variables_at_a_terminal() {
    let dir = tempfile::tempdir().unwrap();
    let tag = tag();
    write_spec(
        dir.path(),
        "script = \"t.rhai\"\n[machines.m]\n",
        "let answer = 6 * 7;\n\
         m.succeed(\"echo set-\" + answer);\n\
         m.succeed(\"false\");\n\
         m.succeed(\"echo never\");\n",
    );
    // A polling condition of the script would fail every statement once the prompt
    // creates the flag: it is dropped for the session.
    let script = std::fs::read_to_string(dir.path().join("t.rhai")).unwrap();
    std::fs::write(
        dir.path().join("t.rhai"),
        script.replacen(
            "\n",
            "\npolling_condition(\"no flag\", || m.succeed(\"test ! -e /tmp/flag\"));\n",
            1,
        ),
    )
    .unwrap();
    let pty = Pty::open(30, 100);
    let mut child = pty.spawn(
        debug_test(dir.path(), &tag)
            .env("TERM", "vt100")
            .env("NO_COLOR", "1"),
    );
    let prompt = |from| pty.wait_for(from, "flotilla> ", Duration::from_secs(60));
    let at = pty.wait_for(0, "flotilla> ", Duration::from_secs(240));
    let seen = pty.seen()[..at].replace("\r\n", "\n");
    // The error, then the failing line under the lines before it, then how to reach
    // the machines.
    let script = dir.path().join("t.rhai");
    let excerpt = format!(
        "error: {0}:4:3: machine `m`: command `false` was expected to succeed but ended \
         with exit status 1\n --> {0}:4:3\n  |\n\
         2 | polling_condition(\"no flag\", || m.succeed(\"test ! -e /tmp/flag\"));\n\
         3 | m.succeed(\"echo set-\" + answer);\n4 | m.succeed(\"false\");\n  |   ^\n",
        script.display()
    );
    assert!(seen.contains(&excerpt), "{excerpt}\nin:\n{seen}");
    assert!(seen.contains("  m  flotilla shell m\n"), "{seen}");
    assert!(!seen.contains("echo never"), "{seen}");

    // The script's variable, and the machine as the script left it.
    let at = pty.type_and_wait("answer + 1\r", "43\r\n");
    prompt(at);
    let at = pty.type_and_wait(
        "m.succeed(\"touch /tmp/flag; echo still-\" + \"up\")\r",
        "still-up\r\n",
    );
    prompt(at);
    // Ctrl-C cancels the statement being run, not the session.
    pty.type_and_wait("m.succeed(\"sleep 600\")\r", "must succeed: sleep 600");
    std::thread::sleep(Duration::from_millis(500));
    let at = pty.type_and_wait("\x03", "error: cancelled");
    prompt(at);
    shell_reaches_m(dir.path());
    let at = pty.type_and_wait("answer\r", "42\r\n");
    prompt(at);

    pty.type_and_wait("\x04", "stopping");
    let status = wait_within(&mut child, Duration::from_secs(60));
    let seen = pty.seen();
    assert_eq!(status.code(), Some(1), "{seen}");
    assert!(seen.contains("FAILED: "), "{seen}");
    assert_no_qemu_left(&tag);
    let log = assert_session_logged(dir.path());
    assert!(
        log.contains("the script's 1 polling condition(s) are no longer checked"),
        "{log}"
    );
}

#[test]
fn debug_without_a_terminal_waits_for_sigterm_after_a_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let tag = tag();
    // The spec's timeout is a failure to step into too.
    write_spec(
        dir.path(),
        "script = \"t.rhai\"\ntimeout = 60\n[machines.m]\n",
        "let answer = 6 * 7;\n\
         m.succeed(\"echo set-\" + answer);\n\
         m.succeed(\"sleep 600\");\n",
    );
    let mut child = debug_test(dir.path(), &tag)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let stderr = std::thread::spawn(move || {
        let mut text = String::new();
        std::io::Read::read_to_string(&mut stderr, &mut text).unwrap();
        text
    });
    wait_for_log(dir.path(), "debug session started");
    shell_reaches_m(dir.path());
    // Still up a while later: nothing reads stdin (it is at its end already).
    std::thread::sleep(Duration::from_secs(1));
    assert!(child.try_wait().unwrap().is_none());
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = wait_within(&mut child, Duration::from_secs(60));
    let stderr = stderr.join().unwrap();
    assert_eq!(status.code(), Some(1), "{stderr}");
    for want in [
        "error: the test did not finish within its timeout of 60 s; still running: m: running `sleep 600` (",
        "3 | m.succeed(\"sleep 600\");\n",
        "  m  flotilla shell m\n",
        &format!("send SIGTERM to stop them: kill {}\n", child.id()),
        "stopping\n",
        "FAILED: ",
    ] {
        assert!(stderr.contains(want), "{want:?} in:\n{stderr}");
    }
    assert_no_qemu_left(&tag);
    assert_session_logged(dir.path());
}

#[test]
fn debug_lets_a_passing_test_pass() {
    let dir = tempfile::tempdir().unwrap();
    let tag = tag();
    write_spec(
        dir.path(),
        "script = \"t.rhai\"\n[machines.m]\n",
        "m.succeed(\"true\");\n",
    );
    let out = debug_test(dir.path(), &tag)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let t = text(&out);
    assert_eq!(out.status.code(), Some(0), "{t}");
    assert!(t.contains("PASSED: "), "{t}");
    assert!(!t.contains("flotilla shell"), "{t}");
    let log = std::fs::read_to_string(dir.path().join("out/driver.log")).unwrap();
    assert!(!log.contains("debug session"), "{log}");
    assert_no_qemu_left(&tag);
}

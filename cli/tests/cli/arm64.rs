//! arm64 machines through the command line: `flotilla run` evaluates statements in an
//! arm64 machine beside an x86 one, `flotilla test --debug` keeps a failed arm64
//! machine up for `flotilla shell`, and nothing is left afterwards.

use std::process::Stdio;
use std::time::Duration;

use super::{
    assert_no_qemu_left, shell, start_run, tag, text, wait_for_log, wait_within, write_spec,
};

#[test]
fn run_drives_an_arm64_machine_beside_an_x86_one() {
    let dir = tempfile::tempdir().unwrap();
    let tag = tag();
    std::fs::write(
        dir.path().join("flotilla.toml"),
        "[machines.board]\narch = \"aarch64\"\n[machines.pc]\n",
    )
    .unwrap();
    let mut run = start_run(dir.path(), dir.path(), &tag);
    let lines = "board.succeed(\"uname -m\")\npc.succeed(\"uname -m\")\n\
                 pc.succeed(\"ping -c 1 -W 5 board >/dev/null && echo reached\")\n";
    std::io::Write::write_all(&mut run.stdin.take().unwrap(), lines.as_bytes()).unwrap();
    let out = run.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(stdout, "aarch64\nx86_64\nreached\n", "{}", text(&out));
    assert_no_qemu_left(&tag);
}

#[test]
fn debug_keeps_a_failed_arm64_machine_up_for_shell() {
    let dir = tempfile::tempdir().unwrap();
    let tag = tag();
    write_spec(
        dir.path(),
        "script = \"t.rhai\"\n[machines.m]\narch = \"aarch64\"\n",
        "m.succeed(\"false\");\n",
    );
    let mut child = super::debug::debug_test(dir.path(), &tag)
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
    let out = shell(&dir.path().join("rt"), &["m"], "uname -m; exit 4\n");
    assert_eq!(out.status.code(), Some(4), "{}", text(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "aarch64\n");
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = wait_within(&mut child, Duration::from_secs(60));
    let stderr = stderr.join().unwrap();
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("machine `m`: command `false` was expected to succeed"),
        "{stderr}"
    );
    assert_no_qemu_left(&tag);
}

//! Saved machine states through the binary: the first run saves, the next restores,
//! `--no-snapshot` boots; `flotilla snapshots` lists them and `--clear` removes them.

use std::path::Path;

use super::{assert_no_qemu_left, flotilla, flotilla_test, run_expecting, tag, workspace};

/// The environment of a cache of its own in `dir/cache` (the kernel from the shared
/// one), so the saved states and their list are the test's alone.
fn own_cache(dir: &Path) -> [(&'static str, std::path::PathBuf); 2] {
    [
        ("FLOTILLA_CACHE", dir.join("cache")),
        (
            "FLOTILLA_KERNEL_DIR",
            super::debian::shared_cache().join("kernel/current-amd64"),
        ),
    ]
}

#[test]
fn snapshot_saves_restores_lists_and_clears() {
    let dir = tempfile::tempdir().unwrap();
    let env = own_cache(dir.path());
    let snapshots =
        |args: &[&str]| run_expecting(flotilla().arg("snapshots").args(args).envs(env.clone()), 0);
    assert!(snapshots(&[]).contains("no saved states"));
    let tag = tag();
    let hello = Path::new("examples/hello");
    let first = run_expecting(
        flotilla_test(hello, &dir.path().join("out1"), &tag)
            .envs(env.clone())
            .current_dir(workspace()),
        0,
    );
    assert!(first.contains("machine: snapshot: saved "), "{first}");
    let listed = snapshots(&[]);
    assert!(listed.contains("saved by `machine`"), "{listed}");
    assert!(listed.contains("1 saved state(s)"), "{listed}");
    // The sparse RAM file: less on disk than its 256 MiB.
    assert!(listed.contains(" apparent "), "{listed}");
    let second = run_expecting(
        flotilla_test(hello, &dir.path().join("out2"), &tag)
            .envs(env.clone())
            .current_dir(workspace()),
        0,
    );
    assert!(
        second.contains("machine: snapshot: restored from "),
        "{second}"
    );
    assert!(second.contains("PASSED: hello"), "{second}");
    // The restored console starts with the saving boot's lines.
    let console = std::fs::read_to_string(dir.path().join("out2/machine/console.log")).unwrap();
    assert!(console.contains("FLOTILLA-AGENT-READY"), "{console}");
    assert!(console.contains("restored from a snapshot"), "{console}");
    let third = run_expecting(
        flotilla_test(hello, &dir.path().join("out3"), &tag)
            .arg("--no-snapshot")
            .envs(env.clone())
            .current_dir(workspace()),
        0,
    );
    assert!(!third.contains("snapshot:"), "{third}");
    assert!(third.contains("FLOTILLA-AGENT-READY"), "{third}");
    assert_no_qemu_left(&tag);
    assert!(snapshots(&["--clear"]).contains("removed 1 saved state(s)"));
    assert!(snapshots(&[]).contains("no saved states"));
}

#[test]
fn two_runs_creating_the_same_snapshot_at_once_create_it_once() {
    let dir = tempfile::tempdir().unwrap();
    let env = own_cache(dir.path());
    let tag = tag();
    // The tag on the kernel command line too: the state is this test's alone.
    let spec = dir.path().join("spec");
    std::fs::create_dir_all(&spec).unwrap();
    super::write_spec(
        &spec,
        &format!(
            "name = \"twice\"\nscript = \"t.rhai\"\ntimeout = 300\n\
             [machines.machine]\nsnapshot = true\nkernel_args = \"flotilla.test={tag}\"\n"
        ),
        "machine.succeed(\"true\");\n",
    );
    // The kernel and initramfs go into the cache once, before the two runs.
    // (Booted: a state of its own would be listed too.)
    run_expecting(
        flotilla_test(Path::new("examples/hello"), &dir.path().join("out0"), &tag)
            .arg("--no-snapshot")
            .envs(env.clone())
            .current_dir(workspace()),
        0,
    );
    let runs: Vec<std::process::Child> = (1..=2)
        .map(|n| {
            flotilla_test(&spec, &dir.path().join(format!("out{n}")), &tag)
                .envs(env.clone())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let outputs: Vec<String> = runs
        .into_iter()
        .map(|child| {
            let out = child.wait_with_output().unwrap();
            let t = super::text(&out);
            assert_eq!(out.status.code(), Some(0), "{t}");
            assert!(t.contains("PASSED: twice"), "{t}");
            // Both booted cold, both meant to save.
            assert!(t.contains("FLOTILLA-AGENT-READY"), "{t}");
            t
        })
        .collect();
    let both = outputs.join("\n");
    assert_eq!(
        both.matches("machine: snapshot: saved ").count(),
        1,
        "{both}"
    );
    assert_no_qemu_left(&tag);
    let listed = run_expecting(flotilla().arg("snapshots").envs(env.clone()), 0);
    assert!(listed.contains("1 saved state(s)"), "{listed}");
}

/// The second QEMU version `scripts/setup` unpacks (bookworm-backports' 10.0 beside
/// bookworm's 7.2, or the reverse; bookworm's 7.2 on a trixie host).
fn other_qemu() -> std::path::PathBuf {
    let qemu = super::debian::shared_cache().join("qemu/other-amd64/qemu-system-x86_64");
    assert!(
        qemu.is_file(),
        "no second QEMU at {}: run scripts/setup",
        qemu.display()
    );
    qemu
}

/// A state saved by one QEMU is never restored by another: QEMU's `--version` is part
/// of its identity, so 7.2 and 10.0 each boot and save their own, and each restores
/// its own after; `flotilla snapshots` names the QEMU of each.
#[test]
fn a_state_saved_by_one_qemu_version_is_restored_by_that_one_only() {
    let other = other_qemu();
    let dir = tempfile::tempdir().unwrap();
    let env = own_cache(dir.path());
    let tag = tag();
    let hello = Path::new("examples/hello");
    let version = |qemu: &Path| {
        let out = std::process::Command::new(qemu)
            .arg("--version")
            .output()
            .unwrap();
        let line = String::from_utf8_lossy(&out.stdout)
            .lines()
            .next()
            .unwrap()
            .to_owned();
        flotilla_driver::qemu_version_number(&line)
            .unwrap()
            .to_owned()
    };
    // The QEMU of PATH (the one installed), whatever FLOTILLA_QEMU says.
    let installed = Path::new("qemu-system-x86_64");
    let system = version(installed);
    let theirs = version(&other);
    assert_ne!(system, theirs, "two versions of QEMU");
    let run = |n: u32, qemu: &Path| {
        let mut cmd = flotilla_test(hello, &dir.path().join(format!("out{n}")), &tag);
        cmd.envs(env.clone())
            .env("FLOTILLA_QEMU", qemu)
            .current_dir(workspace());
        run_expecting(&mut cmd, 0)
    };
    let saved = "machine: snapshot: saved ";
    let restored = "machine: snapshot: restored from ";
    // The installed QEMU saves; the other one does not restore its state but boots and
    // saves its own; then each restores its own.
    let first = run(1, installed);
    assert!(first.contains(saved), "{first}");
    let second = run(2, &other);
    assert!(
        !second.contains(restored),
        "QEMU {theirs} restored {system}'s state: {second}"
    );
    assert!(second.contains(saved), "{second}");
    let third = run(3, &other);
    assert!(third.contains(restored), "{third}");
    let fourth = run(4, installed);
    assert!(fourth.contains(restored), "{fourth}");
    for out in [&first, &second, &third, &fourth] {
        assert!(out.contains("PASSED: hello"), "{out}");
    }
    let listed = run_expecting(flotilla().arg("snapshots").envs(env.clone()), 0);
    assert!(listed.contains("2 saved state(s)"), "{listed}");
    for v in [&system, &theirs] {
        assert!(
            listed.contains(&format!("saved by `machine` with QEMU {v} ")),
            "{listed}"
        );
    }
    assert_no_qemu_left(&tag);
}

//! Saved machine states through the binary: the first run saves, the next restores,
//! `--no-snapshot` boots; `flotilla snapshots` lists them and `--clear` removes them.

use std::path::Path;

use super::{assert_no_qemu_left, flotilla, flotilla_test, run_expecting, tag, workspace};

#[test]
fn snapshot_saves_restores_lists_and_clears() {
    let dir = tempfile::tempdir().unwrap();
    // A cache of its own (the kernel from the shared one), so the list is this test's.
    let shared = super::debian::shared_cache();
    let env = [
        ("FLOTILLA_CACHE", dir.path().join("cache")),
        ("FLOTILLA_KERNEL_DIR", shared.join("kernel/current")),
    ];
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

//! The fault campaign: seeded random faults injected into running tests of three
//! machines, through the `flotilla` binary (`target/debug/flotilla`, or
//! `FLOTILLA_BIN`).
//!
//! Each run is `flotilla test --quiet` of `ash` (default guest), `birch` (Debian,
//! `init = "agent"`) and `cedar` (Debian, systemd) on VLAN 1, whose script works the
//! machines in rounds (commands, pings, copies) while one fault lands: from the host
//! after the script's cue line (kill -9 of a QEMU, of the VLAN's switch, of a machine's
//! wire filter, of the driver; SIGSTOP then SIGCONT of a QEMU), from the script (the
//! agent killed in `birch` and in `cedar`, a full disk under `copy_to`, a partition
//! during a copy, a guest panic), or before the run (a saved state's file truncated or
//! a bit flipped). Every run must end within the test's limit plus `SLACK_SECS`
//! (passing, or failing with an error that names the fault's machine or VLAN), leave no
//! process and no run directory, and leave a complete log folder with a `report.html`
//! of its verdict. A table per kind of fault ends the campaign; any hang, leak,
//! incomplete log folder or unclear end fails it.
//!
//! `FAULT_RUNS` (default 20), `FAULT_SEED` (default: from the clock; printed),
//! `FAULT_FIRST` (start at that run of the seed's sequence), `FAULT_KINDS` (a comma
//! list of the kinds' keys, see `fault.rs`). Everything lives under
//! `target/tmp/flotilla-faults`: its own cache (`cache`, the Debian trees and images
//! and the kernels, every release's, shared through links), so that corrupting a saved
//! state never touches another test's (its saved states are removed when a campaign
//! starts), and the last campaign's folders (`runs`).

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

mod check;
mod corrupt;
mod fault;
mod procs;
mod rng;
mod run;
mod spec;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use fault::{Fault, Kind, KINDS};
use rng::Rng;

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.trim().parse().ok())
}

/// The cache other tests use (`FLOTILLA_CACHE`'s rule).
fn shared_cache() -> PathBuf {
    flotilla_driver::image::cache_dir()
}

fn flotilla_binary() -> PathBuf {
    if let Some(bin) = std::env::var_os("FLOTILLA_BIN") {
        return bin.into();
    }
    // target/debug/deps/faults-HASH -> target/debug/flotilla
    let exe = std::env::current_exe().unwrap();
    let bin = exe.parent().unwrap().parent().unwrap().join("flotilla");
    assert!(
        bin.is_file(),
        "{} is missing: `cargo build -p flotilla` (cargo test --workspace builds it)",
        bin.display()
    );
    bin
}

#[derive(Default)]
struct Row {
    runs: u32,
    passed: u32,
    failed_clearly: u32,
    killed: u32,
    hangs: u32,
    leaks: u32,
    incomplete: u32,
    unclear: u32,
    max_secs: f64,
}

#[test]
fn seeded_faults_end_in_time_leave_nothing_and_are_logged() {
    let runs = env_u64("FAULT_RUNS").unwrap_or(20);
    let seed = env_u64("FAULT_SEED").unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
    });
    let first = env_u64("FAULT_FIRST").unwrap_or(0);
    let kinds: Vec<Kind> = match std::env::var("FAULT_KINDS") {
        Ok(list) if !list.trim().is_empty() => list
            .split(',')
            .map(|k| {
                *KINDS
                    .iter()
                    .find(|kind| kind.key() == k.trim())
                    .unwrap_or_else(|| panic!("FAULT_KINDS: no kind `{k}`"))
            })
            .collect(),
        _ => KINDS.to_vec(),
    };
    let bound = Duration::from_secs(spec::TIMEOUT_SECS + spec::SLACK_SECS);
    eprintln!(
        "fault campaign: FAULT_SEED={seed} FAULT_RUNS={runs} FAULT_FIRST={first} \
         (bound per run: {} s)",
        bound.as_secs()
    );

    let flotilla = flotilla_binary();
    let root = Path::new(env!("CARGO_TARGET_TMPDIR")).join("flotilla-faults");
    let cache = root.join("cache");
    let shared = shared_cache();
    // States an earlier campaign saved may be of another identity (another Flotilla,
    // kernel or QEMU) that no run restores: a fault corrupting one would go unseen. The
    // warm-up saves those the runs restore.
    let _ = std::fs::remove_dir_all(cache.join("snapshots"));
    std::fs::create_dir_all(&cache).unwrap();
    // The kernels too: a Debian machine boots its release's (`kernel/trixie-amd64`),
    // the default guest `kernel/current-amd64`.
    for folder in ["debian", "kernel"] {
        std::fs::create_dir_all(shared.join(folder)).unwrap();
        if std::fs::symlink_metadata(cache.join(folder)).is_err() {
            std::os::unix::fs::symlink(shared.join(folder), cache.join(folder)).unwrap();
        }
    }
    let env = [("FLOTILLA_CACHE", cache.clone())];
    let work = root.join("runs");
    let _ = std::fs::remove_dir_all(&work);
    let tmp = work.join("tmp");
    std::fs::create_dir_all(&tmp).unwrap();

    // The plain test first: images built, states saved (a run's bound starts warm).
    let warm_spec = work.join("specs/warm");
    spec::write(&warm_spec, None);
    let warm_out = work.join("out/warm");
    let warm = |out: &Path| {
        run::run(
            None,
            &run::Setup {
                flotilla: &flotilla,
                spec: &warm_spec,
                out,
                tmp: &tmp,
                env: &env,
                bound: Duration::from_secs(1200),
            },
            Ok("none".into()),
        )
    };
    let w = warm(&warm_out);
    assert_eq!(
        w.end,
        run::End::Exited(0),
        "the plain test failed ({:.1} s): {}",
        w.secs,
        w.output
    );
    eprintln!("warm-up: the plain test passed in {:.1} s", w.secs);

    let mut table: BTreeMap<Kind, Row> = BTreeMap::new();
    let mut problems = Vec::new();
    // A killed driver's run directory, which the next run must remove.
    let mut pending: Option<(PathBuf, Kind, u64)> = None;
    for i in first..first + runs {
        let cycle = i / kinds.len() as u64;
        let mut order = kinds.clone();
        Rng::new(seed.wrapping_add(cycle)).shuffle(&mut order);
        let kind = order[(i % kinds.len() as u64) as usize];
        let mut rng = Rng::new(seed.wrapping_mul(0x2545_f491_4f6c_dd1d).wrapping_add(i));
        let fault = Fault::new(kind, &mut rng);
        let pre = match kind {
            Kind::SnapshotTruncated | Kind::SnapshotFlipped => corrupt::corrupt(
                &cache.join("snapshots"),
                kind == Kind::SnapshotTruncated,
                fault.variant,
            ),
            _ => Ok("in the script".to_owned()),
        };
        let spec_dir = work.join(format!("specs/run-{i}"));
        spec::write(&spec_dir, Some(&fault));
        let out = work.join(format!("out/run-{i}"));
        let r = run::run(
            fault.injected_from_host().then_some(&fault),
            &run::Setup {
                flotilla: &flotilla,
                spec: &spec_dir,
                out: &out,
                tmp: &tmp,
                env: &env,
                bound,
            },
            pre,
        );
        let mut v = check::Verdict::default();
        check::ending(&fault, &r, &mut v);
        if let Some((dir, k, at)) = pending.take() {
            if dir.exists() {
                let row = table.entry(k).or_default();
                row.leaks += 1;
                problems.push(format!(
                    "run {at} ({}): leak: its run dir {} outlived the next run",
                    k.label(),
                    dir.display()
                ));
                let _ = std::fs::remove_dir_all(&dir);
            }
        }
        let left = if kind == Kind::KillDriver {
            // The dead driver's directory stays until the next run removes it.
            check::run_dirs(&tmp).into_iter().next()
        } else {
            None
        };
        check::leaks(&tmp, left.as_deref(), &mut v);
        if let Some(dir) = left {
            pending = Some((dir, kind, i));
        }
        if kind == Kind::KillDriver {
            // The dead driver wrote no report.html: drawn from the log folder.
            let _ = std::process::Command::new(&flotilla)
                .arg("report")
                .arg(&out)
                .output();
        }
        check::logs(&r, &mut v);
        let row = table.entry(kind).or_default();
        row.runs += 1;
        row.max_secs = row.max_secs.max(r.secs);
        let how = if v.ok() {
            if v.passed {
                row.passed += 1;
                "passed"
            } else if r.end == run::End::Signalled(9) {
                row.killed += 1;
                "killed, cleaned up"
            } else {
                row.failed_clearly += 1;
                "failed clearly"
            }
        } else {
            "PROBLEM"
        };
        let mut notes = Vec::new();
        for (what, p, count) in [
            ("hang", &v.hang, &mut row.hangs),
            ("unclear", &v.unclear, &mut row.unclear),
            ("leak", &v.leak, &mut row.leaks),
            ("incomplete logs", &v.incomplete, &mut row.incomplete),
        ] {
            if let Some(p) = p {
                *count += 1;
                notes.push(format!("{what}: {p}"));
            }
        }
        let error = r
            .output
            .lines()
            .find(|l| l.starts_with("FAILED") || l.starts_with("error"))
            .unwrap_or("");
        eprintln!(
            "run {i}: {}: {how} ({:?}) in {:.1} s {error}",
            fault.describe(),
            r.end,
            r.secs
        );
        match &r.injected {
            Ok(what) => eprintln!(
                "    injected: {}",
                what.chars().take(200).collect::<String>()
            ),
            Err(why) => eprintln!("    not injected: {why}"),
        }
        for n in &notes {
            eprintln!("    {n}");
            problems.push(format!("run {i} ({}): {n}", fault.describe()));
        }
    }
    if let Some((dir, k, at)) = pending.take() {
        // The last run killed its driver: one more plain run must remove its directory.
        let w = warm(&work.join("out/cleanup"));
        eprintln!("clean-up run: {:?} in {:.1} s", w.end, w.secs);
        if dir.exists() {
            table.entry(k).or_default().leaks += 1;
            problems.push(format!(
                "run {at} ({}): leak: its run dir {} outlived the next run",
                k.label(),
                dir.display()
            ));
        }
    }

    let mut text = format!(
        "\nfault campaign FAULT_SEED={seed}, {runs} run(s), bound {} s per run\n\
         | fault | runs | passed | failed clearly | killed | hangs | leaks | incomplete logs | unclear | max time |\n\
         | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n",
        bound.as_secs()
    );
    let mut total = Row::default();
    for (kind, r) in &table {
        text.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {:.1} s |\n",
            kind.label(),
            r.runs,
            r.passed,
            r.failed_clearly,
            r.killed,
            r.hangs,
            r.leaks,
            r.incomplete,
            r.unclear,
            r.max_secs
        ));
        total.runs += r.runs;
        total.passed += r.passed;
        total.failed_clearly += r.failed_clearly;
        total.killed += r.killed;
        total.hangs += r.hangs;
        total.leaks += r.leaks;
        total.incomplete += r.incomplete;
        total.unclear += r.unclear;
        total.max_secs = total.max_secs.max(r.max_secs);
    }
    text.push_str(&format!(
        "| all | {} | {} | {} | {} | {} | {} | {} | {} | {:.1} s |\n",
        total.runs,
        total.passed,
        total.failed_clearly,
        total.killed,
        total.hangs,
        total.leaks,
        total.incomplete,
        total.unclear,
        total.max_secs
    ));
    eprintln!("{text}");
    let _ = std::fs::write(work.join("table.md"), &text);
    assert!(
        problems.is_empty(),
        "FAULT_SEED={seed}: {} problem(s):\n{}\n(logs in {})",
        problems.len(),
        problems.join("\n"),
        work.join("out").display()
    );
}

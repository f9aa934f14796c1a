//! `cargo bench -p flotilla-driver --bench snapshot`: a default-guest machine booted
//! cold against the same machine restored from its snapshot (`snapshot = true`),
//! side by side in the same run.
//!
//! - ready: `Fleet::new` to `Machine::start` returned (spawn, boot or restore, agent
//!   handshake, network set-up; a restore also sets the clock and the RNG);
//! - echo hi: `Fleet::new` to `succeed("echo hi")` returned;
//! - N machines ready: `Fleet::new` to `Fleet::start_all` returned for `BENCH_NETWORK`
//!   machines (default 16, 0 leaves the row out) on one VLAN, all cold or all restored
//!   from the same state (the identity leaves out what makes them differ).
//!
//! Under the table: the save of the state (the driver's `snapshot: saved ... in N s`
//! line), the sizes of its files (on disk and apparent: the RAM file is sparse), and
//! the median time the restored machines' state took to load (`snapshot: restored
//! from ... in N s`: from the checksums' check, once per process, through QEMU's
//! spawn and the incoming migration to `cont`, before the agent).
//!
//! The machine's kernel command line carries a tag of this run, so its state is the
//! bench's own; a first, unmeasured boot saves it, and it is removed at the end.
//! `BENCH_RUNS` sets the number of runs (default 5). A boot failing panics. Every
//! machine of every row is checked for how it started ([`Machine::started_as`]): a
//! restored row whose machine booted cold instead (a refused or missing state), or a
//! cold row that restored, ends the bench with a message naming the row, the run and
//! the machine, and exit status 1, before any figure is printed.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::path::Path;
use std::time::{Duration, Instant};

use flotilla_driver::{Fleet, FleetOptions, Machine, Spec, StartKind};

fn main() {
    let runs: usize = std::env::var("BENCH_RUNS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(5);
    let dir = tempfile::tempdir().unwrap();
    let tag = format!("{}", std::process::id());
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let spec_text = |snapshot: bool| {
        format!("[machines.m]\nsnapshot = {snapshot}\nkernel_args = \"flotilla.bench={tag}\"\n")
    };
    let boot = |snapshot: bool, n: usize| -> (Duration, Duration, String) {
        let path = dir.path().join("flotilla.toml");
        std::fs::write(&path, spec_text(snapshot)).unwrap();
        let spec = Spec::load(&path).unwrap();
        let out = dir.path().join(format!("out-{snapshot}-{n}"));
        let mut options = FleetOptions::new(&out);
        options.terminal = false;
        runtime.block_on(async {
            let started = Instant::now();
            let fleet = Fleet::new(&spec, options).unwrap();
            let m = fleet.machine("m").unwrap();
            m.start().await.unwrap();
            let ready = started.elapsed();
            // The unmeasured first start (n = 0) saves the state: a boot.
            let expected = if snapshot && n > 0 {
                StartKind::Restored
            } else {
                StartKind::Booted
            };
            check_start(&m, expected, "one machine", n);
            assert_eq!(m.succeed("echo hi").await.unwrap(), "hi\n");
            let echo = started.elapsed();
            let file = m.snapshot_file().map(|f| f.display().to_string());
            fleet.stop_all().await;
            let log = std::fs::read_to_string(out.join("driver.log")).unwrap();
            (ready, echo, format!("{}\n{log}", file.unwrap_or_default()))
        })
    };
    // The state is saved once, unmeasured.
    let (_, _, first) = boot(true, 0);
    assert!(first.contains("snapshot: saved"), "{first}");
    let file = first.lines().next().unwrap().to_owned();
    let mut cold = Vec::new();
    let mut restored = Vec::new();
    let mut loaded = Vec::new();
    for n in 1..=runs {
        let (r, e, _) = boot(false, n);
        cold.push((r, e));
        let (r, e, log) = boot(true, n);
        assert!(log.contains("snapshot: restored from"), "{log}");
        loaded.extend(seconds_after(&log, "snapshot: restored from"));
        restored.push((r, e));
    }
    let saved_line = first
        .lines()
        .find(|l| l.contains("snapshot: saved"))
        .map(|l| l[l.find("snapshot: saved").unwrap_or(0)..].to_owned())
        .unwrap_or_default();
    let sizes: Vec<String> = ["qemu", "ram"]
        .iter()
        .map(|ext| {
            let path = Path::new(&file).with_extension(ext);
            let meta = std::fs::metadata(&path).unwrap();
            format!(
                ".{ext} {:.1} MiB on disk, {:.1} MiB apparent",
                (std::os::unix::fs::MetadataExt::blocks(&meta) * 512) as f64 / 1048576.0,
                meta.len() as f64 / 1048576.0
            )
        })
        .collect();
    let machines: usize = std::env::var("BENCH_NETWORK")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(16);
    let network = |snapshot: bool, n: usize| -> Duration {
        let path = dir.path().join("flotilla.toml");
        let mut text = String::new();
        for i in 1..=machines {
            text.push_str(&format!(
                "[machines.m{i}]\nsnapshot = {snapshot}\nkernel_args = \"flotilla.bench={tag}\"\n"
            ));
        }
        std::fs::write(&path, text).unwrap();
        let spec = Spec::load(&path).unwrap();
        let mut options = FleetOptions::new(dir.path().join(format!("net-{snapshot}-{n}")));
        options.terminal = false;
        runtime.block_on(async {
            let started = Instant::now();
            let fleet = Fleet::new(&spec, options).unwrap();
            fleet.start_all().await.unwrap();
            let ready = started.elapsed();
            let expected = if snapshot {
                StartKind::Restored
            } else {
                StartKind::Booted
            };
            for m in fleet.machines().values() {
                check_start(m, expected, &format!("{machines} machines"), n);
            }
            fleet.stop_all().await;
            ready
        })
    };
    let mut net_cold = Vec::new();
    let mut net_restored = Vec::new();
    for n in 1..=runs {
        if machines == 0 {
            break;
        }
        net_cold.push(network(false, n));
        net_restored.push(network(true, n));
    }
    let _ = std::fs::remove_file(&file);
    let _ = std::fs::remove_file(Path::new(&file).with_extension("meta"));
    let _ = std::fs::remove_file(Path::new(&file).with_extension("lock"));
    let median = |v: &[(Duration, Duration)], pick: fn(&(Duration, Duration)) -> Duration| {
        let mut d: Vec<Duration> = v.iter().map(pick).collect();
        d.sort();
        d[d.len() / 2]
    };
    println!("snapshot bench: {runs} runs each, medians");
    println!("| | cold boot | restored | restored / cold |");
    println!("| --- | --- | --- | --- |");
    for (label, pick) in [
        ("ready", (|p: &(Duration, Duration)| p.0) as fn(&_) -> _),
        ("echo hi", |p: &(Duration, Duration)| p.1),
    ] {
        let (c, r) = (median(&cold, pick), median(&restored, pick));
        println!(
            "| {label} | {:.2} s | {:.2} s | {:.2}x |",
            c.as_secs_f64(),
            r.as_secs_f64(),
            r.as_secs_f64() / c.as_secs_f64()
        );
    }
    loaded.sort_by(f64::total_cmp);
    println!("state saved by the first, unmeasured boot: {saved_line}");
    println!("state files: {}", sizes.join("; "));
    if let Some(m) = loaded.get(loaded.len() / 2) {
        println!(
            "state loaded (driver.log's `restored ... in N s`: QEMU spawned, checksums checked once per process, incoming migration, cont), restored rows: median {m:.2} s of {}",
            loaded.len()
        );
    }
    if machines > 0 {
        net_cold.sort();
        net_restored.sort();
        let (c, r) = (net_cold[runs / 2], net_restored[runs / 2]);
        println!(
            "| {machines} machines ready | {:.2} s | {:.2} s | {:.2}x |",
            c.as_secs_f64(),
            r.as_secs_f64(),
            r.as_secs_f64() / c.as_secs_f64()
        );
    }
}

/// Ends the bench (exit 1) unless `machine` started as `expected`: a row that says
/// "restored" must have restored every machine it times, and a cold row booted them.
fn check_start(machine: &Machine, expected: StartKind, row: &str, run: usize) {
    let got = machine.started_as();
    if got != Some(expected) {
        eprintln!(
            "snapshot bench: row `{row}`, run {run}: machine `{}` was expected to be {expected:?} but was {got:?}; \
             the figures would not time what they say (see its driver.log for why)",
            machine.name()
        );
        std::process::exit(1);
    }
}

/// The seconds of the `... in N s` line of `log` that contains `marker`.
fn seconds_after(log: &str, marker: &str) -> Option<f64> {
    let line = log.lines().find(|l| l.contains(marker))?;
    line.rsplit(" in ")
        .next()?
        .strip_suffix(" s")?
        .trim()
        .parse()
        .ok()
}

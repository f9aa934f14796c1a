//! `cargo bench -p flotilla-driver --bench coverage`: what `--coverage` adds to a test,
//! measured on `examples/coverage` (two default-guest machines, a C server and
//! client built with gcov instrumentation), with and without coverage, in the same
//! run.
//!
//! - without: the whole `run_test` of the example with coverage off (the baseline);
//! - with: the same with coverage on: a coverage disk per machine, its mount, the
//!   programs ended and their data synced at the end, the disks read and the report
//!   made (gcov, tracefiles, HTML, genhtml when the host has it).
//!
//! The example is built first into a temporary copy with its own `build.sh`.
//! `BENCH_RUNS` sets the number of runs of each (default 5). A failing test or build
//! panics: a non-zero exit.

#![allow(clippy::unwrap_used)] // bench code: a panic is the failure report

use std::path::Path;
use std::time::{Duration, Instant};

use flotilla_driver::{run_test, FleetOptions, Spec};

fn main() {
    let runs: usize = std::env::var("BENCH_RUNS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(5);
    let dir = tempfile::tempdir().unwrap();
    let example = dir.path().join("coverage");
    copy_example(&example);
    let build = std::process::Command::new(example.join("build.sh"))
        .output()
        .unwrap();
    assert!(build.status.success(), "build.sh failed: {build:?}");
    let text = std::fs::read_to_string(example.join("flotilla.toml")).unwrap();
    let without = text.replace("enabled = true", "enabled = false");
    assert_ne!(text, without, "the example's spec enables coverage");
    let spec_with = Spec::parse(&example.join("flotilla.toml"), &text).unwrap();
    let spec_without = Spec::parse(&example.join("flotilla.toml"), &without).unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let (mut off, mut on) = (Vec::new(), Vec::new());
    for run in 0..runs {
        for (spec, times) in [(&spec_without, &mut off), (&spec_with, &mut on)] {
            let mut options = FleetOptions::new(dir.path().join(format!("out-{run}")));
            options.terminal = false;
            // Boots, as the figures say (not restores).
            options.snapshot = false;
            let started = Instant::now();
            runtime
                .block_on(run_test(spec, options, Default::default()))
                .unwrap();
            times.push(started.elapsed());
        }
        eprintln!(
            "run {}: without {:.2} s, with {:.2} s",
            run + 1,
            off[run].as_secs_f64(),
            on[run].as_secs_f64()
        );
    }
    let (off, on) = (median(&mut off), median(&mut on));
    println!();
    println!("examples/coverage, two machines, median of {runs} run(s):");
    println!(
        "  test without coverage   {:6.2} s  (baseline)",
        off.as_secs_f64()
    );
    println!(
        "  test with coverage      {:6.2} s  {:.2}x, +{:.2} s",
        on.as_secs_f64(),
        on.as_secs_f64() / off.as_secs_f64(),
        on.as_secs_f64() - off.as_secs_f64()
    );
}

fn copy_example(to: &Path) {
    let from = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/coverage");
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(&from).unwrap().flatten() {
        if entry.path().is_file() {
            std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
        }
    }
}

fn median(v: &mut [Duration]) -> Duration {
    v.sort();
    v[v.len() / 2]
}

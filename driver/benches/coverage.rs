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
//!
//! The "with" figure must time a real report, so the bench exits 1 with a message:
//! - before anything runs, when a coverage tool `flotilla doctor` checks is missing
//!   (gcc, gcov, genhtml from lcov, debugfs, `libc.a`, LLVM's tools): a report
//!   without them would be cheaper than the one the figure names;
//! - after each run with coverage, when its report has no data: no `combined.info`,
//!   no line or function hit, a machine that did not contribute, or no HTML
//!   (`index.html`, genhtml's `genhtml/index.html`).

#![allow(clippy::unwrap_used)] // bench code: a panic is the failure report

use std::path::Path;
use std::time::{Duration, Instant};

use flotilla_driver::doctor::Group;
use flotilla_driver::{run_test, FleetOptions, Spec};

fn main() {
    let runs: usize = std::env::var("BENCH_RUNS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(5);
    let missing: Vec<String> = flotilla_driver::doctor::checks()
        .into_iter()
        .filter(|c| c.group == Group::Coverage && !c.ok)
        .map(|c| format!("{}: {}", c.name, c.detail))
        .collect();
    if !missing.is_empty() {
        fail(&format!(
            "coverage tools missing (run scripts/setup): {}",
            missing.join("; ")
        ));
    }
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
    let mut hits = String::new();
    for run in 0..runs {
        for (spec, times, label) in [
            (&spec_without, &mut off, "without"),
            (&spec_with, &mut on, "with"),
        ] {
            let out = dir.path().join(format!("out-{run}-{label}"));
            let mut options = FleetOptions::new(&out);
            options.terminal = false;
            // Boots, as the figures say (not restores).
            options.snapshot = false;
            let started = Instant::now();
            runtime
                .block_on(run_test(spec, options, Default::default()))
                .unwrap();
            times.push(started.elapsed());
            if label == "with" {
                hits = check_report(&out.join("coverage"), run + 1);
            }
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
    println!("  every report checked: {hits}");
}

/// Ends the bench with `message` and exit status 1.
fn fail(message: &str) -> ! {
    eprintln!("coverage bench: {message}");
    std::process::exit(1);
}

/// Checks that the report in `dir` has data from both machines and its HTML; ends the
/// bench otherwise. Returns what the report found, for the output.
fn check_report(dir: &Path, run: usize) -> String {
    let combined = dir.join("combined.info");
    let Ok(text) = std::fs::read_to_string(&combined) else {
        fail(&format!(
            "run {run}: no {} (no machine had data)",
            combined.display()
        ));
    };
    let sum = |key: &str| -> u64 {
        text.lines()
            .filter_map(|l| l.strip_prefix(key))
            .filter_map(|v| v.trim().parse::<u64>().ok())
            .sum()
    };
    let (lh, lf, fnh, fnf) = (sum("LH:"), sum("LF:"), sum("FNH:"), sum("FNF:"));
    if lh == 0 || fnh == 0 {
        fail(&format!(
            "run {run}: the report has no data: {lh} of {lf} lines and {fnh} of {fnf} functions hit in {}",
            combined.display()
        ));
    }
    for machine in ["client", "server"] {
        let info = dir.join(format!("{machine}.info"));
        let hit = std::fs::read_to_string(&info)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.strip_prefix("LH:"))
            .filter_map(|v| v.trim().parse::<u64>().ok())
            .sum::<u64>();
        if hit == 0 {
            fail(&format!(
                "run {run}: machine `{machine}` contributed no line to the report ({})",
                info.display()
            ));
        }
    }
    for page in ["index.html", "genhtml/index.html"] {
        if !dir.join(page).is_file() {
            fail(&format!(
                "run {run}: the report has no {page} in {}",
                dir.display()
            ));
        }
    }
    format!("lines hit {lh} (of {lf} counted per machine), functions hit {fnh} (of {fnf}), both machines, index.html and genhtml/index.html")
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

//! `cargo bench -p flotilla-driver --bench script_calls`: what a script's call costs
//! above the agent's round trip, in Rhai and in Python, in one run on one machine.
//!
//! Each round, in the same order: the library's `succeed("true")` (the driver and the
//! agent's round trip: the floor), then a Rhai script and a Python script that each
//! time `BENCH_CALLS` (default 200) of the same call with their own clock and log the
//! time per call. `BENCH_ROUNDS` (default 3) rounds; the medians are printed, each
//! language's overhead above the floor, and Python's overhead over Rhai's.
//!
//! A run that fails (a boot, a call, a script) panics: a non-zero exit.

use std::path::Path;
use std::time::Instant;

use common::env;
use flotilla_driver::{run_test, Fleet, FleetOptions, Spec};
use tokio_util::sync::CancellationToken;

mod common;

const SPEC: &str = "[machines.vm]\nmemory = 256\n";

/// Seconds per call of the library's `succeed("true")` on a started machine.
async fn library(dir: &Path, calls: u64) -> f64 {
    let spec = Spec::parse(&dir.join("library.toml"), SPEC).expect("spec");
    let mut options = FleetOptions::new(dir.join("out-library"));
    options.terminal = false;
    let net = Fleet::new(&spec, options).expect("network");
    let vm = net.machine("vm").expect("vm");
    for _ in 0..10 {
        vm.succeed("true").await.expect("warm up");
    }
    let t = Instant::now();
    for _ in 0..calls {
        vm.succeed("true").await.expect("true");
    }
    let per_call = t.elapsed().as_secs_f64() / calls as f64;
    net.stop_all().await;
    per_call
}

/// Seconds per call as the script `name` (`t.rhai` or `t.py`) timed and logged them
/// (`per call: SECONDS`).
async fn script(dir: &Path, name: &str, text: &str) -> f64 {
    let folder = dir.join(name.replace('.', "-"));
    std::fs::create_dir_all(&folder).expect("folder");
    std::fs::write(folder.join(name), text).expect("script");
    let spec_text = format!("script = \"{name}\"\n{SPEC}");
    std::fs::write(folder.join("flotilla.toml"), spec_text).expect("spec");
    let spec = Spec::load(&folder).expect("spec");
    let mut options = FleetOptions::new(folder.join("out"));
    options.terminal = false;
    run_test(&spec, options, CancellationToken::new())
        .await
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    let log = std::fs::read_to_string(folder.join("out/driver.log")).expect("log");
    log.lines()
        .find_map(|l| l.split("per call: ").nth(1))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("{name} logged no time per call:\n{log}"))
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

#[tokio::main]
async fn main() {
    let calls = env("BENCH_CALLS", 200);
    let rounds = env("BENCH_ROUNDS", 3);
    let dir = tempfile::tempdir().expect("temp dir");
    let rhai = format!(
        "vm.succeed(\"true\");\nlet t = timestamp();\nfor i in 0..{calls} {{ vm.succeed(\"true\"); }}\n\
         log(`per call: ${{t.elapsed / {calls}.0}}`);\n"
    );
    let python = format!(
        "import time\nvm.succeed(\"true\")\nt = time.monotonic()\nfor _ in range({calls}):\n    vm.succeed(\"true\")\n\
         log(f\"per call: {{(time.monotonic() - t) / {calls}}}\")\n"
    );
    let (mut floor, mut in_rhai, mut in_python) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..rounds {
        floor.push(library(dir.path(), calls).await);
        in_rhai.push(script(dir.path(), "t.rhai", &rhai).await);
        in_python.push(script(dir.path(), "t.py", &python).await);
    }
    let (floor, rhai, python) = (
        median(&mut floor),
        median(&mut in_rhai),
        median(&mut in_python),
    );
    let ms = |s: f64| s * 1e3;
    println!("script calls: succeed(\"true\") on a default machine, {calls} calls, median of {rounds} rounds");
    println!("{:<44} {:>12} {:>16}", "", "ms per call", "ms above floor");
    println!(
        "{:<44} {:>12.3} {:>16}",
        "library (driver + agent round trip: floor)",
        ms(floor),
        "-"
    );
    println!(
        "{:<44} {:>12.3} {:>16.3}",
        "Rhai script",
        ms(rhai),
        ms(rhai - floor)
    );
    println!(
        "{:<44} {:>12.3} {:>16.3}",
        "Python script",
        ms(python),
        ms(python - floor)
    );
    println!(
        "Python's overhead / Rhai's: {:.2}x (per call, Python / Rhai: {:.2}x)",
        (python - floor) / (rhai - floor),
        python / rhai
    );
}

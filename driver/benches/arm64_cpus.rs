//! `cargo bench -p flotilla-driver --bench arm64_cpus`: which CPU model arm64 machines
//! emulate under TCG (`flotilla_host::arch`'s `tcg_cpu`), chosen by measurement.
//!
//! For each candidate model, the arm64 floor (QEMU's `virt` machine, Debian's arm64
//! cloud kernel, a busybox initramfs) is timed from spawning QEMU to `/init`'s first
//! line (boot), then through some work in the guest (sha256 of 64 MiB, gzip of 16 MiB
//! of random bytes: integer and memory work, as tests run). The baseline, measured in
//! the same run: the host architecture's floor with its own TCG model and the same
//! work. `BENCH_RUNS` sets the number of runs (default 3).

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

mod floor;

use std::time::Duration;

use flotilla_driver::image::Kernel;
use flotilla_driver::{Accel, Arch};

/// The work each guest does after its first line.
const WORK: &str = "{ dd if=/dev/zero bs=1M count=64 2>/dev/null | sha256sum >/dev/null &&\n\
                    dd if=/dev/urandom bs=1M count=16 2>/dev/null | gzip >/dev/null; }";

/// The arm64 models compared: QEMU 7.2's 64-bit Arm CPUs that Debian's arm64 userland
/// runs on, and `max` with the cheaper pointer-authentication algorithm.
const MODELS: &[&str] = &[
    "cortex-a53",
    "cortex-a57",
    "cortex-a72",
    "neoverse-n1",
    "max,pauth-impdef=on",
    "max",
];

fn main() {
    let runs: usize = std::env::var("BENCH_RUNS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(3);
    let dir = tempfile::tempdir().expect("temp dir");
    let arm64 = Arch::named("aarch64").expect("aarch64 in the table");
    let host = Arch::host();
    let mut rows: Vec<(String, Vec<Duration>, Vec<Duration>)> = Vec::new();
    for (arch, models) in [(host, &[host.tcg_cpu][..]), (arm64, MODELS)] {
        let kernel = Kernel::locate(arch).expect("a kernel: run scripts/setup");
        let initrd = floor::initramfs(dir.path(), arch, WORK);
        for model in models {
            let (mut boot, mut work) = (Vec::new(), Vec::new());
            for _ in 0..runs {
                let t = floor::Floor {
                    arch,
                    cpu: model,
                    kernel: &kernel.image,
                    initrd: &initrd,
                    accel: Accel::Tcg,
                    extra: "",
                    bios: None,
                }
                .boot();
                let done = t.done.expect("the work finished");
                boot.push(t.ready);
                work.push(done - t.ready);
            }
            let chosen = if *model == arch.tcg_cpu {
                " (used)"
            } else {
                ""
            };
            eprintln!("{arch} {model}{chosen}: boot {boot:.2?}, work {work:.2?}");
            rows.push((format!("{arch} {model}{chosen}"), boot, work));
        }
    }
    let median = |v: &mut Vec<Duration>| {
        v.sort();
        v[v.len() / 2].as_secs_f64()
    };
    let (mut base_boot, mut base_work) = (rows[0].1.clone(), rows[0].2.clone());
    let (base_boot, base_work) = (median(&mut base_boot), median(&mut base_work));
    println!();
    println!("arm64 CPU models under TCG, {runs} runs, medians; baseline: the first row");
    println!(
        "{:<36} {:>9} {:>8} {:>9} {:>8}",
        "", "boot", "x base", "work", "x base"
    );
    for (name, mut boot, mut work) in rows {
        let (b, w) = (median(&mut boot), median(&mut work));
        println!(
            "{name:<36} {b:>8.2}s {:>7.2}x {w:>8.2}s {:>7.2}x",
            b / base_boot,
            w / base_work
        );
    }
}

//! `cargo bench -p flotilla-driver --bench capacity`: how many default-guest machines
//! this host holds at once, booted cold against restored from one snapshot (whose
//! machines share the snapshot's unchanged RAM pages).
//!
//! For each kind, `CAPACITY_COLD` (default 8) or `CAPACITY_RESTORED` (default 48)
//! machines are started in fleets of `CAPACITY_BATCH` (default 16, one VLAN each), one
//! fleet after the other, all kept running; every machine must answer
//! `succeed("true")`. Once all run and have idled `CAPACITY_SETTLE` seconds (default
//! 10), it prints per machine: PSS (`/proc/PID/smaps_rollup` of each QEMU: shared
//! pages count once, split among their users), RSS, the part of RSS that is TCG's
//! translation cache (anonymous executable mappings), the drop of the host's
//! `MemAvailable` divided by the machines, and the CPU the idle machines use (their
//! QEMUs' user and system time over 10 s). Then how many such machines the host's
//! memory would hold (`MemAvailable` before the start divided by the PSS per machine)
//! and the CPU they would take; cold counts are extrapolated from the cold machines
//! actually run, and the bench says so.
//!
//! Other processes on the host move `MemAvailable`; the PSS figures are the machines'
//! own. The kernel command line carries a tag of this run, so the state is the
//! bench's own; it is removed at the end.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::time::{Duration, Instant};

use flotilla_driver::{Fleet, FleetOptions, Spec};

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A `/proc/meminfo` field, in KiB.
fn meminfo(field: &str) -> u64 {
    let text = std::fs::read_to_string("/proc/meminfo").unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap()
}

/// (PSS, RSS) of process `pid`, in KiB.
fn pss_rss(pid: u32) -> (u64, u64) {
    let text = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).unwrap();
    let field = |name: &str| -> u64 {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
    };
    (field("Pss:"), field("Rss:"))
}

/// RSS of the anonymous executable mappings of `pid` (TCG's translation cache), KiB.
fn tcg_cache_rss(pid: u32) -> u64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/smaps")).unwrap();
    let mut total = 0;
    let mut counting = false;
    for line in text.lines() {
        let first = line.split_whitespace().next().unwrap_or("");
        if first.contains('-') && !first.ends_with(':') {
            let fields: Vec<&str> = line.split_whitespace().collect();
            // address perms offset dev inode [path]
            counting = fields.len() == 5 && fields[1].contains('x');
        } else if counting {
            if let Some(v) = line.strip_prefix("Rss:") {
                total += v
                    .split_whitespace()
                    .next()
                    .and_then(|v| v.parse::<u64>().ok())
                    .unwrap_or(0);
            }
        }
    }
    total
}

/// User and system CPU time of `pid`, in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let Some((_, rest)) = stat.rsplit_once(") ") else {
        return 0;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // Fields 14 and 15 of stat (utime, stime), counted after the name.
    fields
        .get(11)
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0)
        + fields
            .get(12)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
}

struct Figures {
    machines: usize,
    start: Duration,
    pss_kib: u64,
    rss_kib: u64,
    tcg_kib: u64,
    available_drop_kib: u64,
    cpu_cores: f64,
}

fn main() {
    let cold_n = env_or("CAPACITY_COLD", 8);
    let restored_n = env_or("CAPACITY_RESTORED", 48);
    let batch = env_or("CAPACITY_BATCH", 16).max(1);
    let settle = Duration::from_secs(env_or("CAPACITY_SETTLE", 10) as u64);
    let dir = tempfile::tempdir().unwrap();
    let tag = format!("{}", std::process::id());
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let spec_of = |names: &[String], snapshot: bool, file: &str| {
        let mut text = String::new();
        for name in names {
            text.push_str(&format!(
                "[machines.{name}]\nsnapshot = {snapshot}\nkernel_args = \"flotilla.bench={tag}\"\n"
            ));
        }
        let path = dir.path().join(file);
        std::fs::write(&path, text).unwrap();
        Spec::load(&path).unwrap()
    };
    let options = |name: &str| {
        let mut o = FleetOptions::new(dir.path().join(name));
        o.terminal = false;
        o
    };

    // The state is saved once, unmeasured.
    let state = runtime.block_on(async {
        let spec = spec_of(&["m".to_owned()], true, "save.toml");
        let fleet = Fleet::new(&spec, options("save")).unwrap();
        let m = fleet.machine("m").unwrap();
        m.succeed("true").await.unwrap();
        let file = m.snapshot_file().unwrap();
        fleet.stop_all().await;
        file
    });
    assert!(state.is_file(), "{}", state.display());

    let run = |snapshot: bool, n: usize| -> Figures {
        let kind = if snapshot { "restored" } else { "cold" };
        let available_before = meminfo("MemAvailable");
        let started = Instant::now();
        let mut fleets = Vec::new();
        let mut pids = Vec::new();
        runtime.block_on(async {
            for (i, first) in (0..n).step_by(batch).enumerate() {
                let names: Vec<String> = (first..n.min(first + batch))
                    .map(|k| format!("m{}", k + 1))
                    .collect();
                let spec = spec_of(&names, snapshot, &format!("{kind}-{i}.toml"));
                let fleet = Fleet::new(&spec, options(&format!("{kind}-{i}"))).unwrap();
                fleet.start_all().await.unwrap();
                for name in &names {
                    let m = fleet.machine(name).unwrap();
                    m.succeed("true").await.unwrap();
                    pids.push(m.qemu_pid().unwrap());
                }
                eprintln!(
                    "{kind}: {} machines running after {:.1} s",
                    pids.len(),
                    started.elapsed().as_secs_f64()
                );
                fleets.push(fleet);
            }
        });
        let start = started.elapsed();
        std::thread::sleep(settle);
        let ticks_before: u64 = pids.iter().map(|p| cpu_ticks(*p)).sum();
        let window = Instant::now();
        std::thread::sleep(Duration::from_secs(10));
        let ticks: u64 = pids.iter().map(|p| cpu_ticks(*p)).sum::<u64>() - ticks_before;
        // SAFETY: sysconf has no preconditions.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
        let cpu_cores = ticks as f64 / hz / window.elapsed().as_secs_f64();
        let (mut pss, mut rss, mut tcg) = (0, 0, 0);
        for pid in &pids {
            let (p, r) = pss_rss(*pid);
            pss += p;
            rss += r;
            tcg += tcg_cache_rss(*pid);
        }
        let available_drop = available_before.saturating_sub(meminfo("MemAvailable"));
        // Every machine still answers.
        runtime.block_on(async {
            for fleet in &fleets {
                for m in fleet.machines().values() {
                    m.succeed("true").await.unwrap();
                }
            }
            for fleet in &fleets {
                fleet.stop_all().await;
            }
        });
        if snapshot {
            for fleet in 0..fleets.len() {
                let log = std::fs::read_to_string(
                    dir.path()
                        .join(format!("{kind}-{fleet}"))
                        .join("driver.log"),
                )
                .unwrap();
                assert!(!log.contains("booting cold"), "{log}");
            }
        }
        let n64 = n as u64;
        Figures {
            machines: n,
            start,
            pss_kib: pss / n64,
            rss_kib: rss / n64,
            tcg_kib: tcg / n64,
            available_drop_kib: available_drop / n64,
            cpu_cores,
        }
    };
    let available = meminfo("MemAvailable");
    let total = meminfo("MemTotal");
    let cold = run(false, cold_n);
    let restored = run(true, restored_n);
    for suffix in ["qemu", "ram", "meta", "lock"] {
        let _ = std::fs::remove_file(state.with_extension(suffix));
    }

    let mib = |kib: u64| kib as f64 / 1024.0;
    println!(
        "capacity bench: default guest (256 MiB), MemTotal {:.0} MiB, MemAvailable {:.0} MiB at the start",
        mib(total),
        mib(available)
    );
    println!("| per machine | cold | restored |");
    println!("| --- | --- | --- |");
    println!(
        "| machines run at once | {} | {} |",
        cold.machines, restored.machines
    );
    println!(
        "| all started and answering | {:.1} s | {:.1} s |",
        cold.start.as_secs_f64(),
        restored.start.as_secs_f64()
    );
    for (label, c, r) in [
        ("PSS", cold.pss_kib, restored.pss_kib),
        ("RSS", cold.rss_kib, restored.rss_kib),
        (
            "of RSS, TCG translation cache",
            cold.tcg_kib,
            restored.tcg_kib,
        ),
        (
            "MemAvailable drop",
            cold.available_drop_kib,
            restored.available_drop_kib,
        ),
    ] {
        println!("| {label} | {:.1} MiB | {:.1} MiB |", mib(c), mib(r));
    }
    println!(
        "| idle CPU (cores per machine) | {:.3} | {:.3} |",
        cold.cpu_cores / cold.machines as f64,
        restored.cpu_cores / restored.machines as f64
    );
    for (kind, f, extrapolated) in [("cold", &cold, true), ("restored", &restored, false)] {
        let fit = available / f.pss_kib.max(1);
        let cores = f.cpu_cores / f.machines as f64 * fit as f64;
        println!(
            "{kind}: {fit} machines fit in MemAvailable by PSS ({} run{}); idle, they would take {cores:.1} of {} cores",
            f.machines,
            if extrapolated { ", the rest extrapolated" } else { "" },
            std::thread::available_parallelism().map_or(0, |n| n.get()),
        );
    }
}

//! Prints the agent's figures from a real VM (QEMU TCG): binary size, boot time,
//! idle RSS, exec round trip vs an in-guest spawn loop, output and push throughput.
//!
//!   cargo bench -p flotilla-agent --bench agent
//!
//! It measures what ships, the static `agent`-profile build that `flotilla` embeds
//! (built by the shared harness), for the host's architecture; FLOTILLA_AGENT_BIN
//! names another binary.

#![allow(clippy::unwrap_used)]

#[allow(dead_code)]
#[path = "../tests/agent/harness.rs"]
mod harness;

use std::time::{Duration, Instant};

use flotilla_agent::proto::{FileDone, FilePush, Frame, Kind, ShutdownRequest, MAX_CHUNK};
use harness::{argv, sh, Vm};

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return; // `cargo test --benches` asks for a list; there is nothing to run there.
    }
    let arch = harness::host_arch();
    if let Some(why) = harness::missing_prerequisite(arch) {
        // The subject cannot run: a failure, not an empty table.
        eprintln!("agent bench: cannot boot a VM: {why} (run scripts/setup)");
        std::process::exit(1);
    }
    let bin = harness::agent_bin(arch);
    let size = std::fs::metadata(&bin).unwrap().len();
    println!(
        "agent binary: {} bytes ({:.2} MiB) {}",
        size,
        size as f64 / (1024.0 * 1024.0),
        bin.display()
    );

    let cpio = harness::initramfs(arch, |_| {});
    let t = Instant::now();
    let mut vm = Vm::boot(arch, &cpio, "");
    let to_ready = t.elapsed();
    let boot_ms: u64 = vm
        .ready_line
        .split_whitespace()
        .find_map(|f| f.strip_prefix("boot_ms="))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    println!(
        "ready: boot_ms={boot_ms} (guest uptime), {:.0} ms from qemu spawn",
        ms(to_ready)
    );

    let mut c = vm.connect();
    let t = Instant::now();
    c.hello();
    println!("first hello after connect: {:.2} ms", ms(t.elapsed()));
    let mut times: Vec<Duration> = (0..50)
        .map(|_| {
            let t = Instant::now();
            c.hello();
            t.elapsed()
        })
        .collect();
    times.sort();
    println!(
        "protocol round trip (hello x50 on one connection): median {:.2} ms, min {:.2} ms",
        ms(times[times.len() / 2]),
        ms(times[0])
    );

    std::thread::sleep(Duration::from_secs(1));
    let out = c.exec(
        1,
        &sh("grep -E 'VmRSS|VmHWM|Threads' /proc/1/status | tr -s ' \\t' ' '"),
    );
    println!(
        "agent (pid 1) while serving one command: {}",
        out.stdout_str().replace('\n', "; ")
    );

    let n = 100;
    let mut times: Vec<Duration> = (0..n)
        .map(|i| {
            let t = Instant::now();
            let out = c.exec(10 + i, &argv(&["true"]));
            assert_eq!(out.status.unwrap().code, Some(0));
            t.elapsed()
        })
        .collect();
    times.sort();
    let mean = times.iter().sum::<Duration>() / n;
    println!(
        "exec round trip of `true` x{n}: mean {:.2} ms, median {:.2} ms, p95 {:.2} ms, min {:.2} ms",
        ms(mean),
        ms(times[times.len() / 2]),
        ms(times[times.len() * 95 / 100]),
        ms(times[0])
    );

    for (label, cmd) in [
        ("spawn failure (/nonexistent)", "/nonexistent"),
        ("/bin/true (no PATH search)", "/bin/true"),
        ("true (PATH search)", "true"),
    ] {
        let mut times: Vec<Duration> = (0..40)
            .map(|i| {
                let t = Instant::now();
                let _ = c.exec(500 + i, &argv(&[cmd]));
                t.elapsed()
            })
            .collect();
        times.sort();
        println!(
            "  round trip of {label} x40: median {:.2} ms, min {:.2} ms",
            ms(times[times.len() / 2]),
            ms(times[0])
        );
    }
    let out = c.exec(
        2,
        &sh(
            "read a _ < /proc/uptime; for i in $(seq 200); do /bin/true; done; \
             read b _ < /proc/uptime; echo $a $b",
        ),
    );
    let v: Vec<f64> = out
        .stdout_str()
        .split_whitespace()
        .map(|x| x.parse().unwrap())
        .collect();
    println!(
        "in-guest spawn loop (busybox sh, /bin/true x200): {:.2} ms per spawn",
        (v[1] - v[0]) * 1000.0 / 200.0
    );

    let bytes = 32 << 20;
    let t = Instant::now();
    // dd with 64 KiB blocks: busybox `head -c` writes small blocks and is itself the
    // bottleneck under TCG.
    let out = c.exec(
        3,
        &sh(&format!(
            "dd if=/dev/zero bs=65536 count={} 2>/dev/null",
            bytes >> 16
        )),
    );
    assert_eq!(out.stdout.len(), bytes);
    println!(
        "stdout throughput: {:.1} MiB/s ({} MiB in {:.0} ms)",
        (bytes >> 20) as f64 / t.elapsed().as_secs_f64(),
        bytes >> 20,
        ms(t.elapsed())
    );

    let data = vec![0x5au8; 16 << 20];
    let t = Instant::now();
    c.send(&Frame::json(
        Kind::FilePush,
        4,
        &FilePush {
            path: "/tmp/blob".into(),
            mode: 0o644,
            create_dirs: false,
        },
    ));
    for chunk in data.chunks(MAX_CHUNK) {
        c.send(&Frame::new(Kind::FileData, 4, chunk.to_vec()));
    }
    c.send(&Frame::new(Kind::FileEnd, 4, Vec::new()));
    let f = c.recv();
    assert_eq!(f.kind, Kind::FileDone, "{f:?}");
    assert_eq!(f.parse_json::<FileDone>().unwrap().size, data.len() as u64);
    println!(
        "file push throughput: {:.1} MiB/s (16 MiB in {:.0} ms)",
        16.0 / t.elapsed().as_secs_f64(),
        ms(t.elapsed())
    );

    std::thread::sleep(Duration::from_secs(1));
    let out = c.exec(
        5,
        &sh("grep -E 'VmRSS|VmHWM' /proc/1/status | tr -s ' \\t' ' '"),
    );
    println!(
        "agent (pid 1) after the above: {}",
        out.stdout_str().replace('\n', "; ")
    );

    let t = Instant::now();
    c.send(&Frame::json(
        Kind::Shutdown,
        0,
        &ShutdownRequest { reboot: false },
    ));
    assert_eq!(c.recv().kind, Kind::ShutdownAck);
    vm.wait_exit(Duration::from_secs(60));
    println!(
        "shutdown: qemu exited {:.0} ms after the request",
        ms(t.elapsed())
    );
}

//! `cargo bench -p flotilla-driver --bench links`: round-trip latency and TCP throughput
//! between two VMs, over the VDE backend and over multicast, side by side in one run.
//!
//! Each backend boots a fresh pair of machines (`a`, `b` on VLAN 1). Latency is the
//! average of `ping -c 20 -i 0.1` from `a` to `b`; throughput is `a` fetching a 16 MiB
//! file from busybox `httpd` on `b` (bytes counted), timed on the host around the guest
//! command.
//! `BENCH_MIB` changes the size.

use std::time::Instant;

use flotilla_driver::{Fleet, FleetOptions, Spec};

#[tokio::main]
async fn main() {
    let mib: u64 = std::env::var("BENCH_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(16);
    let dir = tempfile::tempdir().expect("temp dir");
    let mut rows = Vec::new();
    for backend in ["vde", "multicast"] {
        let text = format!("[network]\nbackend = \"{backend}\"\n[machines.a]\n[machines.b]\n");
        let spec = Spec::parse(&dir.path().join(format!("{backend}.toml")), &text).expect("spec");
        let mut options = FleetOptions::new(dir.path().join(backend));
        options.terminal = false;
        // Boots, as the figures say (not restores).
        options.snapshot = false;
        let net = Fleet::new(&spec, options).expect("network");
        net.start_all().await.expect("boot");
        let a = net.machine("a").expect("a");
        let b = net.machine("b").expect("b");
        // Warm up ARP and the path.
        a.succeed("ping -c 2 -i 0.2 b").await.expect("ping");
        let ping = a.succeed("ping -c 20 -i 0.1 b").await.expect("ping");
        let rtt: f64 = ping
            .lines()
            .find(|l| l.contains("round-trip"))
            .and_then(|l| l.split('=').nth(1))
            .and_then(|v| v.split('/').nth(1))
            .and_then(|v| v.trim().parse().ok())
            .expect("ping summary");
        b.succeed(&format!(
            "mkdir -p /srv && dd if=/dev/zero of=/srv/blob bs=65536 count={} 2>/dev/null \
             && httpd -p 80 -h /srv",
            mib * 16
        ))
        .await
        .expect("serve");
        let started = Instant::now();
        let got = a
            .succeed("wget -q -O - http://b/blob | wc -c")
            .await
            .expect("fetch");
        assert_eq!(
            got.trim(),
            (mib * 1024 * 1024).to_string(),
            "bytes received"
        );
        let secs = started.elapsed().as_secs_f64();
        net.stop_all().await;
        eprintln!("{backend}: rtt {rtt:.2} ms, {mib} MiB in {secs:.2} s");
        rows.push((backend, rtt, mib as f64 / secs));
    }
    println!();
    println!(
        "links between two VMs, {mib} MiB over TCP, accelerator {}",
        flotilla_driver::detect_accel()
    );
    println!("{:<12} {:>14} {:>16}", "backend", "rtt (ms)", "throughput");
    for (backend, rtt, mbps) in rows {
        println!("{backend:<12} {rtt:>14.2} {:>11.1} MiB/s", mbps);
    }
}

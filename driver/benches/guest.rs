//! `cargo bench -p flotilla-driver --bench guest`: what one test step costs, side by
//! side with its floor, in one run on one machine.
//!
//! - exec: `succeed("true")` through flotilla-agent (200 runs, median and p99), the
//!   in-guest floor (the same `sh -c true` spawned in a loop inside the guest, per
//!   iteration), and the stock path: Debian's qemu-ga, copied into the same guest and
//!   driven over QGA (`guest-exec` + `guest-exec-status` polling, 50 runs), once as
//!   the driver does it (pauses from 5 ms, doubling) and once polling back to back,
//!   the best any QGA client can do.
//! - files: push (`copy_to`) and pull (`copy_from`) of 64 MiB against the floor of
//!   `cat` of the same file streamed over the same port.
//!
//! `BENCH_RUNS` and `BENCH_MIB` change the counts.
//!
//! The subject failing (a boot, a command, a copy) panics: a non-zero exit. A missing
//! peer (the host's `/usr/sbin/qemu-ga`, from `qemu-guest-agent`) is named in the
//! header, its rows are left out, and the bench exits 3 after the table unless
//! `--accept-missing` is passed.

use std::time::{Duration, Instant};

use common::env;
use flotilla_driver::{Fleet, FleetOptions, Machine, Spec};

mod common;

fn stats(v: &mut [Duration]) -> (f64, f64) {
    v.sort();
    let at = |q: f64| v[((v.len() as f64 - 1.0) * q).round() as usize].as_secs_f64() * 1e3;
    (at(0.5), at(0.99))
}

/// Seconds per iteration of `sh -c true` in a loop inside the guest.
async fn in_guest_floor(vm: &Machine, n: u64) -> f64 {
    let out = vm
        .succeed(&format!(
            "a=$(cut -d' ' -f1 /proc/uptime); i=0; while [ $i -lt {n} ]; do /bin/sh -c true; i=$((i+1)); done; \
             b=$(cut -d' ' -f1 /proc/uptime); echo $a $b"
        ))
        .await
        .expect("floor loop");
    let mut it = out
        .split_whitespace()
        .map(|x| x.parse::<f64>().expect("uptime"));
    let (a, b) = (it.next().expect("start"), it.next().expect("end"));
    (b - a) / n as f64
}

/// Installs Debian's qemu-ga (with its libraries) into the guest and starts it on the
/// machine's QGA port.
async fn start_qemu_ga(vm: &Machine, dir: &std::path::Path) {
    let out = std::process::Command::new("ldd")
        .arg("/usr/sbin/qemu-ga")
        .output()
        .expect("ldd");
    let mut files = vec!["/usr/sbin/qemu-ga".to_owned()];
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        if let Some(p) = line
            .split("=>")
            .last()
            .and_then(|r| r.split_whitespace().next())
            .filter(|p| p.starts_with('/'))
        {
            files.push(p.to_owned());
        }
    }
    for f in &files {
        let copy = dir.join(f.trim_start_matches('/').replace('/', "_"));
        std::fs::copy(f, &copy).expect("copy a library");
        vm.copy_to(&copy, f).await.expect("push qemu-ga");
    }
    vm.succeed(
        "for d in /sys/class/virtio-ports/*; do \
           [ \"$(cat $d/name)\" = org.qemu.guest_agent.0 ] && p=/dev/${d##*/}; done; \
         mkdir -p /var/run; (/usr/sbin/qemu-ga -m virtio-serial -p $p >/dev/null 2>&1 &)",
    )
    .await
    .expect("start qemu-ga");
}

#[tokio::main]
async fn main() {
    let runs = env("BENCH_RUNS", 200) as usize;
    let mib = env("BENCH_MIB", 64);
    let dir = tempfile::tempdir().expect("temp dir");
    let spec = Spec::parse(
        &dir.path().join("bench.toml"),
        "[machines.vm]\nmemory = 512\n",
    )
    .expect("spec");
    let mut options = FleetOptions::new(dir.path().join("out"));
    options.terminal = false;
    // Boots, as the figures say (not restores).
    options.snapshot = false;
    let net = Fleet::new(&spec, options).expect("network");
    let vm = net.machine("vm").expect("vm");
    vm.start().await.expect("boot");

    // exec round trips
    for _ in 0..10 {
        vm.succeed("true").await.expect("warm up");
    }
    let mut agent = Vec::with_capacity(runs);
    for _ in 0..runs {
        let t = Instant::now();
        vm.succeed("true").await.expect("true");
        agent.push(t.elapsed());
    }
    let floor = in_guest_floor(&vm, runs as u64).await * 1e3;

    let mut missing = Vec::new();
    let mut stock = Vec::new();
    let mut eager = Vec::new();
    if std::path::Path::new("/usr/sbin/qemu-ga").is_file() {
        start_qemu_ga(&vm, dir.path()).await;
        let qga = vm.qga_client().await.expect("qga");
        qga.wait_ready(Duration::from_secs(30))
            .await
            .expect("qemu-ga ready");
        let qga = qga.with_timeout(Duration::from_secs(30));
        for _ in 0..(runs / 4).max(10) {
            let t = Instant::now();
            let out = qga
                .run("/bin/sh", &["-c", "true"], Duration::from_secs(30))
                .await
                .expect("qga run");
            assert!(out.success());
            stock.push(t.elapsed());
        }
        // The best any QGA client can do: `guest-exec-status` asked again as soon as
        // it answers, so the time is qemu-ga's own spawn and bookkeeping, not a poll
        // interval.
        for _ in 0..(runs / 4).max(10) {
            let t = Instant::now();
            let pid = qga
                .exec("/bin/sh", &["-c", "true"])
                .await
                .expect("qga exec");
            while !qga.exec_status(pid).await.expect("qga status").exited {}
            eager.push(t.elapsed());
        }
    } else {
        missing.push("qemu-ga: no /usr/sbin/qemu-ga on the host (apt-get install qemu-guest-agent; scripts/setup does)");
    }

    // files
    let blob = dir.path().join("blob");
    // Printable bytes: `execute` hands stdout over as text, so the floor's count holds.
    let data: Vec<u8> = (0..mib * 1024 * 1024)
        .map(|i| b'a' + ((i * 7 + i / 4096) % 26) as u8)
        .collect();
    std::fs::write(&blob, &data).expect("blob");
    let t = Instant::now();
    vm.copy_to(&blob, "/tmp/blob").await.expect("push");
    let push = t.elapsed().as_secs_f64();
    let t = Instant::now();
    vm.copy_from("/tmp/blob", &dir.path().join("back"))
        .await
        .expect("pull");
    let pull = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let cat = vm.execute("cat /tmp/blob").await.expect("cat");
    let cat_secs = t.elapsed().as_secs_f64();
    assert_eq!(
        cat.stdout.len() as u64,
        mib * 1024 * 1024,
        "cat streamed everything"
    );
    assert!(
        std::fs::read(dir.path().join("back")).expect("back") == data,
        "pull is exact"
    );
    net.stop_all().await;

    let (am, ap) = stats(&mut agent);
    println!();
    println!(
        "guest round trips, accelerator {}",
        flotilla_driver::detect_accel()
    );
    for m in &missing {
        println!("MISSING {m}");
    }
    println!(
        "{:<44} {:>10} {:>10} {:>10}",
        "exec of `true`", "median ms", "p99 ms", "x floor"
    );
    println!(
        "{:<44} {:>10.2} {:>10} {:>10.2}",
        "floor: sh -c true in a loop in the guest", floor, "", 1.0
    );
    println!(
        "{:<44} {:>10.2} {:>10.2} {:>10.2}",
        format!("flotilla-agent: succeed(\"true\"), {runs} runs"),
        am,
        ap,
        am / floor
    );
    if !stock.is_empty() {
        let (sm, sp) = stats(&mut stock);
        let (em, ep) = stats(&mut eager);
        println!(
            "{:<44} {:>10.2} {:>10.2} {:>10.2}",
            format!("qemu-ga: guest-exec + status, {} runs", stock.len()),
            sm,
            sp,
            sm / floor
        );
        println!(
            "{:<44} {:>10.2} {:>10.2} {:>10.2}",
            format!("qemu-ga: status polled back to back, {}", eager.len()),
            em,
            ep,
            em / floor
        );
        println!(
            "flotilla-agent is {:.1}x faster than the qemu-ga path ({:.1}x with back-to-back polling)",
            sm / am,
            em / am
        );
    }
    println!();
    println!(
        "{:<44} {:>10} {:>10}",
        format!("files, {mib} MiB"),
        "seconds",
        "MiB/s"
    );
    for (name, secs) in [
        ("floor: cat over the agent port", cat_secs),
        ("flotilla-agent: copy_to (push)", push),
        ("flotilla-agent: copy_from (pull)", pull),
    ] {
        println!("{name:<44} {secs:>10.2} {:>10.1}", mib as f64 / secs);
    }
    if !missing.is_empty() && !std::env::args().any(|a| a == "--accept-missing") {
        eprintln!(
            "guest: {} peer(s) missing; pass --accept-missing to accept the table as it is",
            missing.len()
        );
        std::process::exit(3);
    }
}

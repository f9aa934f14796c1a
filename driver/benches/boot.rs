//! `cargo bench -p flotilla-driver --bench boot`: how far a one-machine Flotilla test is
//! from the hand-made floor, measured side by side in the same run.
//!
//! - floor: QEMU with the same machine flags boots the same kernel with a minimal
//!   initramfs (static busybox, `/init` a shell script that prints one line); time from
//!   spawning QEMU to that line on the serial console. A second floor adds the kernel
//!   flags Flotilla passes too ([`FLAGS`]: no boot-time crypto self-tests, no IO-APIC
//!   timer check). A third also boots through qboot instead of SeaBIOS, as Flotilla
//!   does for machines without a display. A fourth also boots the unpacked `vmlinux`
//!   through its PVH entry instead of the self-decompressing `vmlinuz`, as Flotilla
//!   does: the like-for-like floor ("same").
//! - flotilla ready: `Machine::start` (spawn to agent handshake done).
//! - flotilla echo hi: a fresh machine from nothing to `succeed("echo hi")` returned,
//!   the whole of a one-machine test.
//! - trixie kernel floor: the qboot floor with Debian trixie's cloud kernel, which
//!   trixie machines boot as a bzImage through qboot (its zstd payload is not unpacked
//!   for PVH), against the same floor with the default guest's (bookworm's) kernel.
//! - debian bookworm agent-init ready: the same for a machine booting a Debian
//!   bookworm image built with `Init::Agent` (stage 1 mounts it and starts the agent
//!   as PID 1 of the Debian root).
//! - debian bookworm / trixie systemd ready: a Debian image of that release with
//!   systemd, whose agent is an early service, booting that release's kernel
//!   (`release` in the spec beside `image`); boot finished: from the same start until
//!   `systemctl is-system-running --wait` returns (it must say `running`), the rest of
//!   the boot included. Each run boots both releases one after the other; under the
//!   table, trixie's medians against bookworm's.
//!
//! - restored rows: the same machines started from their snapshot (saved by a first,
//!   unmeasured start with a tag of this run on the kernel command line, so the states
//!   are this run's), to agent-ready; and a network of `BENCH_NETWORK` (default 16)
//!   default-guest machines on one VLAN, all ready, booted against restored.
//!
//! - arm64 rows (`arch = "aarch64"`, emulated: TCG whatever the host has): the floor
//!   with the arm64 kernel, busybox, `virt` machine, CPU and console; the default guest
//!   ready, booted and restored; arm64 Debian bookworm and trixie systemd machines
//!   ready, booted and restored; a network of two arm64 and two x86 default guests, all
//!   ready. Under the table, the arm64 medians against the x86 ones.
//!
//! - debian bookworm sysvinit / openrc ready: the same for bookworm images with those
//!   inits (the agent an init script / an `openrc-run` service), to agent-ready.
//! - net-config: from a cold default-guest run's `driver.log`, the time the driver's
//!   one `net-config` request took (`network configured by ... in N ms`).
//!
//! The Debian rows also compare with the default guest (`x guest`, against "flotilla:
//! agent ready"). Their images are built first with `flotilla_driver::debian::build`
//! (the debootstrapped trees are cached: a minute or two on a host's first run, then
//! seconds); the builder's step lines and times are printed under the table, with
//! two more builds: a new image from a cached tree (a systemd image with `curl`, its
//! size unique to this run so that no cached image serves it), then the same again,
//! found in the image cache.
//!
//! `BENCH_RUNS` sets the number of runs (default 5).
//!
//! The subject failing (a boot, a floor, an image build) panics: a non-zero exit. A
//! missing peer (qboot, or a kernel whose vmlinux cannot be unpacked, so that rows
//! would compare other things than they say, or a host tool the Debian images need,
//! whose rows are then left out) is named in the header and exits 3 after the table,
//! unless `--accept-missing` is passed (`cargo bench -p flotilla-driver --bench boot --
//! --accept-missing`).

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

mod floor;

use std::time::{Duration, Instant};

use std::path::{Path, PathBuf};

use flotilla_driver::debian::{self, DebianOptions, Init, Release};
use flotilla_driver::image::Kernel;
use flotilla_driver::{detect_accel, Accel, Arch, Fleet, FleetOptions, Spec};

/// The kernel flags Flotilla adds (see `driver/src/plan/qemu_command.rs`).
const FLAGS: &str = " cryptomgr.notests no_timer_check";

fn main() {
    let runs: usize = std::env::var("BENCH_RUNS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(5);
    let kernel = Kernel::locate(Arch::host()).expect("a kernel: run scripts/setup");
    let accel = detect_accel();
    let dir = tempfile::tempdir().expect("temp dir");
    let floor_initrd = floor::initramfs(dir.path(), Arch::host(), "");
    let arm64 = Arch::named("aarch64").expect("aarch64 in the table");
    let arm64_kernel = Kernel::locate(arm64).expect("an arm64 kernel: run scripts/setup");
    let arm64_floor_initrd = floor::initramfs(dir.path(), arm64, "");
    let runtime = tokio::runtime::Runtime::new().expect("runtime");

    let mut floor = Vec::new();
    let mut floor_fast = Vec::new();
    let mut floor_qboot = Vec::new();
    let mut floor_pvh = Vec::new();
    let qboot = flotilla_driver::qboot_firmware(flotilla_driver::Arch::host());
    let boot = flotilla_driver::vmlinux::boot_kernel(&kernel);
    // Debian trixie's kernel, which trixie machines boot (bookworm's is the default
    // guest's, `kernel` above).
    let trixie_kernel = Kernel::of_release(Release::Trixie, Arch::host())
        .expect("Debian trixie's kernel: run scripts/setup");
    let trixie_boot = flotilla_driver::vmlinux::boot_kernel(&trixie_kernel);
    let mut floor_trixie = Vec::new();
    let mut missing = Vec::new();
    if qboot.is_none() {
        missing.push("qboot: not among QEMU's firmware (the qboot rows boot SeaBIOS)".to_owned());
    }
    if boot.path == kernel.image {
        missing.push(format!(
            "vmlinux: {} (the vmlinux rows boot vmlinuz)",
            boot.note
        ));
    }
    let mut builds = Vec::new();
    let images = debian_images(dir.path(), &mut missing, &mut builds);
    let mut ready = Vec::new();
    let mut echo = Vec::new();
    let mut agent_init = Vec::new();
    let mut systemd_ready = Vec::new();
    let mut systemd_finished = Vec::new();
    let mut restored = Vec::new();
    let mut systemd_restored = Vec::new();
    let mut trixie_ready = Vec::new();
    let mut trixie_finished = Vec::new();
    let mut trixie_restored = Vec::new();
    let mut sysvinit_ready = Vec::new();
    let mut openrc_ready = Vec::new();
    let mut net_config = Vec::new();
    let mut network_cold = Vec::new();
    let mut network_restored = Vec::new();
    let mut arm64_floor = Vec::new();
    let mut arm64_ready = Vec::new();
    let mut arm64_restored = Vec::new();
    let mut mixed = Vec::new();
    let mut arm64_systemd_ready = Vec::new();
    let mut arm64_systemd_restored = Vec::new();
    let mut arm64_trixie_ready = Vec::new();
    let mut arm64_trixie_restored = Vec::new();
    let machines: usize = std::env::var("BENCH_NETWORK")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(16);
    let tag = std::process::id().to_string();
    // The states the restored rows start from, saved once, unmeasured.
    for arch in [Arch::host(), arm64] {
        runtime.block_on(flotilla_run(dir.path(), arch, 0, Some(&tag)));
    }
    if let Some(images) = &images {
        for (arch, image) in [
            (Arch::host(), &images.systemd),
            (Arch::host(), &images.trixie_systemd),
            (arm64, &images.arm64_systemd),
            (arm64, &images.arm64_trixie_systemd),
        ] {
            runtime.block_on(debian_run(dir.path(), arch, image, 0, false, Some(&tag)));
        }
    }
    for i in 0..runs {
        let vmlinuz = &kernel.image;
        floor.push(boot_floor(vmlinuz, &floor_initrd, accel.accel, "", None));
        floor_fast.push(boot_floor(vmlinuz, &floor_initrd, accel.accel, FLAGS, None));
        floor_qboot.push(boot_floor(
            vmlinuz,
            &floor_initrd,
            accel.accel,
            FLAGS,
            qboot.as_deref(),
        ));
        floor_pvh.push(boot_floor(
            &boot.path,
            &floor_initrd,
            accel.accel,
            FLAGS,
            qboot.as_deref(),
        ));
        floor_trixie.push(boot_floor(
            &trixie_boot.path,
            &floor_initrd,
            accel.accel,
            FLAGS,
            qboot.as_deref(),
        ));
        let (r, e) = runtime.block_on(flotilla_run(dir.path(), Arch::host(), i, None));
        ready.push(r);
        echo.push(e);
        net_config.extend(net_config_time(
            &dir.path().join(format!("out-{}-{i}", Arch::host())),
        ));
        restored.push(
            runtime
                .block_on(flotilla_run(dir.path(), Arch::host(), i + 1, Some(&tag)))
                .0,
        );
        arm64_floor.push(
            floor::Floor {
                arch: arm64,
                cpu: arm64.tcg_cpu,
                kernel: &arm64_kernel.image,
                initrd: &arm64_floor_initrd,
                accel: Accel::Tcg,
                extra: FLAGS,
                bios: None,
            }
            .boot()
            .ready,
        );
        arm64_ready.push(runtime.block_on(flotilla_run(dir.path(), arm64, i, None)).0);
        arm64_restored.push(
            runtime
                .block_on(flotilla_run(dir.path(), arm64, i + 1, Some(&tag)))
                .0,
        );
        eprintln!(
            "run {}: arm64 floor {:.2} s, ready {:.2} s, restored {:.2} s",
            i + 1,
            arm64_floor[i].as_secs_f64(),
            arm64_ready[i].as_secs_f64(),
            arm64_restored[i].as_secs_f64()
        );
        eprintln!(
            "run {}: floor {:.2} s ({:.2} s with our flags, {:.2} s also with qboot, {:.2} s also with vmlinux; trixie's kernel with flags and qboot {:.2} s), ready {:.2} s, echo hi {:.2} s",
            i + 1,
            floor[i].as_secs_f64(),
            floor_fast[i].as_secs_f64(),
            floor_qboot[i].as_secs_f64(),
            floor_pvh[i].as_secs_f64(),
            floor_trixie[i].as_secs_f64(),
            ready[i].as_secs_f64(),
            echo[i].as_secs_f64()
        );
        if let Some(images) = &images {
            let (r, _) = runtime.block_on(debian_run(
                dir.path(),
                Arch::host(),
                &images.agent,
                i,
                false,
                None,
            ));
            agent_init.push(r);
            let (r, _) = runtime.block_on(debian_run(
                dir.path(),
                Arch::host(),
                &images.sysvinit,
                i,
                false,
                None,
            ));
            sysvinit_ready.push(r);
            let (r, _) = runtime.block_on(debian_run(
                dir.path(),
                Arch::host(),
                &images.openrc,
                i,
                false,
                None,
            ));
            openrc_ready.push(r);
            let systemd_image = &images.systemd;
            let (r, f) = runtime.block_on(debian_run(
                dir.path(),
                Arch::host(),
                systemd_image,
                i,
                true,
                None,
            ));
            systemd_ready.push(r);
            systemd_finished.push(f);
            let (r, _) = runtime.block_on(debian_run(
                dir.path(),
                Arch::host(),
                systemd_image,
                i + 1,
                false,
                Some(&tag),
            ));
            systemd_restored.push(r);
            // trixie's systemd machine, measured the same way right after bookworm's.
            let trixie_image = &images.trixie_systemd;
            let (r, f) = runtime.block_on(debian_run(
                dir.path(),
                Arch::host(),
                trixie_image,
                i,
                true,
                None,
            ));
            trixie_ready.push(r);
            trixie_finished.push(f);
            let (r, _) = runtime.block_on(debian_run(
                dir.path(),
                Arch::host(),
                trixie_image,
                i + 1,
                false,
                Some(&tag),
            ));
            trixie_restored.push(r);
            for (image, booted, from_snapshot) in [
                (
                    &images.arm64_systemd,
                    &mut arm64_systemd_ready,
                    &mut arm64_systemd_restored,
                ),
                (
                    &images.arm64_trixie_systemd,
                    &mut arm64_trixie_ready,
                    &mut arm64_trixie_restored,
                ),
            ] {
                let (r, _) = runtime.block_on(debian_run(dir.path(), arm64, image, i, false, None));
                booted.push(r);
                let (r, _) = runtime.block_on(debian_run(
                    dir.path(),
                    arm64,
                    image,
                    i + 1,
                    false,
                    Some(&tag),
                ));
                from_snapshot.push(r);
            }
            eprintln!(
                "run {}: debian bookworm agent-init ready {:.2} s, sysvinit {:.2} s, openrc {:.2} s, systemd ready {:.2} s, boot finished {:.2} s, restored {:.2} s",
                i + 1,
                agent_init[i].as_secs_f64(),
                sysvinit_ready[i].as_secs_f64(),
                openrc_ready[i].as_secs_f64(),
                systemd_ready[i].as_secs_f64(),
                systemd_finished[i].as_secs_f64(),
                systemd_restored[i].as_secs_f64()
            );
            eprintln!(
                "run {}: debian trixie systemd ready {:.2} s, boot finished {:.2} s, restored {:.2} s",
                i + 1,
                trixie_ready[i].as_secs_f64(),
                trixie_finished[i].as_secs_f64(),
                trixie_restored[i].as_secs_f64()
            );
            eprintln!(
                "run {}: arm64 debian systemd ready, restored: bookworm {:.2} s, {:.2} s; trixie {:.2} s, {:.2} s",
                i + 1,
                arm64_systemd_ready[i].as_secs_f64(),
                arm64_systemd_restored[i].as_secs_f64(),
                arm64_trixie_ready[i].as_secs_f64(),
                arm64_trixie_restored[i].as_secs_f64()
            );
        }
    }
    for i in 0..runs {
        let two_and_two = [arm64, arm64, Arch::host(), Arch::host()];
        mixed.push(runtime.block_on(network_run(dir.path(), i, &two_and_two, None)));
        eprintln!(
            "run {}: 2 arm64 + 2 x86 machines ready: booted {:.2} s",
            i + 1,
            mixed[i].as_secs_f64()
        );
    }
    for i in 0..runs {
        if machines == 0 {
            break;
        }
        let x86s = vec![Arch::host(); machines];
        network_cold.push(runtime.block_on(network_run(dir.path(), i, &x86s, None)));
        network_restored.push(runtime.block_on(network_run(dir.path(), i, &x86s, Some(&tag))));
        eprintln!(
            "run {}: {machines} machines ready: booted {:.2} s, restored {:.2} s",
            i + 1,
            network_cold[i].as_secs_f64(),
            network_restored[i].as_secs_f64()
        );
    }
    let f = median(&mut floor);
    let same = median(&mut floor_pvh);
    let guest = median(&mut ready);
    println!();
    println!(
        "boot, {runs} runs, accelerator {accel}, qboot {}",
        qboot
            .as_ref()
            .map_or("missing (SeaBIOS everywhere)".into(), |p| p
                .display()
                .to_string())
    );
    println!("kernel: {}", boot.note);
    println!(
        "kernel of the trixie rows ({}): {}",
        trixie_kernel.version, trixie_boot.note
    );
    for m in &missing {
        println!("MISSING {m}");
    }
    let network_cold_name = format!("{machines} machines: all ready, booted");
    let network_restored_name = format!("{machines} machines: all ready, restored");
    println!(
        "{:<46} {:>10} {:>10} {:>10} {:>8} {:>10} {:>8}",
        "", "median", "min", "max", "x floor", "x same", "x guest"
    );
    for (name, v) in [
        ("floor: busybox /init first line", &mut floor),
        ("floor + Flotilla's kernel flags", &mut floor_fast),
        ("floor + flags + qboot", &mut floor_qboot),
        ("floor + flags + qboot + vmlinux (same)", &mut floor_pvh),
        ("trixie kernel floor: flags + qboot", &mut floor_trixie),
        ("flotilla: agent ready (guest)", &mut ready),
        ("flotilla: test `echo hi`", &mut echo),
        ("flotilla: agent ready, restored", &mut restored),
        ("arm64 floor: busybox /init first line", &mut arm64_floor),
        ("arm64 flotilla: agent ready (guest)", &mut arm64_ready),
        ("arm64 flotilla: agent ready, restored", &mut arm64_restored),
        ("2 arm64 + 2 x86 machines: all ready", &mut mixed),
        ("debian bookworm agent-init: ready", &mut agent_init),
        ("debian bookworm systemd: ready", &mut systemd_ready),
        (
            "debian bookworm systemd: boot finished",
            &mut systemd_finished,
        ),
        (
            "debian bookworm systemd: ready, restored",
            &mut systemd_restored,
        ),
        ("debian trixie systemd: ready", &mut trixie_ready),
        ("debian trixie systemd: boot finished", &mut trixie_finished),
        (
            "debian trixie systemd: ready, restored",
            &mut trixie_restored,
        ),
        (
            "arm64 debian bookworm systemd: ready",
            &mut arm64_systemd_ready,
        ),
        (
            "arm64 debian bookworm systemd: ready, restored",
            &mut arm64_systemd_restored,
        ),
        (
            "arm64 debian trixie systemd: ready",
            &mut arm64_trixie_ready,
        ),
        (
            "arm64 debian trixie systemd: ready, restored",
            &mut arm64_trixie_restored,
        ),
        ("debian bookworm sysvinit: ready", &mut sysvinit_ready),
        ("debian bookworm openrc: ready", &mut openrc_ready),
        ("net-config request (driver.log)", &mut net_config),
        (&network_cold_name, &mut network_cold),
        (&network_restored_name, &mut network_restored),
    ] {
        if v.is_empty() {
            continue;
        }
        let m = median(v);
        println!(
            "{name:<46} {:>9.2}s {:>9.2}s {:>9.2}s {:>7.2}x {:>9.2}x {:>7.2}x",
            m.as_secs_f64(),
            v.iter().min().copied().unwrap_or_default().as_secs_f64(),
            v.iter().max().copied().unwrap_or_default().as_secs_f64(),
            m.as_secs_f64() / f.as_secs_f64(),
            m.as_secs_f64() / same.as_secs_f64(),
            m.as_secs_f64() / guest.as_secs_f64()
        );
    }
    if !arm64_ready.is_empty() {
        let ratio = |a: &mut Vec<Duration>, b: &mut Vec<Duration>| {
            median(a).as_secs_f64() / median(b).as_secs_f64()
        };
        println!();
        println!(
            "arm64 against x86 (medians): agent ready {:.2}x (target 2.5x), restored {:.2}x (target 1.5x)",
            ratio(&mut arm64_ready, &mut ready),
            ratio(&mut arm64_restored, &mut restored)
        );
        if !arm64_systemd_ready.is_empty() {
            println!(
                "arm64 against x86 debian bookworm systemd (medians): ready {:.2}x, restored {:.2}x",
                ratio(&mut arm64_systemd_ready, &mut systemd_ready),
                ratio(&mut arm64_systemd_restored, &mut systemd_restored)
            );
            println!(
                "arm64 against x86 debian trixie systemd (medians): ready {:.2}x, restored {:.2}x",
                ratio(&mut arm64_trixie_ready, &mut trixie_ready),
                ratio(&mut arm64_trixie_restored, &mut trixie_restored)
            );
        }
    }
    if !trixie_ready.is_empty() {
        let ratio = |a: &mut Vec<Duration>, b: &mut Vec<Duration>| {
            median(a).as_secs_f64() / median(b).as_secs_f64()
        };
        println!();
        println!(
            "debian trixie against bookworm systemd (medians): ready {:.2}x, boot finished {:.2}x, restored {:.2}x; arm64: ready {:.2}x, restored {:.2}x",
            ratio(&mut trixie_ready, &mut systemd_ready),
            ratio(&mut trixie_finished, &mut systemd_finished),
            ratio(&mut trixie_restored, &mut systemd_restored),
            ratio(&mut arm64_trixie_ready, &mut arm64_systemd_ready),
            ratio(&mut arm64_trixie_restored, &mut arm64_systemd_restored)
        );
    }
    if !floor_trixie.is_empty() {
        let ratio = |a: &mut Vec<Duration>, b: &mut Vec<Duration>| {
            median(a).as_secs_f64() / median(b).as_secs_f64()
        };
        println!(
            "trixie's kernel floor against the same floor with bookworm's vmlinuz (qboot, medians): {:.2}x; against bookworm's vmlinux through PVH (same): {:.2}x",
            ratio(&mut floor_trixie, &mut floor_qboot),
            ratio(&mut floor_trixie, &mut floor_pvh)
        );
    }
    if !builds.is_empty() {
        println!();
        println!("debian image builds (flotilla_driver::debian::build, the builder's own lines):");
        for line in &builds {
            println!("  {line}");
        }
    }
    if !missing.is_empty() && !std::env::args().any(|a| a == "--accept-missing") {
        eprintln!(
            "boot: {} peer(s) missing; pass --accept-missing to accept the table as it is",
            missing.len()
        );
        std::process::exit(3);
    }
}

fn median(v: &mut [Duration]) -> Duration {
    v.sort();
    v.get(v.len() / 2).copied().unwrap_or_default()
}

/// A fresh default-guest machine: the time to agent-ready and to `echo hi`; booted,
/// or with `restore_tag` started from the snapshot of that tag.
async fn flotilla_run(
    dir: &Path,
    arch: &Arch,
    i: usize,
    restore_tag: Option<&str>,
) -> (Duration, Duration) {
    let mut text = format!("[machines.vm]\narch = \"{arch}\"\n");
    if let Some(tag) = restore_tag {
        text.push_str(&format!("kernel_args = \"flotilla.bench={tag}\"\n"));
    }
    let spec = Spec::parse(&dir.join("bench.toml"), &text).expect("spec");
    let suffix = if restore_tag.is_some() { "r" } else { "" };
    let log_dir = dir.join(format!("out-{arch}-{i}{suffix}"));
    let mut options = FleetOptions::new(log_dir.clone());
    options.terminal = false;
    options.snapshot = restore_tag.is_some();
    let started = Instant::now();
    let net = Fleet::new(&spec, options).expect("network");
    let vm = net.machine("vm").expect("machine");
    vm.start().await.expect("boot");
    let ready = started.elapsed();
    let out = vm.succeed("echo hi").await.expect("echo hi");
    let echo = started.elapsed();
    assert_eq!(out, "hi\n");
    net.stop_all().await;
    if restore_tag.is_some() && i > 0 {
        assert_restored(&log_dir, 1);
    }
    (ready, echo)
}

/// A Debian image a row boots, and the release it was built of, whose kernel its
/// machine boots.
struct DebianImage {
    path: PathBuf,
    release: Release,
}

/// The Debian images the rows boot: bookworm's of each init, and trixie's systemd
/// one, each also for arm64.
struct Images {
    agent: DebianImage,
    systemd: DebianImage,
    sysvinit: DebianImage,
    openrc: DebianImage,
    trixie_systemd: DebianImage,
    arm64_systemd: DebianImage,
    arm64_trixie_systemd: DebianImage,
}

/// The Debian images (bookworm: agent as init, systemd, sysvinit, OpenRC; trixie:
/// systemd; arm64: bookworm's and trixie's systemd), built in `dir`, then a new image
/// from a cached tree and the same found in the cache; the builder's lines and each
/// build's time go to `builds`. `None`, with the reason in `missing`, when the host
/// lacks a tool to build them.
fn debian_images(
    dir: &Path,
    missing: &mut Vec<String>,
    builds: &mut Vec<String>,
) -> Option<Images> {
    let mut built = Vec::new();
    // A size no cached image has: this run's new image is built, not found.
    let fresh_size = 1024 + u64::from(std::process::id() % 1000);
    let fresh = || DebianOptions {
        arch: flotilla_host::arch::Arch::host(),
        // bookworm, the default guest's kernel, as before there were releases.
        release: Release::Bookworm,
        init: Init::Systemd,
        packages: vec!["curl".to_owned()],
        size_mib: Some(fresh_size),
        output: dir.join("debian-fresh.qcow2"),
    };
    let arm64 = Arch::named("aarch64").expect("aarch64 in the table");
    let host = flotilla_host::arch::Arch::host();
    // Each release is named, bookworm's too: trixie is the default.
    let mut all: Vec<(String, DebianOptions)> = [
        (host, Release::Bookworm, Init::Agent),
        (host, Release::Bookworm, Init::Systemd),
        (host, Release::Bookworm, Init::Sysvinit),
        (host, Release::Bookworm, Init::Openrc),
        (host, Release::Trixie, Init::Systemd),
        (arm64, Release::Bookworm, Init::Systemd),
        (arm64, Release::Trixie, Init::Systemd),
    ]
    .into_iter()
    .map(|(arch, release, init)| {
        let prefix = if arch.is_host() { "" } else { "arm64 " };
        (
            format!("{prefix}{release} {init}"),
            DebianOptions {
                arch,
                release,
                init,
                packages: Vec::new(),
                size_mib: None,
                output: dir.join(format!(
                    "debian-{}{release}-{init}.qcow2",
                    prefix.replace(' ', "-")
                )),
            },
        )
    })
    .collect();
    all.push((
        format!("new: bookworm systemd + curl, {fresh_size} MiB"),
        fresh(),
    ));
    all.push((
        format!("again: bookworm systemd + curl, {fresh_size} MiB"),
        fresh(),
    ));
    for (label, options) in all {
        let lines = std::sync::Mutex::new(Vec::new());
        let started = Instant::now();
        let result = debian::build(&options, |line| {
            if let Ok(mut l) = lines.lock() {
                l.push(format!("{:6.1} s  {line}", started.elapsed().as_secs_f64()));
            }
        });
        let took = started.elapsed();
        match result {
            Ok(path) => built.push(DebianImage {
                path,
                release: options.release,
            }),
            Err(e @ flotilla_driver::image::Error::Setup { .. }) => {
                missing.push(format!("debian images: {e} (the debian rows are left out)"));
                return None;
            }
            Err(e) => panic!("building the {label} image: {e}"),
        }
        builds.push(format!("{label}: {:.1} s", took.as_secs_f64()));
        builds.extend(
            lines
                .into_inner()
                .unwrap_or_default()
                .into_iter()
                .map(|l| format!("    {l}")),
        );
        eprintln!(
            "debian ({label}): image built in {:.1} s",
            took.as_secs_f64()
        );
    }
    let mut built = built.into_iter();
    Some(Images {
        agent: built.next()?,
        systemd: built.next()?,
        sysvinit: built.next()?,
        openrc: built.next()?,
        trixie_systemd: built.next()?,
        arm64_systemd: built.next()?,
        arm64_trixie_systemd: built.next()?,
    })
}

/// The time the driver's `net-config` request took in the run logged in `out`
/// (`network configured by ... in N ms` in its `driver.log`).
fn net_config_time(out: &Path) -> Option<Duration> {
    let log = std::fs::read_to_string(out.join("driver.log")).ok()?;
    let line = log.lines().find(|l| l.contains("network configured by"))?;
    let ms = line.rsplit(" in ").next()?.strip_suffix(" ms")?.trim();
    Some(Duration::from_millis(ms.parse().ok()?))
}

/// A fresh machine booting `image` (with its release's kernel): the time to
/// agent-ready, and with `finished`, to `systemctl is-system-running --wait` returning
/// `running` (else zero); with `restore_tag`, started from the snapshot of that tag.
async fn debian_run(
    dir: &Path,
    arch: &Arch,
    image: &DebianImage,
    i: usize,
    finished: bool,
    restore_tag: Option<&str>,
) -> (Duration, Duration) {
    let mut text = format!(
        "[machines.vm]\narch = \"{arch}\"\nimage = \"{}\"\nrelease = \"{}\"\nmemory = 512\n",
        image.path.display(),
        image.release
    );
    if let Some(tag) = restore_tag {
        text.push_str(&format!("kernel_args = \"flotilla.bench={tag}\"\n"));
    }
    let spec = Spec::parse(&dir.join("debian.toml"), &text).expect("spec");
    let name = image.path.file_stem().unwrap_or_default().to_string_lossy();
    let suffix = if restore_tag.is_some() { "r" } else { "" };
    let mut options = FleetOptions::new(dir.join(format!("out-{name}-{i}{suffix}")));
    options.terminal = false;
    options.snapshot = restore_tag.is_some();
    let started = Instant::now();
    let net = Fleet::new(&spec, options).expect("network");
    let vm = net.machine("vm").expect("machine");
    vm.start().await.expect("boot");
    let ready = started.elapsed();
    let mut done = Duration::ZERO;
    if finished {
        let state = vm
            .execute("systemctl is-system-running --wait")
            .await
            .expect("systemctl is-system-running --wait");
        done = started.elapsed();
        assert_eq!(
            state.stdout, "running\n",
            "the boot did not finish cleanly: {state:?}"
        );
    }
    net.stop_all().await;
    if restore_tag.is_some() && i > 0 {
        assert_restored(&dir.join(format!("out-{name}-{i}{suffix}")), 1);
    }
    (ready, done)
}

/// `machines` default-guest machines on one VLAN, from nothing to all ready; booted,
/// or with `restore_tag` started from the snapshot of that tag.
async fn network_run(
    dir: &Path,
    i: usize,
    arches: &[&Arch],
    restore_tag: Option<&str>,
) -> Duration {
    let machines = arches.len();
    let mut text = String::new();
    for (m, arch) in arches.iter().enumerate() {
        text.push_str(&format!("[machines.m{m}]\narch = \"{arch}\"\n"));
        if let Some(tag) = restore_tag {
            text.push_str(&format!("kernel_args = \"flotilla.bench={tag}\"\n"));
        }
    }
    let spec = Spec::parse(&dir.join("network.toml"), &text).expect("spec");
    let suffix = if restore_tag.is_some() { "r" } else { "" };
    let out = dir.join(format!("net-{machines}-{}-{i}{suffix}", arches[0]));
    let mut options = FleetOptions::new(out.clone());
    options.terminal = false;
    options.snapshot = restore_tag.is_some();
    let started = Instant::now();
    let net = Fleet::new(&spec, options).expect("network");
    net.start_all().await.expect("all machines ready");
    let ready = started.elapsed();
    net.stop_all().await;
    if restore_tag.is_some() {
        assert_restored(&out, machines);
    }
    ready
}

/// The run logged in `out` restored `machines` machines (none booted instead).
fn assert_restored(out: &Path, machines: usize) {
    let log = std::fs::read_to_string(out.join("driver.log")).expect("driver.log");
    let restored = log.matches("snapshot: restored from").count();
    assert_eq!(restored, machines, "restored machines in {}", out.display());
}

/// The host architecture's floor: `kernel` with `initrd`, `extra` kernel arguments,
/// through `bios` if given.
fn boot_floor(
    kernel: &std::path::Path,
    initrd: &std::path::Path,
    accel: Accel,
    extra: &str,
    bios: Option<&std::path::Path>,
) -> Duration {
    let host = Arch::host();
    floor::Floor {
        arch: host,
        cpu: host.tcg_cpu,
        kernel,
        initrd,
        accel,
        extra,
        bios,
    }
    .boot()
    .ready
}

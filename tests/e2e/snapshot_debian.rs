//! Snapshots of Debian machines (`init` in the spec): the image's overlay is saved
//! with the state, and every restored machine has its own copy of it, its own host
//! name, addresses, MACs and machine id, under each init; a restored systemd machine
//! has its packaged services running.

use std::process::Command;
use std::sync::Arc;

use super::snapshot::{driver_log, remove_state, saved_disks, snapshot_spec, tag};
use super::*;

/// A packaged systemd service, enabled by its package's postinst: it records that it
/// started and stays up.
const PROBE_UNIT: &str = "[Unit]
Description=flotilla snapshot probe

[Service]
Type=simple
ExecStart=/bin/sh -c 'echo started > /run/flotilla-probe.started; exec sleep infinity'

[Install]
WantedBy=multi-user.target
";

/// Packs [`PROBE_UNIT`] as `dir/flotilla-probe_1.0_all.deb` (reproducibly, so that the
/// image stays cached).
fn build_probe_deb(dir: &Path) {
    let root = dir.join("probe");
    let unit = root.join("lib/systemd/system/flotilla-probe.service");
    std::fs::create_dir_all(unit.parent().unwrap()).unwrap();
    std::fs::create_dir_all(root.join("DEBIAN")).unwrap();
    std::fs::write(&unit, PROBE_UNIT).unwrap();
    std::fs::write(
        root.join("DEBIAN/control"),
        "Package: flotilla-probe\nVersion: 1.0\nArchitecture: all\n\
         Maintainer: Flotilla tests <tests@localhost>\nDescription: a systemd service\n",
    )
    .unwrap();
    let postinst = root.join("DEBIAN/postinst");
    std::fs::write(
        &postinst,
        "#!/bin/sh\nset -e\ndeb-systemd-helper enable flotilla-probe.service\n",
    )
    .unwrap();
    std::fs::set_permissions(&postinst, std::fs::Permissions::from_mode(0o755)).unwrap();
    let touched = Command::new("find")
        .arg(&root)
        .args([
            "-exec",
            "touch",
            "--no-dereference",
            "--date=@1700000000",
            "{}",
            "+",
        ])
        .status()
        .unwrap();
    assert!(touched.success());
    host_run(
        "dpkg-deb",
        Command::new("dpkg-deb")
            .args(["--root-owner-group", "-Zgzip", "--build"])
            .arg(&root)
            .arg(dir.join("flotilla-probe_1.0_all.deb"))
            .env("SOURCE_DATE_EPOCH", "1700000000"),
    );
}

/// The network of `names`, Debian machines of `init` (and `extra`) with snapshots, in
/// `dir`; the probe package is there for systemd.
fn debian_network(dir: &tempfile::TempDir, names: &[&str], tag: &str, init: &str) -> Fleet {
    let mut extra = format!("init = \"{init}\"\nmemory = 512");
    if init == "systemd" {
        build_probe_deb(dir.path());
        extra.push_str("\npackages = [\"./flotilla-probe_1.0_all.deb\"]");
    }
    let (spec, mut options) = spec(dir, &snapshot_spec(names, tag, &extra));
    options.boot_timeout = Duration::from_secs(300);
    Fleet::new(&spec, options).unwrap()
}

/// The milliseconds of machine `m`'s "ready" line in `log`.
fn ready_ms(log: &str, m: &str) -> u64 {
    let line = log
        .lines()
        .find(|l| l.contains(&format!("{m}: ready: ")))
        .unwrap_or_else(|| panic!("{log}"));
    let before = line.split(" ms since qemu started").next().unwrap();
    before.rsplit(' ').next().unwrap().parse().unwrap()
}

/// The image's machine id, which no machine keeps (see `debian/tune.rs`).
fn image_machine_id() -> String {
    let out = Command::new("sh")
        .args([
            "-c",
            "printf 'flotilla debian image' | sha256sum | cut -c1-32",
        ])
        .output()
        .unwrap();
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

async fn succeed(m: &Machine, cmd: &str) -> String {
    m.succeed(cmd)
        .await
        .unwrap_or_else(|e| panic!("{}: {cmd}: {e}", m.name()))
}

/// Saves a machine of `init`, then restores two and checks that each is itself.
async fn restored_debian_machines_are_each_themselves(init: &str) {
    let tag = tag();
    let dir = tempfile::tempdir().unwrap();
    let net = debian_network(&dir, &["maker"], &tag, init);
    let maker = net.machine("maker").unwrap();
    let file = maker.snapshot_file().expect("a Debian machine");
    assert!(!file.exists());
    maker.start().await.unwrap();
    // A cold boot has its own machine id too (stage 1 wrote it from the command line).
    let maker_id = succeed(&maker, "cat /etc/machine-id").await;
    assert_ne!(maker_id.trim(), image_machine_id());
    let cmdline = succeed(&maker, "cat /proc/cmdline").await;
    assert!(
        cmdline.contains(&format!("flotilla.machine_id={}", maker_id.trim())),
        "{cmdline}"
    );
    if init == "systemd" {
        // No first-boot set-up: the id was there when systemd started.
        succeed(&maker, "! systemctl is-active systemd-firstboot.service").await;
        let journal = succeed(
            &maker,
            "journalctl -b --no-pager -o cat | grep -ci 'first boot' || true",
        )
        .await;
        assert_eq!(journal.trim(), "0", "{journal}");
    }
    // Written after the save: no restored machine sees it.
    succeed(&maker, "echo after-save > /root/after-save && sync").await;
    net.stop_all().await;
    let log = driver_log(&dir);
    assert!(log.contains("maker: snapshot: saved "), "{log}");
    assert!(log.contains("maker: snapshot: 1 disk(s) saved ("), "{log}");
    assert_eq!(saved_disks(&file).len(), 1);
    let cold = ready_ms(&log, "maker");
    for line in log.lines().filter(|l| l.contains("snapshot: ")) {
        eprintln!("{line}");
    }

    let dir = tempfile::tempdir().unwrap();
    let net = debian_network(&dir, &["a", "b"], &tag, init);
    let (a, b) = (net.machine("a").unwrap(), net.machine("b").unwrap());
    assert_eq!(a.snapshot_file().as_ref(), Some(&file));
    net.start_all().await.unwrap();
    let log = driver_log(&dir);
    for m in ["a", "b"] {
        assert!(
            log.contains(&format!("{m}: snapshot: restored from {}", file.display())),
            "{log}"
        );
        // The disk stage 1 wrote the saving machine's id to is the restored one.
        assert!(
            log.contains(&format!("(the saved disk had {})", maker_id.trim())),
            "{log}"
        );
    }
    eprintln!(
        "debian ({init}): cold ready {cold} ms; restored ready {} ms and {} ms",
        ready_ms(&log, "a"),
        ready_ms(&log, "b")
    );
    for line in log.lines().filter(|l| l.contains("disk(s) ")) {
        eprintln!("{line}");
    }
    let each = |cmd: &'static str| {
        let (a, b) = (a.clone(), b.clone());
        async move { (succeed(&a, cmd).await, succeed(&b, cmd).await) }
    };
    let (mac_a, mac_b) = each("cat /sys/class/net/eth*/address | sort").await;
    assert_ne!(mac_a, mac_b);
    assert_eq!(each("hostname").await, ("a\n".into(), "b\n".into()));
    let b_addrs = succeed(&b, "ip -4 -o addr").await;
    assert!(
        b_addrs.contains(&format!("{}/", b.ip(1).unwrap())),
        "{b_addrs}"
    );
    let hosts = succeed(&b, "cat /etc/hosts").await;
    assert!(
        hosts.contains(&format!("{} a\n", a.ip(1).unwrap())),
        "{hosts}"
    );
    // Own machine ids, read from the disk (not the page cache).
    let (id_a, id_b) = each("sync; echo 3 > /proc/sys/vm/drop_caches; cat /etc/machine-id").await;
    assert_ne!(id_a, id_b);
    for id in [&id_a, &id_b] {
        assert_ne!(id, &maker_id);
        assert_eq!(id.trim().len(), 32, "{id}");
    }
    // Own overlays: not what the saving machine wrote after the save, nor each other's.
    succeed(&a, "test ! -e /root/after-save").await;
    succeed(&a, "echo a > /root/mine && sync").await;
    succeed(
        &b,
        "echo 3 > /proc/sys/vm/drop_caches; test ! -e /root/mine",
    )
    .await;
    if init == "systemd" {
        for m in [&a, &b] {
            let state = m
                .execute("systemctl is-system-running --wait")
                .await
                .unwrap();
            let failed = succeed(m, "systemctl --failed --no-legend --plain").await;
            assert_eq!(state.stdout, "running\n", "failed units: {failed}");
            succeed(m, "systemctl is-active flotilla-probe.service").await;
            succeed(m, "test -e /run/flotilla-probe.started").await;
        }
    }
    // The restored guests power off cleanly through their init.
    let shutdown = |m: Arc<Machine>| async move { m.shutdown(Duration::from_secs(120)).await };
    shutdown(a.clone()).await.unwrap();
    net.stop_all().await;
    remove_state(&file);
}

#[tokio::test(flavor = "multi_thread")]
async fn restored_systemd_machines_are_each_themselves_with_services_running() {
    restored_debian_machines_are_each_themselves("systemd").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn restored_sysvinit_machines_are_each_themselves() {
    restored_debian_machines_are_each_themselves("sysvinit").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn restored_openrc_machines_are_each_themselves() {
    restored_debian_machines_are_each_themselves("openrc").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn restored_agent_pid1_debian_machines_are_each_themselves() {
    restored_debian_machines_are_each_themselves("agent").await;
}

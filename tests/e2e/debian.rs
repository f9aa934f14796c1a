//! `flotilla image debian`: a real debootstrapped bookworm image boots under systemd
//! with the agent as a service, on a per-run overlay.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use flotilla_driver::debian::{build, DebianOptions};
use flotilla_driver::Network;

use super::spec;

fn sha256(path: &Path) -> String {
    let out = Command::new("sha256sum").arg(path).output().unwrap();
    assert!(out.status.success(), "sha256sum {}", path.display());
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn debian_image_boots_under_systemd_and_stays_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    // The first build on a host debootstraps (about a minute); later ones reuse the
    // cached tree and take seconds.
    let options = DebianOptions {
        packages: Vec::new(),
        size_mib: None,
        output: dir.path().join("debian.qcow2"),
    };
    let image = build(&options, |line| eprintln!("{line}")).unwrap();
    let before = sha256(&image);

    let (spec, mut options) = spec(
        &dir,
        "[machines.deb]\nimage = \"debian.qcow2\"\nmemory = 512\n",
    );
    // systemd under TCG takes a while.
    options.boot_timeout = Duration::from_secs(300);
    let net = Network::new(&spec, options).unwrap();
    let deb = net.machine("deb").unwrap();
    let started = Instant::now();
    deb.start().await.unwrap();
    eprintln!(
        "debian: ready {:.1} s after start()",
        started.elapsed().as_secs_f64()
    );

    let version = deb.succeed("cat /etc/debian_version").await.unwrap();
    assert!(version.starts_with("12"), "{version}");
    assert_eq!(deb.succeed("cat /proc/1/comm").await.unwrap(), "systemd\n");
    // The agent runs as the systemd service the installer enabled.
    let unit = deb
        .succeed("systemctl is-active flotilla-agent.service")
        .await
        .unwrap();
    assert_eq!(unit, "active\n");
    // wait_for_unit: an active unit returns; a unit that failed fails at once.
    let wait = std::time::Duration::from_secs(60);
    deb.wait_for_unit("flotilla-agent.service", wait)
        .await
        .unwrap();
    deb.succeed("systemd-run --unit=doomed sh -c 'exit 3'")
        .await
        .unwrap();
    let started = std::time::Instant::now();
    let e = deb.wait_for_unit("doomed.service", wait).await.unwrap_err();
    assert!(
        started.elapsed() < std::time::Duration::from_secs(20),
        "{:?}",
        started.elapsed()
    );
    assert!(e.to_string().contains("state failed"), "{e}");
    assert_eq!(deb.succeed("hostname").await.unwrap(), "deb\n");
    // The host kernel's modules are in the image with their index: modprobe works.
    deb.succeed("modprobe dummy && grep -q '^dummy ' /proc/modules")
        .await
        .unwrap();
    let mounts = deb.succeed("cat /proc/mounts").await.unwrap();
    assert!(mounts.contains("/dev/vda / ext4 rw"), "{mounts}");
    deb.succeed("echo written > /root/file && sync")
        .await
        .unwrap();
    assert_eq!(deb.succeed("cat /root/file").await.unwrap(), "written\n");

    // The agent going away ends the waiting call at once, instead of its 300 s limit.
    let started = Instant::now();
    let e = deb
        .succeed("systemctl kill --signal=KILL flotilla-agent.service; sleep 300")
        .await
        .unwrap_err()
        .to_string();
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    assert!(
        e.contains("machine `deb`: the agent closed its port in the guest"),
        "{e}"
    );
    // Until systemd restarts it (a second later), calls fail at once; then the driver
    // connects to the new agent and the machine answers again.
    let t = Instant::now();
    let mut early_errors = 0;
    loop {
        let call = Instant::now();
        match deb.succeed("echo back").await {
            Ok(out) => {
                assert_eq!(out, "back\n");
                break;
            }
            Err(e) => {
                assert!(call.elapsed() < Duration::from_secs(1), "{e}");
                assert!(e.to_string().contains("the agent closed its port"), "{e}");
                early_errors += 1;
            }
        }
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "the agent did not come back"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    eprintln!(
        "agent back after {:?} ({early_errors} calls failed at once meanwhile)",
        t.elapsed()
    );
    let log = std::fs::read_to_string(dir.path().join("out/driver.log")).unwrap();
    assert!(
        log.contains("deb: the agent restarted: connecting again"),
        "{log}"
    );
    net.stop_all().await;

    // Writes went to the run's overlay, never to the base image.
    assert_eq!(sha256(&image), before, "the base image changed");
}

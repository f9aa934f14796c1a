//! `flotilla image debian`: a real debootstrapped image of the default release (trixie)
//! boots under systemd, sysvinit or OpenRC with the agent as that init's service, or
//! with the agent itself as PID 1, on a per-run overlay, on trixie's kernel.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use flotilla_driver::debian::{build, DebianOptions, Init, Release};
use flotilla_driver::{Fleet, Machine};

use super::{fails_within, host_run, spec};

fn sha256(path: &Path) -> String {
    let out = Command::new("sha256sum").arg(path).output().unwrap();
    assert!(out.status.success(), "sha256sum {}", path.display());
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_owned()
}

/// After the agent was killed: calls fail at once until the init restarts it, then the
/// driver connects to the new agent and the machine answers again.
async fn wait_for_agent_back(machine: &Machine) {
    let t = Instant::now();
    let mut early_errors = 0;
    loop {
        let call = Instant::now();
        match machine.succeed("echo back").await {
            Ok(out) => {
                assert_eq!(out, "back\n");
                break;
            }
            Err(e) => {
                // "At once": no wait for the command's timeout; 5 s is room for a busy
                // host.
                assert!(call.elapsed() < Duration::from_secs(5), "{e}");
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
}

/// Builds `dir/debian.qcow2` with `init`; returns its path.
fn build_image(dir: &tempfile::TempDir, init: Init) -> PathBuf {
    build_image_with(dir, init, &[])
}

/// An init script as packages ship them (Debian's usual dependencies, including the
/// optional facilities `$remote_fs`, `$syslog` and `$time` whose scripts the image
/// leaves out), enabled by its package's postinst: it records that it ran.
const PROBE_SCRIPT: &str = "#!/bin/sh
### BEGIN INIT INFO
# Provides:          flotilla-probe
# Required-Start:    $remote_fs $syslog $time
# Required-Stop:     $remote_fs $syslog
# Default-Start:     2 3 4 5
# Default-Stop:      0 1 6
# Short-Description: records that it started
### END INIT INFO
case \"$1\" in
  start) echo started > /run/flotilla-probe.started ;;
esac
exit 0
";

/// Packs [`PROBE_SCRIPT`] as `dir/flotilla-probe_1.0_all.deb`; returns its path.
fn build_probe_deb(dir: &Path) -> PathBuf {
    let root = dir.join("probe");
    std::fs::create_dir_all(root.join("DEBIAN")).unwrap();
    std::fs::create_dir_all(root.join("etc/init.d")).unwrap();
    let write = |path: &str, text: &str, mode: u32| {
        use std::os::unix::fs::PermissionsExt as _;
        let path = root.join(path);
        std::fs::write(&path, text).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
    };
    write(
        "DEBIAN/control",
        "Package: flotilla-probe\nVersion: 1.0\nArchitecture: all\n\
         Maintainer: Flotilla tests <tests@localhost>\nDescription: an init script\n",
        0o644,
    );
    write("DEBIAN/conffiles", "/etc/init.d/flotilla-probe\n", 0o644);
    write(
        "DEBIAN/postinst",
        "#!/bin/sh\nset -e\nupdate-rc.d flotilla-probe defaults\n",
        0o755,
    );
    write("etc/init.d/flotilla-probe", PROBE_SCRIPT, 0o755);
    let deb = dir.join("flotilla-probe_1.0_all.deb");
    host_run(
        "dpkg-deb",
        Command::new("dpkg-deb")
            .args(["--root-owner-group", "-Zgzip", "--build"])
            .arg(&root)
            .arg(&deb)
            .env("SOURCE_DATE_EPOCH", "1700000000"),
    );
    deb
}

/// Builds `dir/debian.qcow2` with `init` and `packages`; returns its path.
fn build_image_with(dir: &tempfile::TempDir, init: Init, packages: &[&str]) -> PathBuf {
    let started = Instant::now();
    // The first build of an init and package list on a host debootstraps (a minute or
    // two); later ones reuse the cached tree and take seconds.
    let options = DebianOptions {
        arch: flotilla_driver::Arch::host(),
        release: Release::default(),
        init,
        packages: packages.iter().map(|p| (*p).to_owned()).collect(),
        size_mib: None,
        output: dir.path().join("debian.qcow2"),
    };
    let image = build(&options, |line| eprintln!("{line}")).unwrap();
    eprintln!(
        "debian ({init}): image built in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    image
}

/// Boots `dir/debian.qcow2` as machine `deb`.
async fn boot_image(dir: &tempfile::TempDir, init: Init) -> (Fleet, Arc<Machine>) {
    let (spec, mut options) = spec(
        dir,
        // The image's release's kernel, whose modules it has.
        "[machines.deb]\nimage = \"debian.qcow2\"\nrelease = \"trixie\"\nmemory = 512\n",
    );
    // An init under TCG takes a while.
    options.boot_timeout = Duration::from_secs(300);
    let net = Fleet::new(&spec, options).unwrap();
    let deb = net.machine("deb").unwrap();
    let started = Instant::now();
    deb.start().await.unwrap();
    eprintln!(
        "debian ({init}): ready {:.1} s after start()",
        started.elapsed().as_secs_f64()
    );
    (net, deb)
}

/// Builds a Debian image with `init` in `dir` and boots it as machine `deb`.
async fn boot(dir: &tempfile::TempDir, init: Init) -> (Fleet, Arc<Machine>) {
    build_image(dir, init);
    boot_image(dir, init).await
}

/// Powers off through the agent and the init's own shutdown, within `limit`.
async fn assert_clean_power_off(deb: &Machine, limit: Duration) {
    let started = Instant::now();
    // An error here means the guest did not power itself off and qemu was stopped.
    if let Err(e) = deb.shutdown(limit).await {
        panic!("{e}");
    }
    eprintln!("powered off in {:.1} s", started.elapsed().as_secs_f64());
}

/// What Debian's rcS scripts (mountkernfs.sh, mountdevsubfs.sh, checkroot.sh,
/// mountall.sh, bootmisc.sh) leave for services, though the image skips checkroot.sh's
/// remounts: the kernel's file systems, a writable `/run`, `/run/lock` and `/tmp`, and
/// `/etc/mtab`.
async fn assert_local_file_systems(deb: &Machine) {
    deb.succeed(
        "findmnt /proc && findmnt /sys && findmnt /run && findmnt /dev/pts && findmnt /dev/shm",
    )
    .await
    .unwrap();
    deb.succeed(
        "echo x > /run/lock/probe && echo x > /tmp/probe && echo x > /dev/shm/probe && \
         test -d /run/sendsigs.omit.d && test -L /etc/mtab",
    )
    .await
    .unwrap();
    let mounts = deb.succeed("cat /etc/mtab").await.unwrap();
    assert!(mounts.contains("/dev/vda / ext4 rw"), "{mounts}");
    assert!(mounts.contains(" /dev/pts devpts rw"), "{mounts}");
}

#[tokio::test(flavor = "multi_thread")]
async fn debian_image_boots_under_sysvinit() {
    let dir = tempfile::tempdir().unwrap();
    let probe = build_probe_deb(dir.path());
    build_image_with(&dir, Init::Sysvinit, &[probe.to_str().unwrap()]);
    let (net, deb) = boot_image(&dir, Init::Sysvinit).await;
    assert_eq!(deb.succeed("cat /proc/1/comm").await.unwrap(), "init\n");
    deb.succeed("test ! -e /run/systemd/system && test ! -e /run/openrc")
        .await
        .unwrap();
    assert_eq!(deb.succeed("runlevel").await.unwrap(), "N 2\n");
    // The agent serving us is the one the init script started: its pid file names our
    // shell's parent.
    assert_eq!(
        deb.succeed("/etc/init.d/flotilla-agent status")
            .await
            .unwrap(),
        "flotilla-agent is running\n"
    );
    deb.succeed("test \"$(cat /run/flotilla-agent.pid)\" = \"$PPID\"")
        .await
        .unwrap();
    let r = deb.execute("echo out; exit 3").await.unwrap();
    assert_eq!((r.code, r.stdout.as_str()), (Some(3), "out\n"));
    assert_eq!(deb.succeed("hostname").await.unwrap(), "deb\n");
    assert_local_file_systems(&deb).await;
    // The trimmed boot order (no clock, NFS, random seed, backlight, boot log scripts)
    // is insserv's own, and still starts a packaged service in runlevel 2.
    let boot = deb
        .succeed("grep '^TARGETS' /etc/init.d/.depend.boot")
        .await
        .unwrap();
    for script in [
        "udev",
        "checkroot.sh",
        "mountall.sh",
        "procps",
        "bootmisc.sh",
    ] {
        assert!(boot.split_whitespace().any(|s| s == script), "{boot}");
    }
    for script in ["hwclock.sh", "urandom", "mountnfs.sh", "brightness"] {
        assert!(!boot.split_whitespace().any(|s| s == script), "{boot}");
    }
    deb.succeed("ls /etc/rc2.d | grep -qx 'S[0-9][0-9]flotilla-probe'")
        .await
        .unwrap();
    deb.wait_until_succeeds(
        "test \"$(cat /run/flotilla-probe.started)\" = started",
        Duration::from_secs(60),
    )
    .await
    .unwrap();
    let start = deb.succeed("cat /etc/init.d/.depend.start").await.unwrap();
    assert!(
        start.contains("flotilla-probe") && start.contains("flotilla-agent"),
        "{start}"
    );
    // No getty waits on a terminal.
    deb.fail("pgrep getty").await.unwrap();
    // Shutdown runs runlevel 0, whose K link stops the agent.
    assert_clean_power_off(&deb, Duration::from_secs(120)).await;
    assert!(
        deb.console_log().contains("INIT: Switching to runlevel: 0"),
        "{}",
        deb.console_log()
    );
    net.stop_all().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn debian_image_boots_under_openrc() {
    let dir = tempfile::tempdir().unwrap();
    let (net, deb) = boot(&dir, Init::Openrc).await;
    assert_eq!(deb.succeed("cat /proc/1/comm").await.unwrap(), "init\n");
    deb.succeed("test -d /run/openrc && test ! -e /run/systemd/system")
        .await
        .unwrap();
    assert_eq!(
        deb.succeed("rc-status --runlevel").await.unwrap(),
        "default\n"
    );
    let status = deb
        .succeed("rc-service flotilla-agent status")
        .await
        .unwrap();
    assert!(status.contains("started"), "{status}");
    let default = deb.succeed("rc-status default").await.unwrap();
    assert!(
        default
            .lines()
            .any(|l| l.contains("flotilla-agent") && l.contains("started")),
        "{default}"
    );
    // supervise-daemon is the agent's parent, and starts it again when it dies.
    assert_eq!(
        deb.succeed("cat /proc/$(ps -o ppid= -p $PPID | tr -d ' ')/comm")
            .await
            .unwrap(),
        "supervise-daemo\n"
    );
    let r = deb.execute("echo out; exit 3").await.unwrap();
    assert_eq!((r.code, r.stdout.as_str()), (Some(3), "out\n"));
    assert_eq!(deb.succeed("hostname").await.unwrap(), "deb\n");
    assert_local_file_systems(&deb).await;
    let e = deb
        .succeed("kill -KILL $PPID; sleep 300")
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("the agent closed its port in the guest"), "{e}");
    wait_for_agent_back(&deb).await;
    let status = deb
        .succeed("rc-service flotilla-agent status")
        .await
        .unwrap();
    assert!(status.contains("started"), "{status}");
    // No clean power-off here: through sysvinit it is the sysvinit test's, and OpenRC
    // stopping every LSB service takes 45-70 s under TCG.
    net.stop_all().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn debian_image_boots_under_systemd_and_stays_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    let image = build_image(&dir, Init::Systemd);
    let before = sha256(&image);
    let (net, deb) = boot_image(&dir, Init::Systemd).await;

    // The default release, trixie (Debian 13), on its own kernel.
    let version = deb.succeed("cat /etc/debian_version").await.unwrap();
    assert_eq!(
        deb.succeed("uname -r").await.unwrap(),
        format!(
            "{}\n",
            flotilla_driver::image::Kernel::of_release(
                Release::Trixie,
                flotilla_driver::Arch::host()
            )
            .unwrap()
            .version
        )
    );
    assert!(version.starts_with("13"), "{version}");
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
    // The agent is up while the boot goes on: on a busy guest the unit is active a
    // moment before `sh` ends.
    deb.wait_until_succeeds("systemctl is-failed --quiet doomed.service", wait)
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
    // The agent, a service here, configured the network itself.
    let log = std::fs::read_to_string(dir.path().join("out/driver.log")).unwrap();
    assert!(
        log.contains("deb: network configured by the agent (net-config request)"),
        "{log}"
    );
    let addrs = deb.succeed("ip -o addr show").await.unwrap();
    assert!(
        addrs.contains("inet 192.168.1.1/24") && addrs.contains("inet6 2001:db8:1::1/64"),
        "{addrs}"
    );
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
    // 20 s: the agent's death (seconds under TCG), not the 300 s of the command.
    let e = fails_within(
        Duration::from_secs(20),
        deb.succeed("systemctl kill --signal=KILL flotilla-agent.service; sleep 300"),
    )
    .await
    .to_string();
    assert!(
        e.contains("machine `deb`: the agent closed its port in the guest"),
        "{e}"
    );
    // Until systemd restarts it (a second later), calls fail at once; then the driver
    // connects to the new agent and the machine answers again.
    wait_for_agent_back(&deb).await;
    let log = std::fs::read_to_string(dir.path().join("out/driver.log")).unwrap();
    assert!(
        log.contains("deb: the agent restarted: connecting again"),
        "{log}"
    );
    net.stop_all().await;

    // Writes went to the run's overlay, never to the base image.
    assert_eq!(sha256(&image), before, "the base image changed");
}

#[tokio::test(flavor = "multi_thread")]
async fn debian_image_with_the_agent_as_init() {
    let dir = tempfile::tempdir().unwrap();
    let (net, deb) = boot(&dir, Init::Agent).await;
    // Stage 1 handed over to the agent: no service manager at all.
    assert_eq!(
        deb.succeed("cat /proc/1/comm").await.unwrap(),
        "flotilla-agent\n"
    );
    assert_eq!(
        deb.succeed("readlink /proc/1/exe").await.unwrap(),
        "/usr/local/bin/flotilla-agent\n"
    );
    deb.succeed("test ! -e /run/systemd/system && test ! -e /sbin/init")
        .await
        .unwrap();
    // The Debian root's dynamic programs and its package database work.
    let version = deb.succeed("ls --version").await.unwrap();
    assert!(version.starts_with("ls (GNU coreutils) 9."), "{version}");
    let libs = deb.succeed("ldd /bin/ls").await.unwrap();
    assert!(
        libs.contains("libc.so.6 => /lib/x86_64-linux-gnu/"),
        "{libs}"
    );
    let status = deb
        .succeed("dpkg-query -W -f '${Status}' coreutils")
        .await
        .unwrap();
    assert_eq!(status, "install ok installed");
    let version = deb.succeed("cat /etc/debian_version").await.unwrap();
    assert!(version.starts_with("13"), "{version}");
    let mounts = deb.succeed("cat /proc/mounts").await.unwrap();
    assert!(mounts.contains("/dev/vda / ext4 rw"), "{mounts}");
    // Stage 1 loaded what the agent needs: its port, the NICs, the RNG, pvpanic (or
    // the kernel has it built in: trixie's has virtio_console).
    let modules = deb.succeed("cat /proc/modules").await.unwrap();
    let builtin = deb
        .succeed("cat /lib/modules/$(uname -r)/modules.builtin")
        .await
        .unwrap();
    for module in ["virtio_console", "virtio_net", "virtio_rng", "pvpanic_pci"] {
        let file = |name: &str| format!("/{name}.ko");
        assert!(
            modules
                .lines()
                .any(|l| l.starts_with(&format!("{module} ")))
                || builtin.lines().any(|l| {
                    l.ends_with(&file(module)) || l.ends_with(&file(&module.replace('_', "-")))
                }),
            "{module} is neither loaded nor built in: {modules}"
        );
    }
    // The host name and the network, set by the driver through the agent.
    assert_eq!(deb.succeed("hostname").await.unwrap(), "deb\n");
    let log = std::fs::read_to_string(dir.path().join("out/driver.log")).unwrap();
    assert!(
        log.contains("deb: network configured by the agent (net-config request)"),
        "{log}"
    );
    let addrs = deb.succeed("ip -o addr show dev eth0").await.unwrap();
    assert!(
        addrs.contains("inet 192.168.1.1/24") && addrs.contains("inet6 2001:db8:1::1/64"),
        "{addrs}"
    );
    let hosts = deb.succeed("cat /etc/hosts").await.unwrap();
    assert!(hosts.contains("deb"), "{hosts}");
    deb.succeed("echo written > /root/file && sync")
        .await
        .unwrap();
    assert_eq!(deb.succeed("cat /root/file").await.unwrap(), "written\n");
    // PID 1 powers the machine off itself.
    assert_clean_power_off(&deb, Duration::from_secs(60)).await;
    assert!(
        deb.console_log().contains("flotilla-agent: powering off"),
        "{}",
        deb.console_log()
    );
    net.stop_all().await;
}

/// The trimmed systemd boot (the agent early, units and generators a test machine does
/// not need masked) still finishes cleanly and starts packaged services the Debian way.
#[tokio::test(flavor = "multi_thread")]
async fn trimmed_systemd_boot_still_starts_packaged_services() {
    let dir = tempfile::tempdir().unwrap();
    build_image(&dir, Init::Systemd);
    let (net, deb) = boot_image(&dir, Init::Systemd).await;
    // Every unit of the boot started: no failed unit, no job left.
    let state = deb
        .execute("systemctl is-system-running --wait")
        .await
        .unwrap();
    let failed = deb
        .succeed("systemctl --failed --no-legend --plain")
        .await
        .unwrap();
    assert_eq!(state.stdout, "running\n", "failed units: {failed}");
    assert_eq!(failed, "");
    deb.wait_for_unit("multi-user.target", Duration::from_secs(60))
        .await
        .unwrap();
    // The getty on tty1, which systemd's package enables, runs as Debian starts it
    // (after systemd-user-sessions), and so do the packaged daemons of the boot.
    assert_eq!(
        deb.succeed("systemctl is-enabled getty@tty1.service")
            .await
            .unwrap(),
        "enabled\n"
    );
    deb.succeed(
        "systemctl is-active getty@tty1.service systemd-journald.service \
         systemd-udevd.service systemd-user-sessions.service systemd-tmpfiles-setup.service",
    )
    .await
    .unwrap();
    // The unit is active from its fork; agetty's exec follows (a moment later on a
    // busy host).
    deb.wait_until_succeeds("pgrep -x agetty", Duration::from_secs(30))
        .await
        .unwrap();
    // The journal takes messages (/dev/log) and serves them back.
    let journal = deb
        .succeed(
            "logger -t flotilla-test hello-journal && journalctl --sync && \
             journalctl -b -t flotilla-test --no-pager -o cat",
        )
        .await
        .unwrap();
    assert_eq!(journal, "hello-journal\n");
    // udev's coldplug ran: once udev has handled its queue (which a finished boot does
    // not wait for, in Debian as here), the devices have their units.
    deb.succeed(
        "udevadm settle --timeout=60 && \
         systemctl is-active dev-vda.device dev-ttyS0.device dev-vport0p1.device",
    )
    .await
    .unwrap();
    let udev = deb.succeed("udevadm info /dev/vda").await.unwrap();
    assert!(udev.contains("ID_PATH="), "{udev}");
    // sysctl.d was applied: the NICs the agent brought up have Debian's qdisc.
    let links = deb.succeed("ip -o link show dev eth0").await.unwrap();
    assert!(links.contains("qdisc fq_codel"), "{links}");
    deb.succeed("test \"$(sysctl -n net.core.default_qdisc)\" = fq_codel")
        .await
        .unwrap();
    // Modules whose preloading is masked still load on first use of their devices,
    // and the control file systems are mounted as Debian mounts them.
    deb.succeed("truncate -s 8M /root/disk && losetup --find --show /root/disk && losetup -D")
        .await
        .unwrap();
    deb.succeed(
        "findmnt /sys/kernel/config && findmnt /sys/fs/fuse/connections && findmnt /dev/mqueue",
    )
    .await
    .unwrap();
    // Temporary files and login permissions were set up (tmpfiles, user sessions).
    deb.succeed("test -d /run/user && test -d /var/tmp && test ! -e /run/nologin")
        .await
        .unwrap();
    assert_eq!(deb.succeed("hostname").await.unwrap(), "deb\n");
    assert_clean_power_off(&deb, Duration::from_secs(120)).await;
    net.stop_all().await;
}

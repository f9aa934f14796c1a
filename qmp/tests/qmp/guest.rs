//! End to end in a real guest: the Debian cloud kernel (from `scripts/setup`)
//! boots an initramfs with busybox and the host's `qemu-ga`, which serves QGA
//! over virtio-serial. QMP and QGA are driven together, through to a
//! `guest-shutdown` that powers the VM off.
//!
//! Fails naming what is missing (the kernel, busybox or qemu-ga: `scripts/setup`
//! installs them), never skips.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use flotilla_qmp::qga::GuestAgent;
use flotilla_qmp::{events, Client};
use tokio::process::{Child, Command};

use crate::bare_qemu::die_with_parent;
use crate::util::bounded;

/// A newc cpio archive (written by `flotilla_agent::cpio`), with each file's parent
/// folders made on the way.
#[derive(Default)]
struct Cpio {
    out: flotilla_agent::cpio::Cpio,
    dirs: std::collections::BTreeSet<String>,
}

impl Cpio {
    fn parents(&mut self, path: &str) {
        let mut prefix = String::new();
        let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
        for part in &parts[..parts.len().saturating_sub(1)] {
            if !prefix.is_empty() {
                prefix.push('/');
            }
            prefix.push_str(part);
            if self.dirs.insert(prefix.clone()) {
                self.out.dir(&prefix, 0o755);
            }
        }
    }

    fn dir(&mut self, path: &str) {
        self.parents(&format!("{path}/x"));
    }

    fn file(&mut self, path: &str, mode: u32, body: &[u8]) {
        self.parents(path);
        self.out.file(path.trim_start_matches('/'), mode, body);
    }

    fn char_dev(&mut self, path: &str, major: u32, minor: u32) {
        self.parents(path);
        self.out
            .char_device(path.trim_start_matches('/'), 0o600, major, minor);
    }

    fn finish(self) -> Vec<u8> {
        self.out.finish()
    }
}

const INIT: &str = r#"#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
for m in virtio_ring virtio virtio_pci_modern_dev virtio_pci_legacy_dev virtio_pci virtio_console; do
    insmod /lib/modules/$m.ko 2>/dev/null
done
ip link set lo up
port=
for i in $(seq 200); do
    for p in /sys/class/virtio-ports/*; do
        [ "$(cat $p/name 2>/dev/null)" = org.qemu.guest_agent.0 ] && port=/dev/${p##*/}
    done
    [ -n "$port" ] && [ -e "$port" ] && break
    sleep 0.05
done
echo "flotilla-test: agent port $port"
/usr/sbin/qemu-ga -m virtio-serial -p "$port" -t /tmp -f /tmp/qga.pid &
while true; do sleep 1000; done
"#;

/// qemu-ga's `guest-shutdown` runs `/sbin/shutdown -P +0 ...`.
const SHUTDOWN: &str = "#!/bin/sh\nexec /bin/busybox poweroff -f\n";

fn kernel() -> Option<PathBuf> {
    let cache = std::env::var_os("FLOTILLA_CACHE")
        .map(PathBuf::from)
        .or_else(|| {
            let base = std::env::var_os("XDG_CACHE_HOME")
                .map(PathBuf::from)
                .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".cache")))?;
            Some(base.join("flotilla"))
        })?;
    let dir = cache.join("kernel/current-amd64");
    dir.join("vmlinuz").exists().then_some(dir)
}

/// Shared libraries `binary` needs, from `ldd`.
fn libraries(binary: &str) -> Vec<String> {
    let out = std::process::Command::new("ldd")
        .arg(binary)
        .output()
        .unwrap_or_else(|e| panic!("running ldd {binary}: {e}"));
    assert!(
        out.status.success(),
        "ldd {binary}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let l = l.trim();
            let path = match l.split_once("=> ") {
                Some((_, rest)) => rest.split_whitespace().next()?,
                None => l.split_whitespace().next()?,
            };
            path.starts_with('/').then(|| path.to_owned())
        })
        .collect()
}

fn build_initrd(kernel: &Path, busybox: &str) -> Result<Vec<u8>, String> {
    let read = |p: &str| std::fs::read(p).map_err(|e| format!("reading {p}: {e}"));
    let mut cpio = Cpio::default();
    for d in ["proc", "sys", "dev", "tmp", "var/run", "bin"] {
        cpio.dir(d);
    }
    cpio.char_dev("/dev/console", 5, 1);
    cpio.file("/init", 0o755, INIT.as_bytes());
    cpio.file("/sbin/shutdown", 0o755, SHUTDOWN.as_bytes());
    cpio.file("/bin/busybox", 0o755, &read(busybox)?);
    cpio.file("/usr/sbin/qemu-ga", 0o755, &read("/usr/sbin/qemu-ga")?);
    for lib in libraries("/usr/sbin/qemu-ga") {
        cpio.file(&lib, 0o755, &read(&lib)?);
    }
    let modules = kernel.join("modules/kernel/drivers");
    for (dir, m) in [
        ("virtio", "virtio_ring"),
        ("virtio", "virtio"),
        ("virtio", "virtio_pci_modern_dev"),
        ("virtio", "virtio_pci_legacy_dev"),
        ("virtio", "virtio_pci"),
        ("char", "virtio_console"),
    ] {
        let path = modules.join(dir).join(format!("{m}.ko"));
        // Built into some kernels: then there is no module file, and insmod fails quietly.
        if let Ok(body) = std::fs::read(&path) {
            cpio.file(&format!("/lib/modules/{m}.ko"), 0o644, &body);
        }
    }
    Ok(cpio.finish())
}

struct Guest {
    child: Child,
    dir: tempfile::TempDir,
}

impl Drop for Guest {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

impl Guest {
    fn start() -> Guest {
        let Some(kernel) = kernel() else {
            panic!("no kernel in the flotilla cache: run scripts/setup");
        };
        let busybox = ["/bin/busybox", "/usr/bin/busybox"]
            .into_iter()
            .find(|p| Path::new(p).exists());
        let Some(busybox) = busybox else {
            panic!("busybox is not installed: run scripts/setup");
        };
        if !Path::new("/usr/sbin/qemu-ga").exists() {
            panic!("qemu-ga is not installed: run scripts/setup (it installs qemu-guest-agent)");
        }
        let initrd = build_initrd(&kernel, busybox).expect("initramfs");
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::write(dir.path().join("initrd.cpio"), initrd).expect("write initramfs");
        let mut command = Command::new("qemu-system-x86_64");
        die_with_parent(command.as_std_mut());
        command
            .args([
                "-M",
                "q35",
                "-accel",
                "tcg",
                "-m",
                "256",
                "-display",
                "none",
                "-nodefaults",
            ])
            .arg("-no-reboot")
            .arg("-kernel")
            .arg(kernel.join("vmlinuz"))
            .arg("-initrd")
            .arg(dir.path().join("initrd.cpio"))
            .args(["-append", "console=ttyS0 panic=-1"])
            .arg("-serial")
            .arg(format!("file:{}", dir.path().join("console.log").display()))
            .args(["-device", "virtio-serial-pci"])
            .arg("-chardev")
            .arg(format!(
                "socket,id=qga0,path={},server=on,wait=off",
                dir.path().join("qga.sock").display()
            ))
            .args([
                "-device",
                "virtserialport,chardev=qga0,name=org.qemu.guest_agent.0",
            ])
            .arg("-qmp")
            .arg(format!(
                "unix:{},server=on,wait=off",
                dir.path().join("qmp.sock").display()
            ))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .kill_on_drop(true);
        let child = command.spawn().expect("qemu-system-x86_64 starts");
        Guest { child, dir }
    }

    fn console(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("console.log")).unwrap_or_default()
    }
}

#[tokio::test]
async fn agent_in_a_real_guest_over_virtio_serial() {
    let mut guest = Guest::start();
    let qmp = bounded(
        "qmp",
        Client::connect_unix_retry(guest.dir.path().join("qmp.sock"), Duration::from_secs(15)),
    )
    .await
    .expect("qmp connects");
    let mut shutdown_events = qmp.subscribe_filtered([events::SHUTDOWN]);

    let agent = GuestAgent::connect_unix(guest.dir.path().join("qga.sock"))
        .await
        .expect("qga socket")
        .with_timeout(Duration::from_secs(20));
    // TCG boot of a cloud kernel: allow plenty of time.
    let ready = tokio::time::timeout(
        Duration::from_secs(120),
        agent.wait_ready(Duration::from_secs(110)),
    )
    .await;
    if !matches!(ready, Ok(Ok(()))) {
        panic!("agent not ready: {ready:?}\nconsole:\n{}", guest.console());
    }
    bounded("ping", agent.ping()).await.expect("ping");

    let out = bounded(
        "uname",
        agent.run("/bin/uname", &["-r"], Duration::from_secs(20)),
    )
    .await
    .expect("uname runs");
    let release = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    assert!(release.contains("cloud-amd64"), "guest kernel {release:?}");

    bounded("write", agent.write_file("/tmp/hello", b"from the host\n"))
        .await
        .expect("write");
    let back = bounded("read", agent.read_file("/tmp/hello"))
        .await
        .expect("read");
    assert_eq!(back, b"from the host\n");
    let interfaces = bounded("net", agent.network_interfaces())
        .await
        .expect("interfaces");
    assert!(interfaces.iter().any(|i| i.name == "lo"), "{interfaces:?}");

    // A second client on the same port after the first went away: the sync
    // throws away whatever the first one left unread.
    let cut = agent.execute_raw_timeout("guest-info", None, Duration::from_nanos(1));
    let _ = bounded("cut", cut).await;
    drop(agent);
    let agent = GuestAgent::connect_unix(guest.dir.path().join("qga.sock"))
        .await
        .expect("qga socket again")
        .with_timeout(Duration::from_secs(20));
    bounded("ping again", agent.ping())
        .await
        .expect("ping after reconnect");

    // guest-shutdown gives no reply on success; QEMU reports the guest's
    // power-off and exits.
    bounded("shutdown", agent.shutdown(None))
        .await
        .expect("guest-shutdown");
    let event = shutdown_events
        .wait_for(|_| true, Duration::from_secs(60))
        .await
        .unwrap_or_else(|e| panic!("no SHUTDOWN: {e}\nconsole:\n{}", guest.console()));
    let data: events::Shutdown = event.parse_data().expect("SHUTDOWN data");
    assert!(data.guest, "{data:?}");
    assert_eq!(data.reason, "guest-shutdown");
    let status = bounded("qemu exit", guest.child.wait())
        .await
        .expect("wait");
    assert!(status.success(), "qemu exited with {status}");
    bounded("closed", qmp.closed()).await;
}

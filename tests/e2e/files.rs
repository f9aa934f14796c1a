//! File copies in both directions, through flotilla-agent and through the stock
//! qemu-guest-agent (QGA) on a real guest.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use flotilla_driver::{Fleet, Machine};

use super::spec;

/// A folder with a nested binary file and an executable script.
fn sample_tree(root: &Path) {
    std::fs::create_dir_all(root.join("sub/deeper")).unwrap();
    let blob: Vec<u8> = (0..(1u32 << 20))
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    std::fs::write(root.join("sub/deeper/blob.bin"), &blob).unwrap();
    std::fs::write(root.join("run.sh"), "#!/bin/sh\necho ran\n").unwrap();
    std::fs::set_permissions(root.join("run.sh"), std::fs::Permissions::from_mode(0o751)).unwrap();
}

fn assert_same_tree(a: &Path, b: &Path) {
    for rel in ["sub/deeper/blob.bin", "run.sh"] {
        let (x, y) = (a.join(rel), b.join(rel));
        assert!(
            std::fs::read(&x).unwrap() == std::fs::read(&y).unwrap(),
            "{rel} differs"
        );
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode(&x), mode(&y), "{rel} mode");
    }
}

async fn round_trip(vm: &Machine, dir: &Path) {
    let local = dir.join("local");
    sample_tree(&local);
    let copied = vm.copy_to(&local, "/tmp/in").await.unwrap();
    assert_eq!(copied, (1 << 20) + 19);
    assert_eq!(vm.succeed("/tmp/in/run.sh").await.unwrap(), "ran\n");
    assert_eq!(
        vm.succeed("stat -c %a /tmp/in/run.sh").await.unwrap(),
        "751\n"
    );
    let back = dir.join("back");
    vm.copy_from("/tmp/in", &back).await.unwrap();
    assert_same_tree(&local, &back);
    // One file, to a new name.
    vm.copy_from("/tmp/in/run.sh", &dir.join("single.sh"))
        .await
        .unwrap();
    assert_eq!(
        std::fs::read_to_string(dir.join("single.sh")).unwrap(),
        "#!/bin/sh\necho ran\n"
    );
    // A missing file is a clear error.
    let e = vm
        .copy_from("/no/such/file", &dir.join("x"))
        .await
        .unwrap_err();
    let m = format!(
        "{e}: {}",
        std::error::Error::source(&e)
            .map(|s| s.to_string())
            .unwrap_or_default()
    );
    assert!(m.contains("/no/such/file"), "{m}");
}

#[tokio::test(flavor = "multi_thread")]
async fn copy_to_and_from_through_the_agent() {
    let dir = tempfile::tempdir().unwrap();
    let (spec, options) = spec(&dir, "[machines.files]\n");
    let net = Fleet::new(&spec, options).unwrap();
    let vm = net.machine("files").unwrap();
    round_trip(&vm, dir.path()).await;
    net.stop_all().await;
}

/// PID 1 of the QGA image: mount, load the virtio modules, start Debian's qemu-ga on
/// its port, and reap.
const QGA_INIT: &str = r#"#!/bin/busybox sh
busybox mount -t proc proc /proc
busybox mount -t sysfs sysfs /sys
busybox mkdir -p /dev/pts /run /var/run /tmp
while read -r m; do busybox insmod "$m" 2>/dev/null; done < /etc/flotilla/modules
busybox ip link set lo up
port=""
while [ -z "$port" ]; do
    for d in /sys/class/virtio-ports/*; do
        [ "$(busybox cat "$d/name" 2>/dev/null)" = org.qemu.guest_agent.0 ] && port=/dev/${d##*/}
    done
    [ -z "$port" ] && busybox usleep 20000
done
/usr/sbin/qemu-ga -m virtio-serial -p "$port" &
while true; do wait; busybox sleep 1; done
"#;

/// Copies `binary` and the shared libraries `ldd` lists into `tree`.
fn install_with_libs(tree: &Path, binary: &str) {
    let out = Command::new("ldd").arg(binary).output().unwrap();
    let mut files = vec![binary.to_owned()];
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let path = line
            .split("=>")
            .last()
            .and_then(|r| r.split_whitespace().next())
            .filter(|p| p.starts_with('/'));
        files.extend(path.map(str::to_owned));
    }
    for f in files {
        let to = tree.join(f.trim_start_matches('/'));
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::copy(&f, &to).unwrap();
    }
}

/// Makes `dir/root.qcow2`, an image whose guest runs only Debian's qemu-ga (and a
/// `stat` that fails for files named `unstatable`).
pub(super) fn make_qga_image(dir: &Path) {
    super::disk::make_image_with(dir, |tree| {
        // Remove flotilla-agent: this image has only Debian's qemu-ga.
        std::fs::remove_file(tree.join("sbin/init")).unwrap();
        std::fs::write(tree.join("sbin/init"), QGA_INIT).unwrap();
        std::fs::set_permissions(
            tree.join("sbin/init"),
            std::fs::Permissions::from_mode(0o755),
        )
        .unwrap();
        install_with_libs(tree, "/usr/sbin/qemu-ga");
        // qemu-ga powers off with /sbin/shutdown, which a distribution has and busybox
        // does not.
        let shutdown = tree.join("sbin/shutdown");
        let _ = std::fs::remove_file(&shutdown);
        std::fs::write(
            &shutdown,
            "#!/bin/sh\nbusybox sync\nexec busybox poweroff -f\n",
        )
        .unwrap();
        std::fs::set_permissions(&shutdown, std::fs::Permissions::from_mode(0o755)).unwrap();
        // A `stat` that fails for one file the agent can read: a failure a real guest
        // seldom shows on cue.
        let stat = tree.join("bin/stat");
        let _ = std::fs::remove_file(&stat);
        std::fs::write(
            &stat,
            "#!/bin/sh\ncase \"$*\" in *unstatable*) echo 'stat: injected failure' >&2; exit 1;; esac\nexec busybox stat \"$@\"\n",
        )
        .unwrap();
        std::fs::set_permissions(&stat, std::fs::Permissions::from_mode(0o755)).unwrap();
    });
}

#[tokio::test(flavor = "multi_thread")]
async fn an_image_with_only_qemu_guest_agent_runs_commands_and_copies() {
    let dir = tempfile::tempdir().unwrap();
    make_qga_image(dir.path());
    let (spec, options) = spec(
        &dir,
        "[machines.stock]\nimage = \"root.qcow2\"\nagent = \"qga\"\n",
    );
    let net = Fleet::new(&spec, options).unwrap();
    let vm = net.machine("stock").unwrap();
    // The same semantics as with flotilla-agent.
    assert_eq!(vm.succeed("echo hi; echo err >&2").await.unwrap(), "hi\n");
    assert_eq!(vm.succeed("hostname").await.unwrap(), "stock\n");
    let e = vm.succeed("exit 3").await.unwrap_err().to_string();
    assert!(
        e.contains("`exit 3` was expected to succeed but ended with exit status 3"),
        "{e}"
    );
    vm.fail("false").await.unwrap();
    let r = vm.execute("kill -9 $$").await.unwrap();
    assert_eq!((r.code, r.signal), (None, Some(9)));
    assert!(!vm.succeed("ls /sbin").await.unwrap().contains("flotilla"));
    round_trip(&vm, dir.path()).await;
    let log = std::fs::read_to_string(dir.path().join("out/driver.log")).unwrap();
    assert!(log.contains("stock: ready: qemu-guest-agent"), "{log}");
    // qemu-ga has no net-config request: the driver's shell script set the network up,
    // with the same result as the agent's native set-up.
    assert!(
        log.contains("stock: network configured by a shell script"),
        "{log}"
    );
    let addrs = vm.succeed("ip -o addr show").await.unwrap();
    let (ip, ip6) = (vm.ip(1).unwrap(), vm.ipv6(1).unwrap());
    for want in [
        format!(" {ip}/"),
        format!(" {ip6}/"),
        " 10.0.2.15/24".into(),
    ] {
        assert!(addrs.contains(&want), "{want} in {addrs}");
    }
    let hosts = vm.succeed("cat /etc/hosts").await.unwrap();
    for want in [format!("{ip} stock\n"), format!("{ip6} stock\n")] {
        assert!(hosts.contains(&want), "{want} in {hosts}");
    }
    qga_failures_are_errors(&vm, dir.path()).await;
    // An error here means qemu-ga did not power the guest off and qemu was stopped.
    if let Err(e) = vm.shutdown(std::time::Duration::from_secs(20)).await {
        panic!("{e}");
    }
    net.stop_all().await;
    qga_coverage(&dir).await;
}

/// Coverage through qemu-ga: the coverage disk is mounted, commands get the
/// environment (exported: qemu-ga's own `env` would replace the whole environment),
/// an instrumented program's data reaches the report.
async fn qga_coverage(dir: &tempfile::TempDir) {
    let source = dir.path().join("cov.c");
    std::fs::write(
        &source,
        "int main(int argc, char **argv) { return argc > 1; }\n",
    )
    .unwrap();
    let program = dir.path().join("cov");
    let built = std::process::Command::new("gcc")
        .args(["--coverage", "-static", "-o"])
        .arg(&program)
        .arg(&source)
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(built.status.success(), "{built:?}");
    let (spec, mut options) = spec(
        dir,
        "[machines.stock]\nimage = \"root.qcow2\"\nagent = \"qga\"\n",
    );
    options.log_dir = dir.path().join("out-coverage");
    options.coverage = true;
    let net = Fleet::new(&spec, options).unwrap();
    let vm = net.machine("stock").unwrap();
    vm.succeed(
        "[ \"$GCOV_PREFIX\" = /run/flotilla/coverage/gcov ] && [ \"$GCOV_PREFIX_STRIP\" = 0 ]",
    )
    .await
    .unwrap();
    vm.succeed("grep -q ' /run/flotilla/coverage ext2 ' /proc/mounts")
        .await
        .unwrap();
    vm.copy_to(&program, "/cov").await.unwrap();
    vm.succeed("/cov").await.unwrap();
    let report = net.finish_coverage().await.unwrap();
    assert_eq!(report.contributed, ["stock"], "{}", report.table());
    assert!(report.table().contains("cov.c"), "{}", report.table());
}

/// The error and its causes, one line.
fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut next = e.source();
    while let Some(cause) = next {
        out.push_str(": ");
        out.push_str(&cause.to_string());
        next = cause.source();
    }
    out
}

/// Through qemu-ga, a command is killed at its limit with what it started, and the
/// helpers of a copy that fail (`mkdir`, `chmod`, `stat`) fail the copy.
async fn qga_failures_are_errors(vm: &Machine, dir: &Path) {
    let started = std::time::Instant::now();
    let e = vm
        .execute_with_timeout(
            "sleep 600 & exec sleep 601",
            std::time::Duration::from_secs(2),
        )
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("did not finish within 2 s (timeout)"), "{e}");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(12),
        "{:?}",
        started.elapsed()
    );
    // Both sleeps are gone, the one in the background too.
    let left = vm
        .succeed("ps -o pid,args | grep '[s]leep 60' || true")
        .await
        .unwrap();
    assert_eq!(left, "", "still running after the limit");

    let local = dir.join("hostname");
    std::fs::write(&local, "renamed\n").unwrap();
    // /proc/x cannot be made.
    let e = chain(&vm.copy_to(&local, "/proc/x/file").await.unwrap_err());
    assert!(
        e.contains("creating the folder /proc/x for /proc/x/file: `mkdir -p -- /proc/x` ended with exit status 1"),
        "{e}"
    );
    // A sysctl file takes the write but refuses chmod.
    let e = chain(
        &vm.copy_to(&local, "/proc/sys/kernel/hostname")
            .await
            .unwrap_err(),
    );
    assert!(
        e.contains("setting the mode of /proc/sys/kernel/hostname to 644: `chmod 644 -- /proc/sys/kernel/hostname` ended with exit status 1"),
        "{e}"
    );
    vm.succeed("echo stock > /proc/sys/kernel/hostname")
        .await
        .unwrap();
    // The mode of a pulled file is the guest's or an error, never a guess.
    vm.succeed("echo x > /tmp/unstatable").await.unwrap();
    let e = chain(
        &vm.copy_from("/tmp/unstatable", &dir.join("unstatable"))
            .await
            .unwrap_err(),
    );
    assert!(
        e.contains("reading the mode of /tmp/unstatable: `stat -c %a -- /tmp/unstatable` ended with exit status 1: stat: injected failure"),
        "{e}"
    );
}

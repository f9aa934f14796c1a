//! Disks: booting a disk image through stage 1 on a per-run overlay, extra blank and
//! overlay disks, injected I/O errors, and disks kept across runs.

use std::path::Path;
use std::process::Command;

use flotilla_driver::Fleet;

use super::spec;

fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A qcow2 image whose root holds busybox and the agent as `/sbin/init`: the default
/// initramfs unpacked onto ext4.
fn make_image(dir: &Path) -> std::path::PathBuf {
    make_image_with(dir, |_| {})
}

/// [`make_image`], with `customize` changing the tree before it becomes ext4.
pub(crate) fn make_image_with(dir: &Path, customize: impl FnOnce(&Path)) -> std::path::PathBuf {
    make_image_for(dir, flotilla_driver::Arch::host(), customize)
}

/// [`make_image_with`] for machines of `arch`: its busybox and agent.
pub(crate) fn make_image_for(
    dir: &Path,
    arch: &'static flotilla_driver::Arch,
    customize: impl FnOnce(&Path),
) -> std::path::PathBuf {
    let kernel = flotilla_driver::image::Kernel::locate(arch).unwrap();
    let agent = flotilla_driver::agent_binary(arch).unwrap();
    let cpio = flotilla_driver::image::default_initramfs(&kernel, &agent).unwrap();
    let tree = dir.join("tree");
    std::fs::create_dir_all(&tree).unwrap();
    run(Command::new("sh").arg("-c").arg(format!(
        "cd {} && cpio -idm --quiet < {} && mkdir -p sbin && mv init sbin/init",
        tree.display(),
        cpio.display()
    )));
    customize(&tree);
    let raw = dir.join("root.ext4");
    run(Command::new("mke2fs")
        .args(["-q", "-t", "ext4", "-d"])
        .arg(&tree)
        .arg(&raw)
        .arg("64M"));
    let image = dir.join("root.qcow2");
    run(Command::new("qemu-img")
        .args(["convert", "-q", "-O", "qcow2"])
        .arg(&raw)
        .arg(&image));
    image
}

#[tokio::test(flavor = "multi_thread")]
async fn disk_image_boots_through_stage1_and_stays_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    let image = make_image(dir.path());
    let before = std::fs::read(&image).unwrap();
    let (spec, options) = spec(
        &dir,
        "[machines.disk]\nimage = \"root.qcow2\"\n[[machines.disk.disks]]\nsize = \"4M\"\nname = \"extra\"\n",
    );
    let net = Fleet::new(&spec, options).unwrap();
    let disk = net.machine("disk").unwrap();
    // The root file system is the disk, writable, and the host name is set.
    let mounts = disk.succeed("cat /proc/mounts").await.unwrap();
    assert!(mounts.contains("/dev/vda / ext4 rw"), "{mounts}");
    // An extra disk comes after the image's, with its name as the serial.
    assert_eq!(
        disk.succeed("cat /sys/block/vdb/serial; echo; cat /sys/block/vdb/size")
            .await
            .unwrap(),
        "extra\n8192\n"
    );
    assert_eq!(disk.succeed("hostname").await.unwrap(), "disk\n");
    disk.succeed("echo written > /root/file && sync")
        .await
        .unwrap();
    assert_eq!(disk.succeed("cat /root/file").await.unwrap(), "written\n");
    net.stop_all().await;
    // Writes went to the run's overlay, never to the base image.
    assert!(
        std::fs::read(&image).unwrap() == before,
        "the base image changed"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_missing_image_is_a_spec_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("flotilla.toml");
    std::fs::write(&path, "[machines.disk]\nimage = \"nope.qcow2\"\n").unwrap();
    let e = flotilla_driver::Spec::load(&path).unwrap_err().to_string();
    assert!(
        e.starts_with(&format!("{}:2:9: machine `disk`: image", path.display())),
        "{e}"
    );
    assert!(e.contains("nope.qcow2 does not exist"), "{e}");
}

/// A qcow2 image holding `data` at offset 0 (and zeros up to 4 MiB).
fn make_base(dir: &Path, data: &[u8]) -> std::path::PathBuf {
    let raw = dir.join("base.raw");
    let mut bytes = data.to_vec();
    bytes.resize(4 << 20, 0);
    std::fs::write(&raw, bytes).unwrap();
    let base = dir.join("base.qcow2");
    run(Command::new("qemu-img")
        .args(["convert", "-q", "-f", "raw", "-O", "qcow2"])
        .arg(&raw)
        .arg(&base));
    base
}

#[tokio::test(flavor = "multi_thread")]
async fn blank_and_overlay_disks_appear_in_order_and_survive_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    let base = make_base(dir.path(), b"flotilla base data");
    let before = std::fs::read(&base).unwrap();
    let (spec, options) = spec(
        &dir,
        "[machines.vm]\n\
         [[machines.vm.disks]]\nsize = \"8M\"\n\
         [[machines.vm.disks]]\nbase = \"base.qcow2\"\nname = \"data\"\n",
    );
    let net = Fleet::new(&spec, options).unwrap();
    let vm = net.machine("vm").unwrap();
    // No image: the disks are /dev/vda, /dev/vdb, in spec order.
    assert_eq!(
        vm.succeed(
            "cat /sys/block/vda/serial; echo; cat /sys/block/vda/size /sys/block/vdb/serial"
        )
        .await
        .unwrap(),
        "disk1\n16384\ndata"
    );
    // The blank disk reads as zeros and keeps what is written.
    assert_eq!(
        vm.succeed("dd if=/dev/vda bs=1M 2>/dev/null | tr -d '\\0' | wc -c")
            .await
            .unwrap()
            .trim(),
        "0"
    );
    vm.succeed("seq 1 20000 > /tmp/pattern && dd if=/tmp/pattern of=/dev/vda bs=4k conv=fsync")
        .await
        .unwrap();
    // The overlay shows the base's data, and takes writes.
    assert_eq!(
        vm.succeed("dd if=/dev/vdb bs=18 count=1 2>/dev/null")
            .await
            .unwrap(),
        "flotilla base data"
    );
    vm.succeed("printf 'overlay data!' | dd of=/dev/vdb conv=fsync")
        .await
        .unwrap();
    // A power cut keeps both disks' writes within the run.
    vm.crash().await.unwrap();
    assert_eq!(
        vm.succeed("seq 1 20000 > /tmp/pattern && head -c $(wc -c < /tmp/pattern) /dev/vda | cmp - /tmp/pattern && echo same")
            .await
            .unwrap(),
        "same\n"
    );
    assert_eq!(
        vm.succeed("dd if=/dev/vdb bs=18 count=1 2>/dev/null")
            .await
            .unwrap(),
        "overlay data! data"
    );
    net.stop_all().await;
    assert!(
        std::fs::read(&base).unwrap() == before,
        "the base image changed"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn injected_io_errors_reach_the_guest_and_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let (spec, options) = spec(
        &dir,
        "[machines.vm]\n\
         [[machines.vm.disks]]\nsize = \"8M\"\ninject_errors = [{ event = \"write_aio\" }]\n\
         [[machines.vm.disks]]\nsize = \"8M\"\nname = \"flaky\"\n\
         inject_errors = [{ event = \"read_aio\", once = true }]\n",
    );
    let net = Fleet::new(&spec, options).unwrap();
    let vm = net.machine("vm").unwrap();
    // A write to disk1 fails with EIO; the VM goes on (it is not paused).
    let r = vm
        .execute("dd if=/dev/zero of=/dev/vda bs=4k count=1 oflag=direct")
        .await
        .unwrap();
    assert_ne!(r.code, Some(0), "{r:?}");
    assert!(r.stderr.contains("Input/output error"), "{r:?}");
    assert_eq!(vm.succeed("echo alive").await.unwrap(), "alive\n");
    let status = vm.qmp().await.unwrap().query_status().await.unwrap();
    assert!(status.running, "{status:?}");
    // On `flaky`, writes work; the first read of written data fails, once.
    vm.succeed("echo hello | dd of=/dev/vdb bs=4k conv=sync oflag=direct")
        .await
        .unwrap();
    let read = "dd if=/dev/vdb bs=4k count=1 iflag=direct | head -c 5";
    let r = vm.execute(read).await.unwrap();
    assert!(r.stderr.contains("Input/output error"), "{r:?}");
    assert_eq!(vm.succeed(read).await.unwrap(), "hello");
    // The driver log names the machine and the drive, beside the raw event.
    let log_path = dir.path().join("out/driver.log");
    let wanted = [
        "vm: I/O error on drive disk1 (write, Input/output error; reported to the guest)",
        "vm: I/O error on drive flaky (read, Input/output error; reported to the guest)",
        "vm: qmp event BLOCK_IO_ERROR",
    ];
    // The events were logged as they came (milliseconds); 30 s for a busy host.
    let mut log = String::new();
    let started = std::time::Instant::now();
    while started.elapsed() < std::time::Duration::from_secs(30) {
        log = std::fs::read_to_string(&log_path).unwrap();
        if wanted.iter().all(|w| log.contains(w)) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    for w in wanted {
        assert!(log.contains(w), "driver.log lacks `{w}`:\n{log}");
    }
    net.stop_all().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn keep_state_carries_disks_into_the_next_network() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let text = "[machines.vm]\n[[machines.vm.disks]]\nsize = 8\n";
    let marker = "dd if=/dev/vda bs=12 count=1 2>/dev/null";
    {
        let (spec, mut options) = spec(&dir, text);
        options.keep_state = Some(state.clone());
        let net = Fleet::new(&spec, options).unwrap();
        let vm = net.machine("vm").unwrap();
        assert_eq!(vm.succeed(marker).await.unwrap(), "\0".repeat(12));
        vm.succeed("printf 'from run one' | dd of=/dev/vda conv=fsync")
            .await
            .unwrap();
        net.stop_all().await;
    }
    assert!(state.join("vm/disk1.qcow2").is_file());
    let (spec, mut options) = spec(&dir, text);
    options.keep_state = Some(state.clone());
    let net = Fleet::new(&spec, options).unwrap();
    let vm = net.machine("vm").unwrap();
    assert_eq!(vm.succeed(marker).await.unwrap(), "from run one");
    net.stop_all().await;
    let log = std::fs::read_to_string(dir.path().join("out/driver.log")).unwrap();
    assert!(log.contains("vm: disk disk1: reusing "), "{log}");
}

//! Booting a disk image through stage 1, on a per-run overlay.

use std::path::Path;
use std::process::Command;

use flotilla_driver::Network;

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
    let kernel = flotilla_driver::image::Kernel::locate().unwrap();
    let agent = flotilla_driver::agent_binary().unwrap();
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
    let (spec, options) = spec(&dir, "[machines.disk]\nimage = \"root.qcow2\"\n");
    let net = Network::new(&spec, options).unwrap();
    let disk = net.machine("disk").unwrap();
    // The root file system is the disk, writable, and the host name is set.
    let mounts = disk.succeed("cat /proc/mounts").await.unwrap();
    assert!(mounts.contains("/dev/vda / ext4 rw"), "{mounts}");
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

//! The hand-made floor the benches compare with: QEMU boots a kernel with a minimal
//! initramfs (static busybox, `/init` a shell script that prints `FLOOR-READY`, may run
//! some work and print `FLOOR-DONE`, then powers off), timed from spawning QEMU to each
//! line on the serial console. Shared by `boot` and `arm64_cpus`.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use flotilla_driver::image::busybox_path;
use flotilla_driver::{Accel, Arch};

/// A floor initramfs for `arch` in `dir`, whose `/init` runs the shell commands `work`
/// (none if empty) after its first line.
pub fn initramfs(dir: &Path, arch: &Arch, work: &str) -> PathBuf {
    let tag = if work.is_empty() { "" } else { "-work" };
    let root = dir.join(format!("floor-root-{arch}{tag}"));
    std::fs::create_dir_all(root.join("bin")).expect("mkdir");
    std::fs::copy(busybox_path(arch), root.join("bin/busybox")).expect("copy busybox");
    let _ = std::os::unix::fs::symlink("busybox", root.join("bin/sh"));
    let work = if work.is_empty() {
        String::new()
    } else {
        format!("export PATH=/bin\n/bin/busybox --install -s /bin\nmkdir -p /dev && mount -t devtmpfs devtmpfs /dev\n{work} || echo FLOOR-WORK-FAILED\n/bin/busybox echo FLOOR-DONE\n")
    };
    std::fs::write(
        root.join("init"),
        format!("#!/bin/sh\n/bin/busybox echo FLOOR-READY\n{work}exec /bin/busybox poweroff -f\n"),
    )
    .expect("write init");
    std::fs::set_permissions(
        root.join("init"),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .expect("chmod");
    let out = dir.join(format!("floor-{arch}{tag}.cpio"));
    let status = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "cd {} && find . | cpio -o -H newc --quiet > {}",
            root.display(),
            out.display()
        ))
        .status()
        .expect("cpio");
    assert!(status.success(), "cpio failed");
    out
}

/// How long a floor boot took to each of its lines.
pub struct Times {
    pub ready: Duration,
    /// To `FLOOR-DONE`, if the initramfs has work.
    #[allow(dead_code)] // the boot bench's floors have none
    pub done: Option<Duration>,
}

/// What a floor boots, and how.
pub struct Floor<'a> {
    pub arch: &'a Arch,
    /// The CPU model under TCG (KVM uses `host`).
    pub cpu: &'a str,
    pub kernel: &'a Path,
    pub initrd: &'a Path,
    pub accel: Accel,
    /// More kernel arguments, each with a leading space.
    pub extra: &'a str,
    pub bios: Option<&'a Path>,
}

impl Floor<'_> {
    /// Boots it once.
    pub fn boot(&self) -> Times {
        let started = Instant::now();
        let mut command = Command::new(flotilla_driver::qemu_binary(self.arch));
        if let Some(bios) = self.bios {
            command.arg("-bios").arg(bios);
        }
        let mut child = command
            .args([
                "-M",
                self.arch.machine,
                "-nodefaults",
                "-no-user-config",
                "-display",
                "none",
                "-no-reboot",
            ])
            .args(match self.accel {
                Accel::Kvm => ["-accel", "kvm", "-cpu", "host"],
                Accel::Tcg => ["-accel", "tcg", "-cpu", self.cpu],
            })
            .args(["-m", "256", "-serial", "stdio", "-kernel"])
            .arg(self.kernel)
            .arg("-initrd")
            .arg(self.initrd)
            .arg("-append")
            .arg(format!(
                "console={} quiet panic=-1{}",
                self.arch.console, self.extra
            ))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("qemu");
        let stdout = child.stdout.take().expect("stdout");
        let (mut ready, mut done) = (None, None);
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if line.contains("FLOOR-READY") {
                ready = Some(started.elapsed());
            } else if line.contains("FLOOR-WORK-FAILED") {
                panic!("the floor's work failed");
            } else if line.contains("FLOOR-DONE") {
                done = Some(started.elapsed());
            }
        }
        let _ = child.kill();
        let _ = child.wait();
        Times {
            ready: ready.expect("the floor initramfs printed its line"),
            done,
        }
    }
}

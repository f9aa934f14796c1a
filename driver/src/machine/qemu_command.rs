//! The QEMU command line of a machine, as a value ([`QemuCommand`]) built in one place
//! from its [`MachineConfig`]; booting runs it.

use std::ffi::OsString;
use std::fmt::Write as _;
use std::path::PathBuf;

use flotilla_agent::proto;
use tokio::process::Command;

use super::config::{MachineConfig, ROOT_DISK};
use crate::accel::Accel;
use crate::agent_client::QGA_PORT;

/// QEMU device ids of the agent's and qemu-ga's serial ports (in VSERPORT_CHANGE).
pub(super) const AGENT_PORT_ID: &str = "agent-port";
pub(super) const QGA_PORT_ID: &str = "qga-port";

/// A QEMU command line: the program and its arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QemuCommand {
    pub program: PathBuf,
    pub args: Vec<OsString>,
}

impl QemuCommand {
    /// The command line that boots the machine `c`.
    pub fn new(c: &MachineConfig) -> QemuCommand {
        let dir = &c.socket_dir;
        let mut cmd = QemuCommand {
            program: c.qemu.clone(),
            args: Vec::new(),
        };
        cmd.arg("-name")
            .arg(format!("{},process=flotilla-{}", c.name, c.name));
        cmd.args([
            "-M",
            "q35",
            "-nodefaults",
            "-no-user-config",
            "-display",
            "none",
        ]);
        cmd.arg("-no-reboot");
        // qboot loads the kernel at once; SeaBIOS (QEMU's default) takes about a second
        // more under TCG but sets up the VGA text screen, so machines with a display
        // use it.
        if let (false, Some(qboot)) = (c.spec.display, &c.firmware) {
            cmd.arg("-bios").arg(qboot);
        }
        match c.accel.accel {
            Accel::Kvm => cmd.args(["-accel", "kvm", "-cpu", "host"]),
            Accel::Tcg => cmd.args(["-accel", "tcg", "-cpu", "max"]),
        };
        cmd.arg("-m").arg(c.spec.memory.to_string());
        cmd.arg("-smp").arg(c.spec.cpus.to_string());
        cmd.args([
            "-chardev",
            "stdio,id=console,signal=off",
            "-serial",
            "chardev:console",
        ]);
        cmd.arg("-qmp").arg(format!(
            "unix:{},server=on,wait=off",
            dir.join("qmp.sock").display()
        ));
        cmd.arg("-kernel").arg(&c.boot_kernel);
        cmd.arg("-initrd").arg(&c.initrd);
        // cryptomgr.notests: no boot-time crypto self-tests (about 0.2 s under TCG);
        // no_timer_check: no check of the IO-APIC timer, which a starved emulated CPU
        // can fail ("IO-APIC + timer doesn't work", a panic) on a busy host.
        let mut append = format!(
            "console=ttyS0 quiet panic=-1 rdinit=/init cryptomgr.notests no_timer_check \
             flotilla.hostname={}",
            c.hostname()
        );
        if c.spec.image.is_some() {
            // Stage 1 writes the machine id into the root.
            let _ = write!(
                append,
                " root=/dev/vda rw flotilla.machine_id={}",
                c.machine_id()
            );
        }
        if c.coverage {
            // For the init and every service it starts: sysvinit passes the kernel's
            // variables on, systemd takes them as systemd.setenv.
            for (k, v) in flotilla_coverage::guest_env() {
                let _ = write!(append, " {k}={v} systemd.setenv={k}={v}");
            }
        }
        if !c.spec.kernel_args.trim().is_empty() {
            append.push(' ');
            append.push_str(c.spec.kernel_args.trim());
        }
        cmd.arg("-append").arg(append);
        cmd.args(["-device", "virtio-serial-pci,id=vser0"]);
        cmd.arg("-chardev").arg(format!(
            "socket,id=agent,path={},server=on,wait=off",
            dir.join("agent.sock").display()
        ));
        cmd.arg("-device").arg(format!(
            "virtserialport,bus=vser0.0,chardev=agent,name={},id={AGENT_PORT_ID}",
            proto::PORT_NAME
        ));
        // Every machine has the stock guest agent's port too: an image with qemu-ga
        // is reachable through it whichever agent drives the machine.
        cmd.arg("-chardev").arg(format!(
            "socket,id=qga,path={},server=on,wait=off",
            dir.join("qga.sock").display()
        ));
        cmd.arg("-device").arg(format!(
            "virtserialport,bus=vser0.0,chardev=qga,name={QGA_PORT},id={QGA_PORT_ID}"
        ));
        cmd.args(["-device", "virtio-rng-pci"]);
        // A standard VGA card: its text console is what `screenshot` captures. (The
        // PS/2 keyboard for `send_key` is part of q35, display or not.)
        if c.spec.display {
            cmd.args(["-device", "VGA"]);
        }
        // pvpanic: a guest panic raises GUEST_PANICKED and pauses the VM, keeping its
        // state (console, screen) for the error report instead of rebooting it.
        cmd.args(["-device", "pvpanic-pci", "-action", "panic=pause"]);
        // The root image's disk first (/dev/vda), then the extra disks in spec order;
        // every -device in command-line order, so PCI slots follow that order.
        if c.spec.image.is_some() {
            let drive = drive_options(ROOT_DISK, &c.disk_path(ROOT_DISK), &[]);
            cmd.arg("-drive").arg(drive);
            cmd.arg("-device")
                .arg(format!("virtio-blk-pci,drive={ROOT_DISK}"));
        }
        for disk in &c.spec.disks {
            let path = c.disk_path(&disk.name);
            cmd.arg("-drive")
                .arg(drive_options(&disk.name, &path, &disk.inject_errors));
            cmd.arg("-device")
                .arg(format!("virtio-blk-pci,drive={0},serial={0}", disk.name));
        }
        // The coverage disk last, so that the spec's disks keep their names.
        if c.coverage {
            let file = c.coverage_disk().display().to_string().replace(',', ",,");
            cmd.arg("-drive").arg(format!(
                "id=coverage,if=none,format=raw,werror=report,rerror=report,file={file}"
            ));
            cmd.arg("-device").arg(format!(
                "virtio-blk-pci,drive=coverage,serial={}",
                flotilla_coverage::DISK_SERIAL
            ));
        }
        if let Ok(args) = c.fabric.plan.qemu_args(&c.name) {
            cmd.args(args);
        }
        if let Ok(user) = c.user_net.lock() {
            cmd.args(user.qemu_args());
        }
        cmd
    }

    fn arg(&mut self, arg: impl Into<OsString>) -> &mut QemuCommand {
        self.args.push(arg.into());
        self
    }

    fn args<I: IntoIterator<Item = S>, S: Into<OsString>>(&mut self, args: I) -> &mut QemuCommand {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    /// The command to spawn, with stdin, stdout (the console) and stderr piped.
    pub fn to_command(&self) -> Command {
        let mut cmd = Command::new(&self.program);
        cmd.args(&self.args);
        cmd.stdin(std::process::Stdio::piped());
        cmd.stdout(std::process::Stdio::piped());
        cmd.stderr(std::process::Stdio::piped());
        cmd
    }
}

/// `-drive` options for a qcow2 disk file: I/O errors reach the guest
/// (`werror`/`rerror=report`) instead of pausing the VM. Error rules put QEMU's
/// blkdebug between the qcow2 format and the file, where qcow2's events fire.
pub(super) fn drive_options(
    id: &str,
    file: &std::path::Path,
    rules: &[crate::spec::InjectError],
) -> String {
    // A comma in an option value is written twice.
    let file = file.display().to_string().replace(',', ",,");
    let mut s = format!("id={id},if=none,format=qcow2,werror=report,rerror=report");
    // The file node by driver and name: a path with `:` is not a protocol prefix.
    let mut file_node = "file";
    if !rules.is_empty() {
        s.push_str(",file.driver=blkdebug");
        file_node = "file.image";
    }
    for (i, rule) in rules.iter().enumerate() {
        let rule_at = format!(",file.inject-error.{i}");
        let once = if rule.once { "on" } else { "off" };
        let _ = write!(
            s,
            "{rule_at}.event={}{rule_at}.errno={}{rule_at}.once={once}",
            rule.event, rule.errno
        );
    }
    let _ = write!(s, ",{file_node}.driver=file,{file_node}.filename={file}");
    s
}

#[cfg(test)]
mod tests {
    #[test]
    fn drive_options_escape_and_inject() {
        use crate::spec::InjectError;
        let plain = super::drive_options("disk1", "/a,b/disk1.qcow2".as_ref(), &[]);
        assert_eq!(
            plain,
            "id=disk1,if=none,format=qcow2,werror=report,rerror=report,\
             file.driver=file,file.filename=/a,,b/disk1.qcow2"
        );
        let rule = InjectError {
            event: "write_aio".into(),
            errno: 5,
            once: true,
        };
        let faulty = super::drive_options("d", "/x.qcow2".as_ref(), &[rule]);
        assert!(
            faulty.ends_with(
                ",file.driver=blkdebug,file.inject-error.0.event=write_aio\
                 ,file.inject-error.0.errno=5,file.inject-error.0.once=on\
                 ,file.image.driver=file,file.image.filename=/x.qcow2"
            ),
            "{faulty}"
        );
    }
}

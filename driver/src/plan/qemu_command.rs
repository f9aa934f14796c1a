//! A machine's QEMU command as a value ([`QemuCommand`]): what the guest is
//! ([`Hardware`]: everything that shapes its state, and so a snapshot's identity) apart
//! from who and where this machine is ([`Instance`]: its name, host name, machine id,
//! MACs, sockets, disk files, forwarded ports). One start of it ([`Start`]) says how its
//! RAM is backed and whether it loads a saved state; the argument list is made from the
//! three at once ([`QemuCommand::argv`]) and never edited afterwards.
//!
//! A snapshot's identity is the argument list of the hardware with a placeholder
//! instance and a cold start ([`QemuCommand::identity_view`]), the disks' sources and
//! the content stamps of the files it boots: two machines that differ only in their
//! instance have one identity by construction.

use std::ffi::OsString;
use std::fmt::Write as _;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use flotilla_agent::proto;
use flotilla_vmnet::forward::{DEVICE_ID as USER_DEVICE_ID, NETDEV_ID as USER_NETDEV_ID};
use flotilla_vmnet::nic_args::{multicast_netdev, nic_device, user_netdev, vde_netdev};
use flotilla_vmnet::{Forward, Mac};
use tokio::process::Command;

use crate::accel::Accel;
use crate::agent_client::QGA_PORT;
use crate::spec::{DiskSource, DiskSpec, InjectError};
use flotilla_host::arch::Arch;

/// QEMU device ids of the agent's and qemu-ga's serial ports (in VSERPORT_CHANGE).
pub(crate) const AGENT_PORT_ID: &str = "agent-port";
pub(crate) const QGA_PORT_ID: &str = "qga-port";

/// The drive id of an `image`'s disk (extra disks go by their own names).
pub(crate) const ROOT_DISK: &str = "root";

/// The id of the RAM's memory backend of a file-backed RAM.
pub(crate) const RAM_BACKEND_ID: &str = "ram";

/// A machine's QEMU command: the program, what the guest is, who this machine is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct QemuCommand {
    /// The QEMU binary.
    pub program: PathBuf,
    pub hardware: Hardware,
    pub instance: Instance,
}

/// What the guest is: every input of its state. All of it is in a snapshot's identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Hardware {
    /// The guest's architecture: QEMU's machine type, CPU and console.
    pub arch: &'static Arch,
    pub accel: Accel,
    pub memory_mib: u32,
    pub cpus: u32,
    /// qboot (`-bios`); `None`: QEMU's SeaBIOS (always for a machine with a display).
    pub firmware: Option<PathBuf>,
    /// The file QEMU boots: the unpacked `vmlinux`, or the `vmlinuz`.
    pub kernel: PathBuf,
    pub initrd: PathBuf,
    /// The spec's extra kernel arguments.
    pub kernel_args: String,
    /// The coverage environment on the kernel command line, and a coverage disk.
    pub coverage: bool,
    /// A VGA card.
    pub display: bool,
    /// The base image of the root disk (an overlay over it), if the machine has one.
    pub image: Option<PathBuf>,
    /// The extra disks, in the guest's order.
    pub disks: Vec<DiskSpec>,
    /// The NICs: one per VLAN, then the host-access NIC.
    pub nics: Vec<NicModel>,
}

/// A NIC as the guest has it: its QEMU ids and the kind of its host side.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct NicModel {
    pub netdev_id: String,
    pub device_id: String,
    pub link: LinkKind,
}

/// The kind of a NIC's host side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LinkKind {
    /// A VDE switch's socket.
    Vde,
    /// A UDP multicast group.
    Multicast,
    /// QEMU's user-mode network, restricted to the forwarded ports.
    User,
}

/// Who and where one machine is: nothing of it is in a snapshot's identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Instance {
    pub name: String,
    /// The guest's host name (`flotilla.hostname=`).
    pub hostname: String,
    /// The machine id stage 1 writes into an image's root (`flotilla.machine_id=`).
    pub machine_id: String,
    /// Private (0700) folder for this machine's sockets.
    pub socket_dir: PathBuf,
    /// Folder of the machine's disk files (`root.qcow2`, `<disk>.qcow2`): the socket
    /// folder, or `<keep-state dir>/<machine>` to keep them across runs.
    pub state_dir: PathBuf,
    /// The host side of each NIC of [`Hardware::nics`], in that order.
    pub nics: Vec<NicEnd>,
}

/// The machine's own side of a NIC.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct NicEnd {
    pub mac: Mac,
    pub host: NicHost,
}

/// Where a NIC's frames go on the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum NicHost {
    /// The NIC's link to its VLAN's switch (VDE).
    Socket(PathBuf),
    /// A multicast group and port.
    Group(Ipv4Addr, u16),
    /// The host-access NIC's forwarded ports.
    Forwards(Vec<Forward>),
}

/// How one start of a machine begins: its RAM and what state it loads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Start {
    pub ram: Ram,
    pub incoming: Incoming,
}

/// The guest's RAM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Ram {
    /// QEMU's anonymous memory (machines without snapshots).
    Anonymous,
    /// An unlinked file QEMU makes in this folder, mapped shared: a saving machine's,
    /// copied into the store once the devices are saved.
    Shared(PathBuf),
    /// A saved state's RAM file, mapped privately: restored machines share its
    /// unchanged pages.
    Private(PathBuf),
}

/// The saved state a start loads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Incoming {
    /// None: the guest boots.
    None,
    /// The device state in this file: QEMU waits (`-incoming defer`) until the driver
    /// has it load the file (QMP `migrate-incoming`, after `x-ignore-shared`).
    Snapshot(PathBuf),
}

impl Start {
    /// A boot with QEMU's own RAM.
    pub(crate) fn cold() -> Start {
        Start {
            ram: Ram::Anonymous,
            incoming: Incoming::None,
        }
    }
}

impl Instance {
    /// Where the disk named `name` (or [`ROOT_DISK`]) lives.
    pub(crate) fn disk_path(&self, name: &str) -> PathBuf {
        self.state_dir.join(format!("{name}.qcow2"))
    }

    /// The coverage disk: an ext2 file system the guest mounts at
    /// [`flotilla_coverage::GUEST_DIR`], read on the host after QEMU stops.
    pub(crate) fn coverage_disk(&self) -> PathBuf {
        self.socket_dir.join("coverage.ext2")
    }

    /// The forwards of the host-access NIC.
    pub(crate) fn forwards(&self) -> Vec<Forward> {
        self.nics
            .iter()
            .find_map(|n| match &n.host {
                NicHost::Forwards(f) => Some(f.clone()),
                _ => None,
            })
            .unwrap_or_default()
    }

    /// Makes `forwards` those of the host-access NIC.
    pub(crate) fn set_forwards(&mut self, forwards: Vec<Forward>) {
        for nic in &mut self.nics {
            if let NicHost::Forwards(f) = &mut nic.host {
                *f = forwards.clone();
            }
        }
    }

    /// An instance of `hardware` with a placeholder for every value: the same NICs, no
    /// name, paths, MACs or ports of any machine.
    fn placeholder(hardware: &Hardware) -> Instance {
        Instance {
            name: "<name>".into(),
            hostname: "<hostname>".into(),
            machine_id: "<machine-id>".into(),
            socket_dir: "<sockets>".into(),
            state_dir: "<state>".into(),
            nics: hardware
                .nics
                .iter()
                .map(|nic| NicEnd {
                    mac: Mac([0; 6]),
                    host: match nic.link {
                        LinkKind::Vde => NicHost::Socket("<link>".into()),
                        LinkKind::Multicast => NicHost::Group(Ipv4Addr::UNSPECIFIED, 0),
                        LinkKind::User => NicHost::Forwards(Vec::new()),
                    },
                })
                .collect(),
        }
    }
}

impl Hardware {
    /// The machine's disks as (name, source): the image's overlay first, then the
    /// extra disks in order.
    pub(crate) fn disk_sources(&self) -> Vec<(String, DiskSource)> {
        let root = self.image.as_ref().map(|base| {
            (
                ROOT_DISK.to_owned(),
                DiskSource::Overlay { base: base.clone() },
            )
        });
        let extra = self
            .disks
            .iter()
            .map(|d| (d.name.clone(), d.source.clone()));
        root.into_iter().chain(extra).collect()
    }
}

impl QemuCommand {
    /// The command's arguments for one start.
    pub(crate) fn argv(&self, start: &Start) -> Vec<OsString> {
        let mut a = Args::default();
        self.machine_args(&mut a, &start.ram);
        self.kernel_args(&mut a);
        self.device_args(&mut a);
        self.disk_args(&mut a);
        self.nic_args(&mut a);
        ram_args(&mut a, self.hardware.memory_mib, &start.ram);
        if let Incoming::Snapshot(_) = start.incoming {
            a.add(["-incoming", "defer"]);
        }
        a.0
    }

    /// The command to spawn for one start, with stdin, stdout (the console) and stderr
    /// piped.
    pub(crate) fn to_command(&self, start: &Start) -> Command {
        let mut cmd = Command::new(&self.program);
        cmd.args(self.argv(start));
        cmd.stdin(std::process::Stdio::piped());
        cmd.stdout(std::process::Stdio::piped());
        cmd.stderr(std::process::Stdio::piped());
        cmd
    }

    /// What of the command a snapshot's identity holds: the program, the arguments of
    /// the hardware with a placeholder instance and a cold start, and a field per disk
    /// (its name and what it starts as; the drive options are in the arguments).
    pub(crate) fn identity_view(&self) -> Vec<String> {
        let anonymous = QemuCommand {
            program: self.program.clone(),
            hardware: self.hardware.clone(),
            instance: Instance::placeholder(&self.hardware),
        };
        let mut view = vec![self.program.display().to_string()];
        view.extend(
            anonymous
                .argv(&Start::cold())
                .iter()
                .map(|a| a.to_string_lossy().into_owned()),
        );
        for (name, source) in self.hardware.disk_sources() {
            view.push(match source {
                DiskSource::Blank { bytes } => format!("disk {name} blank {bytes}"),
                DiskSource::Overlay { .. } => format!("disk {name} overlay"),
            });
        }
        view
    }

    /// The files whose content the guest's state depends on: kernel, initrd,
    /// firmware, and the base images under the disks' overlays.
    pub(crate) fn identity_files(&self) -> Vec<&Path> {
        let hw = &self.hardware;
        let mut files = vec![hw.kernel.as_path(), hw.initrd.as_path()];
        files.extend(hw.firmware.as_deref());
        files.extend(hw.image.as_deref());
        files.extend(hw.disks.iter().filter_map(|d| match &d.source {
            DiskSource::Overlay { base } => Some(base.as_path()),
            DiskSource::Blank { .. } => None,
        }));
        files
    }

    /// The identity of the state this command boots into, with QEMU `version`
    /// ([`crate::snapshot_store::identity`]).
    pub(crate) fn snapshot_identity(&self, version: &str) -> String {
        crate::snapshot_store::identity(
            &self.identity_view(),
            version,
            self.hardware.accel,
            &self.identity_files(),
        )
    }

    /// The machine, its firmware, CPUs, memory, console and QMP socket.
    fn machine_args(&self, a: &mut Args, ram: &Ram) {
        let (hw, me) = (&self.hardware, &self.instance);
        a.add([
            "-name".into(),
            format!("{},process=flotilla-{}", me.name, me.name),
        ]);
        let machine = match ram {
            Ram::Anonymous => hw.arch.machine.to_owned(),
            Ram::Shared(_) | Ram::Private(_) => {
                format!("{},memory-backend={RAM_BACKEND_ID}", hw.arch.machine)
            }
        };
        a.add(["-M", machine.as_str(), "-nodefaults", "-no-user-config"]);
        a.add(["-display", "none", "-no-reboot"]);
        // qboot loads the kernel at once; SeaBIOS (QEMU's default) takes about a second
        // more under TCG but sets up the VGA text screen, so machines with a display
        // use it.
        if let (false, Some(qboot)) = (hw.display, &hw.firmware) {
            a.add(["-bios".into(), qboot.as_os_str().to_owned()]);
        }
        match hw.accel {
            Accel::Kvm => a.add(["-accel", "kvm", "-cpu", "host"]),
            Accel::Tcg => a.add(["-accel", "tcg", "-cpu", hw.arch.tcg_cpu]),
        }
        a.add(["-m".into(), hw.memory_mib.to_string()]);
        a.add(["-smp".into(), hw.cpus.to_string()]);
        a.add([
            "-chardev",
            "stdio,id=console,signal=off",
            "-serial",
            "chardev:console",
        ]);
        let qmp = me.socket_dir.join("qmp.sock");
        a.add([
            "-qmp".into(),
            format!("unix:{},server=on,wait=off", qmp.display()),
        ]);
    }

    /// The kernel, the initrd and the kernel command line.
    fn kernel_args(&self, a: &mut Args) {
        let (hw, me) = (&self.hardware, &self.instance);
        a.add(["-kernel".into(), hw.kernel.as_os_str().to_owned()]);
        a.add(["-initrd".into(), hw.initrd.as_os_str().to_owned()]);
        // cryptomgr.notests: no boot-time crypto self-tests (about 0.2 s under TCG);
        // no_timer_check: no check of the IO-APIC timer, which a starved emulated CPU
        // can fail ("IO-APIC + timer doesn't work", a panic) on a busy host.
        let mut append = format!(
            "console={} quiet panic=-1 rdinit=/init cryptomgr.notests no_timer_check \
             flotilla.hostname={}",
            hw.arch.console, me.hostname
        );
        if hw.image.is_some() {
            // Stage 1 writes the machine id into the root.
            let _ = write!(
                append,
                " root=/dev/vda rw flotilla.machine_id={}",
                me.machine_id
            );
        }
        if hw.coverage {
            // For the init and every service it starts: sysvinit passes the kernel's
            // variables on, systemd takes them as systemd.setenv.
            for (k, v) in flotilla_coverage::guest_env() {
                let _ = write!(append, " {k}={v} systemd.setenv={k}={v}");
            }
        }
        if !hw.kernel_args.trim().is_empty() {
            append.push(' ');
            append.push_str(hw.kernel_args.trim());
        }
        a.add(["-append".into(), append]);
    }

    /// The agents' serial ports, randomness, the screen, pvpanic.
    fn device_args(&self, a: &mut Args) {
        let dir = &self.instance.socket_dir;
        a.add(["-device", "virtio-serial-pci,id=vser0"]);
        a.add([
            "-chardev".into(),
            format!(
                "socket,id=agent,path={},server=on,wait=off",
                dir.join("agent.sock").display()
            ),
        ]);
        a.add([
            "-device".into(),
            format!(
                "virtserialport,bus=vser0.0,chardev=agent,name={},id={AGENT_PORT_ID}",
                proto::PORT_NAME
            ),
        ]);
        // Every machine has the stock guest agent's port too: an image with qemu-ga
        // is reachable through it whichever agent drives the machine.
        a.add([
            "-chardev".into(),
            format!(
                "socket,id=qga,path={},server=on,wait=off",
                dir.join("qga.sock").display()
            ),
        ]);
        a.add([
            "-device".into(),
            format!("virtserialport,bus=vser0.0,chardev=qga,name={QGA_PORT},id={QGA_PORT_ID}"),
        ]);
        a.add(["-device", "virtio-rng-pci"]);
        // A standard VGA card: its text console is what `screenshot` captures. (The
        // PS/2 keyboard for `send_key` is part of q35, display or not.)
        if self.hardware.display {
            a.add(["-device", "VGA"]);
        }
        // pvpanic: a guest panic raises GUEST_PANICKED and pauses the VM, keeping its
        // state (console, screen) for the error report instead of rebooting it.
        if self.hardware.arch.pvpanic {
            a.add(["-device", "pvpanic-pci", "-action", "panic=pause"]);
        }
    }

    /// The root image's disk first (/dev/vda), then the extra disks in spec order, then
    /// the coverage disk (so that the spec's disks keep their names); every -device in
    /// command-line order, so PCI slots follow that order.
    fn disk_args(&self, a: &mut Args) {
        let (hw, me) = (&self.hardware, &self.instance);
        if hw.image.is_some() {
            let drive = drive_options(ROOT_DISK, &me.disk_path(ROOT_DISK), &[]);
            a.add(["-drive".into(), drive]);
            a.add([
                "-device".into(),
                format!("virtio-blk-pci,drive={ROOT_DISK}"),
            ]);
        }
        for disk in &hw.disks {
            let path = me.disk_path(&disk.name);
            let drive = drive_options(&disk.name, &path, &disk.inject_errors);
            a.add(["-drive".into(), drive]);
            a.add([
                "-device".into(),
                format!("virtio-blk-pci,drive={0},serial={0}", disk.name),
            ]);
        }
        if hw.coverage {
            let file = escape(&me.coverage_disk());
            a.add([
                "-drive".into(),
                format!("id=coverage,if=none,format=raw,werror=report,rerror=report,file={file}"),
            ]);
            a.add([
                "-device".into(),
                format!(
                    "virtio-blk-pci,drive=coverage,serial={}",
                    flotilla_coverage::DISK_SERIAL
                ),
            ]);
        }
    }

    /// Each NIC: its host side (`-netdev`) and the guest's device.
    fn nic_args(&self, a: &mut Args) {
        for (i, nic) in self.hardware.nics.iter().enumerate() {
            let end = self.instance.nics.get(i);
            let id = &nic.netdev_id;
            let netdev = match (nic.link, end.map(|e| &e.host)) {
                (LinkKind::Vde, Some(NicHost::Socket(sock))) => vde_netdev(id, Some(sock)),
                (LinkKind::Vde, _) => vde_netdev(id, None),
                (LinkKind::Multicast, Some(NicHost::Group(group, port))) => {
                    multicast_netdev(id, Some((*group, *port)))
                }
                (LinkKind::Multicast, _) => multicast_netdev(id, None),
                (LinkKind::User, Some(NicHost::Forwards(forwards))) => {
                    user_netdev(id, forwards.iter().map(Forward::rule))
                }
                (LinkKind::User, _) => user_netdev(id, std::iter::empty::<String>()),
            };
            a.add(["-netdev".into(), netdev]);
            let mac = end.map(|e| e.mac.to_string());
            let device = nic_device(id, &nic.device_id, mac.as_deref());
            a.add(["-device".into(), device]);
        }
    }
}

/// The host-access NIC's model: the user-mode network's ids.
pub(crate) fn user_nic() -> NicModel {
    NicModel {
        netdev_id: USER_NETDEV_ID.to_owned(),
        device_id: USER_DEVICE_ID.to_owned(),
        link: LinkKind::User,
    }
}

/// A file-backed RAM's memory backend of `memory` MiB: at a path (a file), or in a
/// folder (an unlinked file QEMU makes there).
fn ram_args(a: &mut Args, memory: u32, ram: &Ram) {
    let (path, share) = match ram {
        Ram::Anonymous => return,
        Ram::Shared(dir) => (dir, "on"),
        Ram::Private(file) => (file, "off"),
    };
    a.add([
        "-object".into(),
        format!(
            "memory-backend-file,id={RAM_BACKEND_ID},size={memory}M,mem-path={},share={share}",
            escape(path)
        ),
    ]);
}

/// A path as an option value: a comma is written twice.
fn escape(path: &Path) -> String {
    path.display().to_string().replace(',', ",,")
}

/// `-drive` options for a qcow2 disk file: I/O errors reach the guest
/// (`werror`/`rerror=report`) instead of pausing the VM. Error rules put QEMU's
/// blkdebug between the qcow2 format and the file, where qcow2's events fire.
fn drive_options(id: &str, file: &Path, rules: &[InjectError]) -> String {
    let file = escape(file);
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

/// An argument list being made.
#[derive(Debug, Default)]
struct Args(Vec<OsString>);

impl Args {
    fn add<I: IntoIterator<Item = S>, S: Into<OsString>>(&mut self, args: I) {
        self.0.extend(args.into_iter().map(Into::into));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drive_options_escape_and_inject() {
        let plain = drive_options("disk1", "/a,b/disk1.qcow2".as_ref(), &[]);
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
        let faulty = drive_options("d", "/x.qcow2".as_ref(), &[rule]);
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

//! Each machine's QEMU command, made from the plan and the run's facts
//! ([`Plan::command`]): the hardware from the machine's plan and the boot files, the
//! instance from the run's folders, the vmnet plan and the picked ports.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use flotilla_vmnet::{Backend, Forward, UserNet};
use sha2::{Digest, Sha256};

use super::boot_files::BootFiles;
use super::machines::{Plan, Root};
use super::qemu_command::{
    user_nic, Hardware, Instance, LinkKind, NicEnd, NicHost, NicModel, QemuCommand,
};
use crate::error::Error;

/// What a run adds to the plan to make its machines' commands.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RunFacts<'a> {
    pub boot: &'a BootFiles,
    /// The Debian images built, by their index in [`Plan::images`].
    pub images: &'a [PathBuf],
    /// The run's VLANs.
    pub net: &'a flotilla_vmnet::Plan,
    /// The run's private folder: a folder per machine for its sockets.
    pub run_dir: &'a Path,
    /// Where disks are kept across runs (`--keep-state`), if they are.
    pub keep_state: Option<&'a Path>,
    /// Coverage is collected.
    pub coverage: bool,
}

impl Plan {
    /// The QEMU command of machine `name`, forwarding `forwards`.
    pub(crate) fn command(
        &self,
        name: &str,
        run: RunFacts<'_>,
        forwards: Vec<Forward>,
    ) -> Result<QemuCommand, Error> {
        let m = self
            .machines
            .get(name)
            .ok_or_else(|| Error::NoSuchMachine {
                name: name.to_owned(),
            })?;
        let boot = run.boot.of(m.arch)?;
        let image = match &m.root {
            Root::None => None,
            Root::Image(path) => Some(path.clone()),
            Root::Debian(i) => Some(run.images.get(*i).cloned().ok_or_else(|| {
                Error::Image(flotilla_image::Error::Image(format!(
                    "machine `{name}`: its Debian image was not built"
                )))
            })?),
        };
        let net = run.net.machine(name).map_err(Error::Vmnet)?;
        let mut nics = Vec::new();
        let mut ends = Vec::new();
        for nic in &net.nics {
            let group = run.net.vlans.get(&nic.vlan).and_then(|v| v.multicast);
            let (link, host) = match (run.net.backend, group) {
                (Backend::Multicast, Some((group, port))) => {
                    (LinkKind::Multicast, NicHost::Group(group, port))
                }
                _ => (LinkKind::Vde, NicHost::Socket(nic.link_dir.clone())),
            };
            nics.push(NicModel {
                netdev_id: nic.netdev_id.clone(),
                device_id: nic.device_id.clone(),
                link,
            });
            ends.push(NicEnd { mac: nic.mac, host });
        }
        nics.push(user_nic());
        let user = UserNet::new(net.number, forwards);
        ends.push(NicEnd {
            mac: user.mac,
            host: NicHost::Forwards(user.forwards),
        });
        let socket_dir = run.run_dir.join(name);
        let state_dir = match run.keep_state {
            Some(dir) => std::path::absolute(dir.join(name)).unwrap_or(dir.join(name)),
            None => socket_dir.clone(),
        };
        let hardware = Hardware {
            arch: m.arch,
            accel: boot.accel.accel,
            memory_mib: m.memory_mib,
            cpus: m.cpus,
            firmware: boot.firmware_for(m),
            kernel: boot.kernel_for(m),
            initrd: boot.initrd_for(m, run.coverage),
            kernel_args: m.kernel_args.clone(),
            coverage: run.coverage,
            display: m.display,
            image,
            disks: m.disks.clone(),
            nics,
        };
        let instance = Instance {
            name: name.to_owned(),
            hostname: crate::spec::names::hostname(name),
            machine_id: machine_id(&state_dir, &socket_dir),
            socket_dir,
            state_dir,
            nics: ends,
        };
        Ok(QemuCommand {
            program: boot.qemu.clone(),
            hardware,
            instance,
        })
    }
}

/// The machine id of a machine whose disks are in `state_dir`: 32 hex digits, the same
/// across the reboots of one run. Disks kept with `--keep-state` keep it across runs
/// too; otherwise each run (each driver process) gives its machines new ones.
fn machine_id(state_dir: &Path, socket_dir: &Path) -> String {
    static RUN_SALT: OnceLock<[u8; 16]> = OnceLock::new();
    let mut h = Sha256::new();
    h.update(b"flotilla machine-id\0");
    h.update(state_dir.as_os_str().as_encoded_bytes());
    if state_dir == socket_dir {
        h.update(RUN_SALT.get_or_init(run_salt));
    }
    h.finalize()[..16]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Random bytes for this process (the time and pid if the host's randomness cannot be
/// read).
fn run_salt() -> [u8; 16] {
    use std::io::Read as _;
    let mut salt = [0u8; 16];
    let read = std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut salt));
    if read.is_err() {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos();
        salt[..8].copy_from_slice(&(nanos as u64).to_le_bytes());
        salt[8..12].copy_from_slice(&std::process::id().to_le_bytes());
    }
    salt
}

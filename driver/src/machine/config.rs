//! What a machine is started with: [`MachineConfig`], made by [`crate::Fleet`].

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use flotilla_vmnet::UserNet;

use crate::accel::AccelChoice;
use crate::fabric::Fabric;
use crate::log::Log;
use crate::spec::MachineSpec;

/// The drive id of an `image`'s disk (extra disks go by their own names).
pub(super) const ROOT_DISK: &str = "root";

/// Everything a machine needs to start; made by [`crate::Fleet`].
#[derive(Debug)]
pub(crate) struct MachineConfig {
    pub name: String,
    pub spec: MachineSpec,
    /// The file QEMU boots: the kernel's unpacked `vmlinux`, or its `vmlinuz`
    /// ([`crate::vmlinux::boot_kernel`], and always for a machine with a display).
    pub boot_kernel: PathBuf,
    pub initrd: PathBuf,
    pub accel: AccelChoice,
    /// Private (0700) folder for this machine's sockets.
    pub socket_dir: PathBuf,
    /// Folder of the machine's disk files (`root.qcow2`, `<disk>.qcow2`): the socket
    /// folder, or `<keep-state dir>/<machine>` to keep them across runs.
    pub state_dir: PathBuf,
    pub log: Log,
    /// How long the guest may take to report readiness.
    pub boot_timeout: Duration,
    /// Default limit for one command.
    pub command_timeout: Duration,
    /// The QEMU binary.
    pub qemu: PathBuf,
    /// The run's network.
    pub fabric: Arc<Fabric>,
    /// The host-access NIC and its forwarded ports.
    pub user_net: Mutex<UserNet>,
    /// qboot, for machines without a display (`None`: SeaBIOS for all).
    pub firmware: Option<PathBuf>,
    /// Collect coverage data (`flotilla test --coverage`): a coverage disk, the
    /// coverage environment for commands and services.
    pub coverage: bool,
    /// Start from a saved, booted state where it is safe (the default; not with the
    /// spec's `snapshot = false` or `--no-snapshot`).
    pub snapshot: bool,
    /// The spec asked for snapshots (`snapshot = true`): the terminal, not only the
    /// log file, says why when the machine cannot have one.
    pub snapshot_asked: bool,
    /// The network's polling conditions, checked before every command.
    pub(crate) conditions: Arc<crate::conditions::Conditions>,
}

impl MachineConfig {
    /// The host name the guest gets.
    pub fn hostname(&self) -> String {
        crate::spec::names::hostname(&self.name)
    }

    /// The coverage disk: an ext2 file system the guest mounts at
    /// [`flotilla_coverage::GUEST_DIR`], read on the host after QEMU stops. It lives as
    /// long as the run, across reboots.
    pub(super) fn coverage_disk(&self) -> PathBuf {
        self.socket_dir.join("coverage.ext2")
    }

    /// Where the disk named `name` (or [`ROOT_DISK`]) lives.
    pub(super) fn disk_path(&self, name: &str) -> PathBuf {
        self.state_dir.join(format!("{name}.qcow2"))
    }
}

//! What a machine is started with: [`MachineConfig`], made by [`crate::Fleet`] from the
//! plan.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use flotilla_vmnet::UserNet;

use crate::agent_client::AgentKind;
use crate::fabric::Fabric;
use crate::log::Log;
use crate::plan::QemuCommand;

/// Everything a machine needs to start; made by [`crate::Fleet`].
#[derive(Debug)]
pub(crate) struct MachineConfig {
    pub name: String,
    /// The machine's QEMU command, from the plan: its hardware and its instance (with
    /// the forwards it starts with; `user_net` has those of now).
    pub command: QemuCommand,
    /// Which agent the guest runs.
    pub agent: AgentKind,
    pub log: Log,
    /// How long the guest may take to report readiness.
    pub boot_timeout: Duration,
    /// Default limit for one command.
    pub command_timeout: Duration,
    /// The run's network.
    pub fabric: Arc<Fabric>,
    /// The host-access NIC and its forwarded ports.
    pub user_net: Mutex<UserNet>,
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
        self.command.instance.hostname.clone()
    }

    /// Private (0700) folder for this machine's sockets.
    pub fn socket_dir(&self) -> &Path {
        &self.command.instance.socket_dir
    }

    /// Folder of the machine's disk files (`root.qcow2`, `<disk>.qcow2`): the socket
    /// folder, or `<keep-state dir>/<machine>` to keep them across runs.
    pub fn state_dir(&self) -> &Path {
        &self.command.instance.state_dir
    }

    /// The coverage disk: an ext2 file system the guest mounts at
    /// [`flotilla_coverage::GUEST_DIR`], read on the host after QEMU stops. It lives as
    /// long as the run, across reboots.
    pub(super) fn coverage_disk(&self) -> PathBuf {
        self.command.instance.coverage_disk()
    }

    /// Where the disk named `name` (or `root`) lives.
    pub(super) fn disk_path(&self, name: &str) -> PathBuf {
        self.command.instance.disk_path(name)
    }

    /// The machine's id (`/etc/machine-id` of a machine with an image).
    pub(super) fn machine_id(&self) -> String {
        self.command.instance.machine_id.clone()
    }

    /// The command of a start now: the plan's, with the forwards of now.
    pub(super) fn command_now(&self) -> QemuCommand {
        let mut cmd = self.command.clone();
        if let Ok(user) = self.user_net.lock() {
            cmd.instance.set_forwards(user.forwards.clone());
        }
        cmd
    }
}

//! The plan: a spec turned into plain values between the spec and the machines.
//!
//! [`Plan::of`] reads a spec and touches nothing: each machine's resources and devices
//! ([`MachinePlan`]), the Debian images to build ([`ImageBuild`]), the ports to forward
//! and the VLANs ([`NetworkPlan`]). The suite's budget and `--list` read it as it is.
//! [`crate::Fleet`] runs it: it builds the images, prepares the boot files
//! (`BootFiles`: kernel, initramfs images, firmware, accelerator), makes the vmnet plan
//! in the run's folder, picks the free ports, and then makes each machine's QEMU
//! command (`QemuCommand`), a value whose hardware (what shapes the guest's state, a
//! snapshot's identity) is apart from its instance (name, MACs, sockets, disk files,
//! ports). Each start of a machine renders its argument list with its RAM backing and
//! incoming state (`Start`) as inputs.
//!
//! - `machines.rs`: [`Plan`] and [`Plan::of`] (machines, images, network);
//! - `ports.rs`: the host ports forwarded, checked and picked;
//! - `boot_files.rs`: what machines boot, and which each one does;
//! - `commands.rs`: a machine's QEMU command from the plan and the run's facts;
//! - `qemu_command.rs`: the command as a value, its argument list and its identity;
//! - `tests.rs`: commands and identities of planned machines.

mod boot_files;
mod commands;
mod machines;
mod ports;
mod qemu_command;
#[cfg(test)]
mod tests;

pub(crate) use boot_files::BootFiles;
pub(crate) use commands::RunFacts;
pub use machines::{ImageBuild, MachinePlan, NetworkPlan, Plan, Root};
pub(crate) use qemu_command::{
    Incoming, QemuCommand, Ram, Start, AGENT_PORT_ID, QGA_PORT_ID, RAM_BACKEND_ID,
};

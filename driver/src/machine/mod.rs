//! One QEMU machine: its process, console, QMP connection and agent.
//!
//! [`Machine`] is one type whose `impl` blocks live in the file of their topic:
//!
//! - `state.rs`: the [`Machine`] type, what a running machine holds (`Running`), a
//!   spawned QEMU on its way there (`Booting`, `Spawned`), and the accessors every
//!   topic uses;
//! - `config.rs`: [`MachineConfig`], what a machine is started with: its QEMU command
//!   from the plan (`crate::plan`), its agent, the run's log, network and limits;
//! - `boot.rs`: booting and readiness (spawn QEMU, start the watchers, connect);
//! - `snapshot.rs`: starting from a saved, booted state: what a boot does about it,
//!   the state's identity (its command's), saving at readiness, restoring and giving
//!   the guest its own identity;
//! - `snapshot_memory.rs`: the guest RAM of machines that save or restore a snapshot,
//!   a file that restored machines share, and its copy into the store;
//! - `snapshot_disks.rs`: a snapshot's disks: saved beside the state, restored as the
//!   machine's own copies;
//! - `machine_id.rs`: the machine id of a machine with a disk image, its own;
//! - `console.rs`: the console and stderr readers, and the lines kept in memory;
//! - `events.rs`: the QMP event watcher (paused, panicked, agent gone);
//! - `evidence.rs`: what errors about a dead or stuck machine quote;
//! - `agent.rs`: the connection to the guest's agent, made again after a restart;
//! - `guest_net.rs`: the guest's host name, addresses and `/etc/hosts`;
//! - `network.rs`: the machine's NICs from the host (link, impairment, forwards, capture);
//! - `disks.rs`: the machine's disk files;
//! - `commands.rs`: [`CommandResult`], `execute`, `succeed`, `fail`, interactive sessions;
//! - `waits.rs`: waiting for console text, files, ports, units, commands;
//! - `copy.rs`: file copies between host and guest;
//! - `coverage.rs`: the coverage disk, the coverage environment of commands, ending
//!   the guest's programs so that they write their data;
//! - `screen.rs` and `keys.rs`: screenshots, key presses and typing;
//! - `screen_text.rs`: the screen's text, read by the agent or by OCR, and waiting for
//!   text on it;
//! - `power.rs`: shutdown, crash, reboot, stop;
//! - `command_text.rs`: command lines' text (`/bin/sh` quoting) and output tails.
//!
//! Files import only files above them in this order of layers: `config`, `console`,
//! `events`, `keys`, `command_text` import no sibling; `state` imports those; the topic files
//! import `state` and the leaves (and `boot` imports `snapshot`, for what a boot does
//! about snapshots; `boot` and `snapshot` import `snapshot_memory`, which imports
//! `config` and `command_text`). The QEMU command is the plan's (`crate::plan`), which imports
//! nothing of this folder.

mod agent;
mod boot;
mod command_text;
mod commands;
mod config;
mod console;
mod copy;
mod coverage;
mod disks;
mod events;
mod evidence;
mod guest_net;
mod keys;
mod machine_id;
mod network;
mod power;
mod screen;
mod screen_text;
mod snapshot;
mod snapshot_disks;
mod snapshot_memory;
mod state;
mod waits;

pub(crate) use boot::start_all;
pub use commands::CommandResult;
pub(crate) use config::MachineConfig;

pub(crate) use coverage::EXIT_GRACE;
pub use screen_text::{ScreenReader, ScreenText};
pub use state::{Machine, StartKind};

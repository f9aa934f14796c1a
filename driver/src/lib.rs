//! Flotilla's driver: starts QEMU machines from a [`Spec`], waits for the in-guest agent,
//! runs commands in the guests and test scripts against them, and cleans up.
//!
//! The same powers the `flotilla` binary has are here for `cargo test`:
//!
//! ```no_run
//! # async fn demo() -> Result<(), flotilla_driver::Error> {
//! use flotilla_driver::{Fleet, FleetOptions, Spec};
//!
//! let spec = Spec::parse("demo.toml".as_ref(), "[machines.machine]\nmemory = 256\n")?;
//! let fleet = Fleet::new(&spec, FleetOptions::new("flotilla-out/demo"))?;
//! let machine = fleet.machine("machine")?;
//! let kernel = machine.succeed("uname -r").await?;
//! assert!(kernel.contains("cloud"));
//! machine.fail("false").await?;
//! fleet.stop_all().await;
//! # Ok(()) }
//! ```
//!
//! Machines may have extra disks (blank, or overlays over an image, optionally with
//! injected I/O errors: [`spec::DiskSpec`]); [`FleetOptions::keep_state`] keeps them
//! for the next network.
//! [`repl`] evaluates script statements one by one against a running network (and tells
//! a whole statement from one that continues on the next line), [`Log::divert`] lets a
//! prompt show the log above the line being typed, and [`control`] serves a run's
//! machines to other processes (`flotilla shell`).
//!
//! Every child process dies with the driver, also when it is killed with SIGKILL; every
//! line of every console and of QEMU's stderr goes to the run's log directory.

mod accel;
mod conditions;
pub mod control;
pub mod doctor;
mod error;
mod fabric;
mod fleet;
mod guest;
mod host;
pub mod http;
pub mod image;
mod junit;
mod lock;
mod log;
mod machine;
mod process;
mod run_dir;
mod run_test;
mod script;
pub mod spec;

pub use accel::{detect as detect_accel, Accel, AccelChoice};
pub use error::Error;
pub use fleet::{Fleet, FleetOptions};
pub use guest::{AgentError, AgentKind, ExecEvent, ExecSession, GuestError};
pub use host::{agent_binary, qboot_firmware, qemu_binary};
pub use image::{debian, vmlinux};
pub use junit::{junit_xml, Subtest};
pub use log::{Diverted, Log};
pub use machine::{CommandResult, Machine};
pub use run_test::{retry, run_test};
pub use script::repl;
pub use spec::{MachineSpec, Spec};

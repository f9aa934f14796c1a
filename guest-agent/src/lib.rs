//! Flotilla's in-guest agent: its wire protocol, shared with the host driver.
//!
//! The agent binary (`flotilla-agent`) runs inside each VM, as PID 1 of an initramfs
//! or as a service, and executes commands, transfers files, configures the network and
//! reads the virtual console's text for the host over a virtio-serial port. This library holds the [`proto`] module, the
//! single definition of that protocol used by both sides, and [`cpio`], the writer of
//! the initramfs archives that carry the agent as a guest's `/init`.
//!
//! ```
//! use flotilla_agent::proto::{Command, ExecRequest, Frame, Kind};
//!
//! let req = ExecRequest {
//!     command: Command::Argv(vec!["uname".into(), "-r".into()]),
//!     env: vec![],
//!     cwd: None,
//!     stdin: false,
//!     timeout_ms: Some(10_000),
//!     pty: None,
//! };
//! let mut wire = Vec::new();
//! Frame::json(Kind::Exec, 1, &req).encode(&mut wire);
//! ```

pub mod cpio;
pub mod proto;

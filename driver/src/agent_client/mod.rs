//! The host's side of the in-guest agents: the client of `flotilla-agent` (and of qemu-ga).
//!
//! - `codec.rs`: [`FrameCodec`], the one codec of the agent protocol's frames on the
//!   host (the agent connection and the control socket use it), and what it does with
//!   bytes that are not a frame;
//! - `connection.rs`: [`AgentConnection`], a connection to flotilla-agent: the task
//!   that owns the socket, the handshake, streams, and the small requests;
//! - `exec.rs`: commands over an agent connection ([`ExecOutput`], [`ExecSession`]);
//! - `files.rs`: file copies over an agent connection;
//! - `qga.rs`: the same operations through QEMU's guest agent (qemu-ga);
//! - `channel.rs`: [`Guest`], whichever of the two agents a machine runs
//!   ([`AgentKind`]), behind one set of operations;
//! - `error.rs`: [`AgentError`] and [`GuestError`].

mod channel;
mod codec;
mod connection;
mod error;
mod exec;
mod files;
mod qga;

pub use channel::AgentKind;
pub(crate) use channel::Guest;
pub(crate) use codec::FrameCodec;
pub(crate) use connection::{AgentConnection, Notes};
pub use error::{AgentError, GuestError};
pub(crate) use exec::ExecOutput;
pub use exec::{ExecEvent, ExecSession};
pub(crate) use qga::QGA_PORT;

//! An async client for QEMU's machine protocol (QMP).
//!
//! Flotilla's driver starts QEMU with `-qmp unix:PATH,server=on,wait=off` and
//! uses this crate to query and steer the VM: run state, pause/resume, power
//! button, reset, quit, and the events QEMU emits along the way.
//!
//! The crate has three layers, each usable on its own:
//! - [`codec`]: framing of newline-separated JSON into [`Message`]s, routed by
//!   the keys present (`QMP`, `return`, `error`, `event`);
//! - the connection task (internal): owns the socket, numbers commands, matches
//!   replies to callers by id and broadcasts events;
//! - [`Client`]: the cloneable handle with raw and typed commands
//!   ([`commands`]), event subscriptions ([`events`]) and connection state.
//!
//! # Example
//!
//! ```no_run
//! use std::time::Duration;
//! use flotilla_qmp::{events, Client, RunState};
//!
//! # async fn run() -> Result<(), flotilla_qmp::Error> {
//! let qmp = Client::connect_unix("/tmp/vm/qmp.sock").await?;
//! println!("qemu {}", qmp.greeting().version.qemu);
//!
//! let mut stops = qmp.subscribe_filtered([events::STOP]);
//! qmp.cont().await?;
//! qmp.stop().await?;
//! stops.wait_for(|_| true, Duration::from_secs(5)).await?;
//! assert_eq!(qmp.query_status().await?.status, RunState::Paused);
//!
//! let reply = qmp.execute_raw("query-name", None).await?;
//! println!("{reply}");
//! qmp.quit().await?;
//! qmp.closed().await;
//! # Ok(())
//! # }
//! ```
//!
//! Every call can be bounded with a timeout ([`Client::execute_raw_timeout`]) or
//! cancelled by dropping its future; the connection stays usable either way.
//! When QEMU goes away every pending and later call fails with
//! [`Error::Disconnected`], and [`Client::closed`] resolves.

pub mod base64;
mod client;
pub mod codec;
pub mod commands;
mod connection;
mod error;
pub mod events;
#[doc(hidden)]
pub mod fuzzing;
pub mod qga;
mod socket;
mod timeout;

pub use client::{Client, ConnectOptions, EventStream, Lagged};
pub use codec::{
    Event, Greeting, Message, QmpCodec, QmpErrorBody, Timestamp, VersionInfo, VersionTriple,
};
pub use commands::{Command, Empty, RunState, StatusInfo};
pub use error::Error;
pub use events::EventData;

/// The README's examples, compiled as doc tests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;

//! What goes wrong talking to a guest: [`AgentError`] for flotilla-agent,
//! [`GuestError`] for either agent.

use std::time::Duration;

use flotilla_agent::proto::{self, ErrorBody, Frame, Kind};

/// Why a call to flotilla-agent failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AgentError {
    #[error("connecting to the agent at {path}")]
    Connect {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the agent connection closed")]
    Closed,
    #[error("the agent speaks protocol version {agent}, this driver speaks {host}")]
    Version { agent: u32, host: u32 },
    #[error("the agent answered with an unexpected {0:?} frame")]
    Unexpected(Kind),
    #[error("the agent reported: {0}")]
    Remote(String),
    #[error("bad reply from the agent")]
    Decode(#[source] proto::ProtoError),
    #[error("{path}")]
    Local {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("no answer from the agent within {0:?}")]
    Timeout(Duration),
}

impl AgentError {
    /// The error an [`Kind::Error`] frame from the agent reports.
    pub(super) fn remote(frame: &Frame) -> AgentError {
        match frame.parse_json::<ErrorBody>() {
            Ok(body) => AgentError::Remote(body.message),
            Err(e) => AgentError::Decode(e),
        }
    }
}

/// What went wrong talking to a guest agent of either kind.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GuestError {
    #[error(transparent)]
    Agent(#[from] AgentError),
    #[error("qemu guest agent")]
    Qga(#[from] flotilla_qmp::Error),
    /// A helper program a copy runs through qemu-ga (`mkdir`, `chmod`, `stat`) failed.
    /// `outcome` names the program and its arguments, how it ended, and what it
    /// printed on stderr.
    #[error("{doing}: {outcome}")]
    QgaHelper { doing: String, outcome: String },
    /// A command run through qemu-ga was killed at its limit and still did not end.
    #[error(
        "`{command}` was killed at its limit of {} s and did not end within {} s more",
        limit.as_secs_f64(),
        waited.as_secs_f64()
    )]
    QgaKill {
        command: String,
        limit: Duration,
        waited: Duration,
    },
    /// What was being done when `source` failed.
    #[error("{doing}")]
    During {
        doing: String,
        #[source]
        source: Box<GuestError>,
    },
    #[error("{0}")]
    Local(String),
}

impl GuestError {
    /// This error, as the cause of a failure while `doing`.
    pub(super) fn doing(self, doing: String) -> GuestError {
        GuestError::During {
            doing,
            source: Box::new(self),
        }
    }
}

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
pub enum GuestError {
    #[error(transparent)]
    Agent(#[from] AgentError),
    #[error("qemu guest agent")]
    Qga(#[from] flotilla_qmp::Error),
    #[error("{0}")]
    Local(String),
}

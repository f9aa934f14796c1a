//! Commands over an agent connection: run to completion ([`AgentConnection::exec`]),
//! or driven by the caller ([`ExecSession`]).

use flotilla_agent::proto::{self, ExecRequest, ExitStatus, Frame, Kind};
use tokio::sync::mpsc;

use super::connection::{AgentConnection, Stream};
use super::error::AgentError;

/// The output of a finished command.
#[derive(Debug, Clone)]
pub struct ExecOutput {
    pub status: ExitStatus,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

impl AgentConnection {
    /// Runs a command to completion. `on_output` sees stdout/stderr chunks as they come
    /// (`true` for stderr). Dropping the future kills the command in the guest.
    pub async fn exec(
        &self,
        request: &ExecRequest,
        mut on_output: impl FnMut(bool, &[u8]),
    ) -> Result<ExecOutput, AgentError> {
        let (mut stream, mut rx) = self.open_stream()?;
        stream
            .send(Frame::json(Kind::Exec, stream.id, request))
            .await?;
        let mut stdout = Vec::new();
        let mut stderr = Vec::new();
        while let Some(frame) = rx.recv().await {
            match frame.kind {
                Kind::Stdout => {
                    on_output(false, &frame.payload);
                    stdout.extend_from_slice(&frame.payload);
                }
                Kind::Stderr => {
                    on_output(true, &frame.payload);
                    stderr.extend_from_slice(&frame.payload);
                }
                Kind::Exit => {
                    stream.finished = true;
                    let status = frame.parse_json().map_err(AgentError::Decode)?;
                    return Ok(ExecOutput {
                        status,
                        stdout,
                        stderr,
                    });
                }
                Kind::Error => {
                    stream.finished = true;
                    return Err(AgentError::remote(&frame));
                }
                other => return Err(AgentError::Unexpected(other)),
            }
        }
        Err(AgentError::Closed)
    }

    /// Starts a command whose input, terminal size and output the caller handles
    /// ([`ExecSession`]); dropping the session kills the command.
    pub async fn start(&self, request: &ExecRequest) -> Result<ExecSession, AgentError> {
        let (stream, rx) = self.open_stream()?;
        let session = ExecSession { stream, rx };
        session
            .stream
            .send(Frame::json(Kind::Exec, session.stream.id, request))
            .await?;
        Ok(session)
    }
}

/// What a command started with [`Machine::start_session`](crate::Machine::start_session) produced.
#[derive(Debug)]
pub enum ExecEvent {
    Stdout(Vec<u8>),
    Stderr(Vec<u8>),
    /// The command ended; nothing follows.
    Exit(ExitStatus),
}

/// A running command ([`Machine::start_session`](crate::Machine::start_session)). Dropping it kills the command.
#[derive(Debug)]
pub struct ExecSession {
    /// Finished once the command exited.
    stream: Stream,
    rx: mpsc::UnboundedReceiver<Frame>,
}

impl ExecSession {
    /// Feeds the command's stdin (the request asked for `stdin`).
    pub async fn write_stdin(&self, data: &[u8]) -> Result<(), AgentError> {
        for chunk in data.chunks(proto::MAX_CHUNK) {
            self.stream
                .send(Frame::new(Kind::Stdin, self.stream.id, chunk.to_vec()))
                .await?;
        }
        Ok(())
    }

    /// Closes the command's stdin (on a terminal: stops input only).
    pub async fn close_stdin(&self) -> Result<(), AgentError> {
        self.stream
            .send(Frame::new(Kind::StdinClose, self.stream.id, Vec::new()))
            .await
    }

    /// Resizes the command's terminal (the request asked for `pty`).
    pub async fn resize(&self, size: proto::WindowSize) -> Result<(), AgentError> {
        self.stream
            .send(Frame::json(Kind::Resize, self.stream.id, &size))
            .await
    }

    /// The next output, or the exit. After [`ExecEvent::Exit`] or an error, the
    /// session is over.
    pub async fn next(&mut self) -> Result<ExecEvent, AgentError> {
        if self.stream.finished {
            return Err(AgentError::Closed);
        }
        let frame = self.rx.recv().await.ok_or(AgentError::Closed)?;
        match frame.kind {
            Kind::Stdout => Ok(ExecEvent::Stdout(frame.payload)),
            Kind::Stderr => Ok(ExecEvent::Stderr(frame.payload)),
            Kind::Exit => {
                self.stream.finished = true;
                Ok(ExecEvent::Exit(
                    frame.parse_json().map_err(AgentError::Decode)?,
                ))
            }
            Kind::Error => Err(AgentError::remote(&frame)),
            other => Err(AgentError::Unexpected(other)),
        }
    }
}

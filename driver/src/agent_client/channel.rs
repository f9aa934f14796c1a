//! The channel to a guest: Flotilla's agent, or QEMU's stock guest agent (QGA) for
//! images that have only `qemu-guest-agent`. Both give the same semantics to
//! `succeed`/`fail`/`execute` and file copies; QGA cannot stream output or files.

use std::path::Path;
use std::time::Duration;

use flotilla_agent::proto::{Command as AgentCommand, ExecRequest};
use flotilla_qmp::qga::GuestAgent;

use super::connection::AgentConnection;
use super::error::GuestError;
use super::exec::ExecOutput;
use super::qga;

/// Which agent a machine's image runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AgentKind {
    /// `flotilla-agent` (the default image has it; `flotilla image debian` installs it).
    #[default]
    Flotilla,
    /// QEMU's guest agent, `qemu-ga`, on the port `org.qemu.guest_agent.0`.
    Qga,
}

/// A connected guest agent, of either [`AgentKind`].
#[derive(Debug)]
pub enum Guest {
    Flotilla(AgentConnection),
    Qga(GuestAgent),
}

impl Guest {
    /// Which agent, for the log.
    pub fn describe(&self) -> String {
        match self {
            Guest::Flotilla(a) => format!("flotilla-agent {}", a.hello.agent_version),
            Guest::Qga(_) => "qemu-guest-agent".into(),
        }
    }

    /// Runs `/bin/sh -c command` with `env` added to its environment; `on_output` sees
    /// output as it comes (flotilla-agent) or all at once at the end (QGA). At `timeout`
    /// the guest side kills the command and what it started, and the status says
    /// `timed_out`.
    pub async fn exec_shell(
        &self,
        command: &str,
        timeout: Duration,
        env: &[(String, String)],
        mut on_output: impl FnMut(bool, &[u8]),
    ) -> Result<ExecOutput, GuestError> {
        match self {
            Guest::Flotilla(a) => {
                let request = ExecRequest {
                    command: AgentCommand::Shell(command.to_owned()),
                    env: env.to_vec(),
                    cwd: None,
                    stdin: false,
                    timeout_ms: Some(u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX)),
                    pty: None,
                };
                Ok(a.exec(&request, on_output).await?)
            }
            Guest::Qga(q) => {
                // qemu-ga's `env` replaces the whole environment: export instead.
                let exports: String = env
                    .iter()
                    .map(|(k, v)| format!("export {k}='{}'; ", v.replace('\'', "'\\''")))
                    .collect();
                let out = qga::exec_shell(q, &format!("{exports}{command}"), timeout).await?;
                on_output(false, &out.stdout);
                on_output(true, &out.stderr);
                Ok(out)
            }
        }
    }

    /// Asks the guest to power off.
    pub async fn shutdown(&self) -> Result<(), GuestError> {
        match self {
            Guest::Flotilla(a) => Ok(a.shutdown(false).await?),
            Guest::Qga(q) => Ok(q.shutdown(Some("powerdown")).await?),
        }
    }

    /// Copies one host file into the guest, keeping its mode.
    pub async fn push_file(
        &self,
        local: &Path,
        remote: &str,
        mode: u32,
    ) -> Result<u64, GuestError> {
        match self {
            Guest::Flotilla(a) => Ok(a.push_file(local, remote, mode).await?),
            Guest::Qga(q) => qga::push_file(q, local, remote, mode).await,
        }
    }

    /// Copies one guest file to the host; returns its size and mode.
    pub async fn pull_file(&self, remote: &str, local: &Path) -> Result<(u64, u32), GuestError> {
        match self {
            Guest::Flotilla(a) => Ok(a.pull_file(remote, local).await?),
            Guest::Qga(q) => qga::pull_file(q, remote, local).await,
        }
    }
}

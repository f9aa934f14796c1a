//! The channel to a guest: Flotilla's agent, or QEMU's stock guest agent (QGA) for
//! images that have only `qemu-guest-agent`. Both give the same semantics to
//! `succeed`/`fail`/`execute` and file copies; QGA cannot stream output or files.

use std::path::Path;
use std::time::Duration;

use flotilla_agent::proto::{Command as AgentCommand, ExecRequest, ExitStatus};
use flotilla_qmp::qga::GuestAgent;

use crate::agent::{AgentConn, AgentError, ExecOutput};

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

/// The virtio-serial port name QEMU's guest agent opens.
pub const QGA_PORT: &str = "org.qemu.guest_agent.0";

#[derive(Debug)]
pub enum Guest {
    Agent(AgentConn),
    Qga(GuestAgent),
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

impl Guest {
    /// Which agent, for the log.
    pub fn describe(&self) -> String {
        match self {
            Guest::Agent(a) => format!("flotilla-agent {}", a.hello.agent_version),
            Guest::Qga(_) => "qemu-guest-agent".into(),
        }
    }

    /// Runs `/bin/sh -c command`; `on_output` sees output as it comes (flotilla-agent)
    /// or all at once at the end (QGA).
    pub async fn exec_shell(
        &self,
        command: &str,
        timeout: Duration,
        mut on_output: impl FnMut(bool, &[u8]),
    ) -> Result<ExecOutput, GuestError> {
        match self {
            Guest::Agent(a) => {
                let request = ExecRequest {
                    command: AgentCommand::Shell(command.to_owned()),
                    env: Vec::new(),
                    cwd: None,
                    stdin: false,
                    timeout_ms: None,
                    pty: None,
                };
                Ok(a.exec(&request, on_output).await?)
            }
            Guest::Qga(q) => {
                let out = q.run("/bin/sh", &["-c", command], timeout).await?;
                on_output(false, &out.stdout);
                on_output(true, &out.stderr);
                Ok(ExecOutput {
                    status: ExitStatus {
                        code: out.exitcode.map(|c| c as i32),
                        signal: out.signal.map(|s| s as i32),
                        timed_out: false,
                    },
                    stdout: out.stdout,
                    stderr: out.stderr,
                })
            }
        }
    }

    /// Asks the guest to power off.
    pub async fn shutdown(&self) -> Result<(), GuestError> {
        match self {
            Guest::Agent(a) => Ok(a.shutdown(false).await?),
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
            Guest::Agent(a) => Ok(a.push_file(local, remote, mode).await?),
            Guest::Qga(q) => {
                let data = tokio::fs::read(local)
                    .await
                    .map_err(|e| GuestError::Local(format!("reading {}: {e}", local.display())))?;
                let dir = Path::new(remote)
                    .parent()
                    .map(|p| p.display().to_string())
                    .unwrap_or_else(|| "/".into());
                q.run("/bin/mkdir", &["-p", &dir], Duration::from_secs(30))
                    .await?;
                q.write_file(remote, &data).await?;
                let mode = format!("{:o}", mode & 0o7777);
                q.run("/bin/chmod", &[&mode, remote], Duration::from_secs(30))
                    .await?;
                Ok(data.len() as u64)
            }
        }
    }

    /// Copies one guest file to the host; returns its size and mode.
    pub async fn pull_file(&self, remote: &str, local: &Path) -> Result<(u64, u32), GuestError> {
        match self {
            Guest::Agent(a) => Ok(a.pull_file(remote, local).await?),
            Guest::Qga(q) => {
                let data = q.read_file(remote).await?;
                let stat = q
                    .run("/bin/stat", &["-c", "%a", remote], Duration::from_secs(30))
                    .await?;
                let mode = u32::from_str_radix(String::from_utf8_lossy(&stat.stdout).trim(), 8)
                    .unwrap_or(0o644);
                if let Some(parent) = local.parent() {
                    tokio::fs::create_dir_all(parent).await.map_err(|e| {
                        GuestError::Local(format!("creating {}: {e}", parent.display()))
                    })?;
                }
                tokio::fs::write(local, &data)
                    .await
                    .map_err(|e| GuestError::Local(format!("writing {}: {e}", local.display())))?;
                let perms = std::os::unix::fs::PermissionsExt::from_mode(mode);
                tokio::fs::set_permissions(local, perms)
                    .await
                    .map_err(|e| GuestError::Local(format!("chmod {}: {e}", local.display())))?;
                Ok((data.len() as u64, mode))
            }
        }
    }
}

//! The guest operations through QEMU's stock guest agent (qemu-ga), for images that
//! have only `qemu-guest-agent`: it runs a command to its end and copies whole files,
//! without streaming either.

use std::path::Path;
use std::time::Duration;

use flotilla_agent::proto::ExitStatus;
use flotilla_qmp::qga::GuestAgent;

use super::error::GuestError;
use super::exec::ExecOutput;

/// The virtio-serial port name QEMU's guest agent opens.
pub const QGA_PORT: &str = "org.qemu.guest_agent.0";

/// Runs `/bin/sh -c command` to its end.
pub(super) async fn exec_shell(
    q: &GuestAgent,
    command: &str,
    timeout: Duration,
) -> Result<ExecOutput, GuestError> {
    let out = q.run("/bin/sh", &["-c", command], timeout).await?;
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

/// Copies one host file into the guest, keeping its mode.
pub(super) async fn push_file(
    q: &GuestAgent,
    local: &Path,
    remote: &str,
    mode: u32,
) -> Result<u64, GuestError> {
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

/// Copies one guest file to the host; returns its size and mode.
pub(super) async fn pull_file(
    q: &GuestAgent,
    remote: &str,
    local: &Path,
) -> Result<(u64, u32), GuestError> {
    let data = q.read_file(remote).await?;
    let stat = q
        .run("/bin/stat", &["-c", "%a", remote], Duration::from_secs(30))
        .await?;
    let mode =
        u32::from_str_radix(String::from_utf8_lossy(&stat.stdout).trim(), 8).unwrap_or(0o644);
    if let Some(parent) = local.parent() {
        tokio::fs::create_dir_all(parent)
            .await
            .map_err(|e| GuestError::Local(format!("creating {}: {e}", parent.display())))?;
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

//! The guest operations through QEMU's stock guest agent (qemu-ga), for images that
//! have only `qemu-guest-agent`: it runs a command to its end and copies whole files,
//! without streaming either.
//!
//! qemu-ga has no time limit of its own and starts commands in its own process group,
//! so a command that reaches its limit is killed here, with the processes it started,
//! by a second command ([`KILL_TREE`]); its status then says `timed_out`.

use std::path::Path;
use std::time::Duration;

use flotilla_agent::proto::ExitStatus;
use flotilla_qmp::qga::GuestAgent;
use tokio::time::Instant;

use super::error::GuestError;
use super::exec::ExecOutput;

/// The virtio-serial port name QEMU's guest agent opens.
pub const QGA_PORT: &str = "org.qemu.guest_agent.0";

/// The limit of the helper programs of a copy (`mkdir`, `chmod`, `stat`).
const HELPER_LIMIT: Duration = Duration::from_secs(30);

/// How long a killed command may take to be reported as ended.
const KILL_WAIT: Duration = Duration::from_secs(10);

/// Kills the process `$1` and every process below it: stops the whole tree first (so
/// nothing forks meanwhile), walking `/proc` for children, then SIGKILLs it. (A process
/// name with a space in it hides that process's children from the walk.)
const KILL_TREE: &str = r#"tree=$1 found=$1
while [ -n "$found" ]; do
    kill -STOP $found 2>/dev/null
    next=
    for s in /proc/[0-9]*/stat; do
        read -r pid comm state ppid rest < "$s" 2>/dev/null || continue
        for p in $found; do [ "$ppid" = "$p" ] && next="$next $pid"; done
    done
    tree="$tree $next" found=$next
done
kill -KILL $tree 2>/dev/null
exit 0"#;

/// Runs `/bin/sh -c command` to its end, or kills it at `timeout`.
pub(super) async fn exec_shell(
    q: &GuestAgent,
    command: &str,
    timeout: Duration,
) -> Result<ExecOutput, GuestError> {
    run(q, "/bin/sh", &["-c", command], timeout).await
}

/// Runs `program` to its end; at `limit` it is killed with what it started, and the
/// status says `timed_out`.
async fn run(
    q: &GuestAgent,
    program: &str,
    args: &[&str],
    limit: Duration,
) -> Result<ExecOutput, GuestError> {
    let pid = q.exec(program, args).await?;
    let mut deadline = Instant::now() + limit;
    let mut timed_out = false;
    // The kill command, until its status is collected (qemu-ga keeps it until then).
    let mut killer = None;
    let mut pause = Duration::from_millis(5);
    loop {
        if let Some(k) = killer {
            if q.exec_status(k).await?.exited {
                killer = None;
            }
        }
        let status = q.exec_status(pid).await?;
        if status.exited {
            let out = status.output()?;
            return Ok(ExecOutput {
                status: ExitStatus {
                    code: out.exitcode.map(|c| c as i32),
                    signal: out.signal.map(|s| s as i32),
                    timed_out,
                },
                stdout: out.stdout,
                stderr: out.stderr,
            });
        }
        if Instant::now() >= deadline {
            if timed_out {
                return Err(GuestError::QgaKill {
                    command: describe(program, args),
                    limit,
                    waited: KILL_WAIT,
                });
            }
            let target = pid.to_string();
            killer = Some(
                q.exec("/bin/sh", &["-c", KILL_TREE, "kill-tree", &target])
                    .await?,
            );
            timed_out = true;
            deadline = Instant::now() + KILL_WAIT;
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(200));
    }
}

/// Runs a helper program of a copy; a failure is an error saying what it was for.
async fn helper(
    q: &GuestAgent,
    doing: impl Fn() -> String,
    program: &str,
    args: &[&str],
) -> Result<Vec<u8>, GuestError> {
    let out = run(q, program, args, HELPER_LIMIT)
        .await
        .map_err(|e| e.doing(doing()))?;
    let status = match (out.status.code, out.status.signal) {
        (Some(0), _) if !out.status.timed_out => return Ok(out.stdout),
        _ if out.status.timed_out => {
            format!("was killed at its limit of {} s", HELPER_LIMIT.as_secs())
        }
        (Some(code), _) => format!("ended with exit status {code}"),
        (None, Some(signal)) => format!("was killed by signal {signal}"),
        (None, None) => "ended without a status".into(),
    };
    Err(GuestError::QgaHelper {
        doing: doing(),
        outcome: match String::from_utf8_lossy(&out.stderr).trim() {
            "" => format!("`{}` {status}", describe(program, args)),
            stderr => format!("`{}` {status}: {stderr}", describe(program, args)),
        },
    })
}

/// A program and its arguments, for messages.
fn describe(program: &str, args: &[&str]) -> String {
    let name = program.rsplit('/').next().unwrap_or(program);
    std::iter::once(name)
        .chain(args.iter().copied())
        .collect::<Vec<_>>()
        .join(" ")
}

/// The permission bits `stat -c %a` printed.
fn parse_mode(stdout: &[u8]) -> Option<u32> {
    let text = std::str::from_utf8(stdout).ok()?.trim();
    u32::from_str_radix(text, 8).ok().filter(|m| *m <= 0o7777)
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
        .filter(|p| !p.is_empty())
        .unwrap_or_else(|| "/".into());
    helper(
        q,
        || format!("creating the folder {dir} for {remote}"),
        "/bin/mkdir",
        &["-p", "--", &dir],
    )
    .await?;
    q.write_file(remote, &data)
        .await
        .map_err(|e| GuestError::from(e).doing(format!("writing {remote}")))?;
    let mode = format!("{:o}", mode & 0o7777);
    helper(
        q,
        || format!("setting the mode of {remote} to {mode}"),
        "/bin/chmod",
        &[&mode, "--", remote],
    )
    .await?;
    Ok(data.len() as u64)
}

/// Copies one guest file to the host; returns its size and mode.
pub(super) async fn pull_file(
    q: &GuestAgent,
    remote: &str,
    local: &Path,
) -> Result<(u64, u32), GuestError> {
    let data = q
        .read_file(remote)
        .await
        .map_err(|e| GuestError::from(e).doing(format!("reading {remote}")))?;
    let doing = || format!("reading the mode of {remote}");
    let stat = helper(q, doing, "/bin/stat", &["-c", "%a", "--", remote]).await?;
    let mode = parse_mode(&stat).ok_or_else(|| {
        GuestError::Local(format!(
            "{}: `stat` printed {:?}, not a mode",
            doing(),
            String::from_utf8_lossy(&stat)
        ))
    })?;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_mode_is_what_stat_printed_or_nothing() {
        assert_eq!(parse_mode(b"751\n"), Some(0o751));
        assert_eq!(parse_mode(b"4755\n"), Some(0o4755));
        for bad in [
            &b""[..],
            b"\n",
            b"rwxr-xr-x\n",
            b"99\n",
            b"17777\n",
            b"\xff\n",
        ] {
            assert_eq!(parse_mode(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn a_helper_is_named_by_its_program_and_arguments() {
        assert_eq!(
            describe("/bin/chmod", &["644", "--", "/x"]),
            "chmod 644 -- /x"
        );
    }
}

//! Commands in the guest: [`Machine::execute`], `succeed`, `fail`, and interactive
//! sessions.

use std::time::{Duration, Instant};

use flotilla_agent::proto;

use super::command_text::tail_text;
use super::console::LineLog;
use super::evidence::paused;
use super::state::{Machine, Running};
use crate::agent_client::{ExecOutput, ExecSession, Guest, GuestError};
use crate::error::Error;
use flotilla_host::process::describe_status;

/// The result of [`Machine::execute`].
#[derive(Debug, Clone)]
pub struct CommandResult {
    /// Exit code; `None` when the command was killed by a signal.
    pub code: Option<i32>,
    /// The signal that killed the command, if any.
    pub signal: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl CommandResult {
    /// True when the command exited with status 0.
    pub fn success(&self) -> bool {
        self.code == Some(0)
    }

    pub(super) fn describe(&self) -> String {
        match (self.code, self.signal) {
            (Some(c), _) => format!("exit status {c}"),
            (None, Some(s)) => format!("signal {s} ({})", flotilla_host::process::signal_name(s)),
            _ => "no status".into(),
        }
    }
}

/// How long past a command's limit the host waits for flotilla-agent to report the
/// command killed (it kills it at the limit itself, and says so within moments) before
/// it gives up on the guest.
const REPORT_GRACE: Duration = Duration::from_secs(2);

/// The same through qemu-ga, where the host kills the command at its limit through
/// qemu-ga and gives it 10 s to end.
const QGA_KILL_GRACE: Duration = Duration::from_secs(15);

/// How often a command past its limit checks whether QEMU is stopped by a signal.
const STOPPED_POLL: Duration = Duration::from_millis(100);

impl Machine {
    /// The error of a command that did not finish within `limit`.
    fn command_timed_out(&self, command: &str, limit: Duration) -> Error {
        Error::Timeout {
            machine: self.config.name.clone(),
            what: format!("command `{command}`"),
            after: limit,
        }
    }

    /// Runs a shell command and returns its status and output.
    pub async fn execute(&self, command: &str) -> Result<CommandResult, Error> {
        self.execute_with_timeout(command, self.config.command_timeout)
            .await
    }

    /// [`Machine::execute`] with an explicit time limit.
    pub async fn execute_with_timeout(
        &self,
        command: &str,
        timeout: Duration,
    ) -> Result<CommandResult, Error> {
        self.run_command(command, timeout, None).await
    }

    /// Runs a command; `expected` (success or failure), when given, is the verdict of
    /// its step on the timeline.
    async fn run_command(
        &self,
        command: &str,
        timeout: Duration,
        expected: Option<bool>,
    ) -> Result<CommandResult, Error> {
        // A dead helper is the error, not the polling condition it would break.
        self.config.fabric.check_helpers()?;
        self.config.conditions.check().await?;
        let running = self.running().await?;
        let busy =
            self.config
                .log
                .step(Some(&self.config.name), "command", &format!("`{command}`"));
        let ran = self.command_on(&running, command, timeout).await;
        busy.finish(match &ran {
            Ok(r) if expected.is_some_and(|e| e != r.success()) => Err(r.describe()),
            Ok(r) => Ok(Some(r.describe())),
            Err(e) => Err(e.to_string()),
        });
        ran
    }

    /// [`Machine::run_command`] once the machine runs.
    async fn command_on(
        &self,
        running: &std::sync::Arc<super::state::Running>,
        command: &str,
        timeout: Duration,
    ) -> Result<CommandResult, Error> {
        let running = running.clone();
        let started = Instant::now();
        let log = self.config.log.clone();
        let name = self.config.name.clone();
        let mut lines = [LineLog::default(), LineLog::default()];
        let guest = self.guest(&running).await?;
        let env = self.coverage_env();
        let grace = match &*guest {
            Guest::Qga(_) => QGA_KILL_GRACE,
            Guest::Flotilla(_) => REPORT_GRACE,
        };
        let exec = guest.exec_shell(command, timeout, &env, |is_err, chunk| {
            lines[usize::from(is_err)].push(chunk, |line| log.machine(&name, &format!("  {line}")));
        });
        let doing = format!("running `{command}`");
        let output: ExecOutput = tokio::select! {
            r = exec => match r {
                Ok(output) => output,
                Err(source) => {
                    // The agent's socket closes as QEMU dies: report the death, which
                    // says more, when it follows within moments.
                    if let Ok(status) = tokio::time::timeout(Duration::from_secs(2), running.process.exited()).await {
                        return Err(self.died(&running, &format!("qemu {} while running `{command}`", describe_status(status))).await);
                    }
                    return Err(self.agent_failed(format!("running `{command}`"), source));
                }
            },
            status = running.process.exited() => {
                return Err(self.died(&running, &format!("qemu {} while running `{command}`", describe_status(status))).await);
            }
            why = paused(&running) => {
                return Err(self.died(&running, &format!("{why} while running `{command}`")).await);
            }
            e = self.helper_died(&doing) => return Err(e),
            // The guest kills the command at its limit and says so (below); this is
            // for a guest that does not answer at all.
            why = not_answering(&running, timeout, grace) => {
                self.log(&format!(
                    "(not reported killed at its limit of {} s: {why}; the guest is taken as not answering)",
                    timeout.as_secs_f64()
                ));
                running.not_answering(why);
                return Err(self.command_timed_out(command, timeout));
            }
        };
        for l in &mut lines {
            l.finish(|line| self.log(&format!("  {line}")));
        }
        if output.status.timed_out {
            self.log(&format!(
                "(killed at its limit of {} s)",
                timeout.as_secs_f64()
            ));
            return Err(self.command_timed_out(command, timeout));
        }
        let result = CommandResult {
            code: output.status.code,
            signal: output.status.signal,
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        };
        self.log(&format!(
            "(finished with {} in {:.2} s)",
            result.describe(),
            started.elapsed().as_secs_f64()
        ));
        Ok(result)
    }

    /// Runs a command that must succeed (exit 0); returns its stdout.
    pub async fn succeed(&self, command: &str) -> Result<String, Error> {
        self.succeed_with_timeout(command, self.config.command_timeout)
            .await
    }

    /// [`Machine::succeed`] with its own time limit instead of the network's default.
    pub async fn succeed_with_timeout(
        &self,
        command: &str,
        timeout: Duration,
    ) -> Result<String, Error> {
        self.expect(command, timeout, true).await
    }

    /// Runs a command that must fail (non-zero exit or killed); returns its stdout.
    pub async fn fail(&self, command: &str) -> Result<String, Error> {
        self.fail_with_timeout(command, self.config.command_timeout)
            .await
    }

    /// [`Machine::fail`] with its own time limit instead of the network's default.
    pub async fn fail_with_timeout(
        &self,
        command: &str,
        timeout: Duration,
    ) -> Result<String, Error> {
        self.expect(command, timeout, false).await
    }

    /// Runs a command that must succeed (`success`) or fail; returns its stdout.
    pub(super) async fn expect(
        &self,
        command: &str,
        timeout: Duration,
        success: bool,
    ) -> Result<String, Error> {
        let expected = if success { "succeed" } else { "fail" };
        self.log(&format!("must {expected}: {command}"));
        let r = self.run_command(command, timeout, Some(success)).await?;
        if r.success() == success {
            return Ok(r.stdout);
        }
        Err(Error::CommandFailed {
            machine: self.config.name.clone(),
            command: command.to_owned(),
            expected: expected.into(),
            status: r.describe(),
            output: tail_text(&r.stdout, &r.stderr),
        })
    }

    /// Starts a command whose stdin, terminal and output the caller drives (an
    /// interactive shell: `request.pty`); boots the machine first if needed. Dropping
    /// the session kills the command.
    pub async fn start_session(&self, request: &proto::ExecRequest) -> Result<ExecSession, Error> {
        let running = self.running().await?;
        let refuse = |why: String| {
            self.agent_failed("starting an interactive command", GuestError::Local(why))
        };
        let guest = self.guest(&running).await?;
        let agent = match &*guest {
            Guest::Flotilla(a) => a,
            Guest::Qga(_) => {
                return Err(refuse(
                    "qemu-guest-agent cannot run interactive commands; use an image with flotilla-agent".into(),
                ))
            }
        };
        if request.pty.is_some() && !agent.has_feature(proto::FEATURE_PTY) {
            return Err(refuse(format!(
                "flotilla-agent {} in the guest has no terminal support\nhint: rebuild the image with this flotilla (`flotilla image debian`)",
                agent.hello.agent_version
            )));
        }
        let mut request = request.clone();
        request.env.extend(self.coverage_env());
        agent
            .start(&request)
            .await
            .map_err(|source| self.agent_failed("starting an interactive command", source))
    }
}

/// Resolves, with the reason, once a command past its `limit` will not be reported by
/// the guest: at once when QEMU is stopped by a signal (SIGSTOP), or `grace` after the
/// limit.
async fn not_answering(running: &Running, limit: Duration, grace: Duration) -> String {
    tokio::time::sleep(limit).await;
    let given_up = Instant::now() + grace;
    loop {
        if running.process.is_stopped() {
            return "qemu is stopped by a signal (SIGSTOP)".into();
        }
        if Instant::now() >= given_up {
            return format!("no word from the guest {} s after it", grace.as_secs_f64());
        }
        tokio::time::sleep(STOPPED_POLL).await;
    }
}

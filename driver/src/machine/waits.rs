//! Waiting for something in the guest: console text, files, ports, systemd units, a
//! command that succeeds or fails; and typing on the serial console.

use std::time::{Duration, Instant};

use super::command_text::{listening, shell_quote};
use super::state::Machine;
use crate::error::Error;
use flotilla_host::process::describe_status;

impl Machine {
    /// Types `text` on the serial console (QEMU's stdin): what a person at the
    /// console would type, read by whatever reads the guest's console (a getty, a
    /// shell on `ttyS0`). An error when QEMU is not running.
    pub async fn send_console(&self, text: &str) -> Result<(), Error> {
        let running = self.is_up().await;
        let input = self.console_input.lock().ok().and_then(|i| i.clone());
        match input {
            Some(input) if running && input.send(text.as_bytes().to_vec()).is_ok() => {
                self.log(&format!("console input: {text:?}"));
                Ok(())
            }
            _ => Err(Error::Usage(format!(
                "machine `{}`: send_console: the machine is not running (start it first)",
                self.config.name
            ))),
        }
    }

    /// Waits until a console line matches the regular expression `pattern` (lines seen
    /// before the call count too); returns the line. Fails at once if QEMU exits.
    pub async fn wait_for_console_text(
        &self,
        pattern: &str,
        timeout: Duration,
    ) -> Result<String, Error> {
        let re = regex::Regex::new(pattern).map_err(|e| {
            Error::Usage(format!(
                "machine `{}`: wait_for_console_text: bad regular expression `{pattern}`: {e}",
                self.config.name
            ))
        })?;
        self.config.fabric.check_helpers()?;
        self.log(&format!("waiting for console text matching `{pattern}`"));
        let mut count = self.console.count.subscribe();
        let running = self.running.lock().await.clone();
        let wait = async {
            loop {
                if let Some(line) = self.console.find(&re) {
                    return line;
                }
                if count.changed().await.is_err() {
                    return std::future::pending().await;
                }
            }
        };
        let exited = async {
            match &running {
                Some(r) => r.process.exited().await,
                None => std::future::pending().await,
            }
        };
        let doing = format!("waiting for console text `{pattern}`");
        let found = async {
            tokio::select! {
                line = wait => Ok(line),
                status = exited => match &running {
                    Some(r) => Err(self.died(r, &format!("qemu {} while waiting for console text `{pattern}`", describe_status(status))).await),
                    None => Err(Error::Internal("no machine".into())),
                },
                e = self.helper_died(&doing) => Err(e),
                _ = tokio::time::sleep(timeout) => Err(Error::Timeout {
                    machine: self.config.name.clone(),
                    what: format!("waiting for console text matching `{pattern}`"),
                    after: timeout,
                }),
            }
        };
        let label = format!("waiting for console text `{pattern}`");
        let name = Some(&*self.config.name);
        self.config.log.in_step(name, "wait", &label, found).await
    }

    /// Waits until `path` exists in the guest.
    pub async fn wait_for_file(&self, path: &str, timeout: Duration) -> Result<(), Error> {
        self.wait_until_succeeds(&format!("test -e {}", shell_quote(path)), timeout)
            .await
            .map(|_| ())
    }

    /// Waits until something in the guest listens on TCP `port` (IPv4 or IPv6).
    pub async fn wait_for_open_port(&self, port: u16, timeout: Duration) -> Result<(), Error> {
        self.wait_until_succeeds(&listening(port), timeout)
            .await
            .map(|_| ())
    }

    /// Waits until nothing in the guest listens on TCP `port`.
    pub async fn wait_for_closed_port(&self, port: u16, timeout: Duration) -> Result<(), Error> {
        self.wait_until_fails(&listening(port), timeout)
            .await
            .map(|_| ())
    }

    /// Waits until the systemd unit is active; fails at once if it failed.
    pub async fn wait_for_unit(&self, unit: &str, timeout: Duration) -> Result<(), Error> {
        self.log(&format!("waiting for unit {unit}"));
        let deadline = Instant::now() + timeout;
        let quoted = shell_quote(unit);
        loop {
            // Each check within what is left of the wait, so that a guest that stops
            // answering fails it at its limit.
            let left = deadline.saturating_duration_since(Instant::now());
            let r = self
                .execute_with_timeout(
                    &format!("systemctl is-active {quoted}"),
                    left.max(Duration::from_secs(1)),
                )
                .await?;
            match r.stdout.trim() {
                "active" => return Ok(()),
                "failed" => {
                    let status = self
                        .execute(&format!("systemctl status --no-pager --lines=10 {quoted}"))
                        .await
                        .map(|r| r.stdout)
                        .unwrap_or_default();
                    return Err(Error::CommandFailed {
                        machine: self.config.name.clone(),
                        command: format!("wait_for_unit {unit}"),
                        expected: "become active".into(),
                        status: "state failed".into(),
                        output: status,
                    });
                }
                _ if Instant::now() >= deadline => {
                    return Err(Error::Timeout {
                        machine: self.config.name.clone(),
                        what: format!("waiting for unit {unit} (last state: {})", r.stdout.trim()),
                        after: timeout,
                    })
                }
                _ => tokio::time::sleep(Duration::from_millis(500)).await,
            }
        }
    }

    /// Runs a command until it succeeds (every half second), for at most `timeout`;
    /// returns its stdout.
    pub async fn wait_until_succeeds(
        &self,
        command: &str,
        timeout: Duration,
    ) -> Result<String, Error> {
        self.wait_until(command, timeout, true).await
    }

    /// Runs a command until it fails, for at most `timeout`; returns its stdout.
    pub async fn wait_until_fails(
        &self,
        command: &str,
        timeout: Duration,
    ) -> Result<String, Error> {
        self.wait_until(command, timeout, false).await
    }

    pub(super) async fn wait_until(
        &self,
        command: &str,
        timeout: Duration,
        success: bool,
    ) -> Result<String, Error> {
        let wanted = if success { "succeeds" } else { "fails" };
        self.log(&format!("waiting until this {wanted}: {command}"));
        let deadline = Instant::now() + timeout;
        let mut tries = 0;
        let waited = async {
            loop {
                tries += 1;
                let left = deadline.saturating_duration_since(Instant::now());
                let r = match self
                    .execute_with_timeout(command, left.max(Duration::from_secs(1)))
                    .await
                {
                    Ok(r) => r,
                    // The last try was cut at the wait's deadline: the wait timed out,
                    // with its own limit, not the try's remainder.
                    Err(Error::Timeout { .. }) if Instant::now() >= deadline => {
                        return Err(Error::Timeout {
                            machine: self.config.name.clone(),
                            what: format!(
                                "waiting until `{command}` {wanted} ({tries} tries, the last still running at the limit)"
                            ),
                            after: timeout,
                        });
                    }
                    Err(e) => return Err(e),
                };
                if r.success() == success {
                    return Ok(r.stdout);
                }
                if Instant::now() + Duration::from_millis(500) >= deadline {
                    return Err(Error::Timeout {
                        machine: self.config.name.clone(),
                        what: format!(
                            "waiting until `{command}` {wanted} ({tries} tries, last: {})",
                            r.describe()
                        ),
                        after: timeout,
                    });
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        };
        let label = format!("waiting until `{command}` {wanted}");
        let name = Some(&*self.config.name);
        self.config.log.in_step(name, "wait", &label, waited).await
    }
}

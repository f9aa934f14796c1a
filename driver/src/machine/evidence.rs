//! What an error about a dead, paused or stuck machine says: the reason, QEMU's last
//! words, the console's tail; and calls that end at once when the machine dies, or a
//! helper process of its network does.

use std::fmt::Write as _;
use std::time::Duration;

use tokio::sync::watch;

use super::console::{Console, ConsoleState, TAIL_LINES};
use super::events::STOPPED;
use super::state::{Machine, Running};
use crate::error::Error;
use flotilla_host::process::describe_status;

impl Machine {
    pub(super) async fn died_early(
        &self,
        status: std::process::ExitStatus,
        state: &watch::Receiver<ConsoleState>,
        stderr: &Console,
    ) -> Error {
        let problem = format!(
            "qemu {} before the agent was ready",
            describe_status(status)
        );
        let (problem, console) = self.evidence(state, stderr, true, problem).await;
        // A forward QEMU could not set up is a host port in use (taken since the
        // fleet checked it): the error says which, with QEMU's words.
        let busy = stderr
            .tail(5)
            .iter()
            .find_map(|l| flotilla_vmnet::forward::failed_forward_port(l));
        if let Some(port) = busy {
            return Error::PortBusy {
                machine: self.config.name.clone(),
                port,
                guest: self.guest_port_of(port).unwrap_or_default(),
                evidence: Some(problem),
            };
        }
        Error::Boot {
            machine: self.config.name.clone(),
            problem,
            console,
        }
    }

    /// What an error about a dead or stuck machine quotes: once QEMU has exited, waits
    /// (at most a second) for the console and stderr readers to drain, then adds QEMU's
    /// last stderr lines to `problem` and returns the console's tail.
    pub(super) async fn evidence(
        &self,
        state: &watch::Receiver<ConsoleState>,
        stderr: &Console,
        exited: bool,
        mut problem: String,
    ) -> (String, Vec<String>) {
        if exited {
            // Both are read by their own tasks; let them reach the end of what QEMU wrote.
            let mut rx = state.clone();
            let mut ended = stderr.ended.subscribe();
            let _ = tokio::time::timeout(Duration::from_secs(1), async {
                let _ = rx.wait_for(|s| s.eof).await;
                let _ = ended.wait_for(|e| *e).await;
            })
            .await;
        }
        let qemu_says = stderr.tail(5);
        if !qemu_says.is_empty() {
            let _ = write!(problem, "; qemu said: {}", qemu_says.join(" / "));
        }
        (problem, self.console.tail(TAIL_LINES))
    }

    /// Runs `fut`, a call on the running machine, unless QEMU exits, the VM pauses,
    /// the agent goes away or a helper of the machine's VLANs dies first: those end it
    /// at once with the evidence.
    pub(super) async fn guarded<T>(
        &self,
        running: &Running,
        what: &str,
        fut: impl std::future::Future<Output = Result<T, Error>>,
    ) -> Result<T, Error> {
        tokio::select! {
            r = fut => r,
            status = running.process.exited() => Err(self
                .died(running, &format!("qemu {} while {what}", describe_status(status)))
                .await),
            why = paused(running) => Err(self.died(running, &format!("{why} while {what}")).await),
            e = self.helper_died(what) => Err(e),
        }
    }

    /// Resolves, with its error, when a helper process of one of the machine's VLANs
    /// dies while the machine is `doing` something (at once if one died already).
    pub(super) async fn helper_died(&self, doing: &str) -> Error {
        self.config
            .fabric
            .helper_died(&self.config.name, doing)
            .await
    }

    pub(super) async fn died(&self, running: &Running, problem: &str) -> Error {
        let exited = running.process.status().is_some();
        let panic = running.state.borrow().panic.clone();
        let problem = match panic {
            Some(line) => format!("the guest kernel panicked ({}); {problem}", line.trim()),
            None => problem.to_owned(),
        };
        let (problem, console) = self
            .evidence(&running.state, &running.stderr_tail, exited, problem)
            .await;
        Error::MachineDied {
            machine: self.config.name.clone(),
            problem,
            console,
        }
    }
}

/// Resolves with the reason once the VM is paused.
///
/// A STOP seen by the event watcher is confirmed with `query-status` first: a RESUME
/// that QEMU sent before the reply of the `cont` that caused it may not have reached
/// the watcher yet when the next call starts, and that call must not fail on a pause
/// that is already over. The reply comes after every event QEMU sent before it, so a
/// running VM means the watcher is about to clear the reason.
pub(super) async fn paused(running: &Running) -> String {
    let mut rx = running.paused.clone();
    loop {
        let why = rx
            .wait_for(|p| p.is_some())
            .await
            .map(|p| p.clone().unwrap_or_default());
        let Ok(why) = why else {
            return std::future::pending().await;
        };
        if !why.starts_with(STOPPED) {
            return why;
        }
        match running.qmp.query_status().await {
            Ok(status) if status.running => {
                if rx.changed().await.is_err() {
                    return std::future::pending().await;
                }
            }
            _ => return why,
        }
    }
}

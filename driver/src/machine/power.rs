//! Power: shutdown, crash (power cut), reboot, waiting for the guest's own power-off,
//! and stop at the end of a run.

use std::time::Duration;

use super::state::{Machine, Running};
use crate::error::Error;

impl Machine {
    /// Powers the guest off through the agent and waits for QEMU to exit (with coverage
    /// on, its programs are ended first so that they write their data). A guest that
    /// does not power off within `timeout` (or whose agent cannot be asked) is an
    /// [`Error::PowerOff`]; QEMU is stopped all the same.
    pub async fn shutdown(&self, timeout: Duration) -> Result<(), Error> {
        // Instrumented programs write their coverage data as they exit.
        if let Err(e) = self.end_programs().await {
            self.log(&format!("coverage: its programs could not be ended: {e}"));
        }
        let Some(running) = self.running.lock().await.take() else {
            return Ok(());
        };
        self.log("shutting down");
        let deadline = tokio::time::Instant::now() + timeout;
        // A guest that does not answer the request has the same limit as one that
        // does not power off.
        let ask = async {
            match self.guest(&running).await {
                Ok(guest) => guest
                    .shutdown()
                    .await
                    .map_err(|e| self.agent_failed("asking the guest to power off", e)),
                Err(e) => Err(e),
            }
        };
        let asked = match tokio::time::timeout_at(deadline, ask).await {
            Ok(asked) => asked,
            Err(_) => Err(Error::Timeout {
                machine: self.config.name.clone(),
                what: "asking the guest to power off".into(),
                after: timeout,
            }),
        };
        let clean = asked.is_ok()
            && tokio::time::timeout_at(deadline, running.process.exited())
                .await
                .is_ok();
        if clean {
            return Ok(());
        }
        self.log(&format!(
            "no power-off within {} s: stopping qemu",
            timeout.as_secs_f64()
        ));
        self.end_qemu(&running).await;
        Err(Error::PowerOff {
            machine: self.config.name.clone(),
            limit: timeout,
            source: asked.err().map(Box::new),
        })
    }

    /// Simulates a power cut: QEMU stops at once, without a guest shutdown. The next
    /// call boots the machine again (a disk image keeps what reached its overlay).
    pub async fn crash(&self) -> Result<(), Error> {
        self.log("crashing (power cut)");
        self.stop().await;
        Ok(())
    }

    /// Powers the guest off cleanly and boots it again.
    pub async fn reboot(&self, timeout: Duration) -> Result<(), Error> {
        self.log("rebooting");
        self.shutdown(timeout).await?;
        self.start().await
    }

    /// Waits until the guest powers itself off (QEMU exits: `poweroff` in the guest),
    /// for at most `timeout`; the next call boots it again. A machine that is not
    /// running has nothing to wait for.
    pub async fn wait_for_shutdown(&self, timeout: Duration) -> Result<(), Error> {
        let exit = match self.running.lock().await.as_ref() {
            Some(running) => running.process.exit_watch(),
            None => return Ok(()),
        };
        let name = self.config.name.clone();
        let waited = async {
            tokio::time::timeout(timeout, exit.exited())
                .await
                .map_err(|_| Error::Timeout {
                    machine: name.clone(),
                    what: "waiting for the guest to power off".into(),
                    after: timeout,
                })
        };
        self.config
            .log
            .in_step(Some(&name), "wait", "waiting for power-off", waited)
            .await?;
        self.stop().await;
        Ok(())
    }

    /// Stops QEMU at once (QMP `quit`, then signals; a QEMU that cannot answer is killed).
    /// Idempotent; used at the end of a run, when the guest's state no longer matters.
    pub async fn stop(&self) {
        let Some(running) = self.running.lock().await.take() else {
            return;
        };
        self.end_qemu(&running).await;
        let mut rx = running.state.clone();
        let _ = tokio::time::timeout(Duration::from_secs(1), rx.wait_for(|s| s.eof)).await;
    }

    /// Ends `running`'s QEMU: `quit` over QMP, which a live QEMU answers at once, then
    /// [`QUIT_EXIT`] to exit and SIGTERM with [`TERM_GRACE`]. A QEMU that cannot answer
    /// is killed (SIGKILL) without those waits, and the log says why: one stopped by a
    /// signal (SIGSTOP: it would not even die of SIGTERM), or one that does not answer
    /// QMP within [`QMP_ANSWER`].
    async fn end_qemu(&self, running: &Running) {
        let process = &running.process;
        if process.status().is_some() {
            return;
        }
        let killed = if process.is_stopped() {
            Some("qemu is stopped by a signal (SIGSTOP) and cannot answer: killed".to_owned())
        } else {
            match tokio::time::timeout(QMP_ANSWER, running.qmp.quit()).await {
                Err(_) if process.status().is_none() => Some(format!(
                    "qemu did not answer QMP within {} s{}: killed",
                    QMP_ANSWER.as_secs_f64(),
                    if process.is_stopped() {
                        " (it is stopped by a signal)"
                    } else {
                        ""
                    }
                )),
                _ => {
                    if tokio::time::timeout(QUIT_EXIT, process.exited())
                        .await
                        .is_err()
                    {
                        self.log(&format!(
                            "qemu did not exit within {} s of `quit`: SIGTERM",
                            QUIT_EXIT.as_secs_f64()
                        ));
                        process.close(TERM_GRACE).await;
                    }
                    None
                }
            }
        };
        if let Some(why) = killed {
            self.log(&why);
            process.signal(libc::SIGKILL);
            let _ = tokio::time::timeout(Duration::from_secs(5), process.exited()).await;
        }
    }
}

/// How long a QEMU being stopped has to answer QMP's `quit` before it is killed.
const QMP_ANSWER: Duration = Duration::from_secs(1);
/// How long a QEMU that answered `quit` has to exit before SIGTERM.
const QUIT_EXIT: Duration = Duration::from_secs(2);
/// How long QEMU has after SIGTERM before SIGKILL.
const TERM_GRACE: Duration = Duration::from_secs(3);

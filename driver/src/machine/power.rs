//! Power: shutdown, crash (power cut), reboot, and stop at the end of a run.

use std::time::Duration;

use super::state::Machine;
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
        let asked = match self.guest(&running).await {
            Ok(guest) => guest
                .shutdown()
                .await
                .map_err(|e| self.agent_failed("asking the guest to power off", e)),
            Err(e) => Err(e),
        };
        let clean = asked.is_ok()
            && tokio::time::timeout(timeout, running.process.exited())
                .await
                .is_ok();
        if clean {
            return Ok(());
        }
        self.log(&format!(
            "no power-off within {} s: stopping qemu",
            timeout.as_secs_f64()
        ));
        let _ = tokio::time::timeout(Duration::from_secs(2), running.qmp.quit()).await;
        running.process.close(Duration::from_secs(3)).await;
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

    /// Stops QEMU at once (QMP `quit`, then signals). Idempotent; used at the end of a
    /// run, when the guest's state no longer matters.
    pub async fn stop(&self) {
        let Some(running) = self.running.lock().await.take() else {
            return;
        };
        if running.process.status().is_none() {
            let _ = tokio::time::timeout(Duration::from_secs(2), running.qmp.quit()).await;
            if tokio::time::timeout(Duration::from_secs(2), running.process.exited())
                .await
                .is_err()
            {
                running.process.close(Duration::from_secs(3)).await;
            }
        }
        let mut rx = running.state.clone();
        let _ = tokio::time::timeout(Duration::from_secs(1), rx.wait_for(|s| s.eof)).await;
    }
}

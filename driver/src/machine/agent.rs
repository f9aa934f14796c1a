//! A running machine's connection to its guest agent, made again when the agent
//! restarts.

use std::sync::Arc;
use std::time::Duration;

use super::events::AGENT_GONE;
use super::state::{Machine, Running};
use crate::agent_client::{AgentConnection, Guest, Notes};
use crate::error::Error;

impl Machine {
    /// Where this machine's agent connection notes what happens to it outside a
    /// request (it broke, the agent complained): `driver.log`, naming the machine.
    pub(super) fn agent_notes(&self) -> Notes {
        let log = self.config.log.clone();
        let name = self.config.name.clone();
        Arc::new(move |note: &str| log.file_only(&format!("{name}: {note}")))
    }

    /// The connection to the running machine's agent; connects again first when the
    /// agent has restarted since (the guest closed its port, and has opened it again).
    pub(super) async fn guest(&self, running: &Running) -> Result<Arc<Guest>, Error> {
        let current = |r: &Running| r.guest.read().map(|g| g.clone()).unwrap_or((0, None));
        let closes = *running.port_closes.borrow();
        let gone = running
            .paused
            .borrow()
            .clone()
            .filter(|p| p.starts_with(AGENT_GONE));
        if let (seen, Some(guest)) = current(running) {
            // Still the same agent, or it is away (the call then fails as such).
            if seen == closes || gone.is_some() || !matches!(*guest, Guest::Flotilla(_)) {
                return Ok(guest);
            }
        }
        if let Some(why) = gone {
            return Err(self.died(running, &why).await);
        }
        let _one = running.reconnecting.lock().await;
        if let (seen, Some(guest)) = current(running) {
            if seen == closes {
                return Ok(guest); // another call connected meanwhile
            }
        }
        self.log("the agent restarted: connecting again");
        // Drop the old connection first: QEMU takes one client at a time.
        if let Ok(mut g) = running.guest.write() {
            g.1 = None;
        }
        let path = self.config.socket_dir().join("agent.sock");
        let conn = AgentConnection::connect(&path, Duration::from_secs(30), self.agent_notes())
            .await
            .map_err(|source| {
                self.agent_failed("connecting again after the agent restarted", source)
            })?;
        let fresh = Arc::new(Guest::Flotilla(conn));
        if let Ok(mut g) = running.guest.write() {
            *g = (closes, Some(fresh.clone()));
        }
        Ok(fresh)
    }
}

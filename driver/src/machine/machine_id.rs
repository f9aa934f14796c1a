//! The machine id of a machine with a disk image (`/etc/machine-id`, made by the plan
//! as a part of the machine's instance): its own for each machine, where the image has
//! one fixed id for all. At a cold boot stage 1 writes it into the root before the init
//! starts, from `flotilla.machine_id=` on the kernel command line, so that systemd reads it as an existing id (no first-boot set-up) and
//! sysvinit's and OpenRC's services find it too; after a restore the driver writes it,
//! since the saved disk has the saving machine's.

use std::time::Duration;

use super::state::Machine;
use crate::agent_client::Guest;

impl Machine {
    /// Writes the machine's own id into a restored guest with a disk image (the saved
    /// disk has the saving machine's). Processes that read the id before the save
    /// (systemd itself, journald) keep the saved one.
    pub(super) async fn write_machine_id(&self, guest: &Guest) -> Result<(), String> {
        if self.config.command.hardware.image.is_none() {
            return Ok(());
        }
        let id = self.config.machine_id();
        let script = format!(
            "cat /etc/machine-id; echo {id} > /etc/machine-id.new && \
             chmod 444 /etc/machine-id.new && mv -f /etc/machine-id.new /etc/machine-id"
        );
        let out = guest
            .exec_shell(&script, Duration::from_secs(30), &[], |_, _| {})
            .await
            .map_err(|e| format!("writing /etc/machine-id: {e}"))?;
        if out.status.code != Some(0) {
            return Err(format!(
                "writing /etc/machine-id: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        self.log(&format!(
            "snapshot: machine id {id} (the saved disk had {})",
            String::from_utf8_lossy(&out.stdout).trim()
        ));
        Ok(())
    }
}

//! The machine id of a machine with a disk image (`/etc/machine-id`): its own for each
//! machine, where the image has one fixed id for all. At a cold boot stage 1 writes it
//! into the root before the init starts, from `flotilla.machine_id=` on the kernel
//! command line, so that systemd reads it as an existing id (no first-boot set-up) and
//! sysvinit's and OpenRC's services find it too; after a restore the driver writes it,
//! since the saved disk has the saving machine's.

use std::sync::OnceLock;
use std::time::Duration;

use sha2::{Digest, Sha256};

use super::config::MachineConfig;
use super::state::Machine;
use crate::agent_client::Guest;

impl MachineConfig {
    /// The machine's id: 32 hex digits, the same across the reboots of one run. Disks
    /// kept with `--keep-state` keep it across runs too; otherwise each run (each
    /// driver process) gives its machines new ones.
    pub(super) fn machine_id(&self) -> String {
        static RUN_SALT: OnceLock<[u8; 16]> = OnceLock::new();
        let mut h = Sha256::new();
        h.update(b"flotilla machine-id\0");
        h.update(self.state_dir.as_os_str().as_encoded_bytes());
        if self.state_dir == self.socket_dir {
            h.update(RUN_SALT.get_or_init(run_salt));
        }
        h.finalize()[..16]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }
}

/// Random bytes for this process (the time and pid if the host's randomness cannot be
/// read).
fn run_salt() -> [u8; 16] {
    use std::io::Read as _;
    let mut salt = [0u8; 16];
    let read = std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut salt));
    if read.is_err() {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos();
        salt[..8].copy_from_slice(&(nanos as u64).to_le_bytes());
        salt[8..12].copy_from_slice(&std::process::id().to_le_bytes());
    }
    salt
}

impl Machine {
    /// Writes the machine's own id into a restored guest with a disk image (the saved
    /// disk has the saving machine's). Processes that read the id before the save
    /// (systemd itself, journald) keep the saved one.
    pub(super) async fn write_machine_id(&self, guest: &Guest) -> Result<(), String> {
        if self.config.spec.image.is_none() {
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

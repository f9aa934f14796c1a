//! The machine's disk files: made with `qemu-img` on first boot, kept as long as the
//! state folder.

use tokio::process::Command;

use super::state::Machine;
use crate::error::Error;
use crate::spec::DiskSource;

impl Machine {
    /// Makes the disks that do not exist yet: they live as long as the state folder
    /// (the run, or across runs with `--keep-state`), so a reboot or crash keeps them.
    pub(super) async fn ensure_disks(&self) -> Result<(), Error> {
        let c = &self.config;
        for (name, source) in c.command.hardware.disk_sources() {
            let name = name.as_str();
            let path = c.disk_path(name);
            let failed = |problem: String| Error::Disk {
                machine: c.name.clone(),
                disk: name.to_owned(),
                problem,
            };
            if path.exists() {
                if c.state_dir() != c.socket_dir() {
                    self.log(&format!("disk {name}: reusing {}", path.display()));
                }
                continue;
            }
            std::fs::create_dir_all(c.state_dir())
                .map_err(|e| failed(format!("creating {}: {e}", c.state_dir().display())))?;
            let partial = path.with_extension("qcow2.partial");
            let mut cmd = Command::new("qemu-img");
            cmd.args(["create", "-q", "-f", "qcow2"]);
            let what = match &source {
                DiskSource::Blank { bytes } => {
                    cmd.arg(&partial).arg(bytes.to_string());
                    format!("blank, {} MiB", bytes.div_ceil(1 << 20))
                }
                DiskSource::Overlay { base } => {
                    cmd.args(["-F", "qcow2", "-b"]).arg(base).arg(&partial);
                    format!("overlay over {}", base.display())
                }
            };
            let out = cmd
                .output()
                .await
                .map_err(|e| failed(format!("running qemu-img: {e}")))?;
            if !out.status.success() {
                return Err(failed(format!(
                    "qemu-img could not make {} ({what}): {}",
                    path.display(),
                    String::from_utf8_lossy(&out.stderr).trim()
                )));
            }
            // Only a whole disk gets its name: a later run must not reuse half of one.
            std::fs::rename(&partial, &path).map_err(|e| {
                failed(format!(
                    "renaming {} to {}: {e}",
                    partial.display(),
                    path.display()
                ))
            })?;
            self.log(&format!("disk {name}: {what}, at {}", path.display()));
        }
        Ok(())
    }
}

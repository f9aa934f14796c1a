//! A snapshot's disks: the machine's writable disk files (the image's overlay, the
//! extra disks) saved beside the state and restored before it, so that every restored
//! machine gets its own copies of the disk content the saved memory knows. (The disks'
//! share of the state's identity is the command's: the plan's `QemuCommand`.)
//!
//! The disks are copied after the migration completed: QEMU has then flushed and
//! inactivated its block devices, and the VM stays stopped until the copy is done. An
//! overlay's backing file is the base image by absolute path, which is the same for
//! every machine; the base's content stamp is in the identity.

use std::path::{Path, PathBuf};
use std::time::Instant;

use super::config::MachineConfig;
use super::state::{Machine, Running};
use crate::error::Error;
use crate::snapshot_store::Entry;
use crate::spec::DiskSource;

/// The machine's disks as (name, source): the image's overlay first, then the spec's
/// disks in order.
fn disk_sources(c: &MachineConfig) -> Vec<(String, DiskSource)> {
    c.command.hardware.disk_sources()
}

/// `path` with `suffix` added to its file name.
fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

/// Copies `from` to `to` under a temporary name, then renames it: `to` is whole or
/// not there. Returns the bytes copied.
fn copy_whole(from: &Path, to: &Path) -> Result<u64, String> {
    let partial = with_suffix(to, ".partial");
    let copied = std::fs::copy(from, &partial)
        .and_then(|bytes| std::fs::rename(&partial, to).map(|()| bytes))
        .map_err(|e| format!("copying {} to {}: {e}", from.display(), to.display()));
    if copied.is_err() {
        let _ = std::fs::remove_file(&partial);
    }
    copied
}

impl Machine {
    /// Why this machine's disks keep it from snapshots, if they do: disks kept with
    /// `--keep-state` hold content the identity does not know, and so do disks an
    /// earlier boot of this run wrote (a reboot, a crash).
    pub(super) fn disks_refusal(&self) -> Option<&'static str> {
        let c = &self.config;
        let disks = disk_sources(c);
        if disks.is_empty() {
            None
        } else if c.state_dir() != c.socket_dir() {
            Some("not for disks kept with --keep-state")
        } else if disks.iter().any(|(name, _)| c.disk_path(name).exists()) {
            Some("its disks hold what an earlier boot wrote")
        } else {
            None
        }
    }

    /// Copies the stopped machine's disk files into `entry` (called once its state is
    /// saved, before it goes on); the copies, by their names in `.meta`'s `files`
    /// (`disk-<name>.qcow2`), to be summed.
    pub(super) fn save_disks(&self, entry: &Entry) -> Result<Vec<(String, PathBuf)>, String> {
        let c = &self.config;
        let disks = disk_sources(c);
        if disks.is_empty() {
            return Ok(Vec::new());
        }
        let started = Instant::now();
        let mut bytes = 0;
        let mut saved = Vec::new();
        for (name, _) in &disks {
            let copy = entry.disk_file(name);
            bytes += copy_whole(&c.disk_path(name), &copy)
                .map_err(|e| format!("saving disk {name}: {e}"))?;
            saved.push((Entry::disk_key(name), copy));
        }
        self.log(&format!(
            "snapshot: {} disk(s) saved ({} KiB) in {} ms",
            disks.len(),
            bytes.div_ceil(1024),
            started.elapsed().as_millis()
        ));
        Ok(saved)
    }

    /// Makes the machine's disk files copies of those saved in `entry`, for a restore of
    /// its state.
    pub(super) fn restore_disks(&self, entry: &Entry) -> Result<(), String> {
        let c = &self.config;
        let started = Instant::now();
        let disks = disk_sources(c);
        for (name, _) in &disks {
            copy_whole(&entry.disk_file(name), &c.disk_path(name))
                .map_err(|e| format!("restoring disk {name}: {e}"))?;
        }
        if !disks.is_empty() {
            self.log(&format!(
                "snapshot: {} disk(s) restored in {} ms",
                disks.len(),
                started.elapsed().as_millis()
            ));
        }
        Ok(())
    }

    /// Restores the disks saved in `entry`, then the state ([`Machine::boot_restored`]).
    pub(super) async fn boot_restored_with_disks(
        &self,
        entry: &Entry,
        log_dir: &Path,
    ) -> Result<Running, String> {
        self.restore_disks(entry)?;
        self.boot_restored(entry, log_dir).await
    }

    /// Replaces disks a failed restore left with fresh ones, for a cold boot.
    pub(super) async fn remake_disks(&self) -> Result<(), Error> {
        for (name, _) in disk_sources(&self.config) {
            let _ = std::fs::remove_file(self.config.disk_path(&name));
        }
        self.ensure_disks().await
    }
}

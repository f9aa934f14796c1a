//! Snapshots, the machine's side: whether a machine starts from a saved state, the
//! identity of that state, saving it at the agent's readiness line, and restoring it
//! (then giving the guest its own MACs, host name, addresses, clock, randomness and,
//! with an image, machine id). The machine's disks are saved and restored with the
//! state (`snapshot_disks.rs`).
//!
//! The state is saved before the driver first connects to the agent, so the restored
//! agent is waiting for a host, as after a cold boot. The identity is the machine's
//! command's (the plan's `QemuCommand::snapshot_identity`): of its hardware only, never
//! of its instance, so everything that makes one machine of a network differ from
//! another (its name and host name, its MACs, the paths of its sockets, links and
//! disks, its ports, its RAM file) is left out by construction and every identical
//! machine restores the one saved state; the kernel command line of a restored guest still names the
//! saving machine's host name (`flotilla.hostname=` in `/proc/cmdline`), and the kernel's
//! `boot_id` is the saving boot's.
//!
//! The state is two files: the devices (the `.qemu` migration stream) and the guest's
//! RAM (`.ram`), which restored machines map and share (`snapshot_memory`). Before a
//! restore the store checks both against their checksums; a state that fails the check
//! or that QEMU refuses is removed and the machine boots cold.

use std::collections::BTreeMap;
use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use flotilla_agent::proto;

use super::command_text::shell_quote;
use super::console::KEEP_LINES;
use super::snapshot_memory;
use super::state::{Machine, Running, Spawned};
use crate::agent_client::{AgentConnection, AgentKind, Guest};
use crate::plan::{Incoming, Ram, Start};
use crate::snapshot_store::{self, Entry, Meta};

/// What a boot does about snapshots.
pub(super) enum SnapshotPlan {
    /// Nothing: snapshots are off for the machine (or not possible yet).
    Off,
    /// Boot cold, and save the state at the agent's readiness line.
    Save(Entry),
    /// Restore the saved state.
    Restore(Entry),
}

/// How often a migration's progress is asked for.
const POLL: Duration = Duration::from_millis(20);

impl Machine {
    /// Why this machine cannot start from a snapshot yet, if it cannot.
    fn snapshot_refusal(&self) -> Option<&'static str> {
        let c = &self.config;
        if let Some(why) = self.disks_refusal() {
            Some(why)
        } else if c.command.hardware.coverage {
            Some("not yet with coverage")
        } else if c.agent != AgentKind::Flotilla {
            Some("only with flotilla-agent")
        } else {
            None
        }
    }

    /// What this boot does about snapshots; says so in the log when it wants one but
    /// cannot have it.
    pub(super) fn snapshot_plan(&self) -> SnapshotPlan {
        if !self.config.snapshot {
            return SnapshotPlan::Off;
        }
        if let Some(why) = self.snapshot_refusal() {
            let line = format!("snapshot: {why}; booting cold");
            if self.config.snapshot_asked {
                self.log(&line);
            } else {
                // On by default: a machine that cannot have one says so in the file.
                self.config
                    .log
                    .file_only(&format!("{}: {line}", self.config.name));
            }
            return SnapshotPlan::Off;
        }
        let entry = Entry::new(self.snapshot_identity());
        if entry.exists() {
            SnapshotPlan::Restore(entry)
        } else {
            SnapshotPlan::Save(entry)
        }
    }

    /// The file this machine's saved state is in (or would be saved to), when the
    /// machine starts from snapshots (by default, unless `snapshot = false` or
    /// `--no-snapshot`) and can.
    pub fn snapshot_file(&self) -> Option<PathBuf> {
        (self.config.snapshot && self.snapshot_refusal().is_none())
            .then(|| Entry::new(self.snapshot_identity()).file())
    }

    /// The identity of this machine's saved state: of its command's hardware, never
    /// of its instance (the plan's `QemuCommand::snapshot_identity`).
    fn snapshot_identity(&self) -> String {
        let cmd = &self.config.command;
        cmd.snapshot_identity(&snapshot_store::qemu_version(&cmd.program))
    }

    /// The MACs of this machine's NICs by QEMU device id.
    fn own_macs(&self) -> BTreeMap<String, String> {
        let c = &self.config;
        let mut macs: BTreeMap<String, String> = c
            .fabric
            .plan
            .machine(&c.name)
            .iter()
            .flat_map(|m| &m.nics)
            .map(|nic| (nic.device_id.clone(), nic.mac.to_string()))
            .collect();
        if let Ok(user) = c.user_net.lock() {
            macs.insert(
                flotilla_vmnet::forward::DEVICE_ID.to_owned(),
                user.mac.to_string(),
            );
        }
        macs
    }

    /// Saves the booted machine (its agent just said it is ready) into `entry`, unless
    /// another machine or run is saving it; the machine then goes on. A failure is
    /// logged, never the boot's.
    pub(super) async fn save_snapshot(&self, spawned: &Spawned, entry: &Entry) {
        let lock = match entry.try_lock() {
            Ok(Some(lock)) => lock,
            Ok(None) => {
                self.config.log.file_only(&format!(
                    "{}: snapshot: another machine is saving {}",
                    self.config.name,
                    entry.file().display()
                ));
                return;
            }
            Err(e) => {
                self.log(&format!("snapshot: not saved: locking: {e}"));
                return;
            }
        };
        if entry.exists() {
            return; // saved meanwhile
        }
        let started = Instant::now();
        let qmp = &spawned.qmp;
        let saved = self.migrate_to(qmp, &entry.partial()).await;
        let saved = saved.and_then(|()| self.save_disks(entry));
        // The RAM, while the VM is still stopped.
        let pid = spawned.booting.process.pid();
        let (state, ram) = (entry.partial(), entry.ram_partial());
        let files = match saved {
            Ok(disks) => tokio::task::spawn_blocking(move || {
                let ram = snapshot_memory::copy_ram(pid, &ram)?;
                let sum = |path: &Path| {
                    snapshot_store::sum_of(path)
                        .map_err(|e| format!("reading {}: {e}", path.display()))
                };
                let mut files = vec![("qemu".to_owned(), sum(&state)?), ("ram".to_owned(), ram)];
                // The saved disks too: a restore checks them as it checks the rest.
                for (key, copy) in disks {
                    files.push((key, sum(&copy)?));
                }
                Ok(files)
            })
            .await
            .unwrap_or_else(|e| Err(format!("copying the guest RAM: {e}"))),
            Err(e) => Err(e),
        };
        let result = files.and_then(|files| {
            let mut meta = Meta::new(&self.config.name, self.own_macs());
            meta.qemu = snapshot_store::qemu_version(&self.config.command.program);
            meta.files.extend(files);
            meta.console = self.console.tail(KEEP_LINES);
            entry
                .commit(&lock, &meta)
                .map_err(|e| format!("storing it: {e}"))
        });
        if let Err(e) = qmp.cont().await {
            self.log(&format!("snapshot: resuming after the save: {e}"));
        }
        // The RESUME event clears the pause the STOP set, before any call looks.
        let mut paused = spawned.events.paused.clone();
        let _ =
            tokio::time::timeout(Duration::from_secs(5), paused.wait_for(|p| p.is_none())).await;
        match result {
            Ok(size) => self.log(&format!(
                "snapshot: saved {} ({} MiB) in {:.2} s",
                entry.file().display(),
                size.div_ceil(1 << 20),
                started.elapsed().as_secs_f64()
            )),
            Err(why) => {
                entry.discard_partial();
                self.log(&format!("snapshot: not saved: {why}"));
            }
        }
    }

    /// Stops the VM and writes its devices' state to `path` (QMP `migrate` to `cat`;
    /// its RAM, a shared file, is left out); the VM stays stopped.
    async fn migrate_to(&self, qmp: &flotilla_qmp::Client, path: &Path) -> Result<(), String> {
        snapshot_memory::ignore_shared(qmp).await?;
        qmp.stop().await.map_err(|e| format!("qmp stop: {e}"))?;
        // Unlimited: the VM is stopped, nothing competes (QEMU's default is 128 MiB/s).
        let _ = qmp
            .execute_raw(
                "migrate-set-parameters",
                Some(serde_json::json!({ "max-bandwidth": 64u64 << 30 })),
            )
            .await;
        let uri = format!("exec:cat > {}", shell_quote(&path.display().to_string()));
        qmp.execute_raw("migrate", Some(serde_json::json!({ "uri": uri })))
            .await
            .map_err(|e| format!("qmp migrate: {e}"))?;
        wait_migration(qmp, Duration::from_secs(60)).await
    }

    /// Boots the machine from the saved state in `entry` and re-identifies the guest;
    /// the error says why not (QEMU refused the state, the agent did not answer), and
    /// no QEMU is left running then.
    pub(super) async fn boot_restored(
        &self,
        entry: &Entry,
        log_dir: &Path,
    ) -> Result<Running, String> {
        let c = &self.config;
        let meta = entry.meta()?;
        let started = Instant::now();
        let (checked, known) = (entry.clone(), meta.clone());
        tokio::task::spawn_blocking(move || checked.verify(&known))
            .await
            .map_err(|e| format!("checking the state: {e}"))??;
        let hw = &c.command.hardware;
        self.log(&format!(
            "starting from snapshot {} ({} MiB, {} cpu, {})",
            entry.file().display(),
            hw.memory_mib,
            hw.cpus,
            hw.accel
        ));
        // The saved RAM, mapped privately; the devices, loaded once QEMU runs.
        let start = Start {
            ram: Ram::Private(entry.ram_file()),
            incoming: Incoming::Snapshot(entry.file()),
        };
        let spawned = self
            .spawn_qemu(c.command_now(), &start, log_dir, &meta.console)
            .await
            .map_err(|e| first_line(&e.to_string()))?;
        let booting = &spawned.booting;
        let steps = tokio::time::timeout(
            c.boot_timeout,
            self.restore(&spawned, entry, &meta, started),
        );
        let outcome = tokio::select! {
            r = steps => r.unwrap_or_else(|_| Err(format!(
                "not ready within {} s (boot_timeout)", c.boot_timeout.as_secs()
            ))),
            status = booting.process.exited() => {
                // Let the reader take QEMU's last words.
                tokio::time::sleep(Duration::from_millis(200)).await;
                let words = booting.stderr_tail.tail(1).join(" ");
                Err(format!("qemu exited ({status}): {}", words.trim()))
            }
        };
        match outcome {
            Ok((guest, restored)) => {
                // Used now: the store keeps the most recently used states.
                entry.touch();
                self.log(&format!(
                    "snapshot: restored from {} in {:.2} s",
                    entry.file().display(),
                    restored.as_secs_f64()
                ));
                self.log(&format!(
                    "ready: {} restored; {} ms since qemu started",
                    guest.describe(),
                    started.elapsed().as_millis()
                ));
                Ok(spawned.into_running(guest))
            }
            Err(why) => {
                let _ = booting.process.close(Duration::from_secs(2)).await;
                Err(why)
            }
        }
    }

    /// The restore's steps once QEMU runs: the incoming migration, `cont`, the agent,
    /// then the guest's own identity. Returns the agent and how long the state took to
    /// load.
    async fn restore(
        &self,
        spawned: &Spawned,
        entry: &Entry,
        meta: &Meta,
        started: Instant,
    ) -> Result<(Guest, Duration), String> {
        let c = &self.config;
        snapshot_memory::load_devices(&spawned.qmp, &entry.file()).await?;
        wait_migration(&spawned.qmp, c.boot_timeout).await?;
        spawned
            .qmp
            .cont()
            .await
            .map_err(|e| format!("qmp cont: {e}"))?;
        let restored = started.elapsed();
        let path = c.socket_dir().join("agent.sock");
        // The restore as a whole is bounded by boot_timeout (see the caller); a busy
        // host may take longer than a few seconds to run the guest up to its answer.
        let conn = AgentConnection::connect(&path, c.boot_timeout, self.agent_notes())
            .await
            .map_err(|e| format!("the restored agent: {e}"))?;
        if !conn.has_feature(proto::FEATURE_NET_SET_MAC) {
            return Err("the restored agent cannot give its NICs new MACs".into());
        }
        let guest = Guest::Flotilla(conn);
        self.configure_guest_net(&guest, Some(&meta.macs))
            .await
            .map_err(|e| first_line(&e.to_string()))?;
        self.refresh_clock_and_randomness(&guest).await?;
        self.write_machine_id(&guest).await?;
        Ok((guest, restored))
    }

    /// Sets the guest's clock to the host's (the saved one is as old as the snapshot)
    /// and mixes 64 bytes of the host's randomness into the guest's pool (the saved
    /// pool is every restored machine's).
    async fn refresh_clock_and_randomness(&self, guest: &Guest) -> Result<(), String> {
        let mut seed = [0u8; 64];
        std::fs::File::open("/dev/urandom")
            .and_then(|mut f| f.read_exact(&mut seed))
            .map_err(|e| format!("reading the host's /dev/urandom: {e}"))?;
        let hex: String = seed.iter().map(|b| format!("{b:02x}")).collect();
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        // Rounded: `date -s` takes whole seconds.
        let secs = (now + Duration::from_millis(500)).as_secs();
        let script = format!("date -s @{secs} >/dev/null && echo {hex} > /dev/urandom");
        let out = guest
            .exec_shell(&script, Duration::from_secs(30), &[], |_, _| {})
            .await
            .map_err(|e| format!("setting the clock: {e}"))?;
        if out.status.code != Some(0) {
            return Err(format!(
                "setting the clock: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Ok(())
    }
}

/// Waits until the migration QEMU runs (out or in) completes; its failure, with
/// QEMU's words, or the time out is the error.
async fn wait_migration(qmp: &flotilla_qmp::Client, limit: Duration) -> Result<(), String> {
    let deadline = Instant::now() + limit;
    loop {
        let info = qmp
            .execute_raw("query-migrate", None)
            .await
            .map_err(|e| format!("qmp query-migrate: {e}"))?;
        match info["status"].as_str() {
            Some("completed") => return Ok(()),
            Some("failed") | Some("cancelled") => {
                let why = info["error-desc"].as_str().unwrap_or("no reason given");
                return Err(format!("migration failed: {why}"));
            }
            _ => {}
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "migration not done within {} s (status {})",
                limit.as_secs(),
                info["status"]
            ));
        }
        tokio::time::sleep(POLL).await;
    }
}

fn first_line(s: &str) -> String {
    s.lines().next().unwrap_or_default().to_owned()
}

//! Snapshots, the machine's side: whether a machine starts from a saved state, the
//! identity of that state, saving it at the agent's readiness line, and restoring it
//! (then giving the guest its own MACs, host name, addresses, clock, randomness and,
//! with an image, machine id). The machine's disks are saved and restored with the
//! state (`snapshot_disks.rs`).
//!
//! The state is saved before the driver first connects to the agent, so the restored
//! agent is waiting for a host, as after a cold boot. Everything that makes one machine
//! of a network differ from another (its name and host name, its MACs, the paths of its
//! sockets and links) is left out of the identity, so every identical machine restores
//! the one saved state; the kernel command line of a restored guest still names the
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
use super::config::MachineConfig;
use super::console::KEEP_LINES;
use super::qemu_command::QemuCommand;
use super::snapshot_disks::disk_identity;
use super::snapshot_memory;
use super::state::{Machine, Running, Spawned};
use crate::agent_client::{AgentConnection, AgentKind, Guest};
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
        } else if c.coverage {
            Some("not yet with coverage")
        } else if c.spec.agent != AgentKind::Flotilla {
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

    /// The identity of this machine's saved state ([`snapshot_store::identity`]).
    fn snapshot_identity(&self) -> String {
        let c = &self.config;
        let cmd = QemuCommand::new(c);
        let version = snapshot_store::qemu_version(&c.qemu);
        identity_of(&cmd, c, &version)
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
        self.log(&format!(
            "starting from snapshot {} ({} MiB, {} cpu, {})",
            entry.file().display(),
            c.spec.memory,
            c.spec.cpus,
            c.accel.accel
        ));
        let mut cmd = QemuCommand::new(c);
        snapshot_memory::map_ram(&mut cmd, c, &entry.ram_file());
        let spawned = self
            .spawn_qemu(cmd, log_dir, &meta.console)
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
        let path = c.socket_dir.join("agent.sock");
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

/// The identity of the state `cmd` boots into, for machine `c` and QEMU `version`.
fn identity_of(cmd: &QemuCommand, c: &MachineConfig, version: &str) -> String {
    let mut args = vec![cmd.program.display().to_string()];
    args.extend(normalized_args(cmd, c));
    // The files the command line boots: kernel, initrd, firmware.
    let mut files: Vec<&Path> = cmd
        .args
        .windows(2)
        .filter(|w| ["-kernel", "-initrd", "-bios"].iter().any(|o| w[0] == *o))
        .map(|w| Path::new(&w[1]))
        .collect();
    // The disks: what each starts as, and the content of the images under overlays.
    let (disks, bases) = disk_identity(c);
    args.extend(disks);
    files.extend(bases.iter().map(PathBuf::as_path));
    snapshot_store::identity(&args, version, c.accel.accel, &files)
}

/// `cmd`'s arguments without what differs between identical machines: the machine's
/// name, its host name on the kernel command line, its socket folder, its MACs, and
/// the host side of its NICs (switch sockets, multicast groups, forwarded ports).
fn normalized_args(cmd: &QemuCommand, c: &MachineConfig) -> Vec<String> {
    let dir = c.socket_dir.display().to_string();
    let mut out = Vec::with_capacity(cmd.args.len());
    let mut after_name = false;
    for arg in &cmd.args {
        let arg = arg.to_string_lossy();
        if after_name {
            after_name = false;
            out.push("<name>".to_owned());
            continue;
        }
        after_name = arg == "-name";
        let arg = arg.replace(&dir, "<sockets>");
        let arg = arg
            .split(' ')
            .map(|word| match word.split_once('=') {
                Some(("flotilla.hostname", _)) => "flotilla.hostname=<hostname>",
                Some(("flotilla.machine_id", _)) => "flotilla.machine_id=<machine-id>",
                _ => word,
            })
            .collect::<Vec<_>>()
            .join(" ");
        let arg = arg
            .split(',')
            .filter(|option| !option.starts_with("hostfwd="))
            .map(|option| match option.split_once('=') {
                Some((key @ ("mac" | "sock" | "mcast" | "localaddr"), _)) => {
                    format!("{key}=<host>")
                }
                _ => option.to_owned(),
            })
            .collect::<Vec<_>>()
            .join(",");
        out.push(arg);
    }
    out
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use flotilla_vmnet::{Backend, Plan, UserNet};

    use super::super::config::MachineConfig;
    use super::super::qemu_command::QemuCommand;
    use crate::accel::{Accel, AccelChoice};
    use crate::conditions::Conditions;
    use crate::fabric::Fabric;
    use crate::log::Log;
    use crate::spec::MachineSpec;

    /// Machine `name` of a network of `names`, all like `spec`, its sockets in `run`,
    /// booting `initrd` (and the kernel and firmware beside `run`).
    fn config(
        run: &Path,
        names: &[&str],
        name: &str,
        spec: MachineSpec,
        initrd: &Path,
    ) -> MachineConfig {
        let log = Log::create(&run.join("log"), false).unwrap();
        let machines = names
            .iter()
            .map(|n| (n.to_string(), spec.vlans.clone()))
            .collect();
        let plan = Plan::new(&machines, Backend::Vde, run).unwrap();
        let number = plan.machine(name).unwrap().number;
        let forwards = vec![flotilla_vmnet::Forward::new(10000 + u16::from(number), 80).unwrap()];
        MachineConfig {
            name: name.to_owned(),
            spec,
            boot_kernel: run.parent().unwrap().join("vmlinux"),
            initrd: initrd.to_owned(),
            accel: AccelChoice {
                accel: Accel::Tcg,
                reason: "test".into(),
            },
            socket_dir: run.join(name),
            state_dir: run.join(name),
            log: log.clone(),
            boot_timeout: Duration::from_secs(1),
            command_timeout: Duration::from_secs(1),
            qemu: "/usr/bin/qemu-system-x86_64".into(),
            fabric: Fabric::new(plan, Vec::new(), log.clone()),
            user_net: Mutex::new(UserNet::new(number, forwards)),
            firmware: Some(run.parent().unwrap().join("qboot.rom")),
            coverage: false,
            snapshot: true,
            snapshot_asked: false,
            conditions: Arc::new(Conditions::new(log)),
        }
    }

    fn identity(c: &MachineConfig, version: &str) -> String {
        super::identity_of(&QemuCommand::new(c), c, version)
    }

    #[test]
    fn the_identity_has_what_shapes_the_state_and_not_who_the_machine_is() {
        let top = tempfile::tempdir().unwrap();
        let (run1, run2) = (top.path().join("run1"), top.path().join("run2"));
        for dir in [&run1, &run2] {
            std::fs::create_dir_all(dir).unwrap();
        }
        for file in ["vmlinux", "initrd", "initrd2", "qboot.rom"] {
            std::fs::write(top.path().join(file), file).unwrap();
        }
        let initrd = top.path().join("initrd");
        let v = "QEMU emulator version 7.2.0";
        let base_spec = MachineSpec::default();
        let base = identity(
            &config(&run1, &["a", "b"], "a", base_spec.clone(), &initrd),
            v,
        );
        // Another machine (name, host name, MACs, forwards), another run (sockets,
        // links): the same state.
        let b = config(&run2, &["a", "b"], "b", base_spec.clone(), &initrd);
        assert_ne!(
            b.fabric.plan.machine("b").unwrap().nics[0].mac,
            config(&run1, &["a", "b"], "a", base_spec.clone(), &initrd)
                .fabric
                .plan
                .machine("a")
                .unwrap()
                .nics[0]
                .mac
        );
        assert_eq!(identity(&b, v), base);
        let alone = config(
            &run2,
            &["other_name"],
            "other_name",
            base_spec.clone(),
            &initrd,
        );
        assert_eq!(identity(&alone, v), base);
        // Everything else that shapes the state is in it.
        let changed = |f: fn(&mut MachineSpec)| {
            let mut spec = base_spec.clone();
            f(&mut spec);
            identity(&config(&run1, &["a", "b"], "a", spec, &initrd), v)
        };
        for (what, other) in [
            ("memory", changed(|s| s.memory = 512)),
            ("cpus", changed(|s| s.cpus = 2)),
            (
                "kernel_args",
                changed(|s| s.kernel_args = "loglevel=4".into()),
            ),
            ("vlans", changed(|s| s.vlans = vec![1, 2])),
            ("display", changed(|s| s.display = true)),
            (
                "initrd",
                identity(
                    &config(
                        &run1,
                        &["a", "b"],
                        "a",
                        base_spec.clone(),
                        &top.path().join("initrd2"),
                    ),
                    v,
                ),
            ),
            (
                "qemu version",
                identity(
                    &config(&run1, &["a", "b"], "a", base_spec.clone(), &initrd),
                    "QEMU emulator version 8.0.0",
                ),
            ),
            ("accelerator", {
                let mut c = config(&run1, &["a", "b"], "a", base_spec.clone(), &initrd);
                c.accel.accel = Accel::Kvm;
                identity(&c, v)
            }),
            ("kernel", {
                let mut c = config(&run1, &["a", "b"], "a", base_spec.clone(), &initrd);
                c.boot_kernel = top.path().join("initrd2");
                identity(&c, v)
            }),
            ("firmware", {
                let mut c = config(&run1, &["a", "b"], "a", base_spec.clone(), &initrd);
                c.firmware = None;
                identity(&c, v)
            }),
        ] {
            assert_ne!(other, base, "{what} is not in the identity");
        }
        // A kernel or firmware file written anew at the same path is another state.
        for file in ["vmlinux", "qboot.rom"] {
            std::thread::sleep(std::time::Duration::from_millis(10));
            std::fs::write(top.path().join(file), format!("{file}, rebuilt")).unwrap();
            let rebuilt = identity(
                &config(&run1, &["a", "b"], "a", base_spec.clone(), &initrd),
                v,
            );
            assert_ne!(rebuilt, base, "{file}'s content is not in the identity");
        }
        // The initrd's content (its size) too, at the same path.
        std::fs::write(&initrd, "a rebuilt initrd").unwrap();
        let rebuilt = identity(
            &config(&run1, &["a", "b"], "a", base_spec.clone(), &initrd),
            v,
        );
        assert_ne!(rebuilt, base, "the initrd's content is not in the identity");
    }

    #[test]
    fn normalized_arguments_keep_the_guest_side() {
        let top = tempfile::tempdir().unwrap();
        let run = top.path().join("run");
        std::fs::create_dir_all(&run).unwrap();
        let c = config(
            &run,
            &["web"],
            "web",
            crate::spec::MachineSpec::default(),
            &top.path().join("initrd"),
        );
        let args = super::normalized_args(&QemuCommand::new(&c), &c).join(" ");
        assert!(!args.contains("web"), "{args}");
        assert!(!args.contains("52:54:00"), "{args}");
        assert!(!args.contains(&run.display().to_string()), "{args}");
        assert!(!args.contains("hostfwd"), "{args}");
        assert!(args.contains("flotilla.hostname=<hostname>"), "{args}");
        assert!(
            args.contains("virtio-net-pci,netdev=vlan1,id=nic1,mac=<host>,romfile="),
            "{args}"
        );
        assert!(args.contains("-m 256 -smp 1"), "{args}");
    }
}

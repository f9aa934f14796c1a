//! Booting: spawns QEMU from its command (the plan's `QemuCommand`), starts the readers of its console
//! and stderr and the QMP event watcher, waits until the guest's agent is ready,
//! connects to it and configures the guest's network.

use std::sync::Arc;
use std::time::{Duration, Instant};

use flotilla_qmp::qga::GuestAgent;
use tokio::process::{ChildStdin, Command};
use tokio::sync::watch;

use super::console::{
    spawn_console_reader, spawn_stderr_reader, Console, ConsoleState, TAIL_LINES,
};
use super::events::spawn_event_watcher;
use super::snapshot::SnapshotPlan;
use super::snapshot_memory;
use super::state::{Booting, Machine, Running, Spawned, StartKind};
use crate::agent_client::{AgentConnection, AgentKind, Guest};
use crate::error::Error;
use crate::plan::{Incoming, QemuCommand, Ram, Start, AGENT_PORT_ID, QGA_PORT_ID};
use crate::snapshot_store::Entry;
use flotilla_host::process::{describe_status, Process};

/// How long a boot step that failed waits for QEMU to exit, so that QEMU's own
/// message, not the step's (`qmp: connection reset`), explains a failure at start.
const EXIT_GRACE: Duration = Duration::from_secs(2);
/// The least time QEMU gets to appear on its QMP socket and greet (QMP's default).
const QMP_GREETING: Duration = Duration::from_secs(10);

impl Machine {
    /// The QEMU command line for this machine (a cold boot).
    pub fn qemu_command(&self) -> Command {
        self.config.command_now().to_command(&Start::cold())
    }

    /// Starts the machine unless it is running, and waits until its agent is ready.
    pub async fn start(&self) -> Result<(), Error> {
        self.running().await.map(|_| ())
    }

    /// The running machine; boots it first unless it runs. Fails once a helper of the
    /// network died: before a boot, while it waits for readiness (QEMU is stopped),
    /// and after it.
    pub(super) async fn running(&self) -> Result<Arc<Running>, Error> {
        self.config.fabric.check_helpers()?;
        let mut slot = self.running.lock().await;
        if let Some(r) = slot.take() {
            match r.process.status() {
                None => {
                    *slot = Some(r.clone());
                    return Ok(r);
                }
                // QEMU died between calls (killed, or failed): this call fails, naming
                // the machine and how, instead of booting a new one unnoticed. (A guest
                // that powered itself off or rebooted makes QEMU exit 0, under
                // `-no-reboot`: the call boots it again, as after `crash()`.)
                Some(status) if !status.success() => {
                    let why = format!("qemu {} before this call", describe_status(status));
                    self.log(&why);
                    return Err(self.died(&r, &why).await);
                }
                Some(_) => drop(r),
            }
        }
        let running = Arc::new(self.boot().await?);
        *slot = Some(running.clone());
        self.config.fabric.check_helpers()?;
        Ok(running)
    }

    pub(super) async fn boot(&self) -> Result<Running, Error> {
        let c = &self.config;
        c.log
            .in_step(Some(&c.name), "boot", "booting", self.boot_steps())
            .await
    }

    /// [`Machine::boot`], a step of the timeline around it.
    async fn boot_steps(&self) -> Result<Running, Error> {
        let c = &self.config;
        let mut started = Instant::now();
        std::fs::create_dir_all(c.socket_dir()).map_err(|source| Error::Io {
            what: format!("creating {}", c.socket_dir().display()),
            source,
        })?;
        let log_dir = c.log.machine_dir(&c.name)?;
        c.fabric.ensure_started().await?;
        // Before the disks are made: disks of an earlier boot rule snapshots out.
        let plan = self.snapshot_plan();
        self.ensure_disks().await?;
        self.ensure_coverage_disk().await?;
        let save = match plan {
            SnapshotPlan::Off => None,
            SnapshotPlan::Save(entry) => Some(entry),
            SnapshotPlan::Restore(entry) => match self.restore_or_refuse(&entry, &log_dir).await? {
                Some(running) => return Ok(running),
                None => {
                    started = Instant::now();
                    Some(entry)
                }
            },
        };
        self.boot_cold(save, &log_dir, started).await
    }

    /// Restores the machine from `entry`; a state that fails is removed, the disks
    /// are made anew, and `None` says to boot cold (saving the state again).
    async fn restore_or_refuse(
        &self,
        entry: &Entry,
        log_dir: &std::path::Path,
    ) -> Result<Option<Running>, Error> {
        let c = &self.config;
        let restore = self.boot_restored_with_disks(entry, log_dir);
        let label = "restoring from a snapshot";
        match c
            .log
            .in_step(Some(&c.name), "restore", label, restore)
            .await
        {
            Ok(running) => {
                self.set_started_as(StartKind::Restored);
                Ok(Some(running))
            }
            Err(why) => {
                entry.remove();
                self.remake_disks().await?;
                self.log(&format!(
                    "snapshot: {} refused ({why}): removed; booting cold",
                    entry.file().display()
                ));
                Ok(None)
            }
        }
    }

    /// Boots QEMU (its RAM in a shared file when it saves the state into `save`),
    /// waits for readiness, saves the state, connects to the agent and configures the
    /// guest's network. `started`: when this boot began, for the log.
    async fn boot_cold(
        &self,
        save: Option<Entry>,
        log_dir: &std::path::Path,
        started: Instant,
    ) -> Result<Running, Error> {
        let c = &self.config;
        let hw = &c.command.hardware;
        let firmware = match (hw.arch.qboot_and_pvh, hw.display, &hw.firmware) {
            (false, _, _) => "direct kernel boot",
            (true, false, Some(_)) => "qboot",
            (true, true, _) => "SeaBIOS and a VGA screen",
            (true, false, None) => "SeaBIOS: QEMU has no qboot.rom, so boots take about 1 s longer",
        };
        self.log(&format!(
            "starting ({}, {} MiB, {} cpu, {}, {firmware})",
            hw.arch, hw.memory_mib, hw.cpus, hw.accel
        ));
        let start = Start {
            // The RAM a snapshot keeps, in a file.
            ram: match save {
                Some(_) => snapshot_memory::shared_ram(c),
                None => Ram::Anonymous,
            },
            incoming: Incoming::None,
        };
        let spawned = self
            .spawn_qemu(c.command_now(), &start, log_dir, &[])
            .await?;
        let (boot_ms, qga) = self
            .wait_ready(&spawned.booting, &spawned.events.paused)
            .await?;
        if let Some(entry) = &save {
            // Before the driver connects: the saved agent waits for a host.
            self.save_snapshot(&spawned, entry).await;
        }
        let guest = match qga {
            Some(q) => Guest::Qga(q),
            None => {
                let agent_path = c.socket_dir().join("agent.sock");
                let connect = async {
                    AgentConnection::connect(
                        &agent_path,
                        Duration::from_secs(30),
                        self.agent_notes(),
                    )
                    .await
                    .map_err(|source| self.agent_failed("connecting", source))
                };
                Guest::Flotilla(self.unless_exited(&spawned.booting, connect).await?)
            }
        };
        let configured = self
            .unless_exited(&spawned.booting, async {
                self.configure_guest_net(&guest, None).await?;
                self.mount_coverage(&guest).await
            })
            .await;
        if let Err(e) = configured {
            let _ = spawned.booting.process.close(Duration::from_secs(2)).await;
            return Err(e);
        }
        let boot = if boot_ms > 0 {
            format!("reports boot in {boot_ms} ms; ")
        } else {
            String::new()
        };
        self.log(&format!(
            "ready: {} {boot}{} ms since qemu started",
            guest.describe(),
            started.elapsed().as_millis()
        ));
        self.set_started_as(StartKind::Booted);
        Ok(spawned.into_running(guest))
    }

    /// Records how the latest start went ([`Machine::started_as`]).
    fn set_started_as(&self, kind: StartKind) {
        if let Ok(mut k) = self.started_as.lock() {
            *k = Some(kind);
        }
    }

    /// Spawns QEMU from `cmd` for `start`, starts the console and stderr readers,
    /// connects to QMP and starts the event watcher. (Sockets of an earlier QEMU are
    /// removed first.) The console starts with `preface`, the lines of a restored
    /// state's boot.
    pub(super) async fn spawn_qemu(
        &self,
        cmd: QemuCommand,
        start: &Start,
        log_dir: &std::path::Path,
        preface: &[String],
    ) -> Result<Spawned, Error> {
        let c = &self.config;
        for sock in ["qmp.sock", "agent.sock"] {
            let _ = std::fs::remove_file(c.socket_dir().join(sock));
        }
        let (process, stdio) = Process::spawn(&c.name, cmd.to_command(start))
            .await
            .map_err(|source| Error::Io {
                what: format!("machine `{}`: starting {}", c.name, cmd.program.display()),
                source,
            })?;
        if let Ok(mut pid) = self.qemu_pid.lock() {
            *pid = Some(process.pid());
        }
        let process = Arc::new(process);
        let (state_tx, state) = watch::channel(ConsoleState::default());
        if let Some(stdout) = stdio.stdout {
            let console = self.console.clone();
            let (log, name) = (c.log.clone(), c.name.clone());
            spawn_console_reader(stdout, log_dir, log, name, console, state_tx, preface).await?;
        }
        let stderr_tail: Arc<Console> = Arc::default();
        if let Some(stderr) = stdio.stderr {
            let (log, name) = (c.log.clone(), c.name.clone());
            spawn_stderr_reader(stderr, log_dir, log, name, stderr_tail.clone());
        }
        if let Some(stdin) = stdio.stdin {
            let input = hold_stdin(stdin, &process);
            if let Ok(mut slot) = self.console_input.lock() {
                *slot = Some(input);
            }
        }
        let booting = Booting {
            process,
            state,
            stderr_tail,
        };
        let qmp_path = c.socket_dir().join("qmp.sock");
        // QEMU greets only once its machine is made (memory, kernel, initrd loaded),
        // which a busy host can stretch past QMP's default 10 s: the boot's own limit
        // applies, never less than that default (a short boot_timeout is about the
        // guest's readiness, which is timed next), and a QEMU that exits meanwhile ends
        // the wait at once.
        let started = std::time::Instant::now();
        let limit = c.boot_timeout.max(QMP_GREETING);
        let options = flotilla_qmp::ConnectOptions::default().handshake_timeout(limit);
        let qmp = self
            .unless_exited(&booting, async {
                flotilla_qmp::Client::connect_unix_retry_with(&qmp_path, limit, options)
                    .await
                    .map_err(|e| self.qmp_failed(e))
            })
            .await?;
        c.log.file_only(&format!(
            "{}: QMP ready {} ms after QEMU started",
            c.name,
            started.elapsed().as_millis()
        ));
        let agent_port = match c.agent {
            AgentKind::Qga => QGA_PORT_ID,
            _ => AGENT_PORT_ID,
        };
        let events = spawn_event_watcher(&qmp, c.log.clone(), c.name.clone(), agent_port);
        Ok(Spawned {
            booting,
            qmp,
            events,
        })
    }

    /// Runs `fut`, a step of the boot, unless QEMU exits first: that fails the boot
    /// with the evidence. A step that fails may have failed because QEMU is exiting
    /// (it closes its QMP socket when an option fails at start): QEMU then gets
    /// [`EXIT_GRACE`] to exit, and its status and words are the error, not the step's.
    pub(super) async fn unless_exited<T>(
        &self,
        booting: &Booting,
        fut: impl std::future::Future<Output = Result<T, Error>>,
    ) -> Result<T, Error> {
        let failed = tokio::select! {
            r = fut => match r {
                Ok(v) => return Ok(v),
                Err(e) => e,
            },
            status = booting.process.exited() => {
                return Err(self.died_early(status, &booting.state, &booting.stderr_tail).await);
            }
        };
        match tokio::time::timeout(EXIT_GRACE, booting.process.exited()).await {
            Ok(status) => Err(self
                .died_early(status, &booting.state, &booting.stderr_tail)
                .await),
            Err(_) => {
                let _ = booting.process.close(Duration::from_secs(2)).await;
                Err(failed)
            }
        }
    }

    /// Waits until the guest's agent is ready: the agent's readiness line on the
    /// console, or (QGA) qemu-ga answering. Returns the boot time the agent reported
    /// (0 if none), and the qemu-ga client of a QGA guest. A panic, QEMU's exit, the
    /// boot timeout or the death of a helper of the machine's VLANs fail the boot (and
    /// stop QEMU).
    pub(super) async fn wait_ready(
        &self,
        booting: &Booting,
        paused: &watch::Receiver<Option<String>>,
    ) -> Result<(u64, Option<GuestAgent>), Error> {
        let c = &self.config;
        let Booting {
            process,
            state,
            stderr_tail,
        } = booting;
        let mut ready_rx = state.clone();
        let deadline = c.boot_timeout;
        let kind = c.agent;
        // A QGA guest prints no readiness line: it is ready when qemu-ga answers.
        let qga_ready = async {
            if kind != AgentKind::Qga {
                return std::future::pending().await;
            }
            let path = c.socket_dir().join("qga.sock");
            let qga = loop {
                match GuestAgent::connect_unix(&path).await {
                    Ok(q) => break q,
                    Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
                }
            };
            qga.wait_ready(deadline)
                .await
                .map(|()| qga.with_timeout(Duration::from_secs(60)))
        };
        tokio::select! {
            r = qga_ready => {
                let qga = r.map_err(|source| self.agent_failed("waiting for qemu-guest-agent", source))?;
                Ok((0, Some(qga)))
            }
            r = async {
                ready_rx
                    .wait_for(|s| (kind == AgentKind::Flotilla && s.ready.is_some()) || s.panic.is_some())
                    .await
                    .map(|s| (s.ready, s.panic.clone()))
            } => {
                let Ok((ready, panic)) = r else {
                    // The console closed without readiness: QEMU is exiting.
                    let status = match tokio::time::timeout(Duration::from_secs(5), process.exited()).await {
                        Ok(status) => status,
                        Err(_) => process.close(Duration::from_secs(2)).await,
                    };
                    return Err(self.died_early(status, state, stderr_tail).await);
                };
                if let Some(panic) = panic {
                    // Let the rest of the panic report arrive: pvpanic pauses the VM, or
                    // (before its module loads) panic=-1 makes QEMU exit.
                    let mut p = paused.clone();
                    let _ = tokio::time::timeout(Duration::from_secs(2), async {
                        tokio::select! {
                            _ = process.exited() => {}
                            _ = p.wait_for(|p| p.is_some()) => {}
                        }
                    }).await;
                    if process.status().is_some() {
                        let mut rx = state.clone();
                        let _ = tokio::time::timeout(Duration::from_secs(1), rx.wait_for(|s| s.eof)).await;
                    } else {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                    let _ = process.close(Duration::from_secs(1)).await;
                    return Err(Error::Boot {
                        machine: c.name.clone(),
                        problem: format!("the guest kernel panicked before the agent was ready: {}", panic.trim()),
                        console: self.console.tail(TAIL_LINES),
                    });
                }
                Ok((ready.unwrap_or_default(), None))
            }
            status = process.exited() => {
                Err(self.died_early(status, state, stderr_tail).await)
            }
            e = self.helper_died("booting") => {
                let _ = process.close(Duration::from_secs(2)).await;
                Err(e)
            }
            _ = tokio::time::sleep(deadline) => {
                let _ = process.close(Duration::from_secs(2)).await;
                Err(Error::Boot {
                    machine: c.name.clone(),
                    problem: format!("no readiness line from the agent within {} s (boot_timeout)", deadline.as_secs()),
                    console: self.console.tail(TAIL_LINES),
                })
            }
        }
    }
}

/// Keeps QEMU's stdin (the console's input) open for as long as QEMU runs, writing
/// what the returned sender sends into it. The task only watches the exit: holding
/// the [`Process`] itself would keep QEMU alive after a boot that was cancelled (a
/// test's timeout, Ctrl-C) dropped it.
pub(super) fn hold_stdin(
    mut stdin: ChildStdin,
    process: &Process,
) -> tokio::sync::mpsc::UnboundedSender<Vec<u8>> {
    let exit = process.exit_watch();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Vec<u8>>();
    tokio::spawn(async move {
        use tokio::io::AsyncWriteExt;
        let exited = exit.exited();
        tokio::pin!(exited);
        loop {
            tokio::select! {
                _ = &mut exited => break,
                bytes = rx.recv() => match bytes {
                    Some(bytes) => {
                        if stdin.write_all(&bytes).await.is_err() || stdin.flush().await.is_err() {
                            break;
                        }
                    }
                    // Every sender is gone: keep stdin open until QEMU exits.
                    None => {
                        exited.await;
                        break;
                    }
                },
            }
        }
    });
    tx
}

/// Boots every machine of `machines`, in parallel; the first error, if any (a
/// fleet's and a script's `start_all`).
pub(crate) async fn start_all(
    machines: &std::collections::BTreeMap<String, Arc<Machine>>,
) -> Result<(), Error> {
    let results = futures::future::join_all(machines.values().map(|m| m.start())).await;
    results.into_iter().collect::<Result<Vec<()>, Error>>()?;
    Ok(())
}

//! The network fabric of a run: the vmnet plan, the VLAN switches (VDE backend) and the
//! controls a test uses while machines run. Each helper process it starts is watched
//! ([`crate::helper_watch`]): one that dies while the test runs fails the calls it
//! concerns.

use std::sync::Arc;
use std::time::{Duration, Instant};

use flotilla_vmnet::mgmt::Mgmt;
use flotilla_vmnet::{Backend, Impairment, Plan};

use crate::error::Error;
use crate::helper_watch::{self, Deaths, HelperName, Watched};
use crate::log::Log;
use crate::spec::JoinSpec;
use flotilla_host::process::{describe_status, ExitWatch, Process};

/// Switch processes, started once, before the first machine boots.
#[derive(Debug)]
pub struct Fabric {
    pub plan: Plan,
    join: Vec<JoinSpec>,
    log: Log,
    switches: tokio::sync::Mutex<Option<Vec<Helper>>>,
    /// Running VLAN captures: the plug process and the task writing the file.
    captures: tokio::sync::Mutex<Vec<(Helper, tokio::task::JoinHandle<()>)>>,
    /// VLANs whose switch runs as a hub for a capture.
    hubs: std::sync::Mutex<std::collections::BTreeSet<u8>>,
    /// Ports moved by a partition, per VLAN.
    partitioned: std::sync::Mutex<std::collections::BTreeMap<u8, Vec<u16>>>,
    /// Helpers that died while the test ran.
    deaths: Deaths,
}

#[derive(Debug)]
struct Helper {
    /// Dropped before the process, so that the kill of a dropped helper is no death.
    watched: Option<Watched>,
    name: HelperName,
    process: Process,
    // Held open: vde_switch and wirefilter exit when their stdin closes.
    _stdin: Option<tokio::process::ChildStdin>,
}

impl Fabric {
    pub fn new(plan: Plan, join: Vec<JoinSpec>, log: Log) -> Arc<Fabric> {
        if let Some(warning) = plan.insecure() {
            log.info(&format!("warning: {warning}"));
        }
        Arc::new(Fabric {
            plan,
            join,
            log,
            switches: tokio::sync::Mutex::new(None),
            partitioned: Default::default(),
            captures: Default::default(),
            hubs: Default::default(),
            deaths: Deaths::default(),
        })
    }

    /// Starts the helper processes of the VDE backend unless they run: one switch per
    /// VLAN, and per NIC a link switch and the wirefilter that joins it to its VLAN.
    pub async fn ensure_started(&self) -> Result<(), Error> {
        let mut slot = self.switches.lock().await;
        if slot.is_some() || self.plan.backend != Backend::Vde {
            return Ok(());
        }
        let mut helpers = Vec::new();
        // Whatever started is stopped again if a later helper fails (Drop kills).
        for vlan in self.plan.vlans.values() {
            let name = HelperName::vlan(vlan.id, helper_watch::SWITCH);
            let ctl = vlan.switch_dir.join("ctl");
            let sockets = [ctl.as_path(), vlan.mgmt_socket.as_path()];
            helpers.push(
                self.spawn_helper(name, vlan.switch_command(), &sockets)
                    .await?,
            );
        }
        for machine in self.plan.machines.values() {
            for nic in &machine.nics {
                let vlan = &self.plan.vlans[&nic.vlan];
                let name = HelperName::link(&machine.name, nic.vlan, helper_watch::LINK_SWITCH);
                let ctl = nic.link_dir.join("ctl");
                helpers.push(
                    self.spawn_helper(name, nic.link_switch_command(), &[&ctl])
                        .await?,
                );
                let name = HelperName::link(&machine.name, nic.vlan, helper_watch::WIREFILTER);
                helpers.push(
                    self.spawn_helper(name, nic.filter_command(vlan), &[&nic.filter_mgmt])
                        .await?,
                );
            }
        }
        for j in &self.join {
            let vlan = &self.plan.vlans[&j.vlan];
            if !j.switch.join("ctl").exists() {
                return Err(Error::Network(format!(
                    "joining VLAN {} to {}: no switch there (is the other network running?)",
                    j.vlan,
                    j.switch.display()
                )));
            }
            let what = format!("cable to {} (vde_plug)", j.switch.display());
            let name = HelperName::vlan(j.vlan, what);
            let cmd = flotilla_vmnet::join_command(&vlan.switch_dir, &j.switch);
            let helper = self.spawn_helper(name, cmd, &[]).await?;
            // vde_plug exits at once when it cannot reach either switch.
            tokio::time::sleep(Duration::from_millis(100)).await;
            if let Some(status) = helper.process.status() {
                return Err(Error::Network(format!(
                    "joining VLAN {} to {}: vde_plug {}",
                    j.vlan,
                    j.switch.display(),
                    describe_status(status)
                )));
            }
            self.log.info(&format!(
                "vlan {}: joined to {}",
                j.vlan,
                j.switch.display()
            ));
            helpers.push(helper);
        }
        for vlan in self.plan.vlans.values() {
            self.log.file_only(&format!(
                "vlan {}: switch at {} (another network joins it with [[network.join]])",
                vlan.id,
                vlan.switch_dir.display()
            ));
        }
        self.log.info(&format!(
            "network: {} VLAN(s) on {}, {} helper processes",
            self.plan.vlans.len(),
            self.plan.backend,
            helpers.len()
        ));
        // All started: from now on the exit of any is a death.
        for i in 0..helpers.len() {
            let upstream = upstream_of(&helpers[i].name, &helpers);
            helpers[i].watched = Some(self.watch(&helpers[i].name, &helpers[i].process, upstream));
        }
        *slot = Some(helpers);
        Ok(())
    }

    /// Spawns a VDE helper with its stdin held open and waits for its sockets; it is
    /// not watched yet.
    async fn spawn_helper(
        &self,
        helper: HelperName,
        command: std::process::Command,
        sockets: &[&std::path::Path],
    ) -> Result<Helper, Error> {
        let name = &helper.to_string();
        let mut cmd = tokio::process::Command::from(command);
        cmd.stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped());
        let (process, stdio) = Process::spawn(name, cmd).await.map_err(|source| {
            let hint = if source.kind() == std::io::ErrorKind::NotFound {
                "\nhint: install vde2 (scripts/setup does)"
            } else {
                ""
            };
            Error::Io {
                what: format!("starting {name}{hint}"),
                source,
            }
        })?;
        if let Some(stderr) = stdio.stderr {
            let log = self.log.clone();
            let name = name.to_owned();
            tokio::spawn(async move {
                use tokio::io::AsyncBufReadExt;
                let mut lines = tokio::io::BufReader::new(stderr).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    // Helpers only talk when they start and stop; keep the terminal quiet.
                    log.file_only(&format!("{name}: {line}"));
                }
            });
        }
        let started = Instant::now();
        // Ready once each socket accepts a connection: a socket file exists from the
        // helper's bind(), before its listen(), and a peer that connects in between
        // (a wirefilter to a switch just started) is refused and exits.
        let accepting = |s: &&std::path::Path| std::os::unix::net::UnixStream::connect(s).is_ok();
        while !sockets.iter().all(accepting) {
            if let Some(status) = process.status() {
                return Err(Error::Network(format!(
                    "{name} {} at start",
                    describe_status(status)
                )));
            }
            if started.elapsed() > Duration::from_secs(10) {
                return Err(Error::Network(format!(
                    "{name} did not listen on {} within 10 s",
                    sockets
                        .iter()
                        .map(|s| s.display().to_string())
                        .collect::<Vec<_>>()
                        .join(" and ")
                )));
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        Ok(Helper {
            watched: None,
            name: helper,
            process,
            _stdin: stdio.stdin,
        })
    }

    /// Watches a started helper; see [`helper_watch::watch`].
    fn watch(
        &self,
        helper: &HelperName,
        process: &Process,
        upstream: Vec<(HelperName, ExitWatch)>,
    ) -> Watched {
        let exit = process.exit_watch();
        helper_watch::watch(helper.clone(), exit, upstream, &self.deaths, &self.log)
    }

    /// Fails with the first helper death of the run, if a helper died: every call
    /// after one fails.
    pub(crate) fn check_helpers(&self) -> Result<(), Error> {
        match self.deaths.first() {
            Some(death) => Err(death.error(None)),
            None => Ok(()),
        }
    }

    /// The VLANs `machine` has a NIC on, in the order of its NICs.
    pub(crate) fn vlans_of(&self, machine: &str) -> Vec<u8> {
        match self.plan.machine(machine) {
            Ok(m) => m.nics.iter().map(|n| n.vlan).collect(),
            Err(_) => Vec::new(),
        }
    }

    /// All VLANs of the network, in order.
    pub(crate) fn vlans(&self) -> Vec<u8> {
        self.plan.vlans.keys().copied().collect()
    }

    /// Resolves, with its error, when a helper of one of `machine`'s VLANs dies while
    /// the machine was `doing` something (at once if one died already).
    pub(crate) async fn helper_died(&self, machine: &str, doing: &str) -> Error {
        let death = self.deaths.on(&self.vlans_of(machine)).await;
        death.error(Some(format!("machine `{machine}` was {doing}")))
    }

    /// The helper processes that run: what the log calls each one, and its pid.
    pub async fn helper_pids(&self) -> Vec<(String, u32)> {
        let running = |h: &Helper| {
            h.process
                .status()
                .is_none()
                .then(|| (h.name.to_string(), h.process.pid()))
        };
        let mut pids: Vec<(String, u32)> = match &*self.switches.lock().await {
            Some(helpers) => helpers.iter().filter_map(running).collect(),
            None => Vec::new(),
        };
        let captures = self.captures.lock().await;
        pids.extend(captures.iter().filter_map(|(h, _)| running(h)));
        pids
    }

    /// Captures every frame on `vlan` into a pcap file at `path` until the network stops
    /// (VDE backend; the VLAN's switch turns into a hub so one port sees everything,
    /// except while the VLAN is partitioned: a hub would ignore the partition, so the
    /// capture then sees only broadcasts).
    pub async fn capture_vlan(&self, vlan: u8, path: &std::path::Path) -> Result<(), Error> {
        self.require_vde(
            "capturing a whole VLAN",
            " (capture a machine's NIC instead)",
        )?;
        self.check_helpers()?;
        self.ensure_started().await?;
        let v = self
            .plan
            .vlans
            .get(&vlan)
            .ok_or(Error::NoSuchVlan { vlan })?;
        let partitioned = self
            .partitioned
            .lock()
            .map(|p| p.contains_key(&vlan))
            .unwrap_or(false);
        if !partitioned {
            self.with_mgmt(vlan, |m| m.command("port/sethub 1").map(|_| ()))
                .await?;
        }
        if let Ok(mut hubs) = self.hubs.lock() {
            hubs.insert(vlan);
        }
        let file = std::fs::File::create(path).map_err(|source| Error::Io {
            what: format!("creating {}", path.display()),
            source,
        })?;
        let mut writer = flotilla_vmnet::capture::PcapWriter::new(std::io::BufWriter::new(file))
            .map_err(|source| Error::Io {
                what: format!("writing {}", path.display()),
                source,
            })?;
        let mut cmd =
            tokio::process::Command::from(flotilla_vmnet::capture::plug_command(&v.switch_dir));
        cmd.stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null());
        let helper = HelperName::vlan(vlan, helper_watch::CAPTURE);
        let name = helper.to_string();
        let (process, stdio) = Process::spawn(&name, cmd)
            .await
            .map_err(|source| Error::Io {
                what: format!("starting vde_plug for {name}"),
                source,
            })?;
        let Some(mut stdout) = stdio.stdout else {
            return Err(Error::Internal("vde_plug has no stdout".into()));
        };
        let log = self.log.clone();
        let shown = path.display().to_string();
        let task = tokio::spawn(async move {
            use tokio::io::AsyncReadExt;
            let mut decoder = flotilla_vmnet::capture::StreamDecoder::default();
            let mut buf = vec![0u8; 64 * 1024];
            let mut frames = 0u64;
            while let Ok(n) = stdout.read(&mut buf).await {
                if n == 0 {
                    break;
                }
                for frame in decoder.push(&buf[..n]) {
                    frames += 1;
                    let _ = writer.frame(&frame);
                }
            }
            let _ = writer.finish();
            log.file_only(&format!(
                "vlan {vlan}: captured {frames} frames into {shown}"
            ));
        });
        let upstream = match &*self.switches.lock().await {
            Some(helpers) => upstream_of(&helper, helpers),
            None => Vec::new(),
        };
        self.captures.lock().await.push((
            Helper {
                watched: Some(self.watch(&helper, &process, upstream)),
                name: helper,
                process,
                _stdin: stdio.stdin,
            },
            task,
        ));
        self.log
            .info(&format!("vlan {vlan}: capturing into {}", path.display()));
        Ok(())
    }

    /// Stops the switches. Idempotent. Their exits are no deaths.
    pub async fn stop(&self) {
        let captures = std::mem::take(&mut *self.captures.lock().await);
        let helpers = self.switches.lock().await.take();
        let all = captures
            .iter()
            .map(|(h, _)| h)
            .chain(helpers.iter().flatten());
        for h in all.filter_map(|h| h.watched.as_ref()) {
            h.stopping();
        }
        // Captures first, so their files are complete.
        for (helper, task) in captures {
            helper.process.close(Duration::from_secs(2)).await;
            let _ = task.await;
        }
        let Some(helpers) = helpers else {
            return;
        };
        futures::future::join_all(
            helpers
                .iter()
                .map(|h| h.process.close(Duration::from_secs(2))),
        )
        .await;
    }

    /// Fails unless the network uses VDE, which `what` needs.
    fn require_vde(&self, what: &str, hint: &str) -> Result<(), Error> {
        if self.plan.backend == Backend::Vde {
            return Ok(());
        }
        Err(Error::Network(format!(
            "{what} needs the vde backend; this network uses {}{hint}",
            self.plan.backend
        )))
    }

    fn mgmt_path(&self, vlan: u8) -> Result<std::path::PathBuf, Error> {
        self.require_vde("a partition", "")?;
        self.plan
            .vlans
            .get(&vlan)
            .map(|v| v.mgmt_socket.clone())
            .ok_or(Error::NoSuchVlan { vlan })
    }

    async fn with_mgmt<T: Send + 'static>(
        &self,
        vlan: u8,
        f: impl FnOnce(&mut Mgmt) -> Result<T, flotilla_vmnet::Error> + Send + 'static,
    ) -> Result<T, Error> {
        let path = self.mgmt_path(vlan)?;
        tokio::task::spawn_blocking(move || f(&mut Mgmt::connect(&path)?))
            .await
            .map_err(|e| Error::Internal(format!("switch management task: {e}")))?
            .map_err(Error::Vmnet)
    }

    /// Splits VLAN `vlan` into groups of machines that reach each other only within
    /// their group. Every machine named must be running.
    pub async fn partition(&self, vlan: u8, groups: &[Vec<String>]) -> Result<(), Error> {
        self.check_helpers()?;
        let mut ports = Vec::new();
        for group in groups {
            let mut g = Vec::new();
            for name in group {
                g.push(self.plan.nic(name, vlan).map_err(Error::Vmnet)?.port);
            }
            ports.push(g);
        }
        let all: Vec<u16> = ports.iter().flatten().copied().collect();
        // A hub ignores the switch's VLANs: a capture's hub mode pauses while partitioned.
        let hub = self.hubs.lock().map(|h| h.contains(&vlan)).unwrap_or(false);
        if hub {
            self.log.info(&format!(
                "vlan {vlan}: the VLAN capture sees only broadcasts while partitioned"
            ));
        }
        self.with_mgmt(vlan, move |m| {
            if hub {
                m.command("port/sethub 0")?;
            }
            m.partition(&ports)
        })
        .await?;
        if let Ok(mut p) = self.partitioned.lock() {
            p.insert(vlan, all);
        }
        self.log
            .info(&format!("vlan {vlan}: partitioned into {groups:?}"));
        Ok(())
    }

    /// Degrades (or with the default [`Impairment`], restores) a machine's link on
    /// `vlan` (VDE backend).
    pub async fn impair(
        &self,
        machine: &str,
        vlan: u8,
        impairment: Impairment,
    ) -> Result<(), Error> {
        self.require_vde("impairing a link", "")?;
        self.check_helpers()?;
        impairment.check().map_err(Error::Network)?;
        let path = self
            .plan
            .nic(machine, vlan)
            .map_err(Error::Vmnet)?
            .filter_mgmt
            .clone();
        tokio::task::spawn_blocking(move || Mgmt::connect(&path)?.impair(&impairment))
            .await
            .map_err(|e| Error::Internal(format!("wirefilter management task: {e}")))?
            .map_err(Error::Vmnet)?;
        self.log.machine(
            machine,
            &format!(
                "link on vlan {vlan}: delay {} ms, jitter {} ms, loss {}%, bandwidth {}",
                impairment.delay_ms,
                impairment.jitter_ms,
                impairment.loss_percent,
                if impairment.bandwidth == 0 {
                    "unlimited".to_owned()
                } else {
                    format!("{} bytes/s", impairment.bandwidth)
                }
            ),
        );
        Ok(())
    }

    /// Undoes [`Fabric::partition`] on `vlan`.
    pub async fn heal(&self, vlan: u8) -> Result<(), Error> {
        self.check_helpers()?;
        let ports = self
            .partitioned
            .lock()
            .ok()
            .and_then(|mut p| p.remove(&vlan))
            .unwrap_or_default();
        let hub = self.hubs.lock().map(|h| h.contains(&vlan)).unwrap_or(false);
        self.with_mgmt(vlan, move |m| {
            m.heal(&ports)?;
            if hub {
                m.command("port/sethub 1")?;
            }
            Ok(())
        })
        .await?;
        self.log.info(&format!("vlan {vlan}: healed"));
        Ok(())
    }
}

/// The helpers among `helpers` that `helper` depends on, whose death explains its own.
fn upstream_of(helper: &HelperName, helpers: &[Helper]) -> Vec<(HelperName, ExitWatch)> {
    helpers
        .iter()
        .filter(|h| helper.depends_on(&h.name))
        .map(|h| (h.name.clone(), h.process.exit_watch()))
        .collect()
}

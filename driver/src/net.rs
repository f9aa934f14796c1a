//! The network fabric of a run: the vmnet plan, the VLAN switches (VDE backend) and the
//! controls a test uses while machines run.

use std::sync::Arc;
use std::time::{Duration, Instant};

use flotilla_vmnet::mgmt::Mgmt;
use flotilla_vmnet::{Backend, Plan};

use crate::log::Log;
use crate::process::{describe_status, Process};
use crate::Error;

/// Switch processes, started once, before the first machine boots.
#[derive(Debug)]
pub struct Fabric {
    pub plan: Plan,
    log: Log,
    switches: tokio::sync::Mutex<Option<Vec<Switch>>>,
    /// Ports moved by a partition, per VLAN.
    partitioned: std::sync::Mutex<std::collections::BTreeMap<u8, Vec<u16>>>,
}

#[derive(Debug)]
struct Switch {
    process: Process,
    // Held open: vde_switch exits when its stdin closes.
    _stdin: Option<tokio::process::ChildStdin>,
}

impl Fabric {
    pub fn new(plan: Plan, log: Log) -> Arc<Fabric> {
        if let Some(warning) = plan.insecure() {
            log.info(&format!("warning: {warning}"));
        }
        Arc::new(Fabric {
            plan,
            log,
            switches: tokio::sync::Mutex::new(None),
            partitioned: Default::default(),
        })
    }

    /// Starts one switch per VLAN (VDE backend) unless they run; waits for their sockets.
    pub async fn ensure_started(&self) -> Result<(), Error> {
        let mut slot = self.switches.lock().await;
        if slot.is_some() || self.plan.backend != Backend::Vde {
            return Ok(());
        }
        let mut switches = Vec::new();
        for vlan in self.plan.vlans.values() {
            let mut cmd = tokio::process::Command::from(vlan.switch_command());
            cmd.stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::piped());
            let name = format!("vde_switch vlan {}", vlan.id);
            let (process, stdio) = Process::spawn(&name, cmd).await.map_err(|source| {
                let hint = if source.kind() == std::io::ErrorKind::NotFound {
                    "\nhint: install vde2 (scripts/setup does)"
                } else {
                    ""
                };
                Error::Io {
                    what: format!("starting vde_switch for VLAN {}{hint}", vlan.id),
                    source,
                }
            })?;
            if let Some(stderr) = stdio.stderr {
                let log = self.log.clone();
                let id = vlan.id;
                tokio::spawn(async move {
                    use tokio::io::AsyncBufReadExt;
                    let mut lines = tokio::io::BufReader::new(stderr).lines();
                    while let Ok(Some(line)) = lines.next_line().await {
                        log.info(&format!("vlan {id}: vde_switch: {line}"));
                    }
                });
            }
            let ctl = vlan.switch_dir.join("ctl");
            let started = Instant::now();
            while !(ctl.exists() && vlan.mgmt_socket.exists()) {
                if let Some(status) = process.status() {
                    return Err(Error::Network(format!(
                        "vde_switch for VLAN {} {} at start",
                        vlan.id,
                        describe_status(status)
                    )));
                }
                if started.elapsed() > Duration::from_secs(10) {
                    return Err(Error::Network(format!(
                        "vde_switch for VLAN {} made no socket at {} within 10 s",
                        vlan.id,
                        ctl.display()
                    )));
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            switches.push(Switch {
                process,
                _stdin: stdio.stdin,
            });
        }
        self.log.info(&format!(
            "network: {} VLAN(s) on {}",
            self.plan.vlans.len(),
            self.plan.backend
        ));
        *slot = Some(switches);
        Ok(())
    }

    /// Stops the switches. Idempotent.
    pub async fn stop(&self) {
        let Some(switches) = self.switches.lock().await.take() else {
            return;
        };
        for s in &switches {
            s.process.close(Duration::from_secs(2)).await;
        }
    }

    fn mgmt_path(&self, vlan: u8) -> Result<std::path::PathBuf, Error> {
        if self.plan.backend != Backend::Vde {
            return Err(Error::Network(format!(
                "partitions need the vde backend; this network uses {}",
                self.plan.backend
            )));
        }
        self.plan
            .vlans
            .get(&vlan)
            .map(|v| v.mgmt_socket.clone())
            .ok_or_else(|| Error::Network(format!("there is no VLAN {vlan}")))
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
        let mut ports = Vec::new();
        for group in groups {
            let mut g = Vec::new();
            for name in group {
                g.push(self.plan.nic(name, vlan).map_err(Error::Vmnet)?.port);
            }
            ports.push(g);
        }
        let all: Vec<u16> = ports.iter().flatten().copied().collect();
        self.with_mgmt(vlan, move |m| m.partition(&ports)).await?;
        if let Ok(mut p) = self.partitioned.lock() {
            p.insert(vlan, all);
        }
        self.log
            .info(&format!("vlan {vlan}: partitioned into {groups:?}"));
        Ok(())
    }

    /// Undoes [`Fabric::partition`] on `vlan`.
    pub async fn heal(&self, vlan: u8) -> Result<(), Error> {
        let ports = self
            .partitioned
            .lock()
            .ok()
            .and_then(|mut p| p.remove(&vlan))
            .unwrap_or_default();
        self.with_mgmt(vlan, move |m| m.heal(&ports)).await?;
        self.log.info(&format!("vlan {vlan}: healed"));
        Ok(())
    }
}

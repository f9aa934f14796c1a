//! The machine's NICs seen from the host: addresses, link state, impairments, port
//! forwards and packet captures.

use std::path::PathBuf;

use flotilla_vmnet::{Forward, Nic};

use super::state::Machine;
use crate::error::Error;

impl Machine {
    /// The machine's NIC on `vlan`.
    fn nic(&self, vlan: u8) -> Result<&Nic, Error> {
        let plan = &self.config.fabric.plan;
        plan.nic(&self.config.name, vlan).map_err(Error::Vmnet)
    }

    /// The machine's IPv4 address on `vlan`.
    pub fn ip(&self, vlan: u8) -> Result<std::net::Ipv4Addr, Error> {
        Ok(self.nic(vlan)?.ipv4)
    }

    /// The machine's IPv6 address on `vlan`.
    pub fn ipv6(&self, vlan: u8) -> Result<std::net::Ipv6Addr, Error> {
        Ok(self.nic(vlan)?.ipv6)
    }

    /// Takes the machine's link on `vlan` down (`up = false`) or back up.
    pub async fn set_link(&self, vlan: u8, up: bool) -> Result<(), Error> {
        let nic = self.nic(vlan)?;
        let running = self.running().await?;
        running
            .qmp
            .set_link(&nic.device_id, up)
            .await
            .map_err(|e| self.qmp_failed(e))?;
        self.log(&format!(
            "link on vlan {vlan} {}",
            if up { "up" } else { "down (blocked)" }
        ));
        Ok(())
    }

    /// Degrades the machine's link on `vlan` (delay, jitter, loss, bandwidth);
    /// `Impairment::default()` restores it (VDE backend).
    pub async fn impair(
        &self,
        vlan: u8,
        impairment: flotilla_vmnet::Impairment,
    ) -> Result<(), Error> {
        self.config
            .fabric
            .impair(&self.config.name, vlan, impairment)
            .await
    }

    /// Every forward, as (host port on 127.0.0.1, guest port).
    pub fn forwards(&self) -> Vec<(u16, u16)> {
        self.config
            .user_net
            .lock()
            .map(|u| u.forwards.iter().map(|f| (f.host, f.guest)).collect())
            .unwrap_or_default()
    }

    /// The host port on 127.0.0.1 forwarded to `guest_port`, if any.
    pub fn forwarded_port(&self, guest_port: u16) -> Option<u16> {
        let user = self.config.user_net.lock().ok()?;
        user.forwards
            .iter()
            .find(|f| f.guest == guest_port)
            .map(|f| f.host)
    }

    /// The guest port that host port `host_port` is forwarded to, if any.
    pub(super) fn guest_port_of(&self, host_port: u16) -> Option<u16> {
        let user = self.config.user_net.lock().ok()?;
        user.forwards
            .iter()
            .find(|f| f.host == host_port)
            .map(|f| f.guest)
    }

    /// Forwards 127.0.0.1:`host_port` (0 picks a free port) to `guest_port` while the
    /// machine runs; returns the host port. A host port in use (by another process,
    /// or already forwarded) is [`Error::PortBusy`].
    pub async fn forward(&self, host_port: u16, guest_port: u16) -> Result<u16, Error> {
        let forward = Forward::new(host_port, guest_port).map_err(Error::Vmnet)?;
        let busy = |evidence: Option<String>| Error::PortBusy {
            machine: self.config.name.clone(),
            port: forward.host,
            guest: guest_port,
            evidence,
        };
        let running = self.running().await?;
        if flotilla_vmnet::forward::host_port_in_use(forward.host) {
            return Err(busy(None));
        }
        let reply = running
            .qmp
            .human_monitor_command(&forward.hmp_add())
            .await
            .map_err(|e| self.qmp_failed(e))?;
        // Taken between the check and QEMU's try: QEMU's reply says so.
        if flotilla_vmnet::forward::failed_forward_port(&reply).is_some() {
            return Err(busy(Some(format!("qemu said: {}", reply.trim()))));
        }
        if !reply.trim().is_empty() {
            return Err(Error::Network(format!(
                "machine `{}`: forwarding 127.0.0.1:{} to port {guest_port}: {}",
                self.config.name,
                forward.host,
                reply.trim()
            )));
        }
        if let Ok(mut user) = self.config.user_net.lock() {
            user.forwards.push(forward);
        }
        self.log(&format!(
            "forwarding 127.0.0.1:{} to guest port {guest_port}",
            forward.host
        ));
        Ok(forward.host)
    }

    /// Captures the frames of the machine's NIC on `vlan` into a pcap file in the log
    /// folder, from now until the machine stops; returns the file's path.
    pub async fn capture(&self, vlan: u8) -> Result<PathBuf, Error> {
        let nic = self.nic(vlan)?;
        let running = self.running().await?;
        let path = self
            .config
            .log
            .machine_dir(&self.config.name)?
            .join(format!("vlan{vlan}.pcap"));
        let path = std::path::absolute(&path).unwrap_or(path);
        running
            .qmp
            .execute_raw(
                "object-add",
                Some(serde_json::json!({
                    "qom-type": "filter-dump",
                    "id": format!("capture-vlan{vlan}"),
                    "netdev": nic.netdev_id,
                    "file": path.display().to_string(),
                })),
            )
            .await
            .map_err(|e| self.qmp_failed(e))?;
        self.log(&format!("capturing vlan {vlan} to {}", path.display()));
        Ok(path)
    }
}

//! The guest's side of the network: host name, addresses of its NICs and
//! `/etc/hosts`, configured once the agent is up.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use flotilla_agent::proto;

use super::state::Machine;
use crate::agent_client::{AgentError, Guest, GuestError};
use crate::error::Error;

impl Machine {
    /// Configures the guest's host name, NICs and /etc/hosts: with one
    /// [`proto::Kind::NetConfig`] request when the agent has
    /// [`proto::FEATURE_NET_CONFIG`] (~70 ms under TCG, mostly the kernel bringing the
    /// links up), else with the shell script of
    /// [`Machine::guest_net_setup`] (a process per step: ~250 ms, and it needs `ip`).
    ///
    /// `moved` (a machine restored from a snapshot) maps NIC device ids to the MACs
    /// the guest's NICs have now, the snapshot maker's: each NIC is given its own
    /// ([`proto::NicConfig::from_mac`]; the agent must have
    /// [`proto::FEATURE_NET_SET_MAC`]).
    pub(super) async fn configure_guest_net(
        &self,
        guest: &Guest,
        moved: Option<&BTreeMap<String, String>>,
    ) -> Result<(), Error> {
        let c = &self.config;
        let failed = |why: &str| {
            Error::Network(format!(
                "machine `{}`: configuring the guest network failed: {why}",
                c.name
            ))
        };
        let agent_error =
            |source: GuestError| self.agent_failed("configuring the guest network", source);
        let started = Instant::now();
        let how = match guest {
            Guest::Flotilla(a) if a.has_feature(proto::FEATURE_NET_CONFIG) => {
                let timeout = Duration::from_secs(60);
                let cfg = self.guest_net_config(moved);
                match tokio::time::timeout(timeout, a.net_config(&cfg)).await {
                    Ok(Ok(())) => "the agent (net-config request)",
                    Ok(Err(AgentError::Remote(why))) => return Err(failed(&why)),
                    Ok(Err(e)) => return Err(agent_error(e.into())),
                    Err(_) => return Err(agent_error(AgentError::Timeout(timeout).into())),
                }
            }
            _ if moved.is_some() => {
                return Err(failed(
                    "the agent cannot give NICs new MACs (no net-set-mac)",
                ))
            }
            _ => {
                let script = self.guest_net_setup();
                let out = guest
                    .exec_shell(&script, Duration::from_secs(60), &[], |_, _| {})
                    .await
                    .map_err(agent_error)?;
                if out.status.code != Some(0) {
                    return Err(failed(String::from_utf8_lossy(&out.stderr).trim()));
                }
                "a shell script (the agent has no net-config)"
            }
        };
        c.log.file_only(&format!(
            "{}: network configured by {how} in {} ms",
            c.name,
            started.elapsed().as_millis()
        ));
        Ok(())
    }

    /// The [`proto::NetConfig`] request equivalent to [`Machine::guest_net_setup`];
    /// with `moved`, NICs are found by the MACs it names for their device ids.
    pub(super) fn guest_net_config(
        &self,
        moved: Option<&BTreeMap<String, String>>,
    ) -> proto::NetConfig {
        let from_mac = |device_id: &str| moved.and_then(|m| m.get(device_id)).cloned();
        use flotilla_vmnet::{forward, IPV4_PREFIX, IPV6_PREFIX};
        let c = &self.config;
        let plan = &c.fabric.plan;
        let me = plan.machine(&c.name).ok();
        let mut nics: Vec<proto::NicConfig> = me
            .iter()
            .flat_map(|m| &m.nics)
            .map(|nic| proto::NicConfig {
                mac: nic.mac.to_string(),
                from_mac: from_mac(&nic.device_id),
                ipv4: Some(format!("{}/{IPV4_PREFIX}", nic.ipv4)),
                ipv6: Some(format!("{}/{IPV6_PREFIX}", nic.ipv6)),
            })
            .collect();
        if let Ok(user) = c.user_net.lock() {
            nics.push(proto::NicConfig {
                mac: user.mac.to_string(),
                from_mac: from_mac(forward::DEVICE_ID),
                ipv4: Some(format!("{}/{}", forward::GUEST_ADDR, forward::GUEST_PREFIX)),
                ipv6: None,
            });
        }
        proto::NetConfig {
            hostname: Some(self.hostname()),
            nics,
            forwarding: me.is_some_and(|m| m.forwards()),
            hosts: Some(plan.hosts_file(&c.name).unwrap_or_default()),
        }
    }

    /// The shell script that configures the guest's NICs and /etc/hosts.
    pub(super) fn guest_net_setup(&self) -> String {
        let c = &self.config;
        let plan = &c.fabric.plan;
        let mut s = format!("hostname {}\n", self.hostname());
        s.push_str(&plan.guest_setup(&c.name).unwrap_or_default());
        if let Ok(user) = c.user_net.lock() {
            s.push_str(&user.guest_setup());
        }
        let hosts = plan.hosts_file(&c.name).unwrap_or_default();
        s.push_str(&format!(
            "cat > /etc/hosts <<'FLOTILLA_HOSTS'\n{hosts}FLOTILLA_HOSTS\n"
        ));
        s
    }
}

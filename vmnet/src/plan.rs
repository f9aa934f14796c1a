//! The plan of a network: every machine's NICs, addresses and sockets, every VLAN's
//! switch, and the QEMU arguments and helper commands that make them.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};

use crate::addr::{hostname, Mac, IFACE_BY_MAC, IPV4_PREFIX, IPV6_PREFIX, MAX_MACHINES, MAX_VLAN};
use crate::error::Error;
use crate::nic_args::{multicast_netdev, nic_device, vde_netdev};

/// How frames travel between machines of one VLAN.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Backend {
    /// One `vde_switch` per VLAN in a private directory.
    #[default]
    Vde,
    /// QEMU multicast sockets on 127.0.0.1; any local process can join.
    Multicast,
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Backend::Vde => "vde",
            Backend::Multicast => "multicast",
        })
    }
}

impl std::str::FromStr for Backend {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "vde" => Ok(Backend::Vde),
            "multicast" => Ok(Backend::Multicast),
            other => Err(format!(
                "unknown network backend `{other}`: use \"vde\" or \"multicast\""
            )),
        }
    }
}

/// One VLAN of the plan.
#[derive(Debug, Clone)]
pub struct Vlan {
    pub id: u8,
    /// The switch's data socket directory (VDE).
    pub switch_dir: PathBuf,
    /// The switch's management socket (VDE).
    pub mgmt_socket: PathBuf,
    /// Group and port (multicast).
    pub multicast: Option<(Ipv4Addr, u16)>,
    /// Machines on this VLAN, by name.
    pub members: BTreeSet<String>,
}

impl Vlan {
    /// The `vde_switch` command for this VLAN (VDE backend). Its stdin must stay open:
    /// the switch exits when its standard input closes, which is one more way it can
    /// never outlive the driver.
    pub fn switch_command(&self) -> std::process::Command {
        let mut cmd = std::process::Command::new("vde_switch");
        cmd.arg("--sock")
            .arg(&self.switch_dir)
            .args(["--dirmode", "0700", "--mode", "0600"])
            .arg("--mgmt")
            .arg(&self.mgmt_socket)
            .args(["--mgmtmode", "0600", "--numports"])
            .arg((MAX_MACHINES + 4).to_string());
        cmd
    }
}

/// One NIC of a machine.
#[derive(Debug, Clone)]
pub struct Nic {
    pub vlan: u8,
    pub mac: Mac,
    pub ipv4: Ipv4Addr,
    pub ipv6: Ipv6Addr,
    /// QEMU's `-netdev` id.
    pub netdev_id: String,
    /// QEMU's `-device` id (what `set_link` takes).
    pub device_id: String,
    /// The switch port (VDE): the machine's number.
    pub port: u16,
    /// The NIC's own link switch, between QEMU and the link's wirefilter (VDE).
    pub link_dir: PathBuf,
    /// The management socket of the link's wirefilter (VDE).
    pub filter_mgmt: PathBuf,
}

impl Nic {
    /// The command for the NIC's link switch: a small hub QEMU plugs into, so that a
    /// wirefilter can sit between the NIC and the VLAN's switch (VDE backend). Its
    /// stdin must stay open, as for [`Vlan::switch_command`].
    pub fn link_switch_command(&self) -> std::process::Command {
        let mut cmd = std::process::Command::new("vde_switch");
        cmd.arg("--sock").arg(&self.link_dir).args([
            "--dirmode",
            "0700",
            "--mode",
            "0600",
            "--hub",
            "--numports",
            "4",
        ]);
        cmd
    }

    /// The command for the link's wirefilter: it joins port [`Nic::port`] of the
    /// VLAN's switch to the NIC's link switch, and impairs the link on request
    /// ([`Impairment`]). Its stdin must stay open.
    pub fn filter_command(&self, vlan: &Vlan) -> std::process::Command {
        let mut cmd = std::process::Command::new("wirefilter");
        cmd.arg("-v")
            .arg(format!(
                "{}[{}]:{}",
                vlan.switch_dir.display(),
                self.port,
                self.link_dir.display()
            ))
            .arg("--mgmt")
            .arg(&self.filter_mgmt)
            .args(["--mgmtmode", "0600"]);
        cmd
    }
}

/// A machine's place in the plan.
#[derive(Debug, Clone)]
pub struct MachineNet {
    pub name: String,
    /// 1-based, from the sorted machine names; the last byte of every address.
    pub number: u8,
    pub nics: Vec<Nic>,
}

impl MachineNet {
    /// The NIC on `vlan`.
    pub fn nic(&self, vlan: u8) -> Option<&Nic> {
        self.nics.iter().find(|n| n.vlan == vlan)
    }

    /// Whether the machine forwards packets: it does when it is on more than one VLAN.
    pub fn forwards(&self) -> bool {
        self.nics.len() > 1
    }
}

/// Addresses, sockets and QEMU arguments for every machine of a network.
#[derive(Debug, Clone)]
pub struct Plan {
    pub backend: Backend,
    pub vlans: BTreeMap<u8, Vlan>,
    pub machines: BTreeMap<String, MachineNet>,
}

impl Plan {
    /// Plans a network: `machines` maps each machine name to its VLANs; `run_dir` is the
    /// run's private directory (sockets go there).
    pub fn new(
        machines: &BTreeMap<String, Vec<u8>>,
        backend: Backend,
        run_dir: &Path,
    ) -> Result<Plan, Error> {
        Plan::with_offset(machines, backend, run_dir, 0)
    }

    /// [`Plan::new`] with machine numbers starting at `offset + 1`: networks of two
    /// drivers that share a VLAN ([`join_command`]) need distinct addresses.
    pub fn with_offset(
        machines: &BTreeMap<String, Vec<u8>>,
        backend: Backend,
        run_dir: &Path,
        offset: u8,
    ) -> Result<Plan, Error> {
        if machines.len() + usize::from(offset) > MAX_MACHINES {
            return Err(Error::TooManyMachines(machines.len() + usize::from(offset)));
        }
        let mut vlans: BTreeMap<u8, Vlan> = BTreeMap::new();
        let run_tag = random_u32();
        let mut planned = BTreeMap::new();
        for (index, (name, wanted)) in machines.iter().enumerate() {
            let number = offset + index as u8 + 1;
            let mut nics = Vec::new();
            for &vlan in wanted {
                if vlan == 0 || vlan > MAX_VLAN {
                    return Err(Error::VlanRange {
                        machine: name.clone(),
                        vlan: vlan.into(),
                    });
                }
                if nics.iter().any(|n: &Nic| n.vlan == vlan) {
                    return Err(Error::VlanTwice {
                        machine: name.clone(),
                        vlan,
                    });
                }
                let v = match vlans.entry(vlan) {
                    std::collections::btree_map::Entry::Occupied(e) => e.into_mut(),
                    std::collections::btree_map::Entry::Vacant(e) => e.insert(Vlan {
                        id: vlan,
                        switch_dir: run_dir.join(format!("vlan{vlan}.switch")),
                        mgmt_socket: run_dir.join(format!("vlan{vlan}.mgmt")),
                        multicast: match backend {
                            Backend::Vde => None,
                            Backend::Multicast => Some(multicast_group(run_tag, vlan)?),
                        },
                        members: BTreeSet::new(),
                    }),
                };
                v.members.insert(name.clone());
                nics.push(Nic {
                    vlan,
                    mac: Mac([0x52, 0x54, 0x00, 0x12, vlan, number]),
                    ipv4: Ipv4Addr::new(192, 168, vlan, number),
                    ipv6: Ipv6Addr::new(0x2001, 0xdb8, vlan.into(), 0, 0, 0, 0, number.into()),
                    netdev_id: format!("vlan{vlan}"),
                    device_id: format!("nic{vlan}"),
                    port: number.into(),
                    link_dir: run_dir.join(format!("vlan{vlan}-m{number}.link")),
                    filter_mgmt: run_dir.join(format!("vlan{vlan}-m{number}.filter")),
                });
            }
            planned.insert(
                name.clone(),
                MachineNet {
                    name: name.clone(),
                    number,
                    nics,
                },
            );
        }
        Ok(Plan {
            backend,
            vlans,
            machines: planned,
        })
    }

    /// A machine's part of the plan.
    pub fn machine(&self, name: &str) -> Result<&MachineNet, Error> {
        self.machines
            .get(name)
            .ok_or_else(|| Error::NoSuchMachine(name.to_owned()))
    }

    /// A machine's NIC on a VLAN.
    pub fn nic(&self, machine: &str, vlan: u8) -> Result<&Nic, Error> {
        self.machine(machine)?.nic(vlan).ok_or(Error::NotOnVlan {
            machine: machine.to_owned(),
            vlan,
        })
    }

    /// QEMU arguments for a machine's NICs.
    pub fn qemu_args(&self, machine: &str) -> Result<Vec<String>, Error> {
        let m = self.machine(machine)?;
        let mut args = Vec::new();
        for nic in &m.nics {
            let vlan = &self.vlans[&nic.vlan];
            let netdev = match (self.backend, vlan.multicast) {
                (Backend::Multicast, Some(group)) => multicast_netdev(&nic.netdev_id, Some(group)),
                _ => vde_netdev(&nic.netdev_id, Some(&nic.link_dir)),
            };
            args.push("-netdev".into());
            args.push(netdev);
            args.push("-device".into());
            args.push(nic_device(
                &nic.netdev_id,
                &nic.device_id,
                Some(&nic.mac.to_string()),
            ));
        }
        Ok(args)
    }

    /// `/etc/hosts` for a machine: every machine by its address on a VLAN the two share,
    /// else on the other machine's first VLAN (reachable through a router).
    pub fn hosts_file(&self, machine: &str) -> Result<String, Error> {
        let me = self.machine(machine)?;
        let mut out = String::from("127.0.0.1 localhost\n::1 localhost\n");
        for other in self.machines.values() {
            let shared = other
                .nics
                .iter()
                .find(|n| me.nic(n.vlan).is_some())
                .or_else(|| other.nics.first());
            let Some(nic) = shared else { continue };
            let host = hostname(&other.name);
            out.push_str(&format!("{} {host}\n", nic.ipv4));
            out.push_str(&format!("{} {host}\n", nic.ipv6));
        }
        Ok(out)
    }

    /// A shell script (busybox `ip`) that configures a machine's NICs, found by MAC,
    /// and turns on forwarding when [`MachineNet::forwards`]. (Agents that can do it
    /// themselves get the same data from [`Plan::machine`] instead.)
    pub fn guest_setup(&self, machine: &str) -> Result<String, Error> {
        let m = self.machine(machine)?;
        let mut s = String::from("set -e\n");
        s.push_str(IFACE_BY_MAC);
        for nic in &m.nics {
            s.push_str(&format!(
                "i=$(iface_by_mac {mac})\n\
                 echo 0 > /proc/sys/net/ipv6/conf/$i/accept_dad\n\
                 ip link set dev \"$i\" up\n\
                 ip addr add {v4}/{IPV4_PREFIX} dev \"$i\"\n\
                 ip -6 addr add {v6}/{IPV6_PREFIX} dev \"$i\"\n",
                mac = nic.mac,
                v4 = nic.ipv4,
                v6 = nic.ipv6,
            ));
        }
        if m.forwards() {
            s.push_str("echo 1 > /proc/sys/net/ipv4/ip_forward\n");
            s.push_str("echo 1 > /proc/sys/net/ipv6/conf/all/forwarding\n");
        }
        Ok(s)
    }

    /// Whether the plan's backend lets other local processes see its traffic.
    pub fn insecure(&self) -> Option<&'static str> {
        match self.backend {
            Backend::Vde => None,
            Backend::Multicast => Some(
                "the multicast backend is insecure: any local process can join its \
                 groups on 127.0.0.1 and read or inject frames; the default vde backend \
                 keeps them in a private directory",
            ),
        }
    }
}

/// The command that joins two VDE switches into one segment, the way `vde_plug` over
/// ssh joins switches on two hosts (`dpipe vde_plug A = ssh host vde_plug B`). Its stdin
/// must stay open.
pub fn join_command(local_switch: &Path, remote_switch: &Path) -> std::process::Command {
    let mut cmd = std::process::Command::new("vde_plug");
    cmd.arg(local_switch).arg(remote_switch);
    cmd
}

fn multicast_group(run_tag: u32, vlan: u8) -> Result<(Ipv4Addr, u16), Error> {
    // An organization-local group (239.192.0.0/14) unique to the run and VLAN, on a
    // port the kernel just handed out as free.
    let [a, b, ..] = run_tag.to_le_bytes();
    let group = Ipv4Addr::new(239, 192 + (a & 3), b, vlan);
    let port = std::net::UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .map_err(Error::FreePort)?
        .port();
    Ok((group, port))
}

fn random_u32() -> u32 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u32(std::process::id());
    h.finish() as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    fn machines(list: &[(&str, &[u8])]) -> BTreeMap<String, Vec<u8>> {
        list.iter()
            .map(|(n, v)| (n.to_string(), v.to_vec()))
            .collect()
    }

    #[test]
    fn addresses_come_from_sorted_names() {
        let m = machines(&[("server", &[1]), ("client", &[1]), ("router", &[1, 2])]);
        let plan = Plan::new(&m, Backend::Vde, Path::new("/run/x")).unwrap();
        assert_eq!(plan.machine("client").unwrap().number, 1);
        assert_eq!(plan.machine("router").unwrap().number, 2);
        let r2 = plan.nic("router", 2).unwrap();
        assert_eq!(r2.ipv4, Ipv4Addr::new(192, 168, 2, 2));
        assert_eq!(r2.mac.to_string(), "52:54:00:12:02:02");
        assert_eq!(r2.port, 2);
        assert_eq!(plan.vlans[&1].members.len(), 3);
        assert_eq!(plan.vlans[&2].members.len(), 1);
    }

    #[test]
    fn qemu_args_per_backend() {
        let m = machines(&[("a", &[3])]);
        let vde = Plan::new(&m, Backend::Vde, Path::new("/r")).unwrap();
        let args = vde.qemu_args("a").unwrap().join(" ");
        assert!(
            args.contains("-netdev vde,id=vlan3,sock=/r/vlan3-m1.link "),
            "{args}"
        );
        let nic = vde.nic("a", 3).unwrap();
        let filter = format!("{:?}", nic.filter_command(&vde.vlans[&3]));
        assert!(
            filter.contains("\"/r/vlan3.switch[1]:/r/vlan3-m1.link\""),
            "{filter}"
        );
        assert!(args.contains("virtio-net-pci,netdev=vlan3,id=nic3,mac=52:54:00:12:03:01"));
        let mc = Plan::new(&m, Backend::Multicast, Path::new("/r")).unwrap();
        let args = mc.qemu_args("a").unwrap().join(" ");
        assert!(
            args.contains("-netdev socket,id=vlan3,mcast=239."),
            "{args}"
        );
        assert!(args.contains(",localaddr=127.0.0.1"), "{args}");
        assert!(mc.insecure().is_some() && vde.insecure().is_none());
    }

    #[test]
    fn hosts_prefer_a_shared_vlan() {
        let m = machines(&[("client", &[1]), ("router", &[1, 2]), ("server", &[2])]);
        let plan = Plan::new(&m, Backend::Vde, Path::new("/r")).unwrap();
        let hosts = plan.hosts_file("server").unwrap();
        assert!(hosts.contains("192.168.2.2 router\n"), "{hosts}");
        assert!(hosts.contains("192.168.1.1 client\n"), "{hosts}");
        assert!(hosts.contains("2001:db8:2::3 server\n"), "{hosts}");
        let hosts = plan.hosts_file("client").unwrap();
        assert!(hosts.contains("192.168.1.2 router\n"), "{hosts}");
    }

    #[test]
    fn offsets_shift_numbers_and_addresses() {
        let m = machines(&[("x", &[1])]);
        let plan = Plan::with_offset(&m, Backend::Vde, Path::new("/r"), 10).unwrap();
        let nic = plan.nic("x", 1).unwrap();
        assert_eq!(nic.ipv4, Ipv4Addr::new(192, 168, 1, 11));
        assert_eq!(nic.port, 11);
        assert!(Plan::with_offset(&m, Backend::Vde, Path::new("/r"), 250).is_err());
    }

    #[test]
    fn bad_vlans_are_errors() {
        let e = Plan::new(&machines(&[("a", &[0])]), Backend::Vde, Path::new("/r"));
        assert!(e
            .unwrap_err()
            .to_string()
            .contains("VLAN 0 is out of range"));
        let e = Plan::new(&machines(&[("a", &[4, 4])]), Backend::Vde, Path::new("/r"));
        assert!(e.unwrap_err().to_string().contains("listed twice"));
    }

    #[test]
    fn setup_script_enables_forwarding_for_routers() {
        let m = machines(&[("r", &[1, 2]), ("s", &[1])]);
        let plan = Plan::new(&m, Backend::Vde, Path::new("/r")).unwrap();
        let script = plan.guest_setup("r").unwrap();
        assert!(script.contains("ip addr add 192.168.2.1/24"), "{script}");
        assert!(script.contains("ip_forward"));
        assert!(!plan.guest_setup("s").unwrap().contains("ip_forward"));
    }
}

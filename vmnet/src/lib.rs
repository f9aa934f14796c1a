//! Virtual networks for QEMU machines: addressing, QEMU arguments, switches, and the
//! controls a test needs (link up/down, partitions, captures).
//!
//! The crate plans; the caller runs processes. A [`Plan`] assigns every machine a
//! deterministic MAC, an IPv4 and an IPv6 address on each of its VLANs, and says which
//! QEMU arguments connect its NICs:
//!
//! - [`Backend::Vde`] (default): one `vde_switch` per VLAN, its sockets in the run's
//!   private 0700 directory, so no other user's process can read or inject frames.
//!   Each NIC plugs into a small link switch of its own, joined to port `n` of the
//!   VLAN's switch (`n` the machine's number) by a `wirefilter` that can add delay,
//!   jitter, loss and a bandwidth limit at run time ([`Impairment`]). Partitions move
//!   ports between the VLAN switch's internal VLANs ([`mgmt`]).
//! - [`Backend::Multicast`]: QEMU's `-netdev socket,mcast=` bound to 127.0.0.1 with a
//!   group and port unique to the run. Needs no helper process, but any local process
//!   can join the group: it is insecure by design and the plan says so.
//!
//! ```
//! use std::collections::BTreeMap;
//! use flotilla_vmnet::{Backend, Plan};
//!
//! let mut machines = BTreeMap::new();
//! machines.insert("client".to_string(), vec![1]);
//! machines.insert("server".to_string(), vec![1]);
//! let plan = Plan::new(&machines, Backend::Vde, "/tmp/run".as_ref()).unwrap();
//! let server = plan.machine("server").unwrap();
//! assert_eq!(server.nics[0].ipv4.to_string(), "192.168.1.2");
//! assert_eq!(server.nics[0].ipv6.to_string(), "2001:db8:1::2");
//! assert!(plan.hosts_file("client").unwrap().contains("192.168.1.2 server"));
//! ```

mod addr;
pub mod capture;
mod error;
pub mod forward;
mod impairment;
pub mod mgmt;
pub mod nic_args;
mod plan;

pub use addr::{hostname, Mac, IFACE_BY_MAC, IPV4_PREFIX, IPV6_PREFIX, MAX_MACHINES, MAX_VLAN};
pub use error::Error;
pub use forward::{Forward, UserNet};
pub use impairment::Impairment;
pub use plan::{join_command, Backend, MachineNet, Nic, Plan, Vlan};

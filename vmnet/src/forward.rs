//! Host access: TCP ports on 127.0.0.1 forwarded to guest ports through a QEMU user-mode
//! NIC with `restrict=on`, so the guest reaches nothing on the host or beyond but what
//! is forwarded, and nothing listens on any host address but 127.0.0.1.

use std::net::Ipv4Addr;

use crate::addr::Mac;
use crate::error::Error;
use crate::nic_args::{nic_device, user_netdev};

/// The guest's address on its host-access NIC.
pub const GUEST_ADDR: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 15);
/// Prefix length of the host-access network, 10.0.2.0/24 (no route beyond it).
pub const GUEST_PREFIX: u8 = 24;
/// QEMU's `-netdev` id of the host-access NIC.
pub const NETDEV_ID: &str = "hostnet";
/// QEMU's `-device` id of the host-access NIC.
pub const DEVICE_ID: &str = "hostnic";

/// One forwarded port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Forward {
    /// Port on 127.0.0.1.
    pub host: u16,
    /// Port in the guest.
    pub guest: u16,
}

impl Forward {
    /// A forward; `host == 0` picks a free port now.
    pub fn new(host: u16, guest: u16) -> Result<Forward, Error> {
        let host = if host == 0 { free_port()? } else { host };
        Ok(Forward { host, guest })
    }

    /// The `hostfwd` rule, as `-netdev user` and HMP `hostfwd_add` take it.
    pub fn rule(&self) -> String {
        format!("tcp:127.0.0.1:{}-{GUEST_ADDR}:{}", self.host, self.guest)
    }

    /// The HMP command that adds this forward to a running machine.
    pub fn hmp_add(&self) -> String {
        format!("hostfwd_add {NETDEV_ID} {}", self.rule())
    }

    /// The HMP command that removes it.
    pub fn hmp_remove(&self) -> String {
        format!("hostfwd_remove {NETDEV_ID} tcp:127.0.0.1:{}", self.host)
    }
}

/// A machine's host-access NIC.
#[derive(Debug, Clone)]
pub struct UserNet {
    pub mac: Mac,
    pub forwards: Vec<Forward>,
}

impl UserNet {
    /// The host-access NIC of machine number `number`.
    pub fn new(number: u8, forwards: Vec<Forward>) -> UserNet {
        UserNet {
            mac: Mac([0x52, 0x54, 0x00, 0xff, 0x00, number]),
            forwards,
        }
    }

    /// QEMU arguments for the NIC.
    pub fn qemu_args(&self) -> Vec<String> {
        vec![
            "-netdev".into(),
            user_netdev(NETDEV_ID, self.forwards.iter().map(Forward::rule)),
            "-device".into(),
            nic_device(NETDEV_ID, DEVICE_ID, Some(&self.mac.to_string())),
        ]
    }

    /// Guest commands (busybox `ip`) that configure the NIC; needs
    /// [`crate::IFACE_BY_MAC`] defined first. (Agents that can do it themselves get
    /// [`UserNet::mac`], [`GUEST_ADDR`] and [`GUEST_PREFIX`] instead.)
    pub fn guest_setup(&self) -> String {
        format!(
            "i=$(iface_by_mac {})\nip link set dev \"$i\" up\nip addr add {GUEST_ADDR}/{GUEST_PREFIX} dev \"$i\"\n",
            self.mac
        )
    }
}

/// A TCP port on 127.0.0.1 that was free a moment ago.
pub fn free_port() -> Result<u16, Error> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(Error::FreePort)
}

/// Whether 127.0.0.1:`port` is taken: something listens on it (on that address or
/// on all of them), so QEMU could not forward it.
pub fn host_port_in_use(port: u16) -> bool {
    matches!(
        std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, port)),
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse
    )
}

/// The host port of the forward QEMU says it could not set up, in a line of its stderr
/// (`-netdev user,...: Could not set up host forwarding rule 'tcp:127.0.0.1:8080-...'`)
/// or in the reply to HMP `hostfwd_add`.
pub fn failed_forward_port(qemu_says: &str) -> Option<u16> {
    const MARK: &str = "Could not set up host forwarding rule 'tcp:127.0.0.1:";
    let rest = &qemu_says[qemu_says.find(MARK)? + MARK.len()..];
    let digits = &rest[..rest.find(|c: char| !c.is_ascii_digit())?];
    digits.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_listening_port_is_in_use() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        assert!(host_port_in_use(port));
        drop(l);
        assert!(!host_port_in_use(port));
    }

    #[test]
    fn qemu_names_the_port_it_could_not_forward() {
        let stderr = "qemu-system-x86_64: -netdev user,id=hostnet,restrict=on,net=10.0.2.0/24,hostfwd=tcp:127.0.0.1:8080-10.0.2.15:80: Could not set up host forwarding rule 'tcp:127.0.0.1:8080-10.0.2.15:80'";
        assert_eq!(failed_forward_port(stderr), Some(8080));
        let hmp = "Could not set up host forwarding rule 'tcp:127.0.0.1:51823-10.0.2.15:22'\r\n";
        assert_eq!(failed_forward_port(hmp), Some(51823));
        assert_eq!(failed_forward_port("Duplicate ID 'h' for netdev"), None);
        assert_eq!(
            failed_forward_port("Could not set up host forwarding rule 'tcp:127.0.0.1:"),
            None
        );
    }

    #[test]
    fn rules_bind_loopback_only() {
        let f = Forward::new(8080, 80).unwrap();
        assert_eq!(f.rule(), "tcp:127.0.0.1:8080-10.0.2.15:80");
        assert_eq!(
            f.hmp_add(),
            "hostfwd_add hostnet tcp:127.0.0.1:8080-10.0.2.15:80"
        );
        let auto = Forward::new(0, 22).unwrap();
        assert_ne!(auto.host, 0);
        let args = UserNet::new(3, vec![f]).qemu_args().join(" ");
        assert!(args.contains("user,id=hostnet,restrict=on"), "{args}");
        assert!(args.contains("mac=52:54:00:ff:00:03"), "{args}");
    }
}

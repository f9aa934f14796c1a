//! A NIC's QEMU arguments, rendered in one place: [`crate::Plan::qemu_args`],
//! [`crate::UserNet::qemu_args`] and a caller that renders a machine's command from
//! parts of its own (the driver leaves out what belongs to one machine, a socket, a
//! group, a MAC, when it hashes a snapshot's identity: `None` here).

use std::fmt::{Display, Write as _};
use std::net::Ipv4Addr;
use std::path::Path;

/// A VDE NIC's `-netdev` value, plugged into the link switch at `sock`.
pub fn vde_netdev(id: &str, sock: Option<&Path>) -> String {
    match sock {
        Some(sock) => format!("vde,id={id},sock={}", sock.display()),
        None => format!("vde,id={id}"),
    }
}

/// A multicast NIC's `-netdev` value, in `group` (address and port), bound to
/// 127.0.0.1.
pub fn multicast_netdev(id: &str, group: Option<(Ipv4Addr, u16)>) -> String {
    match group {
        Some((group, port)) => {
            format!("socket,id={id},mcast={group}:{port},localaddr=127.0.0.1")
        }
        None => format!("socket,id={id},localaddr=127.0.0.1"),
    }
}

/// The host-access NIC's `-netdev` value: QEMU's user-mode network, restricted, with
/// its forwards from 127.0.0.1 (each a [`crate::Forward::rule`]).
pub fn user_netdev(id: &str, rules: impl IntoIterator<Item = impl Display>) -> String {
    let mut netdev = format!("user,id={id},restrict=on,net=10.0.2.0/24");
    for rule in rules {
        let _ = write!(netdev, ",hostfwd={rule}");
    }
    netdev
}

/// The guest's `-device` for a NIC on `netdev_id`, with `mac`.
pub fn nic_device(netdev_id: &str, device_id: &str, mac: Option<&str>) -> String {
    let mut device = format!("virtio-net-pci,netdev={netdev_id},id={device_id}");
    if let Some(mac) = mac {
        let _ = write!(device, ",mac={mac}");
    }
    device.push_str(",romfile=");
    device
}

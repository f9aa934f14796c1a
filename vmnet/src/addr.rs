//! Addressing: the limits of a plan, MAC addresses, host names, and the shell helper
//! that finds a NIC by its MAC.

use std::fmt;

/// The highest VLAN number (VLAN `v` uses 192.168.`v`.0/24).
pub const MAX_VLAN: u8 = 254;
/// The most machines one plan can address (`.1` to `.250`).
pub const MAX_MACHINES: usize = 250;
/// Prefix length of a VLAN's IPv4 subnet, 192.168.`v`.0/24.
pub const IPV4_PREFIX: u8 = 24;
/// Prefix length of a VLAN's IPv6 subnet, 2001:db8:`v`::/64.
pub const IPV6_PREFIX: u8 = 64;

/// A MAC address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Mac(pub [u8; 6]);

impl fmt::Display for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let m = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            m[0], m[1], m[2], m[3], m[4], m[5]
        )
    }
}

/// A shell function that prints the interface name with a given MAC.
pub const IFACE_BY_MAC: &str = "iface_by_mac() {\n\
    for d in /sys/class/net/*; do\n\
        if [ \"$(cat \"$d/address\")\" = \"$1\" ]; then echo \"${d##*/}\"; return 0; fi\n\
    done\n\
    echo \"no interface with MAC $1\" >&2; return 1\n\
}\n";

/// The host name of a machine: its name with `-` for `_`.
pub fn hostname(machine: &str) -> String {
    machine.replace('_', "-")
}

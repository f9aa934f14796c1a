//! [`Kind::NetConfig`](flotilla_agent::proto::Kind::NetConfig): the guest's network
//! configured with syscalls, no processes (each one costs ~10 ms under TCG) and no `ip`.
//!
//! The request is checked whole and every NIC found before anything changes; then, in
//! order: host name, per NIC (its new MAC if it has `from_mac`, accept_dad off, link
//! up, IPv4, IPv6), forwarding, `/etc/hosts`. Errors are messages naming the step, the
//! interface and the errno.

use std::io;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;
use std::str::FromStr;

use flotilla_agent::proto::{NetConfig, NicConfig};

use crate::sys;

const SYS_NET: &str = "/sys/class/net";

/// One NIC of the request, parsed and found.
#[derive(Debug, PartialEq)]
struct Nic {
    name: String,
    index: i32,
    /// The MAC to give the interface (it was found by `from_mac`).
    set_mac: Option<[u8; 6]>,
    ipv4: Option<(Ipv4Addr, u8)>,
    ipv6: Option<(Ipv6Addr, u8)>,
}

/// Apply `cfg`; the error says what failed.
pub fn configure(cfg: &NetConfig) -> Result<(), String> {
    let nics = resolve_all(&cfg.nics, Path::new(SYS_NET), NIC_WAIT)?;
    if let Some(name) = &cfg.hostname {
        set_hostname(name).map_err(|e| format!("setting the host name to `{name}`: {}", os(&e)))?;
    }
    for nic in &nics {
        apply(nic).map_err(|e| format!("interface {}: {e}", nic.name))?;
    }
    if cfg.forwarding {
        for path in [
            "/proc/sys/net/ipv4/ip_forward",
            "/proc/sys/net/ipv6/conf/all/forwarding",
        ] {
            write_file(path, "1")?;
        }
    }
    if let Some(hosts) = &cfg.hosts {
        write_file("/etc/hosts", hosts)?;
    }
    Ok(())
}

/// How long a NIC may take to appear: early in a distribution's boot, udev may still
/// be loading its driver when the host asks.
const NIC_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// [`resolve`] for every NIC, waiting up to `wait` for interfaces that are not there
/// yet (a bad address is an error at once).
fn resolve_all(
    nics: &[NicConfig],
    sys_net: &Path,
    wait: std::time::Duration,
) -> Result<Vec<Nic>, String> {
    let deadline = std::time::Instant::now() + wait;
    loop {
        match nics.iter().map(|nic| resolve(nic, sys_net)).collect() {
            Err(e) if e.starts_with(NO_INTERFACE) && std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            Err(e) if e.starts_with(NO_INTERFACE) => {
                return Err(format!("{e} after waiting {} s", wait.as_secs_f64()))
            }
            other => return other,
        }
    }
}

const NO_INTERFACE: &str = "no interface with MAC";

/// Parse a NIC's addresses and find its interface under `sys_net`: by `from_mac` when
/// there is one (else by `mac`, when an earlier request already gave it `mac`).
fn resolve(nic: &NicConfig, sys_net: &Path) -> Result<Nic, String> {
    let mac = parse_mac(&nic.mac)?;
    let from = nic.from_mac.as_deref().map(parse_mac).transpose()?;
    let ipv4 = nic.ipv4.as_deref().map(|s| prefixed(s, 32)).transpose()?;
    let ipv6 = nic.ipv6.as_deref().map(|s| prefixed(s, 128)).transpose()?;
    let ((name, index), set_mac) = match from {
        Some(from) if from != mac => match find_by_mac(sys_net, from) {
            Ok(found) => (found, Some(mac)),
            Err(e) => (find_by_mac(sys_net, mac).map_err(|_| e)?, None),
        },
        _ => (find_by_mac(sys_net, mac)?, None),
    };
    Ok(Nic {
        name,
        index,
        set_mac,
        ipv4,
        ipv6,
    })
}

/// `52:54:00:12:01:02` (either case) as bytes.
fn parse_mac(s: &str) -> Result<[u8; 6], String> {
    let bad = || {
        format!(
            "`{}` is not a MAC address like 52:54:00:12:01:02",
            s.escape_debug()
        )
    };
    let mut mac = [0u8; 6];
    let mut parts = s.split(':');
    for byte in &mut mac {
        let part = parts
            .next()
            .filter(|p| p.len() == 2 && p.bytes().all(|b| b.is_ascii_hexdigit()))
            .ok_or_else(bad)?;
        *byte = u8::from_str_radix(part, 16).map_err(|_| bad())?;
    }
    match parts.next() {
        Some(_) => Err(bad()),
        None => Ok(mac),
    }
}

/// `address/prefix` with a prefix of at most `max`.
fn prefixed<A: FromStr>(s: &str, max: u8) -> Result<(A, u8), String> {
    let bad = || {
        format!(
            "`{}` is not an address with a prefix length (0 to {max}) like {}",
            s.escape_debug(),
            if max == 32 {
                "192.168.1.2/24"
            } else {
                "2001:db8:1::2/64"
            }
        )
    };
    let (addr, len) = s.split_once('/').ok_or_else(bad)?;
    let addr = addr.parse().map_err(|_| bad())?;
    let len: u8 = len.parse().map_err(|_| bad())?;
    if len > max {
        return Err(bad());
    }
    Ok((addr, len))
}

/// The name and index of the interface whose `address` is `mac`.
fn find_by_mac(sys_net: &Path, mac: [u8; 6]) -> Result<(String, i32), String> {
    let shown = mac.map(|b| format!("{b:02x}")).join(":");
    let entries = std::fs::read_dir(sys_net)
        .map_err(|e| format!("listing {}: {}", sys_net.display(), os(&e)))?;
    for entry in entries.flatten() {
        let dir = entry.path();
        let Ok(address) = std::fs::read_to_string(dir.join("address")) else {
            continue;
        };
        if parse_mac(address.trim()) != Ok(mac) {
            continue;
        }
        let name = entry.file_name().to_string_lossy().into_owned();
        let index = std::fs::read_to_string(dir.join("ifindex"))
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .ok_or_else(|| format!("interface {name}: no ifindex in {}", dir.display()))?;
        return Ok((name, index));
    }
    Err(format!("{NO_INTERFACE} {shown} in {}", sys_net.display()))
}

fn apply(nic: &Nic) -> Result<(), String> {
    if let Some(mac) = nic.set_mac {
        let shown = mac.map(|b| format!("{b:02x}")).join(":");
        set_mac(&nic.name, mac).map_err(|e| format!("setting the MAC to {shown}: {}", os(&e)))?;
    }
    if nic.ipv6.is_some() {
        // As `ip` would find it: without DAD the address is usable at once.
        write_file(
            &format!("/proc/sys/net/ipv6/conf/{}/accept_dad", nic.name),
            "0",
        )?;
    }
    link_up(&nic.name).map_err(|e| format!("bringing the link up: {}", os(&e)))?;
    if let Some((addr, len)) = nic.ipv4 {
        add_ipv4(&nic.name, addr, len).map_err(|e| format!("adding {addr}/{len}: {}", os(&e)))?;
    }
    if let Some((addr, len)) = nic.ipv6 {
        add_ipv6(nic.index, addr, len).map_err(|e| format!("adding {addr}/{len}: {}", os(&e)))?;
    }
    Ok(())
}

/// "Permission denied (errno 13)".
fn os(e: &io::Error) -> String {
    match e.raw_os_error() {
        Some(errno) => format!("{} (errno {errno})", sys::strerror(errno)),
        None => e.to_string(),
    }
}

fn write_file(path: &str, contents: &str) -> Result<(), String> {
    std::fs::write(path, contents).map_err(|e| format!("writing {path}: {}", os(&e)))
}

fn set_hostname(name: &str) -> io::Result<()> {
    // SAFETY: pointer and length describe a valid buffer.
    sys::cvt(unsafe { libc::sethostname(name.as_ptr().cast(), name.len()) }).map(drop)
}

fn socket(family: libc::c_int) -> io::Result<OwnedFd> {
    // SAFETY: plain socket call.
    let fd = sys::cvt(unsafe { libc::socket(family, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) })?;
    // SAFETY: fresh descriptor.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// An `ifreq` naming `name`, the rest zeroed.
fn ifreq(name: &str) -> io::Result<libc::ifreq> {
    // SAFETY: ifreq is plain data; all zeroes is valid.
    let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
    if name.is_empty() || name.len() >= ifr.ifr_name.len() || name.contains('\0') {
        return Err(io::Error::from_raw_os_error(libc::EINVAL));
    }
    for (dst, src) in ifr.ifr_name.iter_mut().zip(name.bytes()) {
        *dst = src as libc::c_char;
    }
    Ok(ifr)
}

/// Set IFF_UP on interface `name` (SIOCGIFFLAGS, SIOCSIFFLAGS).
pub fn link_up(name: &str) -> io::Result<()> {
    let sock = socket(libc::AF_INET)?;
    let mut ifr = ifreq(name)?;
    // SAFETY: the ioctls read and write the ifreq we own; ifru_flags is the member they use.
    unsafe {
        socket_ioctl(&sock, libc::SIOCGIFFLAGS, &mut ifr)?;
        ifr.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
        socket_ioctl(&sock, libc::SIOCSIFFLAGS, &mut ifr)?;
    }
    Ok(())
}

/// Gives interface `name` the MAC `mac` (SIOCSIFHWADDR), with the link down meanwhile
/// (it stays down: [`link_up`] follows).
fn set_mac(name: &str, mac: [u8; 6]) -> io::Result<()> {
    let sock = socket(libc::AF_INET)?;
    let mut ifr = ifreq(name)?;
    // SAFETY: the ioctls read and write the ifreq we own; ifru_flags and ifru_hwaddr
    // are the members they use.
    unsafe {
        socket_ioctl(&sock, libc::SIOCGIFFLAGS, &mut ifr)?;
        if ifr.ifr_ifru.ifru_flags & libc::IFF_UP as libc::c_short != 0 {
            ifr.ifr_ifru.ifru_flags &= !(libc::IFF_UP as libc::c_short);
            socket_ioctl(&sock, libc::SIOCSIFFLAGS, &mut ifr)?;
        }
        let mut hw: libc::sockaddr = std::mem::zeroed();
        hw.sa_family = libc::ARPHRD_ETHER;
        for (dst, src) in hw.sa_data.iter_mut().zip(mac) {
            *dst = src as libc::c_char;
        }
        ifr.ifr_ifru.ifru_hwaddr = hw;
        socket_ioctl(&sock, libc::SIOCSIFHWADDR, &mut ifr)?;
    }
    Ok(())
}

fn sockaddr_in(addr: Ipv4Addr) -> libc::sockaddr {
    let sin = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: 0,
        sin_addr: libc::in_addr {
            s_addr: u32::from_ne_bytes(addr.octets()),
        },
        sin_zero: [0; 8],
    };
    // SAFETY: sockaddr_in and sockaddr have the same size (16 bytes) and are plain data.
    unsafe { std::mem::transmute::<libc::sockaddr_in, libc::sockaddr>(sin) }
}

/// SIOCSIFADDR, then SIOCSIFNETMASK (which also sets the broadcast address).
fn add_ipv4(name: &str, addr: Ipv4Addr, len: u8) -> io::Result<()> {
    let sock = socket(libc::AF_INET)?;
    let mask = u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
    let mut ifr = ifreq(name)?;
    ifr.ifr_ifru.ifru_addr = sockaddr_in(addr);
    // SAFETY: the ioctl reads the ifreq we own.
    unsafe { socket_ioctl(&sock, libc::SIOCSIFADDR, &mut ifr) }?;
    ifr.ifr_ifru.ifru_netmask = sockaddr_in(Ipv4Addr::from(mask));
    // SAFETY: as above.
    unsafe { socket_ioctl(&sock, libc::SIOCSIFNETMASK, &mut ifr) }?;
    Ok(())
}

/// SIOCSIFADDR on an AF_INET6 socket with an `in6_ifreq`.
fn add_ipv6(index: i32, addr: Ipv6Addr, len: u8) -> io::Result<()> {
    let sock = socket(libc::AF_INET6)?;
    let mut req = libc::in6_ifreq {
        ifr6_addr: libc::in6_addr {
            s6_addr: addr.octets(),
        },
        ifr6_prefixlen: len.into(),
        ifr6_ifindex: index,
    };
    // SAFETY: the ioctl reads the in6_ifreq we own.
    unsafe { socket_ioctl(&sock, libc::SIOCSIFADDR, &mut req) }.map(drop)
}

/// `ioctl(sock, number, arg)` for the `SIOC*` requests: glibc's `ioctl` takes the number
/// as an unsigned long, musl's (the arm64 agent's) as an int; the numbers fit either.
///
/// # Safety
/// `arg` must point to the structure `number` reads or writes (an `ifreq`, an
/// `in6_ifreq`), owned by the caller for the call.
unsafe fn socket_ioctl<T>(
    sock: &impl AsRawFd,
    number: libc::c_ulong,
    arg: *mut T,
) -> io::Result<libc::c_int> {
    // SAFETY: the caller's promise (`arg` is what `number` reads or writes).
    sys::cvt(unsafe { libc::ioctl(sock.as_raw_fd(), number as libc::Ioctl, arg) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn macs() {
        assert_eq!(
            parse_mac("52:54:00:AB:0c:ff"),
            Ok([0x52, 0x54, 0, 0xab, 0x0c, 0xff])
        );
        for bad in [
            "",
            "52:54:00:ab:0c",
            "52:54:00:ab:0c:ff:00",
            "5:54:00:ab:0c:ff",
            "zz:54:00:ab:0c:ff",
            "+1:54:00:ab:0c:ff",
        ] {
            let err = parse_mac(bad).unwrap_err();
            assert!(err.contains(&format!("`{bad}`")), "{err}");
        }
    }

    #[test]
    fn prefixes() {
        assert_eq!(
            prefixed::<Ipv4Addr>("10.0.2.15/24", 32),
            Ok((Ipv4Addr::new(10, 0, 2, 15), 24))
        );
        assert_eq!(
            prefixed::<Ipv6Addr>("2001:db8:1::2/64", 128),
            Ok(("2001:db8:1::2".parse().unwrap(), 64))
        );
        for bad in [
            "10.0.2.15",
            "10.0.2.15/33",
            "10.0.2/24",
            "10.0.2.15/",
            "/24",
            "2001:db8::1/24",
        ] {
            let err = prefixed::<Ipv4Addr>(bad, 32).unwrap_err();
            assert!(err.contains(bad) && err.contains("0 to 32"), "{err}");
        }
        assert!(prefixed::<Ipv6Addr>("::1/129", 128).is_err());
    }

    #[test]
    fn finds_interfaces_by_mac_in_a_sysfs_like_tree() {
        let root = std::env::temp_dir().join(format!("flotilla-net-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        for (name, mac, index) in [
            ("lo", "00:00:00:00:00:00", "1"),
            ("eth1", "52:54:00:12:01:02", "3"),
        ] {
            let dir = root.join(name);
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join("address"), format!("{mac}\n")).unwrap();
            std::fs::write(dir.join("ifindex"), format!("{index}\n")).unwrap();
        }
        let nic = NicConfig {
            mac: "52:54:00:12:01:02".into(),
            from_mac: None,
            ipv4: Some("192.168.1.2/24".into()),
            ipv6: None,
        };
        assert_eq!(
            resolve(&nic, &root),
            Ok(Nic {
                name: "eth1".into(),
                index: 3,
                set_mac: None,
                ipv4: Some((Ipv4Addr::new(192, 168, 1, 2), 24)),
                ipv6: None,
            })
        );
        let missing = NicConfig {
            mac: "52:54:00:12:09:09".into(),
            ..nic.clone()
        };
        let err = resolve(&missing, &root).unwrap_err();
        assert!(
            err.contains("no interface with MAC 52:54:00:12:09:09"),
            "{err}"
        );
        // Bad addresses are reported before the lookup.
        let bad = NicConfig {
            ipv6: Some("nope/64".into()),
            ..missing
        };
        assert!(resolve(&bad, &root).unwrap_err().contains("`nope/64`"));
        let _ = std::fs::remove_dir_all(&root);
    }

    #[test]
    fn a_nic_to_get_a_new_mac_is_found_by_its_old_one() {
        let root = std::env::temp_dir().join(format!("flotilla-net-mac-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        for (name, mac, index) in [
            ("eth0", "52:54:00:12:01:01", "2"),
            ("eth1", "52:54:00:12:02:01", "3"),
        ] {
            let dir = root.join(name);
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join("address"), format!("{mac}\n")).unwrap();
            std::fs::write(dir.join("ifindex"), format!("{index}\n")).unwrap();
        }
        let moved = NicConfig {
            mac: "52:54:00:12:01:07".into(),
            from_mac: Some("52:54:00:12:01:01".into()),
            ipv4: None,
            ipv6: None,
        };
        let nic = resolve(&moved, &root).unwrap();
        assert_eq!(nic.name, "eth0");
        assert_eq!(nic.set_mac, Some([0x52, 0x54, 0, 0x12, 1, 7]));
        // Already given its MAC (an earlier request): found by it, nothing to set.
        std::fs::write(root.join("eth0/address"), "52:54:00:12:01:07\n").unwrap();
        let nic = resolve(&moved, &root).unwrap();
        assert_eq!((nic.name.as_str(), nic.set_mac), ("eth0", None));
        // The same MAC on both sides: nothing to set.
        let same = NicConfig {
            mac: "52:54:00:12:02:01".into(),
            from_mac: Some("52:54:00:12:02:01".into()),
            ..moved.clone()
        };
        let nic = resolve(&same, &root).unwrap();
        assert_eq!((nic.name.as_str(), nic.set_mac), ("eth1", None));
        // Neither MAC there: the error names the one looked for.
        let lost = NicConfig {
            mac: "52:54:00:12:03:02".into(),
            from_mac: Some("52:54:00:12:03:01".into()),
            ..moved.clone()
        };
        let err = resolve(&lost, &root).unwrap_err();
        assert!(
            err.contains("no interface with MAC 52:54:00:12:03:01"),
            "{err}"
        );
        // A bad `from_mac` is refused before any lookup.
        let bad = NicConfig {
            from_mac: Some("52:54".into()),
            ..moved
        };
        assert!(resolve(&bad, &root).unwrap_err().contains("`52:54`"));
        let _ = std::fs::remove_dir_all(&root);
    }

    #[test]
    fn names_too_long_for_ifreq_are_refused() {
        assert!(ifreq("lo").is_ok());
        assert!(ifreq("").is_err() && ifreq("sixteen-chars-xx").is_err());
    }

    #[test]
    fn a_nic_that_appears_late_is_waited_for_within_the_bound() {
        let root = std::env::temp_dir().join(format!("flotilla-net-late-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(&root).unwrap();
        let nic = NicConfig {
            mac: "52:54:00:12:01:05".into(),
            from_mac: None,
            ipv4: Some("192.168.1.5/24".into()),
            ipv6: None,
        };
        // Never there: an error after the wait, saying so.
        let started = std::time::Instant::now();
        let err = resolve_all(
            std::slice::from_ref(&nic),
            &root,
            std::time::Duration::from_millis(200),
        )
        .unwrap_err();
        assert!(started.elapsed() >= std::time::Duration::from_millis(200));
        assert!(
            err.contains("no interface with MAC 52:54:00:12:01:05"),
            "{err}"
        );
        assert!(err.contains("after waiting 0.2 s"), "{err}");
        // Appearing while waited for: found.
        let dir = root.join("eth0");
        let late = std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(100));
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join("ifindex"), "2\n").unwrap();
            std::fs::write(dir.join("address"), "52:54:00:12:01:05\n").unwrap();
        });
        let found = resolve_all(
            std::slice::from_ref(&nic),
            &root,
            std::time::Duration::from_secs(30),
        );
        late.join().unwrap();
        assert_eq!(found.map(|n| n[0].name.clone()), Ok("eth0".to_owned()));
        let _ = std::fs::remove_dir_all(&root);
    }
}

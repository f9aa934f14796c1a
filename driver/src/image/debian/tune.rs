//! What makes a debootstrapped tree a quick, quiet test guest: the files written
//! into it (fstab, host name, machine id) and what each init is spared at boot.

use std::path::Path;

use sha2::{Digest, Sha256};

use super::files::{symlink, write_file};
use super::init::Init;
use crate::error::Error;

/// The files that make the tree a bootable guest of the driver.
pub(super) fn configure(tree: &Path, init: Init) -> Result<(), Error> {
    // sysvinit's checkroot.sh and checkfs.sh spend 10-20 s under TCG on fsck of a file
    // system that is fresh at every run, and a failed check waits for a root login.
    let fstab: &[u8] = match init {
        Init::Systemd => b"/dev/vda / ext4 rw,relatime 0 1\n",
        Init::Sysvinit | Init::Openrc => b"/dev/vda / ext4 rw,relatime 0 0\n",
    };
    write_file(&tree.join("etc/fstab"), fstab, 0o644)?;
    // The driver sets the real host name and /etc/hosts once the agent is up.
    write_file(&tree.join("etc/hostname"), b"debian\n", 0o644)?;
    write_file(
        &tree.join("etc/hosts"),
        b"127.0.0.1 localhost\n127.0.1.1 debian\n::1 localhost ip6-localhost ip6-loopback\n",
        0o644,
    )?;
    // Nothing of the build host's network configuration.
    write_file(&tree.join("etc/resolv.conf"), b"", 0o644)?;
    // Every run starts from the base image, so every boot would be a "first boot":
    // a fixed machine id keeps systemd from running first-boot set-up (and prompting
    // on the console) each time. Machines of one run differ by host name anyway.
    let id: String = Sha256::digest(b"flotilla debian image")[..16]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    write_file(
        &tree.join("etc/machine-id"),
        format!("{id}\n").as_bytes(),
        0o444,
    )?;
    if init == Init::Openrc {
        // Each LSB script costs OpenRC a few seconds under TCG, at boot and again at
        // power-off: drop those a throw-away test machine has no use for.
        for service in OPENRC_UNNEEDED {
            let link = tree.join("etc/runlevels").join(service);
            if let Err(source) = std::fs::remove_file(&link) {
                if source.kind() != std::io::ErrorKind::NotFound {
                    return Err(Error::Io {
                        what: format!("removing {}", link.display()),
                        source,
                    });
                }
            }
        }
    }
    if init != Init::Systemd {
        return configure_inittab(tree);
    }
    // systemd-sysv's /sbin/init points at an absolute path, which stage 1 (looking into
    // the image from the initramfs, before switch_root) would resolve in the wrong
    // root; a relative link means the same inside and out.
    let init = tree.join("usr/sbin/init");
    if std::fs::read_link(&init).is_ok_and(|t| t == Path::new("/lib/systemd/systemd")) {
        symlink("../lib/systemd/systemd", &init)?;
    }
    let system = tree.join("etc/systemd/system");
    for unit in [
        // Never wait for a person at the console.
        "systemd-firstboot.service",
        // Periodic jobs only cost CPU under emulation; e2scrub_reap alone takes 15 s
        // at every boot under TCG.
        "apt-daily.timer",
        "apt-daily-upgrade.timer",
        "dpkg-db-backup.timer",
        "e2scrub_all.timer",
        "e2scrub_reap.service",
        "fstrim.timer",
    ] {
        symlink("/dev/null", &system.join(unit))?;
    }
    // Each run's disk is a throw-away overlay: keep the journal in memory, which also
    // spares the boot its flush to disk. The console log keeps what matters.
    write_file(
        &tree.join("etc/systemd/journald.conf.d/flotilla.conf"),
        b"[Journal]\nStorage=volatile\n",
        0o644,
    )?;
    Ok(())
}

/// Services of an OpenRC image's runlevels (`runlevel/service`) that only cost time:
/// the clock (the kernel reads the RTC), NFS, backlight, saved caches of a disk that
/// is thrown away.
const OPENRC_UNNEEDED: &[&str] = &[
    "sysinit/hwclock.sh",
    "sysinit/brightness",
    "sysinit/urandom",
    "sysinit/mountnfs.sh",
    "sysinit/mountnfs-bootclean.sh",
    "sysinit/mount-configfs",
    "default/bootlogs",
    "off/umountnfs.sh",
    "off/savecache",
];

/// Comments out the gettys in sysvinit's `/etc/inittab`: nobody logs in on the
/// virtual terminals, and six respawning gettys only cost CPU under emulation.
fn configure_inittab(tree: &Path) -> Result<(), Error> {
    let path = tree.join("etc/inittab");
    let text = std::fs::read_to_string(&path).map_err(|source| Error::Io {
        what: format!("reading {}", path.display()),
        source,
    })?;
    write_file(&path, without_gettys(&text).as_bytes(), 0o644)
}

/// `inittab` with every getty line (`id:levels:respawn:/sbin/getty ...`) commented out.
fn without_gettys(inittab: &str) -> String {
    inittab
        .lines()
        .map(|line| {
            let process = line.splitn(4, ':').nth(3).unwrap_or("");
            let program = process.split_whitespace().next().unwrap_or("");
            if !line.starts_with('#') && program.ends_with("getty") {
                format!("#{line}\n")
            } else {
                format!("{line}\n")
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inittab_loses_its_gettys_only() {
        let inittab = "id:2:initdefault:\nl2:2:wait:/etc/init.d/rc 2\n\
                       1:2345:respawn:/sbin/getty --noclear 38400 tty1\n\
                       T0:23:respawn:/sbin/agetty -L ttyS0 9600 vt100\n\
                       #T1:23:respawn:/sbin/getty -L ttyS1 9600 vt100\n";
        assert_eq!(
            without_gettys(inittab),
            "id:2:initdefault:\nl2:2:wait:/etc/init.d/rc 2\n\
             #1:2345:respawn:/sbin/getty --noclear 38400 tty1\n\
             #T0:23:respawn:/sbin/agetty -L ttyS0 9600 vt100\n\
             #T1:23:respawn:/sbin/getty -L ttyS1 9600 vt100\n"
        );
    }
}

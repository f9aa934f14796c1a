//! What makes a debootstrapped tree a quick, quiet test guest: the files written
//! into it (fstab, host name, machine id) and what each init is spared at boot.

use std::path::Path;
use std::process::Command;

use sha2::{Digest, Sha256};

use super::builder_vm::Step;
use super::files::{run, symlink, write_file};
use super::init::Init;
use crate::error::Error;
use crate::initramfs::AGENT_INIT_MARKER;
use flotilla_host::arch::Arch;

/// The files that make the tree of `arch` a bootable guest of the driver.
/// `run_steps`: whether to run, in a chroot, the commands of [`sysvinit_steps`] (a
/// tree built in the builder VM had them run there).
pub(super) fn configure(
    tree: &Path,
    init: Init,
    arch: &Arch,
    run_steps: bool,
) -> Result<(), Error> {
    configure_identity(tree)?;
    if init == Init::Agent {
        // No service manager: stage 1 starts the agent as PID 1 when it sees this.
        return write_file(
            &tree.join(AGENT_INIT_MARKER),
            b"# flotilla: stage 1 starts /usr/local/bin/flotilla-agent as PID 1\n",
            0o644,
        );
    }
    // Network interfaces keep the kernel's names (eth0, eth1, ... in PCI order, as in
    // the default guest): no udev rename can race the agent configuring them (early,
    // under systemd).
    symlink(
        "/dev/null",
        &tree.join("etc/systemd/network/99-default.link"),
    )?;
    match init {
        Init::Systemd => return configure_systemd(tree, arch),
        // Both inits run Debian's checkroot.sh, whose remounts cost 6-7 s under TCG.
        Init::Sysvinit => {
            configure_checkroot(tree)?;
            if run_steps {
                configure_sysvinit(tree)?;
            }
        }
        Init::Openrc => {
            configure_checkroot(tree)?;
            configure_openrc(tree)?;
        }
        Init::Agent => {}
    }
    configure_inittab(tree)
}

/// What every image has: its root in fstab, a placeholder host name, no network
/// configuration of the build host, a fixed machine id.
fn configure_identity(tree: &Path) -> Result<(), Error> {
    // No check of the root (passno 0): every run boots a fresh overlay of an image
    // mke2fs just made, and stage 1 has mounted it read-write already. sysvinit's
    // checkroot.sh and checkfs.sh spent 10-20 s under TCG on it, and a failed check
    // waits for a root login.
    write_file(
        &tree.join("etc/fstab"),
        b"/dev/vda / ext4 rw,relatime 0 0\n",
        0o644,
    )?;
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
    // on the console) each time. Stage 1 replaces it with the machine's own before the
    // init starts (`flotilla.machine_id=`), which systemd then reads as an existing id.
    let id: String = Sha256::digest(b"flotilla debian image")[..16]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    write_file(
        &tree.join("etc/machine-id"),
        format!("{id}\n").as_bytes(),
        0o444,
    )?;
    Ok(())
}

/// sysvinit: the rcS scripts a test machine has no use for are disabled.
fn configure_sysvinit(tree: &Path) -> Result<(), Error> {
    for step in sysvinit_steps(tree) {
        run(
            Command::new("chroot")
                .arg(tree)
                .args(&step.argv)
                .env("LC_ALL", "C.UTF-8")
                .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
            &format!("{} (chroot {})", step.what, step.argv.join(" ")),
        )?;
    }
    Ok(())
}

/// The commands that disable, in a sysvinit tree, the scripts a test machine has no
/// use for ([`SYSVINIT_UNNEEDED`]), run in the tree.
pub(super) fn sysvinit_steps(tree: &Path) -> Vec<Step> {
    // Each script is a few processes under TCG, and those of rcS hold up the
    // agent's runlevel: drop those a throw-away test machine has no use for.
    // update-rc.d (insserv) also makes the boot order (/etc/init.d/.depend.*) again.
    SYSVINIT_UNNEEDED
        .iter()
        .filter(|script| tree.join("etc/init.d").join(script).exists())
        .map(|script| {
            Step::new(
                &format!("disabling {script}"),
                &["update-rc.d", "-f", script, "remove"],
            )
        })
        .collect()
}

/// OpenRC: coverage's variables let through to services; the LSB scripts a test
/// machine has no use for dropped from the runlevels.
fn configure_openrc(tree: &Path) -> Result<(), Error> {
    // OpenRC gives services only the variables rc.conf allows: let coverage's
    // through (the kernel command line sets them under `flotilla test --coverage`).
    let rc_conf = tree.join("etc/rc.conf");
    let mut text = std::fs::read_to_string(&rc_conf).unwrap_or_default();
    let names: Vec<String> = flotilla_coverage::guest_env()
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    text.push_str(&format!(
        "\n# flotilla: coverage data\nrc_env_allow=\"{}\"\n",
        names.join(" ")
    ));
    write_file(&rc_conf, text.as_bytes(), 0o644)?;
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
    Ok(())
}

/// systemd: a relative `/sbin/init`, the units and generators a test machine has no
/// use for masked (the getty of `arch`'s serial console too), the journal in memory.
fn configure_systemd(tree: &Path, arch: &Arch) -> Result<(), Error> {
    // systemd-sysv's /sbin/init points at an absolute path, which stage 1 (looking into
    // the image from the initramfs, before switch_root) would resolve in the wrong
    // root; a relative link means the same inside and out.
    let init = tree.join("usr/sbin/init");
    if std::fs::read_link(&init).is_ok_and(|t| t == Path::new("/lib/systemd/systemd")) {
        symlink("../lib/systemd/systemd", &init)?;
    }
    let system = tree.join("etc/systemd/system");
    let serial_getty = format!("serial-getty@{}.service", arch.console);
    for unit in SYSTEMD_UNNEEDED
        .iter()
        .copied()
        .chain([serial_getty.as_str()])
    {
        symlink("/dev/null", &system.join(unit))?;
    }
    let generators = tree.join("etc/systemd/system-generators");
    for generator in SYSTEMD_GENERATORS_UNNEEDED {
        symlink("/dev/null", &generators.join(generator))?;
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

/// Units a systemd test machine is spared at boot (masked). The agent starts early
/// anyway (see its unit); these are what `systemctl is-system-running --wait` would
/// otherwise wait for, each a process or more on an emulated CPU.
const SYSTEMD_UNNEEDED: &[&str] = &[
    // Never wait for a person at the console: no first-boot questions, no login
    // prompts on the serial console (the driver's log; its getty, named after the
    // architecture's console, is added by `configure_systemd`) or tty2-6 (tty1 keeps
    // its getty, for machines with a screen).
    "systemd-firstboot.service",
    "getty-static.service",
    // Periodic jobs only cost CPU under emulation; e2scrub_reap alone takes 15 s
    // at every boot under TCG.
    "apt-daily.timer",
    "apt-daily-upgrade.timer",
    "dpkg-db-backup.timer",
    "e2scrub_all.timer",
    "e2scrub_reap.service",
    "fstrim.timer",
    "systemd-tmpfiles-clean.timer",
    // State carried from boot to boot, on a disk thrown away after each run: the
    // random seed (virtio-rng feeds the kernel), login records, the journal's flush
    // to /var (it is volatile).
    "systemd-random-seed.service",
    "systemd-update-utmp.service",
    "systemd-update-utmp-runlevel.service",
    "systemd-journal-flush.service",
    // Stage 1 mounted the root read-write as fstab says, and the image's users were
    // made when its packages were installed.
    "systemd-remount-fs.service",
    "systemd-sysusers.service",
    // Kernel facilities of no use to a test guest by default (a test can still
    // mount or load them): debugfs and tracefs, huge pages, EFI's pstore (the
    // machines boot without EFI).
    "sys-kernel-debug.mount",
    "sys-kernel-tracing.mount",
    "dev-hugepages.mount",
    "modprobe@efi_pstore.service",
    "systemd-pstore.service",
    // Modules loaded on first use of their device nodes anyway (kmod-static-nodes
    // makes /dev/loop-control and /dev/mapper/control). configfs and fuse stay: their
    // control file systems are mounted at boot only when the module is there.
    "modprobe@dm_mod.service",
    "modprobe@loop.service",
];

/// systemd's generators that have nothing to generate on a test machine (masked in
/// `/etc/systemd/system-generators`). Each is a process that links systemd's shared
/// library before any unit starts: about 0.13 s apiece under TCG, 1.6 s for the 12
/// of them (bookworm's systemd 252; trixie's 257 has two more). Kept: fstab, sysv (packages with only an init script), rc-local,
/// cryptsetup (`/etc/crypttab`), debug (`systemd.mask=`, `systemd.wants=` in a
/// machine's `kernel_args`).
const SYSTEMD_GENERATORS_UNNEEDED: &[&str] = &[
    // The root is a bare ext4 disk: no GPT partitions to discover, nothing to resume
    // from, no offline update, no dm-verity or dm-integrity set up from the command
    // line or an integritytab.
    "systemd-gpt-auto-generator",
    "systemd-hibernate-resume-generator",
    "systemd-system-update-generator",
    "systemd-veritysetup-generator",
    "systemd-integritysetup-generator",
    // Login prompts on the consoles (see serial-getty above).
    "systemd-getty-generator",
    // `systemd.run=` on the kernel command line, which the driver never passes.
    "systemd-run-generator",
    // systemd 257 (trixie): no TPM to measure into, and no sshd on AF_VSOCK or a local
    // socket (a package's own ssh.service still starts as Debian enables it). Masks of
    // generators bookworm's systemd lacks are harmless links.
    "systemd-tpm2-generator",
    "systemd-ssh-generator",
];

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

/// sysvinit's scripts a test machine is spared (the same as OpenRC's above): the clock
/// (the kernel reads the RTC at boot; hwclock.sh also writes it back at power-off), NFS
/// (none in fstab; `$remote_fs` lists both as optional), backlight, the random seed
/// saved on a disk that is thrown away (virtio-rng feeds the kernel), and the copy of
/// the kernel's messages into /var/log/dmesg (`dmesg` shows them, the console log keeps
/// them), which ran beside the agent in runlevel 2.
const SYSVINIT_UNNEEDED: &[&str] = &[
    "hwclock.sh",
    "brightness",
    "urandom",
    "mountnfs.sh",
    "mountnfs-bootclean.sh",
    "umountnfs.sh",
    "bootlogs",
];

/// The two lines by which Debian's checkroot.sh, once the root is read-write, remounts
/// the kernel's file systems (`/proc`, `/sys`, `/run`, `/run/lock`, `/dev/pts`,
/// `/dev/shm`) to apply their options from fstab and record them in `/etc/mtab`.
const CHECKROOT_REMOUNTS: [&str; 2] = [
    "\t/etc/init.d/mountkernfs.sh reload\n",
    "\t/etc/init.d/mountdevsubfs.sh reload\n",
];

/// Leaves out checkroot.sh's remounts of the kernel's file systems: with no fstab entry
/// for any of them (the image's fstab names only the root, and the spec's `files`
/// cannot replace it) and `/etc/mtab` a link to `/proc/mounts` (checkroot.sh makes it
/// one just before), they change nothing, but each of `domount`'s checks is a process
/// or more: 6-7 s of the boot under TCG, and mountkernfs.sh and mountdevsubfs.sh ran
/// just before. A checkroot.sh without those lines (another version) is left as it is.
fn configure_checkroot(tree: &Path) -> Result<(), Error> {
    let path = tree.join("etc/init.d/checkroot.sh");
    let Ok(text) = std::fs::read_to_string(&path) else {
        return Ok(());
    };
    if let Some(trimmed) = without_remounts(&text) {
        write_file(&path, trimmed.as_bytes(), 0o755)?;
    }
    Ok(())
}

/// `checkroot` without [`CHECKROOT_REMOUNTS`], or `None` when it lacks either line.
fn without_remounts(checkroot: &str) -> Option<String> {
    if !CHECKROOT_REMOUNTS.iter().all(|l| checkroot.contains(l)) {
        return None;
    }
    let mut text = checkroot.to_owned();
    for line in CHECKROOT_REMOUNTS {
        text = text.replacen(
            line,
            &format!(
                "\t: # flotilla: no remount, nothing to change ({})\n",
                line.trim()
            ),
            1,
        );
    }
    Some(text)
}

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
    fn checkroot_loses_its_remounts_only() {
        let checkroot = "\trm -f /run/rootdev\n\n\t# S01mountkernfs.sh\n\
                         \t/etc/init.d/mountkernfs.sh reload\n\t# S03mountdevsubfs.sh\n\
                         \t/etc/init.d/mountdevsubfs.sh reload\n\n}\n";
        let trimmed = without_remounts(checkroot).unwrap();
        assert!(!trimmed.contains("\t/etc/init.d/"), "{trimmed}");
        assert!(trimmed.contains("\trm -f /run/rootdev\n"), "{trimmed}");
        assert!(trimmed.ends_with("\n\n}\n"), "{trimmed}");
        assert_eq!(trimmed.lines().count(), checkroot.lines().count());
        // Another version of the script is left alone.
        assert_eq!(
            without_remounts("\t/etc/init.d/mountkernfs.sh reload\n"),
            None
        );
    }

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

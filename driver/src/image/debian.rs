//! `flotilla image debian`: a Debian bookworm disk image with the agent installed.
//!
//! The root tree comes from `debootstrap --variant=minbase` with the chosen [`Init`]
//! (systemd, sysvinit, or OpenRC driven by sysvinit), cached as a tarball under
//! the cache folder (`~/.cache/flotilla/debian`) keyed by the init and the package list, so a second build
//! only unpacks it.
//! The agent goes in with its own installer (`flotilla-agent install --root TREE`), the
//! host-cached kernel's modules go to `/lib/modules/<version>` (with `depmod`), and the
//! tree becomes an ext4 file system with `mke2fs -d` (no mounts, no loop devices),
//! converted to qcow2 with `qemu-img convert`. The image has no kernel of its own: the
//! driver boots the cached Debian cloud kernel with `root=/dev/vda`.
//!
//! ```no_run
//! # fn demo() -> Result<(), flotilla_driver::Error> {
//! use flotilla_driver::debian::{build, DebianOptions, Init};
//!
//! let options = DebianOptions {
//!     init: Init::Openrc,
//!     packages: vec!["curl".into()],
//!     size_mib: None,
//!     output: "debian.qcow2".into(),
//! };
//! let image = build(&options, |line| eprintln!("{line}"))?;
//! println!("{}", image.display());
//! # Ok(()) }
//! ```

use std::io::Write as _;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Instant;

use sha2::{Digest, Sha256};

use super::cache::{cache_dir, prune};
use super::kernel::Kernel;
use crate::error::Error;

/// The Debian release the images are made of.
pub const SUITE: &str = "bookworm";

/// Packages every image has, on top of debootstrap's `minbase` variant and its
/// [`Init::packages`].
pub const DEFAULT_PACKAGES: &[&str] = &["iproute2", "procps", "kmod", "udev"];

/// The init system of an image: what runs as PID 1 and starts the agent's service.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Init {
    /// systemd (`systemd-sysv`); the agent is a systemd unit.
    #[default]
    Systemd,
    /// sysvinit (`sysvinit-core`, with `sysv-rc` and `initscripts`); the agent is an
    /// init script in `/etc/rc2.d` to `rc5.d`.
    Sysvinit,
    /// Debian's OpenRC (`openrc`), run from sysvinit's `/etc/inittab`; the agent is an
    /// `openrc-run` script in the `default` runlevel.
    Openrc,
}

impl Init {
    /// Every choice, in the order `--help` lists them.
    pub const ALL: [Init; 3] = [Init::Systemd, Init::Sysvinit, Init::Openrc];

    /// The name on the command line (`--init NAME`).
    pub fn name(self) -> &'static str {
        match self {
            Init::Systemd => "systemd",
            Init::Sysvinit => "sysvinit",
            Init::Openrc => "openrc",
        }
    }

    /// What debootstrap installs for it. OpenRC conflicts with `sysv-rc`, which
    /// debootstrap's resolver always picks for `sysvinit-core`: `openrc` replaces it
    /// with apt in the tree afterwards.
    pub fn packages(self) -> &'static [&'static str] {
        match self {
            Init::Systemd => &["systemd-sysv"],
            Init::Sysvinit | Init::Openrc => &["sysvinit-core"],
        }
    }
}

impl std::fmt::Display for Init {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Init {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        Init::ALL
            .into_iter()
            .find(|i| i.name() == s)
            .ok_or_else(|| {
                Error::Image(format!(
                    "`{s}` is not an init system of a Debian image (systemd, sysvinit or openrc)"
                ))
            })
    }
}

/// Packages that make or run PID 1, chosen by [`Init`] and not by the package list.
const INIT_PACKAGES: &[&str] = &[
    "systemd-sysv",
    "sysvinit-core",
    "sysv-rc",
    "file-rc",
    "openrc",
];

/// Free space added to the tree's size when no size is given.
pub const DEFAULT_FREE_MIB: u64 = 512;

/// Bump when the cached tree's content changes for the same package list.
const TREE_LAYOUT: &str = "flotilla-debian-tree-1";

/// How many cached trees are kept (the newest).
const KEEP_TREES: usize = 4;

/// What to build.
#[derive(Debug, Clone)]
pub struct DebianOptions {
    /// The init system.
    pub init: Init,
    /// Packages installed on top of [`DEFAULT_PACKAGES`] and the init's.
    pub packages: Vec<String>,
    /// The file system's size; default: the tree plus [`DEFAULT_FREE_MIB`].
    pub size_mib: Option<u64>,
    /// The qcow2 image to write (replaced atomically if it exists).
    pub output: PathBuf,
}

/// Builds the image; returns its path. `log` gets one line per step.
pub fn build(options: &DebianOptions, log: impl Fn(&str)) -> Result<PathBuf, Error> {
    let started = Instant::now();
    let init = options.init;
    let packages = package_list(init, &options.packages)?;
    let output = absolute(&options.output)?;
    let out_dir = output
        .parent()
        .ok_or_else(|| Error::Image(format!("{} names no file", output.display())))?;
    if !out_dir.is_dir() {
        return Err(Error::Image(format!(
            "the output's folder {} does not exist",
            out_dir.display()
        )));
    }
    let debootstrap = tool("debootstrap", "debootstrap")?;
    let mke2fs = tool("mke2fs", "e2fsprogs")?;
    let qemu_img = tool("qemu-img", "qemu-utils")?;
    let depmod = tool("depmod", "kmod")?;
    let kernel = Kernel::locate()?;
    let agent = crate::host::agent_binary()?;

    let cache = cache_dir().join("debian");
    create_dir(&cache)?;
    // The work folder sits next to the cache, not in /tmp (often a small tmpfs).
    remove_stale_work(&cache);
    let work = tempfile::Builder::new()
        .prefix(&format!(".build-{}-", std::process::id()))
        .tempdir_in(&cache)
        .map_err(|source| Error::Io {
            what: format!("creating a work folder in {}", cache.display()),
            source,
        })?;
    let tree = work.path().join("tree");
    create_dir(&tree)?;

    // 1. The debootstrapped tree, from the cache or made now.
    let tarball = cache.join(format!("{SUITE}-{}.tar", cache_key(init, &packages)));
    if tarball.is_file() {
        let t = Instant::now();
        run(
            Command::new("tar")
                .args(["--extract", "--numeric-owner", "--same-permissions"])
                .args(["--xattrs", "--xattrs-include=*"])
                .arg("--file")
                .arg(&tarball)
                .arg("--directory")
                .arg(&tree),
            "unpacking the cached tree",
        )?;
        // Marks it as recently used for pruning.
        let _ = std::fs::File::options()
            .append(true)
            .open(&tarball)
            .and_then(|f| f.set_modified(std::time::SystemTime::now()));
        log(&format!(
            "debian: unpacked the cached {SUITE} tree {} in {:.1} s",
            tarball.display(),
            t.elapsed().as_secs_f64()
        ));
    } else {
        let t = Instant::now();
        let mirror = host_mirror();
        log(&format!(
            "debian: debootstrap {SUITE} ({init}: minbase + {}) from {}; this takes a few minutes",
            packages.join(","),
            mirror.as_deref().unwrap_or("debootstrap's default mirror")
        ));
        let mut cmd = Command::new(&debootstrap);
        cmd.args(["--variant=minbase", "--merged-usr"])
            .arg(format!("--include={}", packages.join(",")))
            .arg(SUITE)
            .arg(&tree);
        if let Some(mirror) = &mirror {
            cmd.arg(mirror);
        }
        if let Err(e) = run(&mut cmd, "debootstrap") {
            return Err(with_debootstrap_log(e, &tree));
        }
        if init == Init::Openrc {
            install_openrc(&tree)?;
        }
        // Downloaded packages are not part of the system.
        remove_dir_contents(&tree.join("var/cache/apt/archives"), ".deb")?;
        remove_dir_contents(&tree.join("var/lib/apt/lists"), "")?;
        log(&format!(
            "debian: debootstrap done in {:.1} s",
            t.elapsed().as_secs_f64()
        ));
        let tmp = cache.join(format!(
            ".{}.{}",
            tarball
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
            std::process::id()
        ));
        let saved = run(
            Command::new("tar")
                .args([
                    "--create",
                    "--numeric-owner",
                    "--xattrs",
                    "--xattrs-include=*",
                ])
                .arg("--file")
                .arg(&tmp)
                .arg("--directory")
                .arg(&tree)
                .arg("."),
            "saving the tree to the cache",
        )
        .and_then(|()| {
            std::fs::rename(&tmp, &tarball).map_err(|source| Error::Io {
                what: format!("renaming {} to {}", tmp.display(), tarball.display()),
                source,
            })
        });
        match saved {
            Ok(()) => {
                log(&format!("debian: cached the tree as {}", tarball.display()));
                prune(&cache, SUITE, ".tar", KEEP_TREES);
            }
            Err(e) => {
                // Not fatal: the next build debootstraps again.
                let _ = std::fs::remove_file(&tmp);
                log(&format!("debian: could not cache the tree: {e}"));
            }
        }
    }

    // 2. The agent, by its own installer.
    let t = Instant::now();
    let installer = work.path().join("flotilla-agent");
    write_file(&installer, &agent, 0o755)?;
    run(
        Command::new(&installer)
            .arg("install")
            .arg("--root")
            .arg(&tree),
        "flotilla-agent install",
    )?;
    let enabled = tree.join(match init {
        Init::Systemd => "etc/systemd/system/multi-user.target.wants/flotilla-agent.service",
        Init::Sysvinit => "etc/rc2.d/S99flotilla-agent",
        Init::Openrc => "etc/runlevels/default/flotilla-agent",
    });
    if std::fs::symlink_metadata(&enabled).is_err() {
        return Err(Error::Image(format!(
            "flotilla-agent install did not enable its {init} service ({} is missing)",
            enabled.display()
        )));
    }

    // 3. The kernel's modules, and their index for udev and modprobe in the guest.
    let modules = tree.join("lib/modules").join(&kernel.version);
    create_dir(&modules)?;
    let mut src = kernel.modules.clone().into_os_string();
    src.push("/.");
    run(
        Command::new("cp")
            .args(["--archive", "--no-preserve=ownership"])
            .arg(&src)
            .arg(&modules),
        "copying the kernel modules",
    )?;
    run(
        Command::new(&depmod)
            .arg("-b")
            .arg(&tree)
            .arg(&kernel.version),
        "depmod",
    )?;

    // 4. Configuration.
    configure(&tree, init)?;
    log(&format!(
        "debian: agent {}, modules of kernel {} and configuration in {:.1} s",
        env!("CARGO_PKG_VERSION"),
        kernel.version,
        t.elapsed().as_secs_f64()
    ));

    // 5. ext4 from the tree, then qcow2.
    let t = Instant::now();
    let tree_mib = tree_size(&tree)?.div_ceil(1 << 20);
    let size_mib = match options.size_mib {
        Some(size) if size < tree_mib + 16 => {
            return Err(Error::Image(format!(
                "--size {size} MiB is too small: the tree alone takes {tree_mib} MiB \
                 (ext4 needs some room on top)\nhint: leave --size out for {} MiB",
                default_size(tree_mib)
            )))
        }
        Some(size) => size,
        None => default_size(tree_mib),
    };
    let raw = work.path().join("root.ext4");
    let file = std::fs::File::create(&raw).map_err(|source| Error::Io {
        what: format!("creating {}", raw.display()),
        source,
    })?;
    file.set_len(size_mib << 20).map_err(|source| Error::Io {
        what: format!("sizing {} to {size_mib} MiB", raw.display()),
        source,
    })?;
    drop(file);
    run(
        Command::new(&mke2fs)
            .args(["-q", "-F", "-t", "ext4", "-L", "flotilla-root"])
            .args(["-E", "root_owner=0:0"])
            .arg("-d")
            .arg(&tree)
            .arg(&raw),
        "mke2fs",
    )?;
    let tmp_out = out_dir.join(format!(
        ".{}.{}.tmp",
        output
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        std::process::id()
    ));
    let converted = run(
        Command::new(&qemu_img)
            .args(["convert", "-f", "raw", "-O", "qcow2"])
            .arg(&raw)
            .arg(&tmp_out),
        "qemu-img convert",
    )
    .and_then(|()| {
        std::fs::rename(&tmp_out, &output).map_err(|source| Error::Io {
            what: format!("renaming {} to {}", tmp_out.display(), output.display()),
            source,
        })
    });
    if let Err(e) = converted {
        let _ = std::fs::remove_file(&tmp_out);
        return Err(e);
    }
    let on_disk = std::fs::metadata(&output).map(|m| m.len()).unwrap_or(0);
    log(&format!(
        "debian: ext4 of {size_mib} MiB ({tree_mib} MiB used) -> qcow2 of {} MiB in {:.1} s",
        on_disk.div_ceil(1 << 20),
        t.elapsed().as_secs_f64()
    ));
    log(&format!(
        "debian: built {} in {:.1} s",
        output.display(),
        started.elapsed().as_secs_f64()
    ));
    Ok(output)
}

/// The tree plus [`DEFAULT_FREE_MIB`], rounded up to 64 MiB.
fn default_size(tree_mib: u64) -> u64 {
    // ext4's own metadata (inode tables, journal) takes a few percent.
    (tree_mib + tree_mib / 10 + DEFAULT_FREE_MIB).div_ceil(64) * 64
}

/// The default packages, the init's and `extra`, sorted and without duplicates; names
/// are checked so nothing odd reaches debootstrap's command line.
pub fn package_list(init: Init, extra: &[String]) -> Result<Vec<String>, Error> {
    let mut all: Vec<String> = DEFAULT_PACKAGES
        .iter()
        .chain(init.packages())
        .map(|p| (*p).to_owned())
        .collect();
    for p in extra {
        let p = p.trim();
        if p.is_empty() {
            continue;
        }
        let valid = p.len() >= 2
            && p.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
            && p.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "+-.".contains(c));
        if !valid {
            return Err(Error::Image(format!(
                "`{p}` is not a Debian package name (lowercase letters, digits, `+`, `-`, `.`)"
            )));
        }
        // debootstrap cannot swap inits: it would fail late on a dpkg conflict.
        if INIT_PACKAGES.contains(&p) && !init.packages().contains(&p) {
            return Err(Error::Image(format!(
                "package `{p}` makes the init system, which is {init} in this image\n\
                 hint: choose the init with --init systemd|sysvinit|openrc"
            )));
        }
        all.push(p.to_owned());
    }
    all.sort();
    all.dedup();
    Ok(all)
}

/// The cache key of a debootstrapped tree: the suite, the variant, the init and the
/// packages.
pub fn cache_key(init: Init, packages: &[String]) -> String {
    let mut hasher = Sha256::new();
    hasher.update(TREE_LAYOUT);
    hasher.update(SUITE);
    hasher.update("minbase");
    hasher.update(init.name());
    hasher.update([0]);
    for p in packages {
        hasher.update(p.as_bytes());
        hasher.update([0]);
    }
    hasher.finalize()[..12]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The host's own Debian mirror for [`SUITE`] (the first `deb` source with that suite
/// and `main`), from `/etc/apt/sources.list` and `/etc/apt/sources.list.d`; `None`
/// lets debootstrap use its default.
pub fn host_mirror() -> Option<String> {
    let mut files = vec![PathBuf::from("/etc/apt/sources.list")];
    if let Ok(entries) = std::fs::read_dir("/etc/apt/sources.list.d") {
        let mut more: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
        more.sort();
        files.extend(more);
    }
    files.iter().find_map(|file| {
        let text = std::fs::read_to_string(file).ok()?;
        let name = file.to_string_lossy();
        if name.ends_with(".sources") {
            mirror_in_deb822(&text)
        } else if name.ends_with(".list") {
            mirror_in_one_line(&text)
        } else {
            None
        }
    })
}

fn usable_uri(uri: &str) -> bool {
    ["http://", "https://", "file:/"]
        .iter()
        .any(|s| uri.starts_with(s))
}

/// `deb [options] URI SUITE COMPONENT...` lines.
fn mirror_in_one_line(text: &str) -> Option<String> {
    text.lines().find_map(|line| {
        let line = line.split('#').next().unwrap_or("").trim();
        let mut words = line.split_whitespace();
        if words.next() != Some("deb") {
            return None;
        }
        let mut rest: Vec<&str> = words.collect();
        if rest.first().is_some_and(|w| w.starts_with('[')) {
            let end = rest.iter().position(|w| w.ends_with(']'))?;
            rest.drain(..=end);
        }
        match rest.as_slice() {
            [uri, suite, components @ ..]
                if *suite == SUITE && components.contains(&"main") && usable_uri(uri) =>
            {
                Some((*uri).to_owned())
            }
            _ => None,
        }
    })
}

/// deb822 stanzas (`Types:`, `URIs:`, `Suites:`, `Components:`).
fn mirror_in_deb822(text: &str) -> Option<String> {
    text.split("\n\n").find_map(|stanza| {
        let field = |key: &str| -> Vec<&str> {
            stanza
                .lines()
                .filter(|l| !l.trim_start().starts_with('#'))
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.trim().eq_ignore_ascii_case(key).then_some(v)
                })
                .map(|v| v.split_whitespace().collect())
                .unwrap_or_default()
        };
        if field("Enabled").first() == Some(&"no")
            || !field("Types").contains(&"deb")
            || !field("Suites").contains(&SUITE)
            || !field("Components").contains(&"main")
        {
            return None;
        }
        field("URIs")
            .into_iter()
            .find(|u| usable_uri(u))
            .map(str::to_owned)
    })
}

/// The files that make the tree a bootable guest of the driver.
fn configure(tree: &Path, init: Init) -> Result<(), Error> {
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

/// Swaps `sysv-rc` for `openrc` in a freshly debootstrapped tree, with the tree's own
/// apt and the package lists debootstrap left there. Its postinst moves the services
/// already enabled in `/etc/rc*.d` into OpenRC's runlevels.
fn install_openrc(tree: &Path) -> Result<(), Error> {
    run(
        Command::new("chroot")
            .arg(tree)
            .args([
                "apt-get",
                "install",
                "--yes",
                "--no-install-recommends",
                "openrc",
            ])
            .env("DEBIAN_FRONTEND", "noninteractive")
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
        "installing openrc in the tree (chroot apt-get install openrc)",
    )?;
    // apt's caches of the package lists (about 70 MiB); apt makes them again.
    remove_dir_contents(&tree.join("var/cache/apt"), ".bin")
}

/// Finds `name` in `PATH` or the sbin folders (root's tools are there).
fn tool(name: &str, package: &str) -> Result<PathBuf, Error> {
    crate::host::which_system_tool(name).ok_or_else(|| Error::Setup {
        what: format!("building a Debian image needs `{name}`, which is not installed"),
        hint: format!("apt-get install {package} (scripts/setup does)"),
    })
}

/// Runs `cmd`; a failure quotes the end of its output.
fn run(cmd: &mut Command, what: &str) -> Result<(), Error> {
    cmd.stdin(Stdio::null());
    let output: Output = cmd.output().map_err(|source| Error::Io {
        what: format!(
            "{what}: starting {}",
            Path::new(cmd.get_program()).display()
        ),
        source,
    })?;
    if output.status.success() {
        return Ok(());
    }
    let mut lines = tail(&output.stderr, 20);
    if lines.is_empty() {
        lines = tail(&output.stdout, 20);
    }
    Err(Error::Tool {
        what: what.to_owned(),
        status: crate::process::describe_status(output.status),
        output: lines,
    })
}

/// Adds the end of debootstrap's own log (where the real cause usually is).
fn with_debootstrap_log(e: Error, tree: &Path) -> Error {
    let Error::Tool {
        what,
        status,
        mut output,
    } = e
    else {
        return e;
    };
    // debootstrap names most failures itself ("E: ..."); the log helps when it did not.
    if !output.iter().any(|l| l.starts_with("E: ")) {
        if let Ok(log) = std::fs::read(tree.join("debootstrap/debootstrap.log")) {
            output.push("(end of debootstrap/debootstrap.log:)".into());
            output.extend(tail(&log, 15));
        }
    }
    Error::Tool {
        what,
        status,
        output,
    }
}

fn tail(bytes: &[u8], n: usize) -> Vec<String> {
    let text = String::from_utf8_lossy(bytes);
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    lines[lines.len().saturating_sub(n)..]
        .iter()
        .map(|l| (*l).to_owned())
        .collect()
}

/// Bytes the tree takes, counting whole 4 KiB blocks per file (as ext4 stores them).
fn tree_size(root: &Path) -> Result<u64, Error> {
    let mut total = 0u64;
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let entries = std::fs::read_dir(&dir).map_err(|source| Error::Io {
            what: format!("measuring {}", dir.display()),
            source,
        })?;
        for entry in entries.flatten() {
            let Ok(meta) = entry.metadata() else { continue };
            // One block per inode at least (directories, symlinks, small files).
            total += meta.len().div_ceil(4096).max(1) * 4096;
            if meta.is_dir() {
                stack.push(entry.path());
            }
        }
    }
    Ok(total)
}

fn absolute(path: &Path) -> Result<PathBuf, Error> {
    std::path::absolute(path).map_err(|source| Error::Io {
        what: format!("resolving {}", path.display()),
        source,
    })
}

fn create_dir(dir: &Path) -> Result<(), Error> {
    std::fs::create_dir_all(dir).map_err(|source| Error::Io {
        what: format!("creating {}", dir.display()),
        source,
    })
}

fn write_file(path: &Path, data: &[u8], mode: u32) -> Result<(), Error> {
    let write = || -> std::io::Result<()> {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        // A symlink in the tree (e.g. resolv.conf) must not lead outside it.
        if std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink()) {
            std::fs::remove_file(path)?;
        }
        let mut f = std::fs::File::create(path)?;
        f.write_all(data)?;
        f.set_permissions(std::fs::Permissions::from_mode(mode))
    };
    write().map_err(|source| Error::Io {
        what: format!("writing {}", path.display()),
        source,
    })
}

fn symlink(target: &str, link: &Path) -> Result<(), Error> {
    let make = || -> std::io::Result<()> {
        if let Some(parent) = link.parent() {
            std::fs::create_dir_all(parent)?;
        }
        if std::fs::symlink_metadata(link).is_ok() {
            std::fs::remove_file(link)?;
        }
        std::os::unix::fs::symlink(target, link)
    };
    make().map_err(|source| Error::Io {
        what: format!("linking {} to {target}", link.display()),
        source,
    })
}

/// Removes the files in `dir` whose names end with `suffix` (all with ""); a missing
/// folder is fine.
fn remove_dir_contents(dir: &Path, suffix: &str) -> Result<(), Error> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Ok(());
    };
    for entry in entries.flatten() {
        let is_file = entry.file_type().is_ok_and(|t| t.is_file());
        if is_file && entry.file_name().to_string_lossy().ends_with(suffix) {
            std::fs::remove_file(entry.path()).map_err(|source| Error::Io {
                what: format!("removing {}", entry.path().display()),
                source,
            })?;
        }
    }
    Ok(())
}

/// Removes work folders (`.build-<pid>-*`) and half-written tarballs (`.<name>.<pid>`)
/// of builds whose process is gone (killed, or interrupted with Ctrl-C).
fn remove_stale_work(cache: &Path) {
    let Ok(entries) = std::fs::read_dir(cache) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let pid = if let Some(rest) = name.strip_prefix(".build-") {
            rest.split('-').next()
        } else if name.starts_with('.') && name.contains(".tar.") {
            name.rsplit('.').next()
        } else {
            None
        };
        let Some(pid) = pid.and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        let path = entry.path();
        let _ = if path.is_dir() {
            std::fs::remove_dir_all(&path)
        } else {
            std::fs::remove_file(&path)
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn package_lists_are_sorted_checked_and_keyed() {
        let list =
            package_list(Init::Systemd, &["curl".into(), "udev".into(), " ".into()]).unwrap();
        assert_eq!(
            list,
            ["curl", "iproute2", "kmod", "procps", "systemd-sysv", "udev"]
        );
        let same = package_list(Init::Systemd, &["udev".into(), "curl".into()]).unwrap();
        let key = |init, list: &[String]| cache_key(init, list);
        assert_eq!(key(Init::Systemd, &list), key(Init::Systemd, &same));
        let bare = package_list(Init::Systemd, &[]).unwrap();
        assert_ne!(key(Init::Systemd, &list), key(Init::Systemd, &bare));
        for bad in ["Curl", "a b", "--foo", "x;rm", "c"] {
            let e = package_list(Init::Systemd, &[bad.into()])
                .unwrap_err()
                .to_string();
            assert!(e.contains("is not a Debian package name"), "{bad}: {e}");
        }
    }

    #[test]
    fn the_init_chooses_packages_and_keys_the_cache() {
        let sysv = package_list(Init::Sysvinit, &[]).unwrap();
        assert_eq!(
            sysv,
            ["iproute2", "kmod", "procps", "sysvinit-core", "udev"]
        );
        // OpenRC has the same debootstrap list (openrc comes after), not the same tree.
        let openrc = package_list(Init::Openrc, &[]).unwrap();
        assert_eq!(openrc, sysv);
        assert_ne!(
            cache_key(Init::Sysvinit, &sysv),
            cache_key(Init::Openrc, &openrc)
        );
        // A package of the init itself is fine; another init's is refused, with a hint.
        assert_eq!(
            package_list(Init::Sysvinit, &["sysvinit-core".into()]).unwrap(),
            sysv
        );
        for (init, bad) in [
            (Init::Sysvinit, "systemd-sysv"),
            (Init::Systemd, "sysvinit-core"),
            (Init::Systemd, "openrc"),
            (Init::Openrc, "openrc"),
            (Init::Openrc, "sysv-rc"),
        ] {
            let e = package_list(init, &[bad.into()]).unwrap_err().to_string();
            assert!(
                e.contains(&format!(
                    "package `{bad}` makes the init system, which is {init}"
                )),
                "{e}"
            );
            assert!(e.contains("hint: choose the init with --init"), "{e}");
        }
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

    #[test]
    fn inits_parse_by_name() {
        for init in Init::ALL {
            assert_eq!(init.name().parse::<Init>().unwrap(), init);
        }
        assert_eq!(Init::default(), Init::Systemd);
        let e = "upstart".parse::<Init>().unwrap_err().to_string();
        assert!(
            e.contains(
                "`upstart` is not an init system of a Debian image (systemd, sysvinit or openrc)"
            ),
            "{e}"
        );
    }

    #[test]
    fn mirrors_are_read_from_both_source_formats() {
        let one_line = "# comment\ndeb-src http://src.example/debian bookworm main\n\
                        deb [arch=amd64 signed-by=/k.gpg] http://a.example/debian bookworm main contrib\n";
        assert_eq!(
            mirror_in_one_line(one_line).as_deref(),
            Some("http://a.example/debian")
        );
        assert_eq!(
            mirror_in_one_line("deb http://s.example/ bookworm-security main\n"),
            None
        );
        let deb822 = "Types: deb\nURIs: http://b.example/debian-security\n\
                      Suites: bookworm-security\nComponents: main\n\n\
                      Types: deb deb-src\n# URIs: http://commented.example/\n\
                      URIs: http://c.example/debian\nSuites: bookworm bookworm-updates\n\
                      Components: main\n";
        assert_eq!(
            mirror_in_deb822(deb822).as_deref(),
            Some("http://c.example/debian")
        );
        assert_eq!(
            mirror_in_deb822("Types: deb\nURIs: http://d/\nSuites: nodistro\nComponents: main\n"),
            None
        );
    }

    #[test]
    fn default_size_leaves_room() {
        assert!(default_size(300) >= 300 + DEFAULT_FREE_MIB);
        assert_eq!(default_size(300) % 64, 0);
    }
}

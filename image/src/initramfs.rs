//! The default image: a newc initramfs holding busybox, the agent as `/init`, and the
//! kernel modules the guest needs, with their dependencies resolved from each module's
//! own `.modinfo` section. Images are cached by the hash of everything that goes in.
//!
//! The modules go in without their appended signatures: checking one costs the guest
//! about 7 ms under TCG, some 0.1 s per boot in all. The kernel then loads them as
//! unsigned modules (allowed unless it enforces signatures, e.g. under Secure Boot
//! lockdown, which these machines never boot with) and sets taint flag E.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use sha2::{Digest, Sha256};

use super::busybox::busybox;
use super::kernel::Kernel;
use super::modules::{resolve_modules, strip_module_signature};
use crate::error::Error;
use flotilla_agent::cpio::Cpio;
use flotilla_host::arch::ARCHES;
use flotilla_host::cache::{cache_dir, prune};

/// Bump when the image layout changes so cached images are rebuilt.
const LAYOUT_VERSION: &str = "flotilla-initramfs-2";

/// How many built images the cache keeps (the newest): the three kinds (default,
/// with disks, stage 1) for two architectures, the Debian builder VM's of another
/// architecture, and two spare.
const KEEP_IMAGES: usize = 10;

/// Modules the default image loads at boot (dependencies are added automatically).
/// Modules built into the kernel are skipped.
pub const DEFAULT_MODULES: &[&str] = &[
    "virtio_pci",
    "virtio_console",
    "virtio_net",
    "virtio_rng",
    // virtio_blk only where needed (see `disk_initramfs`): it costs boot time.
];

/// Builds (or finds in the cache) the default initramfs; returns its path.
pub fn default_initramfs(kernel: &Kernel, agent: &[u8]) -> Result<PathBuf, Error> {
    initramfs(kernel, agent, DEFAULT_MODULES)
}

/// [`default_initramfs`] plus `virtio_blk`, for machines with extra disks but no image.
pub fn disk_initramfs(kernel: &Kernel, agent: &[u8]) -> Result<PathBuf, Error> {
    let mut modules = DEFAULT_MODULES.to_vec();
    modules.push("virtio_blk");
    initramfs(kernel, agent, &modules)
}

/// Modules stage 1 loads for every disk image: the disk (ext4 is built in) and the
/// default guest's. An image whose agent is PID 1 needs them all, and an init
/// system's agent finds its port at once instead of after udev's coldplug, which
/// would load them later from the image (compressed, with signatures to check).
pub const STAGE1_MODULES: &[&str] = &[
    "virtio_pci",
    "virtio_blk",
    "virtio_console",
    "virtio_net",
    "virtio_rng",
];

/// The pvpanic device's driver, which every image loads where the architecture has it
/// ([`Arch::pvpanic`](flotilla_host::arch::Arch)).
const PVPANIC_MODULE: &str = "pvpanic_pci";

/// The file whose presence in an image (`flotilla image debian --init agent` writes it)
/// makes stage 1 start the agent as PID 1 instead of the image's `/sbin/init`.
pub const AGENT_INIT_MARKER: &str = "etc/flotilla/agent-init";

/// Stage 1 for machines booting a disk `image`: a busybox `/init` that loads the
/// modules, mounts `/dev/vda` and hands over to the image's `/sbin/init`, whose agent
/// (installed as a service) then reports readiness; or, in an image with
/// [`AGENT_INIT_MARKER`], to the agent itself as PID 1.
pub const STAGE1_INIT: &str = r#"#!/bin/busybox sh
export PATH=/bin:/sbin:/usr/bin:/usr/sbin
busybox mount -t proc proc /proc
busybox mount -t sysfs sysfs /sys
busybox mount -t devtmpfs devtmpfs /dev
fail() { echo "flotilla stage 1: $*" > /dev/console; busybox poweroff -f; }
while read -r m; do busybox insmod "$m" || fail "cannot load $m"; done < /etc/flotilla/modules
i=0
while [ ! -b /dev/vda ]; do
    i=$((i + 1)); [ $i -gt 1000 ] && fail "no disk /dev/vda after 10 s"
    busybox usleep 10000
done
busybox mkdir -p /newroot
busybox mount -t ext4 -o rw /dev/vda /newroot || fail "cannot mount /dev/vda"
if [ -e /newroot/@MARKER@ ]; then
    init=/usr/local/bin/flotilla-agent
    [ -x /newroot$init ] || fail "the image has @MARKER@ but no $init"
else
    init=/sbin/init
    # /sbin/init is often an absolute link (into the image, not into this initramfs).
    [ -x /newroot$init ] || [ -L /newroot$init ] || fail "the image has no $init"
fi
# An image of another architecture: its init cannot run here. Links are followed
# inside the image.
real=$init
n=0
while [ -L "/newroot$real" ] && [ $n -lt 20 ]; do
    n=$((n + 1))
    link=$(busybox readlink "/newroot$real")
    case "$link" in
    /*) real=$link ;;
    *) real=$(busybox dirname "$real")/$link ;;
    esac
done
elf_machine() { busybox od -An -tu2 -j18 -N2 "$1" | busybox tr -d ' '; }
arch_of() { case "$1" in @ARCH_CASES@ *) echo "ELF machine $1" ;; esac; }
if [ "$(busybox head -c 4 "/newroot$real" | busybox tail -c 3)" = ELF ]; then
    theirs=$(elf_machine "/newroot$real")
    ours=$(elf_machine /bin/busybox)
    [ "$theirs" = "$ours" ] ||
        fail "the image is for $(arch_of "$theirs") ($init is), and this machine is $(arch_of "$ours"): give the machine the image's arch"
fi
# This machine's own id (the image's is every machine's), before the init reads it.
for word in $(busybox cat /proc/cmdline); do
    case "$word" in
    flotilla.machine_id=*)
        id=${word#flotilla.machine_id=}
        [ -d /newroot/etc ] && { echo "$id" > /newroot/etc/machine-id ||
            echo "flotilla stage 1: cannot write /etc/machine-id" > /dev/console; }
        ;;
    esac
done
busybox umount /proc /sys
busybox mount --move /dev /newroot/dev
exec busybox switch_root /newroot $init
"#;

/// Builds (or finds in the cache) the stage-1 initramfs for disk images.
pub fn stage1_initramfs(kernel: &Kernel) -> Result<PathBuf, Error> {
    let cases: String = ARCHES
        .iter()
        .map(|a| format!("{}) echo {} ;; ", a.elf_machine, a.name))
        .collect();
    let init = STAGE1_INIT
        .replace("@MARKER@", AGENT_INIT_MARKER)
        .replace("@ARCH_CASES@", &cases);
    initramfs(kernel, init.as_bytes(), STAGE1_MODULES)
}

/// The initramfs of the Debian image builder's VM (`debian/builder_vm.rs`): busybox,
/// the shell script `init` as `/init`, and `modules` to load.
pub(crate) fn builder_initramfs(
    kernel: &Kernel,
    init: &str,
    modules: &[&str],
) -> Result<PathBuf, Error> {
    initramfs(kernel, init.as_bytes(), modules)
}

/// An initramfs with busybox, `init` as `/init`, and `modules` (with their
/// dependencies) listed in load order in `/etc/flotilla/modules`.
fn initramfs(kernel: &Kernel, agent: &[u8], wanted_modules: &[&str]) -> Result<PathBuf, Error> {
    let (busybox, applets) = busybox(kernel.arch)?;
    let mut wanted_modules = wanted_modules.to_vec();
    if kernel.arch.pvpanic {
        wanted_modules.push(PVPANIC_MODULE);
    }
    let modules = resolve_modules(&kernel.modules, &wanted_modules)?;

    let mut hasher = Sha256::new();
    hasher.update(LAYOUT_VERSION);
    hasher.update(kernel.arch.name);
    hasher.update(kernel.version.as_bytes());
    for bytes in [agent, &busybox[..]] {
        hasher.update((bytes.len() as u64).to_le_bytes());
        hasher.update(bytes);
    }
    hasher.update(applets.join("\n"));
    let mut module_files = Vec::new();
    for rel in &modules {
        let mut bytes = std::fs::read(kernel.modules.join(rel)).map_err(|source| Error::Io {
            what: format!("reading module {}", rel.display()),
            source,
        })?;
        strip_module_signature(&mut bytes);
        hasher.update(rel.to_string_lossy().as_bytes());
        hasher.update((bytes.len() as u64).to_le_bytes());
        hasher.update(&bytes);
        module_files.push((rel.clone(), bytes));
    }
    let digest = hasher.finalize();
    let hex: String = digest[..12].iter().map(|b| format!("{b:02x}")).collect();
    let images = cache_dir().join("images");
    let path = images.join(format!("initramfs-{hex}.cpio"));
    if path.is_file() {
        // Refresh its time: pruning keeps the newest.
        let _ = std::fs::File::open(&path).and_then(|f| f.set_modified(SystemTime::now()));
        return Ok(path);
    }

    let mut cpio = Cpio::default();
    for dir in [
        "bin",
        "sbin",
        "usr",
        "usr/bin",
        "usr/sbin",
        "etc",
        "etc/flotilla",
        "dev",
        "proc",
        "sys",
        "tmp",
        "run",
        "root",
        "var",
        "lib",
        "lib/modules",
    ] {
        cpio.dir(dir, if dir == "tmp" { 0o1777 } else { 0o755 });
    }
    cpio.char_device("dev/console", 0o600, 5, 1);
    cpio.char_device("dev/null", 0o666, 1, 3);
    cpio.file("init", 0o755, agent);
    cpio.file("bin/busybox", 0o755, &busybox);
    for applet in &applets {
        if applet != "bin/busybox" {
            cpio.symlink(applet, "/bin/busybox");
        }
    }
    cpio.file("etc/passwd", 0o644, b"root:x:0:0:root:/root:/bin/sh\n");
    cpio.file("etc/group", 0o644, b"root:x:0:\n");
    cpio.file("etc/hosts", 0o644, b"127.0.0.1 localhost\n::1 localhost\n");
    let mut list = String::new();
    let mut made = BTreeSet::new();
    for (rel, bytes) in &module_files {
        let in_guest = Path::new("lib/modules").join(&kernel.version).join(rel);
        for parent in in_guest
            .ancestors()
            .skip(1)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
        {
            let p = parent.to_string_lossy().into_owned();
            if !p.is_empty() && made.insert(p.clone()) {
                cpio.dir(&p, 0o755);
            }
        }
        cpio.file(&in_guest.to_string_lossy(), 0o644, bytes);
        list.push('/');
        list.push_str(&in_guest.to_string_lossy());
        list.push('\n');
    }
    cpio.file("etc/flotilla/modules", 0o644, list.as_bytes());
    let bytes = cpio.finish();

    std::fs::create_dir_all(&images).map_err(|source| Error::Io {
        what: format!("creating {}", images.display()),
        source,
    })?;
    // Unique per writer: several threads or processes may build the same image at once.
    static WRITERS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let writer = WRITERS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let tmp = images.join(format!(".initramfs-{hex}.{}.{writer}", std::process::id()));
    std::fs::write(&tmp, &bytes)
        .and_then(|()| std::fs::rename(&tmp, &path))
        .map_err(|source| Error::Io {
            what: format!("writing {}", path.display()),
            source,
        })?;
    tracing::info!("built initramfs {}", path.display());
    prune(&images, "initramfs-", ".cpio", KEEP_IMAGES);
    Ok(path)
}

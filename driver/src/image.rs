//! The default image: a newc initramfs holding busybox, the agent as `/init`, and the
//! kernel modules the guest needs, with their dependencies resolved from each module's
//! own `.modinfo` section. Images are cached by the hash of everything that goes in.
//!
//! The modules go in without their appended signatures: checking one costs the guest
//! about 7 ms under TCG, some 0.1 s per boot in all. The kernel then loads them as
//! unsigned modules (allowed unless it enforces signatures, e.g. under Secure Boot
//! lockdown, which these machines never boot with) and sets taint flag E.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::Error;

/// Bump when the image layout changes so cached images are rebuilt.
const LAYOUT_VERSION: &str = "flotilla-initramfs-2";

/// How many built images the cache keeps (the newest).
const KEEP_IMAGES: usize = 4;

/// Modules the default image loads at boot (dependencies are added automatically).
/// Modules built into the kernel are skipped.
pub const DEFAULT_MODULES: &[&str] = &[
    "virtio_pci",
    "virtio_console",
    "virtio_net",
    "virtio_rng",
    "pvpanic_pci",
    // virtio_blk only where needed (see `disk_initramfs`): it costs boot time.
];

/// The cache directory: `$FLOTILLA_CACHE`, else `$XDG_CACHE_HOME/flotilla`, else
/// `~/.cache/flotilla`. `scripts/setup` uses the same rule.
pub fn cache_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("FLOTILLA_CACHE") {
        return PathBuf::from(dir);
    }
    if let Some(dir) = std::env::var_os("XDG_CACHE_HOME") {
        return PathBuf::from(dir).join("flotilla");
    }
    let home = std::env::var_os("HOME").unwrap_or_else(|| "/root".into());
    PathBuf::from(home).join(".cache").join("flotilla")
}

/// A kernel unpacked from a Debian package: `vmlinuz`, `modules/`, `version`.
#[derive(Debug, Clone)]
pub struct Kernel {
    pub dir: PathBuf,
    pub image: PathBuf,
    pub modules: PathBuf,
    pub version: String,
}

impl Kernel {
    /// The kernel in `$FLOTILLA_KERNEL_DIR`, else `<cache>/kernel/current`.
    pub fn locate() -> Result<Kernel, Error> {
        let dir = std::env::var_os("FLOTILLA_KERNEL_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| cache_dir().join("kernel").join("current"));
        Kernel::at(&dir)
    }

    pub fn at(dir: &Path) -> Result<Kernel, Error> {
        let image = dir.join("vmlinuz");
        if !image.is_file() {
            return Err(Error::Setup {
                what: format!("no kernel at {}", image.display()),
                hint: "run scripts/setup to fetch Debian's cloud kernel".into(),
            });
        }
        let version = std::fs::read_to_string(dir.join("version"))
            .map(|v| v.trim().to_owned())
            .unwrap_or_else(|_| "unknown".into());
        Ok(Kernel {
            dir: dir.to_path_buf(),
            image,
            modules: dir.join("modules"),
            version,
        })
    }
}

/// Where the static busybox comes from: `$FLOTILLA_BUSYBOX`, else `/bin/busybox`.
pub fn busybox_path() -> PathBuf {
    std::env::var_os("FLOTILLA_BUSYBOX")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/bin/busybox"))
}

/// Whether an ELF file is statically linked (has no PT_INTERP program header).
pub fn is_static_elf(bytes: &[u8]) -> bool {
    let Some(elf) = Elf::parse(bytes) else {
        return false;
    };
    !elf.has_interpreter()
}

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

/// Modules stage 1 needs to reach a disk image's root file system (ext4 is built in).
pub const STAGE1_MODULES: &[&str] = &["virtio_pci", "virtio_blk"];

/// Stage 1 for machines booting a disk `image`: a busybox `/init` that loads the virtio
/// disk driver, mounts `/dev/vda` and hands over to the image's `/sbin/init`, whose
/// agent (installed as a service) then reports readiness.
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
# /sbin/init is often an absolute link (into the image, not into this initramfs).
[ -x /newroot/sbin/init ] || [ -L /newroot/sbin/init ] || fail "the image has no /sbin/init"
busybox umount /proc /sys
busybox mount --move /dev /newroot/dev
exec busybox switch_root /newroot /sbin/init
"#;

/// Builds (or finds in the cache) the stage-1 initramfs for disk images.
pub fn stage1_initramfs(kernel: &Kernel) -> Result<PathBuf, Error> {
    initramfs(kernel, STAGE1_INIT.as_bytes(), STAGE1_MODULES)
}

/// An initramfs with busybox, `init` as `/init`, and `modules` (with their
/// dependencies) listed in load order in `/etc/flotilla/modules`.
fn initramfs(kernel: &Kernel, agent: &[u8], wanted_modules: &[&str]) -> Result<PathBuf, Error> {
    let busybox_path = busybox_path();
    let busybox = std::fs::read(&busybox_path).map_err(|source| Error::Io {
        what: format!("reading busybox {}", busybox_path.display()),
        source,
    })?;
    if !is_static_elf(&busybox) {
        return Err(Error::Setup {
            what: format!("{} is not a static binary", busybox_path.display()),
            hint: "install busybox-static (scripts/setup does)".into(),
        });
    }
    let modules = resolve_modules(&kernel.modules, wanted_modules)?;
    let applets = busybox_applets(&busybox_path)?;

    let mut hasher = Sha256::new();
    hasher.update(LAYOUT_VERSION);
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

/// Removes all but the `keep` most recently modified files in `dir` whose names start
/// with `prefix` and end with `suffix` (cache pruning).
pub(crate) fn prune(dir: &Path, prefix: &str, suffix: &str, keep: usize) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let mut found: Vec<(std::time::SystemTime, PathBuf)> = entries
        .flatten()
        .filter(|e| {
            let name = e.file_name();
            let name = name.to_string_lossy();
            name.starts_with(prefix) && name.ends_with(suffix)
        })
        .filter_map(|e| Some((e.metadata().ok()?.modified().ok()?, e.path())))
        .collect();
    found.sort_by_key(|f| std::cmp::Reverse(f.0));
    for (_, old) in found.into_iter().skip(keep) {
        let _ = std::fs::remove_file(old);
    }
}

fn busybox_applets(busybox: &Path) -> Result<Vec<String>, Error> {
    let out = std::process::Command::new(busybox)
        .arg("--list-full")
        .output()
        .map_err(|source| Error::Io {
            what: format!("running {} --list-full", busybox.display()),
            source,
        })?;
    let text = String::from_utf8_lossy(&out.stdout);
    let mut applets: Vec<String> = text
        .lines()
        .map(|l| l.trim().trim_start_matches('/').to_owned())
        .filter(|l| !l.is_empty() && !l.contains(".."))
        .collect();
    applets.sort();
    applets.dedup();
    if applets.is_empty() {
        return Err(Error::Setup {
            what: format!("{} --list-full listed no applets", busybox.display()),
            hint: "install busybox-static".into(),
        });
    }
    Ok(applets)
}

/// The trailer the kernel's `sign-file` appends to a signed module.
const MODULE_SIG_MAGIC: &[u8] = b"~Module signature appended~\n";

/// Cuts a plain (uncompressed) module's appended signature off: the signature, then a
/// 12-byte `struct module_signature` ending in the signature's big-endian length, then
/// [`MODULE_SIG_MAGIC`]. Anything else (unsigned, compressed, malformed) is left as is.
/// Returns whether it cut.
pub fn strip_module_signature(module: &mut Vec<u8>) -> bool {
    const INFO: usize = 12;
    let Some(info_end) = module.len().checked_sub(MODULE_SIG_MAGIC.len()) else {
        return false;
    };
    if !module.ends_with(MODULE_SIG_MAGIC) || info_end < INFO {
        return false;
    }
    let mut len = [0u8; 4];
    len.copy_from_slice(&module[info_end - 4..info_end]);
    let sig_len = u32::from_be_bytes(len) as usize;
    match (info_end - INFO).checked_sub(sig_len) {
        Some(end) if end > 0 => {
            module.truncate(end);
            true
        }
        _ => false,
    }
}

/// Resolves `wanted` modules and their dependencies into a load order (dependencies
/// first), as paths relative to `modules_dir`. Built-in modules are skipped.
pub fn resolve_modules(modules_dir: &Path, wanted: &[&str]) -> Result<Vec<PathBuf>, Error> {
    let mut index: HashMap<String, PathBuf> = HashMap::new();
    let kernel_dir = modules_dir.join("kernel");
    let mut stack = vec![kernel_dir.clone()];
    while let Some(dir) = stack.pop() {
        let entries = std::fs::read_dir(&dir).map_err(|source| Error::Io {
            what: format!("listing modules in {}", dir.display()),
            source,
        })?;
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if let Some(name) = module_name(&path) {
                if let Ok(rel) = path.strip_prefix(modules_dir) {
                    index.insert(name, rel.to_path_buf());
                }
            }
        }
    }
    let builtin: BTreeSet<String> = std::fs::read_to_string(modules_dir.join("modules.builtin"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| module_name(Path::new(l)))
        .collect();

    let mut order = Vec::new();
    let mut state: BTreeMap<String, bool> = BTreeMap::new(); // false: visiting, true: done
    for name in wanted {
        visit(
            &normalize(name),
            None,
            modules_dir,
            &index,
            &builtin,
            &mut state,
            &mut order,
        )?;
    }
    Ok(order)
}

fn visit(
    name: &str,
    needed_by: Option<&str>,
    modules_dir: &Path,
    index: &HashMap<String, PathBuf>,
    builtin: &BTreeSet<String>,
    state: &mut BTreeMap<String, bool>,
    order: &mut Vec<PathBuf>,
) -> Result<(), Error> {
    match state.get(name) {
        Some(true) => return Ok(()),
        Some(false) => {
            return Err(Error::Image(format!(
                "module dependency cycle through `{name}`"
            )))
        }
        None => {}
    }
    if builtin.contains(name) {
        state.insert(name.to_owned(), true);
        return Ok(());
    }
    let Some(rel) = index.get(name) else {
        let by = needed_by.map_or(String::new(), |m| format!(" (needed by `{m}`)"));
        return Err(Error::Image(format!(
            "kernel module `{name}`{by} is neither in {} nor built in",
            modules_dir.display()
        )));
    };
    state.insert(name.to_owned(), false);
    let bytes = std::fs::read(modules_dir.join(rel)).map_err(|source| Error::Io {
        what: format!("reading module {}", rel.display()),
        source,
    })?;
    let info = modinfo(&bytes).ok_or_else(|| {
        Error::Image(format!(
            "module {} has no readable .modinfo section",
            rel.display()
        ))
    })?;
    for dep in info
        .iter()
        .filter(|(k, _)| k == "depends")
        .flat_map(|(_, v)| v.split(','))
        .map(str::trim)
        .filter(|d| !d.is_empty())
    {
        visit(
            &normalize(dep),
            Some(name),
            modules_dir,
            index,
            builtin,
            state,
            order,
        )?;
    }
    state.insert(name.to_owned(), true);
    order.push(rel.clone());
    Ok(())
}

fn normalize(name: &str) -> String {
    name.replace('-', "_")
}

fn module_name(path: &Path) -> Option<String> {
    let file = path.file_name()?.to_str()?;
    let stem = file.strip_suffix(".ko")?;
    Some(normalize(stem))
}

/// The `key=value` pairs of a module's `.modinfo` section.
pub fn modinfo(ko: &[u8]) -> Option<Vec<(String, String)>> {
    let elf = Elf::parse(ko)?;
    let data = elf.section(".modinfo")?;
    Some(
        data.split(|b| *b == 0)
            .filter(|s| !s.is_empty())
            .filter_map(|s| {
                let s = String::from_utf8_lossy(s);
                let (k, v) = s.split_once('=')?;
                Some((k.to_owned(), v.to_owned()))
            })
            .collect(),
    )
}

/// Just enough of ELF64 little-endian to find sections and the interpreter.
struct Elf<'a> {
    bytes: &'a [u8],
}

impl<'a> Elf<'a> {
    fn parse(bytes: &'a [u8]) -> Option<Elf<'a>> {
        // 64-bit, little-endian.
        (bytes.len() >= 64 && bytes[..4] == *b"\x7fELF" && bytes[4] == 2 && bytes[5] == 1)
            .then_some(Elf { bytes })
    }

    fn u16(&self, at: usize) -> Option<u16> {
        Some(u16::from_le_bytes(
            self.bytes.get(at..at + 2)?.try_into().ok()?,
        ))
    }

    fn u32(&self, at: usize) -> Option<u32> {
        Some(u32::from_le_bytes(
            self.bytes.get(at..at + 4)?.try_into().ok()?,
        ))
    }

    fn u64(&self, at: usize) -> Option<usize> {
        let v = u64::from_le_bytes(self.bytes.get(at..at + 8)?.try_into().ok()?);
        usize::try_from(v).ok()
    }

    fn has_interpreter(&self) -> bool {
        let (Some(phoff), Some(phentsize), Some(phnum)) =
            (self.u64(0x20), self.u16(0x36), self.u16(0x38))
        else {
            return false;
        };
        (0..phnum as usize).any(|i| self.u32(phoff + i * phentsize as usize) == Some(3))
    }

    fn section(&self, wanted: &str) -> Option<&'a [u8]> {
        let shoff = self.u64(0x28)?;
        let shentsize = self.u16(0x3a)? as usize;
        let shnum = self.u16(0x3c)? as usize;
        let shstrndx = self.u16(0x3e)? as usize;
        let header = |i: usize| shoff.checked_add(i.checked_mul(shentsize)?);
        let strtab = header(shstrndx)?;
        let str_off = self.u64(strtab + 0x18)?;
        for i in 0..shnum {
            let h = header(i)?;
            let name_off = str_off.checked_add(self.u32(h)? as usize)?;
            let name = self.bytes.get(name_off..)?;
            let end = name.iter().position(|b| *b == 0)?;
            if &name[..end] == wanted.as_bytes() {
                let off = self.u64(h + 0x18)?;
                let size = self.u64(h + 0x20)?;
                return self.bytes.get(off..off.checked_add(size)?);
            }
        }
        None
    }
}

/// A newc ("070701") cpio archive writer; deterministic (all times zero).
#[derive(Default)]
struct Cpio {
    out: Vec<u8>,
    ino: u32,
}

impl Cpio {
    fn entry(&mut self, name: &str, mode: u32, rdev: (u32, u32), data: &[u8]) {
        self.ino += 1;
        let fields = [
            self.ino,
            mode,
            0,
            0,
            1,
            0,
            data.len() as u32,
            0,
            0,
            rdev.0,
            rdev.1,
            name.len() as u32 + 1,
            0,
        ];
        self.out.extend_from_slice(b"070701");
        for f in fields {
            self.out.extend_from_slice(format!("{f:08x}").as_bytes());
        }
        self.out.extend_from_slice(name.as_bytes());
        self.out.push(0);
        self.pad();
        self.out.extend_from_slice(data);
        self.pad();
    }

    fn pad(&mut self) {
        while self.out.len() % 4 != 0 {
            self.out.push(0);
        }
    }

    fn dir(&mut self, name: &str, perm: u32) {
        self.entry(name, 0o040000 | perm, (0, 0), &[]);
    }

    fn file(&mut self, name: &str, perm: u32, data: &[u8]) {
        self.entry(name, 0o100000 | perm, (0, 0), data);
    }

    fn symlink(&mut self, name: &str, target: &str) {
        self.entry(name, 0o120777, (0, 0), target.as_bytes());
    }

    fn char_device(&mut self, name: &str, perm: u32, major: u32, minor: u32) {
        self.entry(name, 0o020000 | perm, (major, minor), &[]);
    }

    fn finish(mut self) -> Vec<u8> {
        self.entry("TRAILER!!!", 0, (0, 0), &[]);
        // The kernel reads archives in 512-byte blocks best.
        while self.out.len() % 512 != 0 {
            self.out.push(0);
        }
        self.out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpio_entries_are_aligned() {
        let mut c = Cpio::default();
        c.file("a", 0o644, b"xyz");
        c.symlink("b", "/a");
        let out = c.finish();
        assert!(out.starts_with(b"070701"));
        assert_eq!(out.len() % 512, 0);
        let text = String::from_utf8_lossy(&out);
        assert!(text.contains("TRAILER!!!"));
        // Header (110) + "a\0" padded to 112, then data "xyz" padded to 4.
        assert_eq!(&out[112..115], b"xyz");
        assert_eq!(&out[116..122], b"070701");
    }

    #[test]
    fn garbage_is_not_elf() {
        assert!(Elf::parse(b"not an elf at all").is_none());
        assert!(modinfo(&[0u8; 100]).is_none());
    }

    #[test]
    fn module_signatures_are_cut_exactly() {
        let mut signed = b"\x7fELF module body".to_vec();
        signed.extend_from_slice(&[0xAA; 5]); // the signature
        signed.extend_from_slice(&[0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 5]);
        signed.extend_from_slice(MODULE_SIG_MAGIC);
        assert!(strip_module_signature(&mut signed));
        assert_eq!(signed, b"\x7fELF module body");
        // Unsigned, too short, or a length that does not fit: untouched.
        let mut plain = b"\x7fELF no signature".to_vec();
        assert!(!strip_module_signature(&mut plain));
        assert_eq!(plain, b"\x7fELF no signature");
        let mut short = MODULE_SIG_MAGIC.to_vec();
        assert!(!strip_module_signature(&mut short));
        let mut lying = vec![1u8; 3];
        lying.extend_from_slice(&[0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 200]);
        lying.extend_from_slice(MODULE_SIG_MAGIC);
        let before = lying.clone();
        assert!(!strip_module_signature(&mut lying));
        assert_eq!(lying, before);
    }

    #[test]
    fn real_modules_lose_only_their_signature() {
        let kernel = Kernel::locate().expect("a kernel: run scripts/setup first");
        let order = resolve_modules(&kernel.modules, &["virtio_console"]).unwrap();
        let path = kernel.modules.join(&order[order.len() - 1]);
        let mut bytes = std::fs::read(&path).unwrap();
        let size = bytes.len();
        assert!(
            strip_module_signature(&mut bytes),
            "{} is signed",
            path.display()
        );
        assert!(
            size - bytes.len() > 256 && size - bytes.len() < 4096,
            "{size} -> {}",
            bytes.len()
        );
        assert!(Elf::parse(&bytes).is_some(), "still an ELF file");
        assert!(modinfo(&bytes).is_some(), "its .modinfo is intact");
    }

    #[test]
    fn resolves_real_modules_when_a_kernel_is_present() {
        let kernel = Kernel::locate().expect("a kernel: run scripts/setup first");
        let order = resolve_modules(&kernel.modules, &["virtio_net"]).unwrap();
        let names: Vec<String> = order.iter().filter_map(|p| module_name(p)).collect();
        let pos = |n: &str| names.iter().position(|m| m == n);
        assert!(pos("virtio_net").is_some(), "{names:?}");
        assert!(pos("failover") < pos("net_failover"), "{names:?}");
        assert!(pos("net_failover") < pos("virtio_net"), "{names:?}");
        let err = resolve_modules(&kernel.modules, &["no_such_module"]).unwrap_err();
        assert!(err.to_string().contains("no_such_module"));
    }
}

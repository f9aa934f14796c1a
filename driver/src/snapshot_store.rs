//! The snapshot store: saved, booted machine states in `<cache>/snapshots/`: the
//! device state (a QEMU migration stream without the guest's RAM) in `<identity>.qemu`,
//! the guest's RAM in `<identity>.ram` (a sparse file that restored machines map
//! privately: they share its unchanged pages), beside a `.meta` file (the saving
//! machine's MACs per NIC, the time, the size and checksum of every file of the state),
//! the machine's disks (`<identity>.disk-<name>.qcow2`, written before the `.qemu`)
//! and a `.lock` that makes two runs saving the same state at once save it once. An
//! identity is a hash of everything that shapes the saved state ([`identity`]); files
//! are written under a temporary name and renamed, the `.meta` first and the `.qemu`
//! last, so a `.qemu` file is always whole and has its `.meta` and `.ram`. Before a
//! restore, [`Entry::verify`] checks the files against the `.meta`'s sizes and
//! checksums (once per file version per process: see there). The store keeps the 8
//! most recently used states (a restore counts as a use), and pruning removes every
//! file of a state; [`list`] and [`clear`] are `flotilla snapshots` and `flotilla
//! snapshots --clear`.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io;
use std::os::unix::fs::{FileExt as _, MetadataExt as _};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::accel::Accel;
use flotilla_host::cache::{cache_dir, prune};

/// Bumped when what a snapshot holds or how it is restored changes incompatibly.
const LAYOUT_VERSION: &str = "flotilla-snapshot-2";

/// Between an identity and a disk's name in the file names of saved disks.
const DISK_INFIX: &str = ".disk-";

/// How many snapshots the store keeps (the newest); each is tens of MiB.
const KEEP: usize = 8;

/// The folder of the store: `<cache>/snapshots`.
pub(crate) fn store_dir() -> PathBuf {
    cache_dir().join("snapshots")
}

/// The identity of a saved state: a hash of the fields of the machine's command that
/// shape its state (its hardware's argument list, with no machine name, host name,
/// paths, MACs or ports in it, and its disks: the plan's
/// `QemuCommand::identity_view`), QEMU's `--version`, the accelerator, and the content
/// identity ([`file_stamp`]) of every file the command boots (kernel, initrd,
/// firmware, the disks' base images).
pub(crate) fn identity(
    fields: &[String],
    qemu_version: &str,
    accel: Accel,
    files: &[&Path],
) -> String {
    let mut h = Sha256::new();
    let mut field = |bytes: &[u8]| {
        h.update((bytes.len() as u64).to_le_bytes());
        h.update(bytes);
    };
    field(LAYOUT_VERSION.as_bytes());
    field(qemu_version.trim().as_bytes());
    field(accel.to_string().as_bytes());
    for arg in fields {
        field(arg.as_bytes());
    }
    let keyed = content_keyed();
    for file in files {
        field(file_stamp(file, &keyed).as_bytes());
    }
    let digest = h.finalize();
    digest[..16].iter().map(|b| format!("{b:02x}")).collect()
}

/// A file's content identity. In a folder of `keyed` (the unpacked-kernel and
/// initramfs caches, whose file names are hashes of their content) the path and size:
/// those caches touch a file when they use it and may replace it with an equal one.
/// Elsewhere (firmware, a kernel of the user's) path, size, device, inode and
/// modification time: a file written anew is another.
fn file_stamp(path: &Path, keyed: &[PathBuf]) -> String {
    let Ok(m) = std::fs::metadata(path) else {
        return format!("{} missing", path.display());
    };
    if path
        .parent()
        .is_some_and(|dir| keyed.iter().any(|k| k == dir))
    {
        return format!("{} {}", path.display(), m.len());
    }
    format!(
        "{} {} {} {} {}.{}",
        path.display(),
        m.len(),
        m.dev(),
        m.ino(),
        m.mtime(),
        m.mtime_nsec()
    )
}

/// The cache folders whose file names are hashes of their content.
fn content_keyed() -> Vec<PathBuf> {
    let cache = cache_dir();
    vec![
        cache.join("kernels"),
        cache.join("images"),
        cache.join("debian").join("images"),
    ]
}

/// The first line of `qemu --version`, asked once per binary per process.
pub(crate) fn qemu_version(qemu: &Path) -> String {
    static SEEN: OnceLock<Mutex<BTreeMap<PathBuf, String>>> = OnceLock::new();
    let seen = SEEN.get_or_init(Mutex::default);
    if let Some(v) = seen.lock().ok().and_then(|s| s.get(qemu).cloned()) {
        return v;
    }
    let version = std::process::Command::new(qemu)
        .arg("--version")
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .next()
                .unwrap_or_default()
                .to_owned()
        })
        .unwrap_or_else(|e| format!("unknown ({e})"));
    if let Ok(mut s) = seen.lock() {
        s.insert(qemu.to_owned(), version.clone());
    }
    version
}

/// What the `.meta` file says about a saved state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Meta {
    /// The saving machine's MAC per QEMU NIC device id (`nic1`, `hostnic`): what a
    /// restored guest's NICs have until they are given their own.
    pub macs: BTreeMap<String, String>,
    /// When it was saved (seconds since the epoch).
    pub saved: u64,
    /// The machine that saved it (for the log only).
    pub machine: String,
    /// The first line of the saving QEMU's `--version` (part of the identity too: a
    /// state is restored only by the QEMU that saved it), for `flotilla snapshots`.
    #[serde(default)]
    pub qemu: String,
    /// The console's lines up to the agent's readiness line, the boot that saved it:
    /// a restored machine's console starts with them, so waits for boot lines find
    /// them.
    #[serde(default)]
    pub console: Vec<String>,
    /// The size and checksum of each file of the state, by suffix (`qemu`, `ram`,
    /// `disk-<name>.qcow2` for each saved disk).
    #[serde(default)]
    pub files: BTreeMap<String, Sum>,
}

/// A file's size and checksum: SHA-256 over the offset and bytes of each of its 4 KiB
/// pages that is not all zeros (a hole reads as zeros), then the size. Equal for a
/// file and its sparse copy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sum {
    pub bytes: u64,
    pub sha256: String,
}

/// The page size of [`Sum`].
pub(crate) const PAGE: usize = 4096;

/// Makes a [`Sum`] page by page, pages in the order of their offsets.
pub(crate) struct Summer {
    hash: Sha256,
}

impl std::fmt::Debug for Summer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Summer")
    }
}

impl Summer {
    pub(crate) fn new() -> Summer {
        Summer {
            hash: Sha256::new(),
        }
    }

    /// Adds `bytes` (whole pages, the last one maybe short) read at `offset`; returns
    /// the runs of pages that are not all zeros, as (offset, bytes).
    pub(crate) fn add<'a>(&mut self, offset: u64, bytes: &'a [u8]) -> Vec<(u64, &'a [u8])> {
        static ZERO: [u8; PAGE] = [0; PAGE];
        let mut runs: Vec<(u64, &[u8])> = Vec::new();
        let mut run: Option<(u64, usize, usize)> = None; // (offset, start, end)
        for (i, page) in bytes.chunks(PAGE).enumerate() {
            if page == &ZERO[..page.len()] {
                if let Some((at, start, end)) = run.take() {
                    runs.push((at, &bytes[start..end]));
                }
                continue;
            }
            let at = offset + (i * PAGE) as u64;
            self.hash.update(at.to_le_bytes());
            self.hash.update(page);
            let (start, end) = (i * PAGE, i * PAGE + page.len());
            run = Some(match run {
                Some((a, s, _)) => (a, s, end),
                None => (at, start, end),
            });
        }
        if let Some((at, start, end)) = run {
            runs.push((at, &bytes[start..end]));
        }
        runs
    }

    pub(crate) fn finish(mut self, bytes: u64) -> Sum {
        self.hash.update(bytes.to_le_bytes());
        let sha256 = self
            .hash
            .finalize()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        Sum { bytes, sha256 }
    }
}

/// The byte ranges of `file` that may hold data (`SEEK_DATA`/`SEEK_HOLE`; the whole
/// file where the file system cannot tell).
pub(crate) fn data_ranges(file: &File) -> io::Result<Vec<(u64, u64)>> {
    use std::os::fd::AsRawFd as _;
    let len = file.metadata()?.len();
    let fd = file.as_raw_fd();
    let seek = |at: u64, whence| {
        // SAFETY: lseek on a descriptor `file` owns; the offset is only read back.
        let r = unsafe { libc::lseek(fd, at as libc::off_t, whence) };
        if r < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(r as u64)
        }
    };
    let mut ranges = Vec::new();
    let mut at = 0;
    while at < len {
        let start = match seek(at, libc::SEEK_DATA) {
            Ok(start) => start,
            Err(e) if e.raw_os_error() == Some(libc::ENXIO) => break, // only a hole left
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => return Ok(vec![(0, len)]),
            Err(e) => return Err(e),
        };
        let end = seek(start, libc::SEEK_HOLE)?.min(len);
        ranges.push((start, end));
        at = end;
    }
    Ok(ranges)
}

/// Reads the data ranges of `file` in blocks, each block with its offset.
pub(crate) fn for_each_block(
    file: &File,
    mut f: impl FnMut(u64, &[u8]) -> io::Result<()>,
) -> io::Result<()> {
    const BLOCK: usize = 1 << 20;
    let mut buf = vec![0u8; BLOCK];
    for (start, end) in data_ranges(file)? {
        // Whole pages: ranges begin and end on block boundaries of the file system.
        let mut at = start - start % PAGE as u64;
        while at < end {
            let want = ((end - at) as usize).min(BLOCK);
            let n = file.read_at(&mut buf[..want], at)?;
            if n == 0 {
                break; // shortened meanwhile
            }
            f(at, &buf[..n])?;
            at += n as u64;
        }
    }
    Ok(())
}

/// The [`Sum`] of the file at `path`.
pub fn sum_of(path: &Path) -> io::Result<Sum> {
    let file = File::open(path)?;
    let bytes = file.metadata()?.len();
    let mut summer = Summer::new();
    for_each_block(&file, |at, block| {
        summer.add(at, block);
        Ok(())
    })?;
    Ok(summer.finish(bytes))
}

impl Meta {
    pub(crate) fn new(machine: &str, macs: BTreeMap<String, String>) -> Meta {
        Meta {
            macs,
            saved: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
            machine: machine.to_owned(),
            qemu: String::new(),
            console: Vec::new(),
            files: BTreeMap::new(),
        }
    }
}

/// One identity's place in the store.
#[derive(Debug, Clone)]
pub(crate) struct Entry {
    pub identity: String,
    dir: PathBuf,
}

/// The lock of an entry being saved; dropping it releases it.
#[derive(Debug)]
pub(crate) struct SaveLock {
    _lock: flotilla_host::lock::Locked,
}

impl Entry {
    /// The entry of `identity` in the store's folder.
    pub(crate) fn new(identity: String) -> Entry {
        Entry::in_dir(identity, store_dir())
    }

    pub(crate) fn in_dir(identity: String, dir: PathBuf) -> Entry {
        Entry { identity, dir }
    }

    /// The saved state, `<identity>.qemu`.
    pub(crate) fn file(&self) -> PathBuf {
        self.dir.join(format!("{}.qemu", self.identity))
    }

    /// Where QEMU writes the state before it is renamed to [`Entry::file`].
    pub(crate) fn partial(&self) -> PathBuf {
        self.dir.join(format!("{}.qemu.partial", self.identity))
    }

    /// The saved guest RAM, `<identity>.ram`.
    pub(crate) fn ram_file(&self) -> PathBuf {
        self.dir.join(format!("{}.ram", self.identity))
    }

    /// Where the guest RAM is copied before it is renamed to [`Entry::ram_file`].
    pub(crate) fn ram_partial(&self) -> PathBuf {
        self.dir.join(format!("{}.ram.partial", self.identity))
    }

    /// The saved copy of the machine's disk `name`, `<identity>.disk-<name>.qcow2`.
    pub(crate) fn disk_file(&self, name: &str) -> PathBuf {
        self.dir
            .join(format!("{}{DISK_INFIX}{name}.qcow2", self.identity))
    }

    fn meta_file(&self) -> PathBuf {
        self.dir.join(format!("{}.meta", self.identity))
    }

    /// The files of the state by suffix, as `.meta`'s `files` names them: the devices,
    /// the RAM and every saved disk there is.
    fn state_files(&self) -> Vec<(String, PathBuf)> {
        let mut files = vec![
            ("qemu".to_owned(), self.file()),
            ("ram".to_owned(), self.ram_file()),
        ];
        let prefix = format!("{}.", self.identity);
        for disk in self.disk_files() {
            let name = disk.file_name().map(|n| n.to_string_lossy().into_owned());
            if let Some(key) = name.as_deref().and_then(|n| n.strip_prefix(&prefix)) {
                files.push((key.to_owned(), disk.clone()));
            }
        }
        files.sort();
        files
    }

    /// The name of disk `name`'s saved copy in `.meta`'s `files`.
    pub(crate) fn disk_key(name: &str) -> String {
        format!("{}{name}.qcow2", &DISK_INFIX[1..])
    }

    /// Checks every file of the state against the size and checksum `meta` has for
    /// it; the error says which file differs and how. A file version (device, inode,
    /// size, modification time) found whole is not read again in this process, and
    /// checks run one at a time, so a network of restored machines reads the RAM file
    /// once; a file changed in place with its time kept back is not noticed then.
    /// Blocking: it may read tens of MiB.
    pub(crate) fn verify(&self, meta: &Meta) -> Result<(), String> {
        /// A file version: device, inode, size, modification time (s, ns), checksum.
        type Version = (u64, u64, u64, i64, i64, String);
        static WHOLE: OnceLock<Mutex<BTreeSet<Version>>> = OnceLock::new();
        let whole = WHOLE.get_or_init(Mutex::default);
        let mut whole = whole.lock().unwrap_or_else(|e| e.into_inner());
        let files = self.state_files();
        if let Some(lost) = meta
            .files
            .keys()
            .find(|key| !files.iter().any(|(suffix, _)| suffix == *key))
        {
            return Err(format!("its .{lost} file is missing"));
        }
        for (suffix, path) in files {
            let name = path.display();
            let want = meta
                .files
                .get(&suffix)
                .ok_or_else(|| format!("its .meta has no checksum of the .{suffix} file"))?;
            let m = std::fs::metadata(&path).map_err(|e| format!("{name}: {e}"))?;
            if m.len() != want.bytes {
                return Err(format!(
                    "{name} has {} bytes, not the {} saved (truncated or replaced)",
                    m.len(),
                    want.bytes
                ));
            }
            let version = (
                m.dev(),
                m.ino(),
                m.len(),
                m.mtime(),
                m.mtime_nsec(),
                want.sha256.clone(),
            );
            if whole.contains(&version) {
                continue;
            }
            let got = sum_of(&path).map_err(|e| format!("reading {name}: {e}"))?;
            if got != *want {
                return Err(format!(
                    "{name} does not match its checksum (changed since it was saved)"
                ));
            }
            whole.insert(version);
        }
        Ok(())
    }

    /// Whether a saved state is there.
    pub(crate) fn exists(&self) -> bool {
        self.file().is_file()
    }

    /// The saved state's `.meta`; an error says why it cannot be read.
    pub(crate) fn meta(&self) -> Result<Meta, String> {
        let path = self.meta_file();
        let text = std::fs::read_to_string(&path)
            .map_err(|e| format!("reading {}: {e}", path.display()))?;
        serde_json::from_str(&text).map_err(|e| format!("reading {}: {e}", path.display()))
    }

    /// Takes the entry's save lock without waiting; `None` when another machine or run
    /// holds it (it is saving this state).
    pub(crate) fn try_lock(&self) -> io::Result<Option<SaveLock>> {
        std::fs::create_dir_all(&self.dir)?;
        let file = File::create(self.dir.join(format!("{}.lock", self.identity)))?;
        Ok(flotilla_host::lock::try_exclusive(file)?.map(|lock| SaveLock { _lock: lock }))
    }

    /// Makes the state QEMU wrote to [`Entry::partial`] and the RAM copied to
    /// [`Entry::ram_partial`] the saved one, with `meta` (which has their sums);
    /// returns the bytes of both on disk. Prunes the store to its newest few.
    pub(crate) fn commit(&self, _lock: &SaveLock, meta: &Meta) -> io::Result<u64> {
        let size = [self.partial(), self.ram_partial()]
            .iter()
            .map(|p| std::fs::metadata(p).map(|m| m.blocks() * 512))
            .sum::<io::Result<u64>>()?;
        let json = serde_json::to_string_pretty(meta).map_err(io::Error::other)?;
        let meta_tmp = self.dir.join(format!("{}.meta.partial", self.identity));
        std::fs::write(&meta_tmp, json)?;
        std::fs::rename(&meta_tmp, self.meta_file())?;
        std::fs::rename(self.ram_partial(), self.ram_file())?;
        std::fs::rename(self.partial(), self.file())?;
        prune(&self.dir, "", ".qemu", KEEP);
        remove_orphans(&self.dir);
        Ok(size)
    }

    /// Marks the state as used now, for the store's least-recently-used pruning (the
    /// `.ram` keeps its time: [`Entry::verify`] knows it by it).
    pub(crate) fn touch(&self) {
        for path in [self.file(), self.meta_file()] {
            if let Ok(f) = File::options().write(true).open(&path) {
                let _ = f.set_modified(SystemTime::now());
            }
        }
    }

    /// Removes a write that failed.
    pub(crate) fn discard_partial(&self) {
        let _ = std::fs::remove_file(self.partial());
        let _ = std::fs::remove_file(self.ram_partial());
    }

    /// Removes the saved state: the `.qemu` first (the state is gone then), the
    /// `.ram`, the `.meta` and the disks (QEMU refused it, a checksum did not match).
    pub(crate) fn remove(&self) {
        let _ = std::fs::remove_file(self.file());
        let _ = std::fs::remove_file(self.ram_file());
        let _ = std::fs::remove_file(self.meta_file());
        for disk in self.disk_files() {
            let _ = std::fs::remove_file(disk);
        }
    }

    /// The saved disks of this entry.
    fn disk_files(&self) -> Vec<PathBuf> {
        let prefix = format!("{}{DISK_INFIX}", self.identity);
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        entries
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
            .map(|e| e.path())
            .collect()
    }

    /// Removes every file of the entry, `<identity>.*` (whatever a state holds, partial
    /// writes too), the lock last. Only under the entry's lock: no run is saving it.
    fn remove_every_file(&self, _lock: &SaveLock) {
        self.remove();
        let prefix = format!("{}.", self.identity);
        let lock = format!("{prefix}lock");
        if let Ok(entries) = std::fs::read_dir(&self.dir) {
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if name.starts_with(&prefix) && name != lock {
                    let _ = std::fs::remove_file(e.path());
                }
            }
        }
        let _ = std::fs::remove_file(self.dir.join(lock));
    }
}

/// Removes the files of states whose `.qemu` is gone (pruned, removed) unless a run
/// holds their lock (it is saving them).
fn remove_orphans(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let identities: BTreeSet<String> = entries
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            Some(name.split_once('.')?.0.to_owned())
        })
        .collect();
    for identity in identities {
        let entry = Entry::in_dir(identity, dir.to_path_buf());
        if entry.exists() {
            continue;
        }
        let Ok(Some(lock)) = entry.try_lock() else {
            continue;
        };
        entry.remove_every_file(&lock);
    }
}

/// A saved state in the store, as `flotilla snapshots` lists it.
#[derive(Debug, Clone)]
pub struct Saved {
    /// Its identity (the hash in its file name).
    pub identity: String,
    /// The `.qemu` file.
    pub file: PathBuf,
    /// The bytes its files (`.qemu`, `.ram`, saved disks) take on disk.
    pub bytes: u64,
    /// Their apparent size (more than `bytes`: the `.ram` is sparse).
    pub apparent_bytes: u64,
    /// The machine that saved it, when its `.meta` says.
    pub machine: Option<String>,
    /// The version of the QEMU that saved it (`10.0.2`), when its `.meta` says.
    pub qemu: Option<String>,
    /// When it was last saved or restored.
    pub used: SystemTime,
}

/// The saved states in the store, most recently used first.
pub fn list() -> Vec<Saved> {
    list_in(&store_dir())
}

fn list_in(dir: &Path) -> Vec<Saved> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut saved: Vec<Saved> = entries
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let identity = name.strip_suffix(".qemu")?.to_owned();
            let meta = e.metadata().ok()?;
            let entry = Entry::in_dir(identity.clone(), dir.to_path_buf());
            // The state, its RAM and its saved disks.
            let files: Vec<std::fs::Metadata> = entry
                .state_files()
                .iter()
                .filter_map(|(_, p)| std::fs::metadata(p).ok())
                .collect();
            let said = entry.meta().ok();
            Some(Saved {
                qemu: said
                    .as_ref()
                    .and_then(|m| crate::host::qemu_version_number(&m.qemu))
                    .map(str::to_owned),
                machine: said.map(|m| m.machine),
                identity,
                file: e.path(),
                bytes: files.iter().map(|m| m.blocks() * 512).sum(),
                apparent_bytes: files.iter().map(|m| m.len()).sum(),
                used: meta.modified().ok()?,
            })
        })
        .collect();
    saved.sort_by_key(|s| std::cmp::Reverse(s.used));
    saved
}

/// Removes every saved state that no run is saving now; returns how many and their
/// bytes.
pub fn clear() -> io::Result<(usize, u64)> {
    clear_in(&store_dir())
}

fn clear_in(dir: &Path) -> io::Result<(usize, u64)> {
    let (mut count, mut bytes) = (0, 0);
    for saved in list_in(dir) {
        let entry = Entry::in_dir(saved.identity, dir.to_path_buf());
        // A run that holds the lock is writing this state: leave it.
        let Some(lock) = entry.try_lock()? else {
            continue;
        };
        entry.remove_every_file(&lock);
        count += 1;
        bytes += saved.bytes;
    }
    Ok((count, bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listed_most_recently_used_first_and_cleared() {
        let dir = tempfile::tempdir().unwrap();
        let save = |id: &str| {
            let entry = Entry::in_dir(id.into(), dir.path().to_path_buf());
            let lock = entry.try_lock().unwrap().unwrap();
            std::fs::write(entry.partial(), vec![0u8; 100]).unwrap();
            std::fs::write(entry.ram_partial(), vec![1u8; 50]).unwrap();
            std::fs::write(entry.disk_file("data"), vec![2u8; 25]).unwrap();
            entry
                .commit(&lock, &Meta::new(id, BTreeMap::new()))
                .unwrap();
            entry
        };
        let old = save("aaa");
        let _new = save("bbb");
        let past = SystemTime::now() - std::time::Duration::from_secs(60);
        for path in [old.file(), dir.path().join("bbb.qemu")] {
            let f = File::options().write(true).open(&path).unwrap();
            f.set_modified(past).unwrap();
        }
        old.touch();
        let listed = list_in(dir.path());
        let ids: Vec<&str> = listed.iter().map(|s| s.identity.as_str()).collect();
        assert_eq!(ids, ["aaa", "bbb"]);
        // The state, its RAM and its saved disk.
        assert_eq!(listed[0].apparent_bytes, 175);
        let on_disk = listed[0].bytes;
        assert!(on_disk > 0);
        assert_eq!(listed[0].machine.as_deref(), Some("aaa"));
        // A state being saved (its lock held) is left.
        let busy = Entry::in_dir("bbb".into(), dir.path().to_path_buf());
        let held = busy.try_lock().unwrap().unwrap();
        assert_eq!(clear_in(dir.path()).unwrap(), (1, on_disk));
        drop(held);
        assert_eq!(clear_in(dir.path()).unwrap(), (1, on_disk));
        assert!(list_in(dir.path()).is_empty());
        // Every file of both states is gone.
        let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().flatten().collect();
        assert!(left.is_empty(), "{left:?}");
    }

    #[test]
    fn an_entry_is_saved_once_and_whole() {
        let dir = tempfile::tempdir().unwrap();
        let entry = Entry::in_dir("abc".into(), dir.path().to_owned());
        assert!(!entry.exists());
        let lock = entry.try_lock().unwrap().expect("free");
        // A second saver (another machine or run) finds it taken.
        assert!(entry.try_lock().unwrap().is_none());
        std::fs::write(entry.partial(), b"state").unwrap();
        std::fs::write(entry.ram_partial(), b"ram").unwrap();
        assert!(!entry.exists(), "a partial write is not a saved state");
        let macs = BTreeMap::from([("nic1".to_owned(), "52:54:00:12:01:01".to_owned())]);
        let mut meta = Meta::new("server", macs);
        meta.files
            .insert("qemu".into(), sum_of(&entry.partial()).unwrap());
        meta.files
            .insert("ram".into(), sum_of(&entry.ram_partial()).unwrap());
        assert!(entry.commit(&lock, &meta).unwrap() > 0);
        drop(lock);
        assert!(entry.exists() && !entry.partial().exists() && !entry.ram_partial().exists());
        assert!(entry.ram_file().is_file());
        assert_eq!(entry.meta().unwrap(), meta);
        entry.verify(&meta).unwrap();
        assert!(entry.try_lock().unwrap().is_some());
        entry.remove();
        assert!(!entry.exists() && !entry.ram_file().exists());
        assert!(entry.meta().unwrap_err().contains("abc.meta"));
    }

    #[test]
    fn every_input_is_in_the_identity() {
        let dir = tempfile::tempdir().unwrap();
        let kernel = dir.path().join("vmlinux");
        std::fs::write(&kernel, b"kernel").unwrap();
        let args = vec!["-m".to_owned(), "256".to_owned()];
        let base = identity(&args, "QEMU 7.2", Accel::Tcg, &[&kernel]);
        assert_eq!(base, identity(&args, "QEMU 7.2", Accel::Tcg, &[&kernel]));
        assert_eq!(base.len(), 32);
        let other_args = vec!["-m".to_owned(), "512".to_owned()];
        assert_ne!(
            base,
            identity(&other_args, "QEMU 7.2", Accel::Tcg, &[&kernel])
        );
        assert_ne!(base, identity(&args, "QEMU 8.0", Accel::Tcg, &[&kernel]));
        assert_ne!(base, identity(&args, "QEMU 7.2", Accel::Kvm, &[&kernel]));
        // Arguments are fields: moving a boundary changes the identity.
        let joined = vec!["-m256".to_owned()];
        assert_ne!(base, identity(&joined, "QEMU 7.2", Accel::Tcg, &[&kernel]));
        // A kernel written anew (renamed into place) with the same size.
        let new = dir.path().join("vmlinux.new");
        std::fs::write(&new, b"KERNEL").unwrap();
        let keep_inode_busy = std::fs::File::open(&kernel).unwrap();
        std::fs::rename(&new, &kernel).unwrap();
        assert_ne!(base, identity(&args, "QEMU 7.2", Accel::Tcg, &[&kernel]));
        drop(keep_inode_busy);
    }

    #[test]
    fn files_of_content_keyed_caches_are_known_by_path_and_size() {
        let dir = tempfile::tempdir().unwrap();
        let keyed = dir.path().join("images");
        std::fs::create_dir_all(&keyed).unwrap();
        let cached = keyed.join("initramfs-abc.cpio");
        let other = dir.path().join("qboot.rom");
        for f in [&cached, &other] {
            std::fs::write(f, b"bytes").unwrap();
        }
        let stamps = || [&cached, &other].map(|f| file_stamp(f, std::slice::from_ref(&keyed)));
        let before = stamps();
        // Touched, as the caches do when they use a file.
        for f in [&cached, &other] {
            std::fs::File::open(f)
                .unwrap()
                .set_modified(SystemTime::now() + std::time::Duration::from_secs(60))
                .unwrap();
        }
        let after = stamps();
        assert_eq!(before[0], after[0], "a cached file is its path and size");
        assert_ne!(before[1], after[1], "another file is its time too");
        std::fs::write(&cached, b"longer bytes").unwrap();
        assert_ne!(after[0], stamps()[0]);
    }

    #[test]
    fn a_sum_is_of_the_content_not_of_the_holes() {
        let dir = tempfile::tempdir().unwrap();
        let dense = dir.path().join("dense");
        let sparse = dir.path().join("sparse");
        let mut bytes = vec![0u8; 5 * PAGE + 100];
        bytes[PAGE + 7] = 1;
        bytes[5 * PAGE + 3] = 2;
        std::fs::write(&dense, &bytes).unwrap();
        let f = File::create(&sparse).unwrap();
        f.write_all_at(&bytes[PAGE..2 * PAGE], PAGE as u64).unwrap();
        f.write_all_at(&bytes[5 * PAGE..], 5 * PAGE as u64).unwrap();
        assert_eq!(sum_of(&dense).unwrap(), sum_of(&sparse).unwrap());
        // Runs of non-zero pages, for a sparse copy.
        let mut summer = Summer::new();
        let runs = summer.add(0, &bytes);
        let at: Vec<(u64, usize)> = runs.iter().map(|(a, b)| (*a, b.len())).collect();
        assert_eq!(at, [(PAGE as u64, PAGE), (5 * PAGE as u64, 100)]);
        // A flipped byte, a moved page, a shorter file: another sum.
        let base = sum_of(&dense).unwrap();
        for change in [
            |b: &mut Vec<u8>| b[PAGE + 8] = 9,
            |b: &mut Vec<u8>| b.swap(PAGE + 7, 2 * PAGE + 7),
            |b: &mut Vec<u8>| b.truncate(5 * PAGE + 50),
        ] {
            let mut other = bytes.clone();
            change(&mut other);
            std::fs::write(&dense, &other).unwrap();
            assert_ne!(sum_of(&dense).unwrap(), base);
        }
    }

    #[test]
    fn verify_finds_a_changed_or_truncated_file() {
        let dir = tempfile::tempdir().unwrap();
        let entry = Entry::in_dir("v".into(), dir.path().to_owned());
        let lock = entry.try_lock().unwrap().unwrap();
        std::fs::write(entry.partial(), b"state").unwrap();
        std::fs::write(entry.ram_partial(), vec![7u8; 3 * PAGE]).unwrap();
        let mut meta = Meta::new("m", BTreeMap::new());
        meta.files
            .insert("qemu".into(), sum_of(&entry.partial()).unwrap());
        meta.files
            .insert("ram".into(), sum_of(&entry.ram_partial()).unwrap());
        entry.commit(&lock, &meta).unwrap();
        entry.verify(&meta).unwrap();
        let f = File::options().write(true).open(entry.ram_file()).unwrap();
        f.write_all_at(b"x", PAGE as u64).unwrap();
        f.set_modified(SystemTime::now() + std::time::Duration::from_secs(5))
            .unwrap();
        let why = entry.verify(&meta).unwrap_err();
        assert!(why.contains("v.ram does not match its checksum"), "{why}");
        f.set_len(PAGE as u64).unwrap();
        let why = entry.verify(&meta).unwrap_err();
        assert!(
            why.contains("v.ram has 4096 bytes, not the 12288 saved"),
            "{why}"
        );
        let mut no_sums = meta.clone();
        no_sums.files.clear();
        assert!(entry.verify(&no_sums).unwrap_err().contains("no checksum"));
    }

    #[test]
    fn verify_finds_a_saved_disk_changed_missing_or_without_its_checksum() {
        let dir = tempfile::tempdir().unwrap();
        let entry = Entry::in_dir("d".into(), dir.path().to_owned());
        let lock = entry.try_lock().unwrap().unwrap();
        std::fs::write(entry.partial(), b"state").unwrap();
        std::fs::write(entry.ram_partial(), vec![7u8; PAGE]).unwrap();
        let disk = entry.disk_file("root");
        std::fs::write(&disk, vec![3u8; 2 * PAGE]).unwrap();
        let mut meta = Meta::new("m", BTreeMap::new());
        meta.files
            .insert("qemu".into(), sum_of(&entry.partial()).unwrap());
        meta.files
            .insert("ram".into(), sum_of(&entry.ram_partial()).unwrap());
        meta.files
            .insert(Entry::disk_key("root"), sum_of(&disk).unwrap());
        assert_eq!(Entry::disk_key("root"), "disk-root.qcow2");
        entry.commit(&lock, &meta).unwrap();
        entry.verify(&meta).unwrap();
        // A bit flipped in the saved disk (its time moved on, as a writer's would).
        let f = File::options().write(true).open(&disk).unwrap();
        f.write_all_at(&[2], 100).unwrap();
        f.set_modified(SystemTime::now() + std::time::Duration::from_secs(5))
            .unwrap();
        let why = entry.verify(&meta).unwrap_err();
        assert!(
            why.contains("d.disk-root.qcow2 does not match its checksum"),
            "{why}"
        );
        // A state saved before disks had checksums: refused (it boots cold, saves anew).
        let mut old = meta.clone();
        old.files.remove("disk-root.qcow2");
        let why = entry.verify(&old).unwrap_err();
        assert!(
            why.contains("no checksum of the .disk-root.qcow2 file"),
            "{why}"
        );
        // A saved disk that is gone.
        std::fs::remove_file(&disk).unwrap();
        let why = entry.verify(&meta).unwrap_err();
        assert!(why.contains(".disk-root.qcow2 file is missing"), "{why}");
    }

    #[test]
    fn pruning_removes_every_file_of_a_state_and_leaves_a_save_under_way() {
        let dir = tempfile::tempdir().unwrap();
        // A save under way: its lock held, no `.qemu` yet.
        let busy = Entry::in_dir("busy".into(), dir.path().to_path_buf());
        let busy_lock = busy.try_lock().unwrap().unwrap();
        std::fs::write(busy.ram_partial(), b"ram").unwrap();
        let ids: Vec<String> = (0..KEEP + 2).map(|i| format!("id{i:02}")).collect();
        for id in &ids {
            let entry = Entry::in_dir(id.clone(), dir.path().to_path_buf());
            let lock = entry.try_lock().unwrap().unwrap();
            std::fs::write(entry.partial(), b"state").unwrap();
            std::fs::write(entry.ram_partial(), b"ram").unwrap();
            // A file of the state this store does not know by name.
            std::fs::write(dir.path().join(format!("{id}.disk-root.qcow2")), b"d").unwrap();
            entry
                .commit(&lock, &Meta::new(id, BTreeMap::new()))
                .unwrap();
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        let names = || {
            let mut n: Vec<String> = std::fs::read_dir(dir.path())
                .unwrap()
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect();
            n.sort();
            n
        };
        let left = names();
        for old in &ids[..2] {
            assert!(
                !left.iter().any(|n| n.starts_with(old.as_str())),
                "{left:?}"
            );
        }
        for kept in &ids[2..] {
            for suffix in ["qemu", "ram", "meta", "disk-root.qcow2"] {
                assert!(left.contains(&format!("{kept}.{suffix}")), "{left:?}");
            }
        }
        assert!(left.contains(&"busy.ram.partial".to_owned()), "{left:?}");
        drop(busy_lock);
    }
}

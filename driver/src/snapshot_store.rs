//! The snapshot store: saved, booted machine states (QEMU migration streams) in
//! `<cache>/snapshots/<identity>.qemu`, beside a `.meta` file (the saving machine's
//! MACs per NIC, the time), the machine's disks (`<identity>.disk-<name>.qcow2`,
//! written before the `.qemu`) and a `.lock` that makes two runs saving the same state
//! at once save it once. An identity is a hash of everything that shapes the saved state
//! ([`identity`]); files are written under a temporary name and renamed, the `.meta`
//! first, so a `.qemu` file is always whole and has its `.meta`. The store keeps the
//! 8 most recently used states (a restore counts as a use); [`list`] and
//! [`clear`] are `flotilla snapshots` and `flotilla snapshots --clear`.

use std::collections::BTreeMap;
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::accel::Accel;
use crate::image::{cache_dir, prune};

/// Bumped when what a snapshot holds or how it is restored changes incompatibly.
const LAYOUT_VERSION: &str = "flotilla-snapshot-1";

/// Between an identity and a disk's name in the file names of saved disks.
const DISK_INFIX: &str = ".disk-";

/// How many snapshots the store keeps (the newest); each is tens of MiB.
const KEEP: usize = 8;

/// The folder of the store: `<cache>/snapshots`.
pub(crate) fn store_dir() -> PathBuf {
    cache_dir().join("snapshots")
}

/// The identity of a saved state: a hash of the normalized QEMU command line (no
/// machine name, host name, socket paths or MACs in it: see
/// `machine::snapshot`), QEMU's `--version`, the accelerator, and the content
/// identity ([`file_stamp`]) of every file the command line boots
/// (kernel, initrd, firmware).
pub(crate) fn identity(
    normalized_args: &[String],
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
    for arg in normalized_args {
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
    use std::os::unix::fs::MetadataExt;
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
}

impl Meta {
    pub(crate) fn new(machine: &str, macs: BTreeMap<String, String>) -> Meta {
        Meta {
            macs,
            saved: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
            machine: machine.to_owned(),
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
    _file: File,
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

    /// The saved copy of the machine's disk `name`, `<identity>.disk-<name>.qcow2`.
    pub(crate) fn disk_file(&self, name: &str) -> PathBuf {
        self.dir
            .join(format!("{}{DISK_INFIX}{name}.qcow2", self.identity))
    }

    fn meta_file(&self) -> PathBuf {
        self.dir.join(format!("{}.meta", self.identity))
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
        Ok(crate::lock::try_exclusive(&file)?.then_some(SaveLock { _file: file }))
    }

    /// Makes the state QEMU wrote to [`Entry::partial`] the saved one, with `meta`;
    /// returns its size in bytes. Prunes the store to its newest few.
    pub(crate) fn commit(&self, _lock: &SaveLock, meta: &Meta) -> io::Result<u64> {
        let size = std::fs::metadata(self.partial())?.len();
        let json = serde_json::to_string_pretty(meta).map_err(io::Error::other)?;
        let meta_tmp = self.dir.join(format!("{}.meta.partial", self.identity));
        std::fs::write(&meta_tmp, json)?;
        std::fs::rename(&meta_tmp, self.meta_file())?;
        std::fs::rename(self.partial(), self.file())?;
        for suffix in [".qemu", ".meta", ".lock"] {
            prune(&self.dir, "", suffix, KEEP);
        }
        remove_orphan_disks(&self.dir);
        Ok(size)
    }

    /// Marks the state as used now, for the store's least-recently-used pruning.
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
    }

    /// Removes the saved state, its `.meta` and its disks (QEMU refused it).
    pub(crate) fn remove(&self) {
        let _ = std::fs::remove_file(self.file());
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
}

/// Removes the saved disks whose state is gone (pruned), unless a run is saving that
/// state now (its disks are copied before its state is renamed into place).
fn remove_orphan_disks(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let identities: std::collections::BTreeSet<String> = entries
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            Some(name.split_once(DISK_INFIX)?.0.to_owned())
        })
        .collect();
    for identity in identities {
        let entry = Entry::in_dir(identity, dir.to_path_buf());
        if entry.exists() {
            continue;
        }
        if let Ok(Some(_lock)) = entry.try_lock() {
            entry.remove();
            let _ = std::fs::remove_file(dir.join(format!("{}.lock", entry.identity)));
        }
    }
}

/// A saved state in the store, as `flotilla snapshots` lists it.
#[derive(Debug, Clone)]
pub struct Saved {
    /// Its identity (the hash in its file name).
    pub identity: String,
    /// The `.qemu` file.
    pub file: PathBuf,
    /// Its size in bytes.
    pub bytes: u64,
    /// The machine that saved it, when its `.meta` says.
    pub machine: Option<String>,
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
            Some(Saved {
                machine: entry.meta().ok().map(|m| m.machine),
                identity,
                file: e.path(),
                bytes: meta.len(),
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
        let Some(_lock) = entry.try_lock()? else {
            continue;
        };
        entry.remove();
        let _ = std::fs::remove_file(dir.join(format!("{}.lock", entry.identity)));
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
        assert_eq!(listed[0].bytes, 100);
        assert_eq!(listed[0].machine.as_deref(), Some("aaa"));
        // A state being saved (its lock held) is left.
        let busy = Entry::in_dir("bbb".into(), dir.path().to_path_buf());
        let held = busy.try_lock().unwrap().unwrap();
        assert_eq!(clear_in(dir.path()).unwrap(), (1, 100));
        drop(held);
        assert_eq!(clear_in(dir.path()).unwrap(), (1, 100));
        assert!(list_in(dir.path()).is_empty());
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
        assert!(!entry.exists(), "a partial write is not a saved state");
        let macs = BTreeMap::from([("nic1".to_owned(), "52:54:00:12:01:01".to_owned())]);
        let meta = Meta::new("server", macs);
        assert_eq!(entry.commit(&lock, &meta).unwrap(), 5);
        drop(lock);
        assert!(entry.exists() && !entry.partial().exists());
        assert_eq!(entry.meta().unwrap(), meta);
        assert!(entry.try_lock().unwrap().is_some());
        entry.remove();
        assert!(!entry.exists());
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
}

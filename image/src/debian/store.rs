//! The cache of built images, `<cache>/debian/images`: `<release>-<inputs>-<index>.qcow2`
//! (the recipe's key, the mirror index's) with a `.manifest` beside it (what went in,
//! and the versions installed), a lock per recipe in `<cache>/debian/locks` so that
//! concurrent runs build an image once, and temporary names that make a half-written
//! image never visible.

use std::fs::File;
use std::path::{Path, PathBuf};

use super::files::temporary_beside;
use super::Release;
use crate::error::Error;
use flotilla_host::cache::{cache_dir, prune_any};

/// How many images are kept (the most recently used), of every release together.
const KEEP_IMAGES: usize = 12;

/// Prunes `dir`'s files ending in `suffix` of every release (their names start with
/// `bookworm-`, `trixie-`), all but the `keep` most recently used, counted together.
pub(super) fn prune_releases(dir: &Path, suffix: &str, keep: usize) {
    let prefixes: Vec<String> = Release::ALL.iter().map(|r| format!("{r}-")).collect();
    let prefixes: Vec<&str> = prefixes.iter().map(String::as_str).collect();
    prune_any(dir, &prefixes, suffix, keep);
}

/// The images folder.
pub(super) struct Store {
    dir: PathBuf,
    locks: PathBuf,
}

impl Store {
    /// Opens (makes) the folder, and removes what killed builds left there.
    pub(super) fn open() -> Result<Store, Error> {
        let dir = cache_dir().join("debian").join("images");
        let locks = cache_dir().join("debian").join("locks");
        for d in [&dir, &locks] {
            std::fs::create_dir_all(d).map_err(|source| Error::Io {
                what: format!("creating {}", d.display()),
                source,
            })?;
        }
        remove_dead_temporaries(&dir);
        Ok(Store { dir, locks })
    }

    /// Where the image of `inputs` resolved against `index` is (or will be).
    pub(super) fn image(&self, release: Release, inputs: &str, index: &str) -> PathBuf {
        self.dir.join(format!(
            "{release}-{inputs}-{}.qcow2",
            &index[..index.len().min(16)]
        ))
    }

    /// A temporary name for `image` in the same folder, for this process.
    pub(super) fn temporary(&self, image: &Path) -> PathBuf {
        temporary_beside(image, ".tmp")
    }

    /// The newest image of `inputs`, whatever index it was resolved against.
    pub(super) fn newest(&self, release: Release, inputs: &str) -> Option<PathBuf> {
        let prefix = format!("{release}-{inputs}-");
        let mut found: Vec<(std::time::SystemTime, PathBuf)> = std::fs::read_dir(&self.dir)
            .ok()?
            .flatten()
            .filter(|e| {
                let n = e.file_name().to_string_lossy().into_owned();
                n.starts_with(&prefix) && n.ends_with(".qcow2")
            })
            .filter_map(|e| Some((e.metadata().ok()?.modified().ok()?, e.path())))
            .collect();
        found.sort();
        found.pop().map(|(_, p)| p)
    }

    /// Takes the lock of `inputs`, waiting for another process that holds it (and
    /// saying so through `log`).
    pub(super) fn lock(
        &self,
        release: Release,
        inputs: &str,
        log: &dyn Fn(&str),
    ) -> Result<flotilla_host::lock::Locked, Error> {
        lock_file(&self.locks.join(format!("{release}-{inputs}.lock")), log)
    }

    /// Keeps the [`KEEP_IMAGES`] most recently used images (of every release), and their
    /// manifests.
    pub(super) fn prune(&self) {
        prune_releases(&self.dir, ".qcow2", KEEP_IMAGES);
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return;
        };
        for e in entries.flatten() {
            let path = e.path();
            if path.extension().is_some_and(|x| x == "manifest")
                && !path.with_extension("qcow2").exists()
            {
                let _ = std::fs::remove_file(path);
            }
        }
    }

    /// What is cached, one line per image: its file and the manifest's `init` and
    /// `packages` lines; `(none)` when empty.
    pub(super) fn listing(&self) -> Vec<String> {
        let mut lines: Vec<String> = std::fs::read_dir(&self.dir)
            .map(|entries| {
                entries
                    .flatten()
                    .map(|e| e.path())
                    .filter(|p| p.extension().is_some_and(|x| x == "qcow2"))
                    .filter(|p| {
                        !p.file_name()
                            .is_some_and(|n| n.to_string_lossy().starts_with('.'))
                    })
                    .map(|p| {
                        let manifest = std::fs::read_to_string(p.with_extension("manifest"))
                            .unwrap_or_default();
                        let field = |key: &str| {
                            manifest
                                .lines()
                                .find_map(|l| l.strip_prefix(key))
                                .unwrap_or("?")
                                .to_owned()
                        };
                        format!(
                            "{} (init {}; packages {})",
                            p.display(),
                            field("init "),
                            field("packages ")
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        lines.sort();
        if lines.is_empty() {
            lines.push("(none)".into());
        }
        lines
    }
}

/// Locks `path` (made if missing) exclusively, waiting for its holder; the lock lasts
/// as long as the returned file.
pub(super) fn lock_file(
    path: &Path,
    log: &dyn Fn(&str),
) -> Result<flotilla_host::lock::Locked, Error> {
    let io = |source| Error::Io {
        what: format!("locking {}", path.display()),
        source,
    };
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .map_err(io)?;
    let probe = file.try_clone().map_err(io)?;
    if let Some(locked) = flotilla_host::lock::try_exclusive(probe).map_err(io)? {
        return Ok(locked);
    }
    log(&format!(
        "debian: another flotilla is building this; waiting for it ({})",
        path.display()
    ));
    flotilla_host::lock::exclusive(file).map_err(io)
}

/// Removes `.NAME.PID.tmp` files whose process is gone.
fn remove_dead_temporaries(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(rest) = name.strip_suffix(".tmp").filter(|_| name.starts_with('.')) else {
            continue;
        };
        let Some(pid) = rest.rsplit('.').next().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

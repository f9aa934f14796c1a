//! `flotilla image debian`, and the images of spec machines with `packages`, `files` or
//! `init`: a Debian disk image of a [`Release`] (trixie by default, or bookworm) with the
//! agent installed.
//!
//! The base tree comes from `debootstrap --variant=minbase` with the chosen [`Init`]
//! (systemd, sysvinit, or OpenRC driven by sysvinit), cached as a tarball under
//! the cache folder (`~/.cache/flotilla/debian`) keyed by the init and the mirror's
//! package index, so a second build only unpacks it. More packages, by name or as
//! local `.deb` files, go in with `apt-get install` in a chroot of the tree (their
//! services are not started during the build), then the recipe's files.
//! The agent goes in with its own installer (`flotilla-agent install --root TREE`), the
//! host-cached kernel's modules go to `/lib/modules/<version>` (with `depmod`), and the
//! tree becomes an ext4 file system with `mke2fs -d` (no mounts, no loop devices),
//! converted to qcow2 with `qemu-img convert`. The image has no kernel of its own: the
//! driver boots the cached Debian cloud kernel with `root=/dev/vda`.
//!
//! An image of another architecture ([`Recipe::arch`]) never runs that architecture's
//! programs on the host (unless its qemu-user is registered with binfmt_misc): the host
//! downloads and unpacks (`debootstrap --foreign`, apt's `--download-only`), and a
//! short-lived VM of that architecture runs the rest (see `builder_vm.rs`).
//!
//! Every image is cached in `~/.cache/flotilla/debian/images`, keyed by the content of
//! what went in ([`Recipe`]) and the mirror's index (the versions it resolves to);
//! [`image`] returns the cached one or builds it, once for concurrent callers.
//!
//! ```no_run
//! # fn demo() -> Result<(), flotilla_image::Error> {
//! use flotilla_image::debian::{build, DebianOptions, Init};
//!
//! let options = DebianOptions {
//!     arch: flotilla_host::arch::Arch::host(),
//!     release: flotilla_image::debian::Release::Trixie,
//!     init: Init::Openrc,
//!     packages: vec!["curl".into()],
//!     size_mib: None,
//!     output: "debian.qcow2".into(),
//! };
//! let image = build(&options, |line| eprintln!("{line}"))?;
//! println!("{}", image.display());
//! # Ok(()) }
//! ```

mod base_tree;
mod builder_vm;
mod deb_file;
mod emulation;
mod files;
mod init;
mod mirror;
mod packages;
mod recipe;
mod stages;
mod store;
mod tune;

use std::path::{Path, PathBuf};

use super::kernel::Kernel;
use crate::error::Error;
pub use crate::release::Release;
pub use base_tree::{cache_key, check_package_name, package_list, DEFAULT_PACKAGES};
pub use deb_file::{deb_architecture, deb_mismatch};
use files::{absolute, temporary_beside, write_file};
use flotilla_host::arch::Arch;
use flotilla_host::cache::cache_dir;
pub use init::Init;
pub use mirror::{host_mirror, index_identity, mirror, MIRROR_ENV};
pub use recipe::{GuestFile, Recipe};
pub use stages::DEFAULT_FREE_MIB;
use stages::{build_into, Resolved};
use store::Store;

/// What `flotilla image debian` builds.
#[derive(Debug, Clone)]
pub struct DebianOptions {
    /// The architecture of its packages (`--arch`; the host's by default).
    pub arch: &'static Arch,
    /// The Debian release (`--release`; trixie by default).
    pub release: Release,
    /// The init system.
    pub init: Init,
    /// Packages installed on top of [`DEFAULT_PACKAGES`] and the init's: names, or
    /// paths of local `.deb` files (ending in `.deb`).
    pub packages: Vec<String>,
    /// The file system's size; default: the tree plus [`DEFAULT_FREE_MIB`].
    pub size_mib: Option<u64>,
    /// The qcow2 image to write (replaced atomically if it exists).
    pub output: PathBuf,
}

/// Builds the image (or takes it from the cache, see [`image`]) and copies it to
/// `options.output`; returns that path. `log` gets one line per step.
pub fn build(options: &DebianOptions, log: impl Fn(&str)) -> Result<PathBuf, Error> {
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
    let (debs, names): (Vec<&String>, Vec<&String>) =
        options.packages.iter().partition(|p| p.ends_with(".deb"));
    let recipe = Recipe {
        arch: options.arch,
        release: options.release,
        init: options.init,
        packages: names.into_iter().cloned().collect(),
        debs: debs
            .into_iter()
            .map(|d| absolute(Path::new(d)))
            .collect::<Result<_, _>>()?,
        files: Vec::new(),
        size_mib: options.size_mib,
    };
    let cached = image(&recipe, &log)?;
    let tmp = temporary_beside(&output, ".tmp");
    let copied = std::fs::copy(&cached, &tmp)
        .and_then(|_| std::fs::rename(&tmp, &output))
        .map_err(|source| Error::Io {
            what: format!("copying {} to {}", cached.display(), output.display()),
            source,
        });
    if let Err(e) = copied {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    log(&format!("debian: wrote {}", output.display()));
    Ok(output)
}

/// The cached image of `recipe`, built first if the cache has none: its path (never
/// write to it; boot overlays over it). Concurrent calls for one recipe build it once
/// (the others wait for it). When the mirror cannot be reached, the newest cached image
/// of the same recipe is used (the log says so); without one, the error names the
/// mirror and lists what is cached.
pub fn image(recipe: &Recipe, log: &dyn Fn(&str)) -> Result<PathBuf, Error> {
    let packages = package_list(recipe.init, &recipe.packages)?;
    let kernel = Kernel::of_release(recipe.release, recipe.arch)?;
    let agent = crate::agent_binary(recipe.arch)?;
    let description = recipe.describe(&packages, &kernel.version, &agent)?;
    let inputs = recipe::key(&description);
    let mirror = mirror().ok_or_else(|| Error::Setup {
        what: "building a Debian image needs a Debian mirror, and none is known".into(),
        hint: format!("set {MIRROR_ENV}=URL, or install debootstrap (its default mirror)"),
    })?;
    let store = Store::open()?;
    let index = index_identity(&mirror, recipe.release, recipe.arch);
    let _lock = store.lock(recipe.release, &inputs, log)?;
    let index = match index {
        Ok(index) => index,
        Err(why) => {
            return match store.newest(recipe.release, &inputs) {
                Some(path) => {
                    log(&format!(
                        "debian: the mirror {mirror} cannot be reached ({why}): using the \
                         cached image of the same content, resolved against an earlier \
                         index: {}",
                        path.display()
                    ));
                    touch(&path);
                    Ok(path)
                }
                None => Err(Error::Image(format!(
                    "the Debian mirror {mirror} cannot be reached ({why}), and no image \
                     of this content is cached\ncached images:\n  {}\ncached base trees:\n  {}\n\
                     hint: {MIRROR_ENV}=URL names another mirror",
                    store.listing().join("\n  "),
                    base_trees().join("\n  ")
                ))),
            };
        }
    };
    let path = store.image(recipe.release, &inputs, &index);
    if path.is_file() {
        touch(&path);
        log(&format!("debian: cached image {}", path.display()));
        return Ok(path);
    }
    let tmp = store.temporary(&path);
    let versions = match build_into(
        recipe,
        &Resolved {
            packages: &packages,
            mirror: &mirror,
            release: recipe.release,
            index: &index,
            kernel: &kernel,
            agent: &agent,
        },
        &tmp,
        log,
    ) {
        Ok(versions) => versions,
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
    };
    let mut manifest = description;
    manifest.push_str(&format!("index {index}\nmirror {mirror}\n# installed:\n"));
    for (name, version) in &versions {
        manifest.push_str(&format!("{name} {version}\n"));
    }
    write_file(&path.with_extension("manifest"), manifest.as_bytes(), 0o644)?;
    std::fs::rename(&tmp, &path).map_err(|source| Error::Io {
        what: format!("renaming {} to {}", tmp.display(), path.display()),
        source,
    })?;
    store.prune();
    Ok(path)
}

/// Marks a cached file as recently used, for pruning.
fn touch(path: &Path) {
    let _ = std::fs::File::options()
        .append(true)
        .open(path)
        .and_then(|f| f.set_modified(std::time::SystemTime::now()));
}

/// The cached base trees, for an error that lists what is cached.
fn base_trees() -> Vec<String> {
    let dir = cache_dir().join("debian");
    let mut trees: Vec<String> = std::fs::read_dir(&dir)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| e.path())
                .filter(|p| {
                    p.extension().is_some_and(|x| x == "tar")
                        && !p
                            .file_name()
                            .is_some_and(|n| n.to_string_lossy().starts_with('.'))
                })
                .map(|p| p.display().to_string())
                .collect()
        })
        .unwrap_or_default();
    trees.sort();
    if trees.is_empty() {
        trees.push("(none)".into());
    }
    trees
}

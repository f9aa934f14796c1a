//! The stages of a Debian image's build, a function each, in the order [`build_into`]
//! runs them: the base tree (unpacked from the cache, or debootstrapped and cached),
//! more packages and the recipe's files, the agent, the kernel's modules, the
//! configuration (`tune.rs`), and the disk (ext4, then qcow2).
//!
//! A tree of another architecture is debootstrapped the same way where the host runs
//! its programs through qemu-user (binfmt_misc); else ([`Emulation::Vm`]) debootstrap's
//! first stage runs on the host (`--foreign`: download and unpack) and every program
//! of the tree runs in the builder VM (`builder_vm.rs`), once for the base tree (the
//! second stage, and OpenRC's swap) and once for the image (its packages, downloaded
//! by the host first, the agent's installer, sysvinit's update-rc.d).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use super::base_tree::{cache_key, package_list};
use super::builder_vm::{self, Step, BUILD_DIR};
use super::emulation::Emulation;
use super::files::{
    copy_into_tree, create_dir, remove_dir_contents, remove_stale_work, run, temporary_beside,
    tool, tree_size, with_debootstrap_log, write_file,
};
use super::init::Init;
use super::packages;
use super::recipe::Recipe;
use super::store::{lock_file, prune_releases};
use super::tune::{configure, sysvinit_steps};
use crate::error::Error;
use crate::kernel::Kernel;
use crate::release::Release;
use flotilla_host::arch::Arch;
use flotilla_host::cache::cache_dir;

/// Free space added to the tree's size when no size is given.
pub const DEFAULT_FREE_MIB: u64 = 512;

/// How many cached trees are kept (the newest, of every release together): the four
/// inits' of two architectures of two releases.
const KEEP_TREES: usize = 16;

/// What [`super::image`] resolved for a recipe, and its key describes: the build uses
/// the same values, not others looked up again.
pub(super) struct Resolved<'a> {
    /// The whole checked package list (defaults and the init's included).
    pub packages: &'a [String],
    pub mirror: &'a str,
    /// The release of the mirror's suite.
    pub release: Release,
    /// The mirror's index identity.
    pub index: &'a str,
    pub kernel: &'a Kernel,
    pub agent: &'a [u8],
}

/// The host programs the build runs, found before anything is done.
struct Tools {
    debootstrap: PathBuf,
    mke2fs: PathBuf,
    qemu_img: PathBuf,
    depmod: PathBuf,
}

impl Tools {
    fn find() -> Result<Tools, Error> {
        Ok(Tools {
            debootstrap: tool("debootstrap", "debootstrap")?,
            mke2fs: tool("mke2fs", "e2fsprogs")?,
            qemu_img: tool("qemu-img", "qemu-utils")?,
            depmod: tool("depmod", "kmod")?,
        })
    }
}

/// Builds the image of `recipe` at `output` from what `resolved` names; returns the
/// installed packages and their versions.
pub(super) fn build_into(
    recipe: &Recipe,
    resolved: &Resolved,
    output: &Path,
    log: &dyn Fn(&str),
) -> Result<Vec<(String, String)>, Error> {
    let started = Instant::now();
    let init = recipe.init;
    let base_packages = package_list(init, &[])?;
    let extra: Vec<String> = resolved
        .packages
        .iter()
        .filter(|p| !base_packages.contains(p))
        .cloned()
        .collect();
    let tools = Tools::find()?;
    let arch = recipe.arch;
    let emulation = Emulation::of(arch);
    if let Some(line) = emulation.describe(arch) {
        log(&line);
    }

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

    let base = BaseTree {
        init,
        packages: &base_packages,
        emulation,
    };
    base_tree(&tree, &cache, &base, resolved, &tools, work.path(), log)?;
    let t = Instant::now();
    let versions = if emulation == Emulation::Vm {
        packages_agent_in_vm(&tree, work.path(), recipe, resolved, &extra, log)?
    } else {
        let versions = packages_and_files(&tree, recipe, resolved.mirror, &extra, log)?;
        install_agent(&tree, work.path(), resolved.agent)?;
        versions
    };
    check_agent(&tree, init)?;
    install_modules(&tree, resolved.kernel, &tools)?;
    configure(&tree, init, arch, emulation != Emulation::Vm)?;
    log(&format!(
        "debian: agent {}, modules of kernel {} and configuration in {:.1} s",
        env!("CARGO_PKG_VERSION"),
        resolved.kernel.version,
        t.elapsed().as_secs_f64()
    ));
    make_disk(&tree, work.path(), recipe.size_mib, output, &tools, log)?;
    log(&format!(
        "debian: built the image in {:.1} s",
        started.elapsed().as_secs_f64()
    ));
    Ok(versions)
}

/// What a base tree is made of.
struct BaseTree<'a> {
    init: Init,
    /// The default packages and the init's.
    packages: &'a [String],
    emulation: Emulation,
}

/// Stage 1: the debootstrapped tree of `init` in `tree`, unpacked from the cache or
/// made now and cached (once for concurrent builds, under a lock).
fn base_tree(
    tree: &Path,
    cache: &Path,
    base: &BaseTree,
    resolved: &Resolved,
    tools: &Tools,
    work: &Path,
    log: &dyn Fn(&str),
) -> Result<(), Error> {
    let arch = resolved.kernel.arch;
    let tarball = cache.join(format!(
        "{}-{}.tar",
        resolved.release,
        cache_key(
            arch,
            resolved.release,
            base.init,
            base.packages,
            resolved.index
        )
    ));
    let locks = cache.join("locks");
    create_dir(&locks)?;
    let lock_name = tarball.with_extension("lock");
    let _tree_lock = lock_file(&locks.join(lock_name.file_name().unwrap_or_default()), log)?;
    if tarball.is_file() {
        unpack_cached_tree(tree, &tarball, resolved.release, log)
    } else {
        debootstrap(tree, base, resolved, tools, work, log)?;
        cache_tree(tree, cache, &tarball, log);
        Ok(())
    }
}

/// Unpacks the cached `tarball` into `tree`.
fn unpack_cached_tree(
    tree: &Path,
    tarball: &Path,
    release: Release,
    log: &dyn Fn(&str),
) -> Result<(), Error> {
    let t = Instant::now();
    run(
        Command::new("tar")
            .args(["--extract", "--numeric-owner", "--same-permissions"])
            .args(["--xattrs", "--xattrs-include=*"])
            .arg("--file")
            .arg(tarball)
            .arg("--directory")
            .arg(tree),
        "unpacking the cached tree",
    )?;
    // Marks it as recently used for pruning.
    let _ = std::fs::File::options()
        .append(true)
        .open(tarball)
        .and_then(|f| f.set_modified(std::time::SystemTime::now()));
    log(&format!(
        "debian: unpacked the cached {release} tree {} in {:.1} s",
        tarball.display(),
        t.elapsed().as_secs_f64()
    ));
    Ok(())
}

/// `debootstrap --variant=minbase` of `init`'s packages into `tree`, without the
/// downloaded packages and lists. For another architecture: through binfmt_misc as
/// for the host's, or its first stage (`--foreign`) here and the rest in the builder
/// VM.
fn debootstrap(
    tree: &Path,
    base: &BaseTree,
    resolved: &Resolved,
    tools: &Tools,
    work: &Path,
    log: &dyn Fn(&str),
) -> Result<(), Error> {
    let t = Instant::now();
    let (init, mirror) = (base.init, resolved.mirror);
    let arch = resolved.kernel.arch;
    let in_vm = base.emulation == Emulation::Vm;
    log(&format!(
        "debian: debootstrap {} {}({init}: minbase + {}) from {mirror}; this takes a few minutes",
        resolved.release,
        if arch.is_host() {
            String::new()
        } else {
            format!("{} ", arch.debian)
        },
        base.packages.join(","),
    ));
    let mut cmd = Command::new(&tools.debootstrap);
    if !arch.is_host() {
        cmd.arg(format!("--arch={}", arch.debian));
    }
    if in_vm {
        cmd.arg("--foreign");
    }
    cmd.args(["--variant=minbase", "--merged-usr"])
        .arg(format!("--include={}", base.packages.join(",")))
        .arg(resolved.release.name())
        .arg(tree)
        .arg(mirror);
    if let Err(e) = run(&mut cmd, "debootstrap") {
        return Err(with_debootstrap_log(e, tree));
    }
    if in_vm {
        log(&format!(
            "debian: debootstrap's first stage (download, unpack) done in {:.1} s",
            t.elapsed().as_secs_f64()
        ));
        second_stage_in_vm(tree, init, arch, resolved, work, log)?;
    } else if init == Init::Openrc {
        install_openrc(tree)?;
    }
    // Downloaded packages are not part of the system.
    remove_dir_contents(&tree.join("var/cache/apt/archives"), ".deb")?;
    remove_dir_contents(&tree.join("var/lib/apt/lists"), "")?;
    log(&format!(
        "debian: debootstrap done in {:.1} s",
        t.elapsed().as_secs_f64()
    ));
    Ok(())
}

/// debootstrap's second stage of a `--foreign` tree, and for OpenRC the swap of
/// `sysv-rc` for `openrc` (downloaded here first: the VM has no network), in the
/// builder VM.
fn second_stage_in_vm(
    tree: &Path,
    init: Init,
    arch: &Arch,
    resolved: &Resolved,
    work: &Path,
    log: &dyn Fn(&str),
) -> Result<(), Error> {
    let mut steps = vec![Step::new(
        "debootstrap's second stage",
        &["/debootstrap/debootstrap", "--second-stage"],
    )];
    if init == Init::Openrc {
        // The tree has no dpkg status before its second stage: apt downloads openrc
        // with all its dependencies (those debootstrap fetched are found in the cache).
        let empty = work.join("empty-dpkg-status");
        write_file(&empty, b"", 0o644)?;
        steps.push(packages::download(
            tree,
            resolved.mirror,
            resolved.release,
            arch,
            &["openrc".to_owned()],
            &[],
            Some(&empty),
        )?);
    }
    let result = builder_vm::run_steps(tree, work, resolved.kernel, &steps, 256, log);
    packages::after_steps(tree)?;
    result?;
    // apt's caches of the package lists; apt makes them again.
    remove_dir_contents(&tree.join("var/cache/apt"), ".bin")
}

/// Saves `tree` as the cached `tarball`; a failure is logged, not fatal (the next
/// build debootstraps again).
fn cache_tree(tree: &Path, cache: &Path, tarball: &Path, log: &dyn Fn(&str)) {
    let tmp = temporary_beside(tarball, "");
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
            .arg(tree)
            .arg("."),
        "saving the tree to the cache",
    )
    .and_then(|()| {
        std::fs::rename(&tmp, tarball).map_err(|source| Error::Io {
            what: format!("renaming {} to {}", tmp.display(), tarball.display()),
            source,
        })
    });
    match saved {
        Ok(()) => {
            log(&format!("debian: cached the tree as {}", tarball.display()));
            prune_releases(cache, ".tar", KEEP_TREES);
        }
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            log(&format!("debian: could not cache the tree: {e}"));
        }
    }
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

/// Stage 2: the `extra` packages and the recipe's local `.deb` files (apt-get in a
/// chroot), then the recipe's files; returns every installed package's version.
fn packages_and_files(
    tree: &Path,
    recipe: &Recipe,
    mirror: &str,
    extra: &[String],
    log: &dyn Fn(&str),
) -> Result<Vec<(String, String)>, Error> {
    if !extra.is_empty() || !recipe.debs.is_empty() {
        let t = Instant::now();
        let mut what: Vec<String> = extra.to_vec();
        for deb in &recipe.debs {
            let (name, version) = packages::deb_identity(deb)?;
            what.push(format!("{name} {version} ({})", deb.display()));
        }
        log(&format!("debian: apt-get install {}", what.join(", ")));
        packages::install(tree, mirror, recipe.release, extra, &recipe.debs)?;
        log(&format!(
            "debian: packages installed in {:.1} s",
            t.elapsed().as_secs_f64()
        ));
    }
    for file in &recipe.files {
        copy_into_tree(tree, &file.source, &file.guest)?;
    }
    let versions = packages::versions(tree)?;
    log_resolved(&versions, extra, log);
    Ok(versions)
}

/// Stages 2 and 3 for a tree built in the builder VM: the `extra` packages and the
/// recipe's local `.deb` files (downloaded here, installed there), the agent by its
/// own installer, and sysvinit's services a test machine is spared (see `tune.rs`),
/// in one run of the VM; then the recipe's files. Returns every installed package's
/// version.
fn packages_agent_in_vm(
    tree: &Path,
    work: &Path,
    recipe: &Recipe,
    resolved: &Resolved,
    extra: &[String],
    log: &dyn Fn(&str),
) -> Result<Vec<(String, String)>, Error> {
    let arch = recipe.arch;
    let mut steps = Vec::new();
    if !extra.is_empty() || !recipe.debs.is_empty() {
        log(&format!(
            "debian: downloading {} for {} on the host",
            extra
                .iter()
                .cloned()
                .chain(recipe.debs.iter().map(|d| d.display().to_string()))
                .collect::<Vec<_>>()
                .join(", "),
            arch.debian
        ));
        steps.push(packages::download(
            tree,
            resolved.mirror,
            resolved.release,
            arch,
            extra,
            &recipe.debs,
            None,
        )?);
    }
    let agent = format!("/{BUILD_DIR}/flotilla-agent");
    write_file(&tree.join(&agent[1..]), resolved.agent, 0o755)?;
    steps.push(Step::new(
        "flotilla-agent install",
        &[&agent, "install", "--root", "/"],
    ));
    if recipe.init == Init::Sysvinit {
        steps.extend(sysvinit_steps(tree));
    }
    let room = downloaded_mib(tree) * 4 + 256;
    let result = builder_vm::run_steps(tree, work, resolved.kernel, &steps, room, log);
    packages::after_steps(tree)?;
    result?;
    for file in &recipe.files {
        copy_into_tree(tree, &file.source, &file.guest)?;
    }
    let versions = packages::versions(tree)?;
    log_resolved(&versions, extra, log);
    Ok(versions)
}

/// MiB of packages waiting in the tree's apt cache.
fn downloaded_mib(tree: &Path) -> u64 {
    std::fs::read_dir(tree.join("var/cache/apt/archives"))
        .map(|entries| {
            entries
                .flatten()
                .filter_map(|e| e.metadata().ok())
                .map(|m| m.len())
                .sum::<u64>()
        })
        .unwrap_or(0)
        .div_ceil(1 << 20)
}

/// The log's line naming the versions of the packages the recipe asked for.
fn log_resolved(versions: &[(String, String)], extra: &[String], log: &dyn Fn(&str)) {
    let named: Vec<String> = versions
        .iter()
        .filter(|(name, _)| extra.contains(name))
        .map(|(name, version)| format!("{name} {version}"))
        .collect();
    if !named.is_empty() {
        log(&format!("debian: resolved {}", named.join(", ")));
    }
}

/// Stage 3: the agent, by its own installer (`flotilla-agent install --root TREE`).
fn install_agent(tree: &Path, work: &Path, agent: &[u8]) -> Result<(), Error> {
    let installer = work.join("flotilla-agent");
    write_file(&installer, agent, 0o755)?;
    run(
        Command::new(&installer)
            .arg("install")
            .arg("--root")
            .arg(tree),
        "flotilla-agent install",
    )
}

/// Whether the agent's installer enabled it as `init`'s service.
fn check_agent(tree: &Path, init: Init) -> Result<(), Error> {
    let enabled = tree.join(match init {
        Init::Systemd => "etc/systemd/system/multi-user.target.wants/flotilla-agent.service",
        // The installer links S99; insserv (update-rc.d, see `tune.rs`) renumbers.
        Init::Sysvinit => "etc/rc2.d/S??flotilla-agent",
        Init::Openrc => "etc/runlevels/default/flotilla-agent",
        // Stage 1 starts it (see `tune.rs`).
        Init::Agent => "usr/local/bin/flotilla-agent",
    });
    let found = if init == Init::Sysvinit {
        std::fs::read_dir(tree.join("etc/rc2.d")).is_ok_and(|entries| {
            entries.flatten().any(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                name.len() == "S99flotilla-agent".len()
                    && name.starts_with('S')
                    && name.ends_with("flotilla-agent")
            })
        })
    } else {
        std::fs::symlink_metadata(&enabled).is_ok()
    };
    if !found {
        return Err(Error::Image(format!(
            "flotilla-agent install did not enable its {init} service ({} is missing)",
            enabled.display()
        )));
    }
    Ok(())
}

/// Stage 4: the kernel's modules, and their index for udev and modprobe in the guest.
fn install_modules(tree: &Path, kernel: &Kernel, tools: &Tools) -> Result<(), Error> {
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
        Command::new(&tools.depmod)
            .arg("-b")
            .arg(tree)
            .arg(&kernel.version),
        "depmod",
    )
}

/// Stage 6: `tree` as an ext4 file system of `size_mib` (or the tree plus room), made
/// with `mke2fs -d` in `work`, then converted to the qcow2 `output`.
fn make_disk(
    tree: &Path,
    work: &Path,
    size_mib: Option<u64>,
    output: &Path,
    tools: &Tools,
    log: &dyn Fn(&str),
) -> Result<(), Error> {
    let t = Instant::now();
    let tree_mib = tree_size(tree)?.div_ceil(1 << 20);
    let size_mib = match size_mib {
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
    let raw = work.join("root.ext4");
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
        Command::new(&tools.mke2fs)
            .args(["-q", "-F", "-t", "ext4", "-L", "flotilla-root"])
            .args(["-E", "root_owner=0:0"])
            .arg("-d")
            .arg(tree)
            .arg(&raw),
        "mke2fs",
    )?;
    let tmp_out = temporary_beside(output, ".tmp");
    let converted = run(
        Command::new(&tools.qemu_img)
            .args(["convert", "-f", "raw", "-O", "qcow2"])
            .arg(&raw)
            .arg(&tmp_out),
        "qemu-img convert",
    )
    .and_then(|()| {
        std::fs::rename(&tmp_out, output).map_err(|source| Error::Io {
            what: format!("renaming {} to {}", tmp_out.display(), output.display()),
            source,
        })
    });
    if let Err(e) = converted {
        let _ = std::fs::remove_file(&tmp_out);
        return Err(e);
    }
    let on_disk = std::fs::metadata(output).map(|m| m.len()).unwrap_or(0);
    log(&format!(
        "debian: ext4 of {size_mib} MiB ({tree_mib} MiB used) -> qcow2 of {} MiB in {:.1} s",
        on_disk.div_ceil(1 << 20),
        t.elapsed().as_secs_f64()
    ));
    Ok(())
}

/// The tree plus [`DEFAULT_FREE_MIB`], rounded up to 64 MiB.
fn default_size(tree_mib: u64) -> u64 {
    // ext4's own metadata (inode tables, journal) takes a few percent.
    (tree_mib + tree_mib / 10 + DEFAULT_FREE_MIB).div_ceil(64) * 64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_size_leaves_room() {
        assert!(default_size(300) >= 300 + DEFAULT_FREE_MIB);
        assert_eq!(default_size(300) % 64, 0);
    }
}

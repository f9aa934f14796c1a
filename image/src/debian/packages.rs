//! Packages on top of the base tree: `apt-get install` in a chroot of the tree, for
//! Debian package names and local `.deb` files alike (apt resolves their dependencies
//! from the mirror), with a `policy-rc.d` that keeps the packages' services from
//! starting during the build; and the versions the tree ends up with. A tree of
//! another architecture built in the builder VM (which has no network) gets its
//! packages downloaded first by the host's apt working on the tree
//! ([`download`]), then installed in the VM with `apt-get install --no-download`.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::builder_vm::Step;
use super::files::{remove_dir_contents, run, write_file};
use crate::error::Error;
use crate::release::Release;
use flotilla_host::arch::Arch;

/// Where local `.deb` files wait in the tree while apt installs them.
const DEBS_IN_TREE: &str = "tmp/flotilla-debs";

/// What invoke-rc.d asks before it starts a service.
const POLICY_RC_D: &str = "usr/sbin/policy-rc.d";

/// Installs `packages` (names) and `debs` (host files) into `tree` from `mirror`. A name
/// the mirror does not have is [`Error::UnknownPackage`], found before anything is
/// installed. The tree keeps no package lists, downloaded packages or `policy-rc.d`.
pub(super) fn install(
    tree: &Path,
    mirror: &str,
    release: Release,
    packages: &[String],
    debs: &[PathBuf],
) -> Result<(), Error> {
    // apt in the chroot resolves the mirror's host name with the host's resolver.
    let resolv = std::fs::read("/etc/resolv.conf").unwrap_or_default();
    write_file(&tree.join("etc/resolv.conf"), &resolv, 0o644)?;
    let args = prepare(tree, mirror, release, packages, debs)?;
    let args: Vec<String> = args.into_iter().map(|(_, inside)| inside).collect();
    let result = apt(tree, &["update", "-q"], "apt-get update in the tree").and_then(|()| {
        // A dry run first: a name the mirror lacks is the user's error, not the build's.
        let simulated = apt_output(
            chroot_apt(tree),
            &["install", "--simulate", "--no-install-recommends"],
            &args,
        )?;
        check_simulated(&simulated, mirror, release)?;
        let mut install = vec!["install", "--yes", "--no-install-recommends"];
        install.extend(args.iter().map(String::as_str));
        apt(tree, &install, "apt-get install in the tree")
    });
    finish(tree);
    result?;
    remove_downloads(tree)
}

/// Readies `tree` for apt: the mirror as its only source, local `.deb` files copied
/// in, a `policy-rc.d`. Returns apt's arguments, each as the host sees it and as the
/// tree does.
fn prepare(
    tree: &Path,
    mirror: &str,
    release: Release,
    packages: &[String],
    debs: &[PathBuf],
) -> Result<Vec<(String, String)>, Error> {
    write_file(
        &tree.join("etc/apt/sources.list"),
        format!("deb {mirror} {release} main\n").as_bytes(),
        0o644,
    )?;
    // invoke-rc.d asks policy-rc.d before it starts a service: 101 is "not now".
    write_file(&tree.join(POLICY_RC_D), b"#!/bin/sh\nexit 101\n", 0o755)?;
    let mut args: Vec<(String, String)> = packages.iter().map(|p| (p.clone(), p.clone())).collect();
    for deb in debs {
        let name = deb
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let data = std::fs::read(deb).map_err(|source| Error::Io {
            what: format!("reading {}", deb.display()),
            source,
        })?;
        let in_tree = tree.join(DEBS_IN_TREE).join(&name);
        write_file(&in_tree, &data, 0o644)?;
        args.push((
            in_tree.to_string_lossy().into_owned(),
            format!("/{DEBS_IN_TREE}/{name}"),
        ));
    }
    Ok(args)
}

/// Removes what [`prepare`] added but the image keeps no trace of.
fn finish(tree: &Path) {
    let _ = std::fs::remove_dir_all(tree.join(DEBS_IN_TREE));
    let _ = std::fs::remove_file(tree.join(POLICY_RC_D));
}

/// Removes the downloaded packages, apt's caches and the package lists.
pub(super) fn remove_downloads(tree: &Path) -> Result<(), Error> {
    remove_dir_contents(&tree.join("var/cache/apt/archives"), ".deb")?;
    remove_dir_contents(&tree.join("var/cache/apt"), ".bin")?;
    remove_dir_contents(&tree.join("var/lib/apt/lists"), "")
}

/// A name the mirror lacks, in a simulated install's output, is the user's error.
fn check_simulated(simulated: &str, mirror: &str, release: Release) -> Result<(), Error> {
    match unknown_package(simulated) {
        Some(name) => Err(Error::UnknownPackage {
            package: name,
            suite: release.name().to_owned(),
            mirror: mirror.to_owned(),
        }),
        None => Ok(()),
    }
}

/// Downloads `packages` and the dependencies of `debs` (with the packages the tree
/// lacks for them) into `tree`'s `/var/cache/apt/archives` with the host's apt,
/// working on the tree of `arch` (its sources, lists, keys, and its dpkg status, or
/// `status` instead: an empty one before debootstrap's second stage has made it).
/// Returns the step that installs them in the tree without a network; after it,
/// [`after_steps`] cleans up. A name the mirror lacks is [`Error::UnknownPackage`].
pub(super) fn download(
    tree: &Path,
    mirror: &str,
    release: Release,
    arch: &Arch,
    packages: &[String],
    debs: &[PathBuf],
    status: Option<&Path>,
) -> Result<Step, Error> {
    let args = prepare(tree, mirror, release, packages, debs)?;
    let result = (|| {
        let host_args: Vec<String> = args.iter().map(|(host, _)| host.clone()).collect();
        run(
            host_apt(tree, arch, status).args(["update"]),
            &format!("apt-get update for the {} tree (on the host)", arch.debian),
        )?;
        let simulated = apt_output(
            host_apt(tree, arch, status),
            &["install", "--simulate", "--no-install-recommends"],
            &host_args,
        )?;
        check_simulated(&simulated, mirror, release)?;
        run(
            host_apt(tree, arch, status)
                .args([
                    "install",
                    "--download-only",
                    "--yes",
                    "--no-install-recommends",
                ])
                .args(&host_args),
            &format!(
                "apt-get install --download-only for the {} tree",
                arch.debian
            ),
        )
    })();
    if let Err(e) = result {
        finish(tree);
        return Err(e);
    }
    let inside: Vec<&str> = args.iter().map(|(_, inside)| inside.as_str()).collect();
    let mut argv = vec![
        "apt-get",
        "-q",
        "install",
        "--yes",
        "--no-install-recommends",
    ];
    // Everything is in the cache already. apt 2.6 refuses `--no-download` with a local
    // `.deb` ("Internal Error, Pathname to install is not absolute"): without it, a
    // package missing from the cache fails as a download in a VM with no network.
    if debs.is_empty() {
        argv.push("--no-download");
    }
    argv.extend(&inside);
    let names: Vec<&str> = packages
        .iter()
        .map(String::as_str)
        .chain(debs.iter().filter_map(|d| d.file_name()?.to_str()))
        .collect();
    Ok(Step::new(
        &format!("apt-get install {}", names.join(" ")),
        &argv,
    ))
}

/// Cleans up after the steps [`download`] prepared have run.
pub(super) fn after_steps(tree: &Path) -> Result<(), Error> {
    finish(tree);
    remove_downloads(tree)
}

/// The host's apt working on `tree`, a tree of `arch`: its configuration, sources,
/// lists, keys and caches are the tree's, and nothing is locked or run as `_apt`.
fn host_apt(tree: &Path, arch: &Arch, status: Option<&Path>) -> Command {
    let mut cmd = Command::new("apt-get");
    cmd.arg("-q");
    let mut options = vec![
        format!("Dir={}", tree.display()),
        format!("APT::Architecture={}", arch.debian),
        format!("APT::Architectures::={}", arch.debian),
        "Debug::NoLocking=1".into(),
        "APT::Sandbox::User=root".into(),
    ];
    if let Some(status) = status {
        options.push(format!("Dir::State::status={}", status.display()));
    }
    for o in options {
        cmd.arg("-o").arg(o);
    }
    cmd.env("LC_ALL", "C.UTF-8");
    cmd
}

fn chroot_apt(tree: &Path) -> Command {
    let mut cmd = Command::new("chroot");
    cmd.arg(tree)
        .arg("apt-get")
        .env("DEBIAN_FRONTEND", "noninteractive")
        .env("LC_ALL", "C.UTF-8")
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin");
    cmd
}

fn apt(tree: &Path, args: &[&str], what: &str) -> Result<(), Error> {
    run(chroot_apt(tree).args(args), what)
}

/// apt-get's stdout and stderr together, whatever its exit status.
fn apt_output(mut apt: Command, args: &[&str], more: &[String]) -> Result<String, Error> {
    let out = apt
        .args(args)
        .args(more)
        .stdin(Stdio::null())
        .output()
        .map_err(|source| Error::Io {
            what: "starting apt-get".into(),
            source,
        })?;
    Ok(format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    ))
}

/// The first package apt says it cannot find: `E: Unable to locate package NAME`, or
/// `E: Package 'NAME' has no installation candidate` (a name only other packages
/// provide, or one with no version in the suite).
fn unknown_package(apt_said: &str) -> Option<String> {
    apt_said.lines().find_map(|l| {
        if let Some(name) = l.strip_prefix("E: Unable to locate package ") {
            return Some(name.trim().to_owned());
        }
        let rest = l.strip_prefix("E: Package '")?;
        let (name, tail) = rest.split_once('\'')?;
        tail.contains("has no installation candidate")
            .then(|| name.to_owned())
    })
}

/// `package version` of every package installed in `tree`, sorted.
pub(super) fn versions(tree: &Path) -> Result<Vec<(String, String)>, Error> {
    let out = Command::new("dpkg-query")
        .arg(format!(
            "--admindir={}",
            tree.join("var/lib/dpkg").display()
        ))
        .args(["-W", "-f", "${Package} ${Version} ${db:Status-Abbrev}\\n"])
        .stdin(Stdio::null())
        .output()
        .map_err(|source| Error::Io {
            what: "running dpkg-query".into(),
            source,
        })?;
    if !out.status.success() {
        return Err(Error::Tool {
            what: "dpkg-query -W in the tree".into(),
            status: flotilla_host::process::describe_status(out.status),
            output: vec![String::from_utf8_lossy(&out.stderr).trim().to_owned()],
        });
    }
    let mut list: Vec<(String, String)> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            let (name, version, status) = (w.next()?, w.next()?, w.next()?);
            (status == "ii").then(|| (name.to_owned(), version.to_owned()))
        })
        .collect();
    list.sort();
    Ok(list)
}

/// The package name and version inside a `.deb` file.
pub(super) fn deb_identity(deb: &Path) -> Result<(String, String), Error> {
    let out = Command::new("dpkg-deb")
        .arg("--field")
        .arg(deb)
        .args(["Package", "Version"])
        .stdin(Stdio::null())
        .output()
        .map_err(|source| Error::Io {
            what: "running dpkg-deb".into(),
            source,
        })?;
    let text = String::from_utf8_lossy(&out.stdout);
    let field = |key: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
            .map(|v| v.trim().to_owned())
    };
    match (out.status.success(), field("Package"), field("Version")) {
        (true, Some(name), Some(version)) => Ok((name, version)),
        _ => Err(Error::Image(format!(
            "{} is not a Debian package: dpkg-deb --field says {}",
            deb.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn apt_names_the_package_it_cannot_find() {
        let said = "Reading package lists...\nBuilding dependency tree...\n\
                    E: Unable to locate package nosuch-pkg\n";
        assert_eq!(unknown_package(said).as_deref(), Some("nosuch-pkg"));
        let said = "Package mail-transport-agent is a virtual package provided by:\n\
                    E: Package 'mail-transport-agent' has no installation candidate\n";
        assert_eq!(
            unknown_package(said).as_deref(),
            Some("mail-transport-agent")
        );
        assert_eq!(unknown_package("Inst curl (7.88)\nConf curl\n"), None);
    }
}

//! What a base tree holds and how it is cached: the default packages, the init's and
//! the ones asked for (names checked before they reach apt), and the key of the
//! debootstrapped tree in the cache.

use sha2::{Digest, Sha256};

use super::init::{Init, INIT_PACKAGES};
use crate::error::Error;
use crate::release::Release;
use flotilla_host::arch::Arch;

/// Packages every image has, on top of debootstrap's `minbase` variant and its
/// [`Init::packages`].
pub const DEFAULT_PACKAGES: &[&str] = &["iproute2", "procps", "kmod", "udev"];

/// Bump when the cached tree's content changes for the same package list.
const TREE_LAYOUT: &str = "flotilla-debian-tree-2";

/// The default packages, the init's and `extra`, sorted and without duplicates; names
/// are checked ([`check_package_name`]) so nothing odd reaches apt's command line.
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
        check_package_name(init, p).map_err(|m| {
            Error::Image(if INIT_PACKAGES.contains(&p) {
                format!("{m}\nhint: choose the init with --init systemd|sysvinit|openrc|agent")
            } else {
                m
            })
        })?;
        all.push(p.to_owned());
    }
    all.sort();
    all.dedup();
    Ok(all)
}

/// Whether `name` may be asked for in an image of `init`: a Debian package name
/// (lowercase letters, digits, `+`, `-`, `.`), and not a package that makes another
/// init system. The error is a sentence for the user.
pub fn check_package_name(init: Init, name: &str) -> Result<(), String> {
    let valid = name.len() >= 2
        && name.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "+-.".contains(c));
    if !valid {
        return Err(format!(
            "`{name}` is not a Debian package name (lowercase letters, digits, `+`, `-`, `.`)"
        ));
    }
    // The base tree has its init already: another one would conflict with it.
    if INIT_PACKAGES.contains(&name) && !init.packages().contains(&name) {
        return Err(format!(
            "package `{name}` makes the init system, which is {init} in this image"
        ));
    }
    Ok(())
}

/// The cache key of a debootstrapped tree: the architecture, the release (its suite),
/// the variant, the init, the packages and the mirror's index of that release and
/// architecture (see [`index_identity`](super::index_identity)).
pub fn cache_key(
    arch: &Arch,
    release: Release,
    init: Init,
    packages: &[String],
    index: &str,
) -> String {
    let mut hasher = Sha256::new();
    hasher.update(TREE_LAYOUT);
    // amd64 trees were cached before there were other architectures: their keys stay
    // the same (their index, of binary-amd64, tells them apart as well).
    if arch.debian != "amd64" {
        hasher.update(arch.debian);
        hasher.update([0]);
    }
    // bookworm trees were cached when it was the only release: "bookworm" here keeps
    // their keys.
    hasher.update(release.name());
    hasher.update("minbase");
    hasher.update(init.name());
    hasher.update([0]);
    hasher.update(index);
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
        let key =
            |init, list: &[String]| cache_key(Arch::host(), Release::Trixie, init, list, "index");
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
        let host = Arch::host();
        assert_ne!(
            cache_key(host, Release::Trixie, Init::Sysvinit, &sysv, "i"),
            cache_key(host, Release::Trixie, Init::Openrc, &openrc, "i")
        );
        // Nor do two architectures share a tree, whatever their index.
        for a in &flotilla_host::arch::ARCHES {
            for b in &flotilla_host::arch::ARCHES {
                if a != b {
                    assert_ne!(
                        cache_key(a, Release::Trixie, Init::Sysvinit, &sysv, "i"),
                        cache_key(b, Release::Trixie, Init::Sysvinit, &sysv, "i")
                    );
                }
            }
        }
        // Nor do two releases.
        assert_ne!(
            cache_key(host, Release::Trixie, Init::Sysvinit, &sysv, "i"),
            cache_key(host, Release::Bookworm, Init::Sysvinit, &sysv, "i")
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
}

//! A Debian machine's content as the spec writes it: `packages` (names, or local `.deb`
//! files relative to the spec), `files` (guest path = host file), `init` and `release`,
//! checked into [`PackageSpec`]s, [`FileSpec`]s, an [`Init`] and a [`Release`], each
//! error at its entry.

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::{Component, Path, PathBuf};

use toml::Spanned;

use super::types::{FileSpec, PackageSource, PackageSpec};
use flotilla_host::arch::Arch;
use flotilla_image::debian::{check_package_name, deb_mismatch, Init, Release};

/// An error message and the span it is about.
type Located = (Range<usize>, String);

/// The checked `init`: through [`Init`]'s own parser, so every init it knows is
/// accepted.
pub(super) fn check_init(init: Option<Spanned<String>>) -> Result<Option<Init>, Located> {
    let Some(init) = init else {
        return Ok(None);
    };
    match init.get_ref().parse::<Init>() {
        Ok(i) => Ok(Some(i)),
        Err(flotilla_image::Error::Image(m)) => Err((init.span(), format!("init: {m}"))),
        Err(e) => Err((init.span(), format!("init: {e}"))),
    }
}

/// The checked `release`: through [`Release`]'s own parser, so every release it knows
/// is accepted, and the error lists them.
pub(super) fn check_release(release: Option<Spanned<String>>) -> Result<Option<Release>, Located> {
    let Some(release) = release else {
        return Ok(None);
    };
    match release.get_ref().parse::<Release>() {
        Ok(r) => Ok(Some(r)),
        Err(flotilla_image::Error::Image(m)) => Err((release.span(), format!("release: {m}"))),
        Err(e) => Err((release.span(), format!("release: {e}"))),
    }
}

/// The checked `packages` of a machine of `arch`; `place` turns a span into (line,
/// column).
pub(super) fn check_packages(
    packages: Vec<Spanned<String>>,
    init: Init,
    arch: &Arch,
    dir: &Path,
    place: impl Fn(usize) -> (usize, usize),
) -> Result<Vec<PackageSpec>, Located> {
    let mut out = Vec::new();
    for entry in packages {
        let span = entry.span();
        let (line, column) = place(span.start);
        let text = entry.into_inner();
        let source = if text.ends_with(".deb") {
            let path = dir.join(&text);
            if !path.is_file() {
                return Err((
                    span,
                    format!("package file {} does not exist", path.display()),
                ));
            }
            if let Some(why) = deb_mismatch(&path, arch) {
                return Err((span, why));
            }
            PackageSource::Deb(std::path::absolute(&path).unwrap_or(path))
        } else {
            check_package_name(init, &text).map_err(|m| {
                (
                    span.clone(),
                    format!("packages: {m}; a local package is a path ending in `.deb`"),
                )
            })?;
            PackageSource::Name(text)
        };
        out.push(PackageSpec {
            source,
            line,
            column,
        });
    }
    Ok(out)
}

/// The checked `files`: absolute, plain guest paths; host files that exist.
pub(super) fn check_files(
    files: BTreeMap<Spanned<String>, Spanned<PathBuf>>,
    dir: &Path,
) -> Result<Vec<FileSpec>, Located> {
    let mut out = Vec::new();
    for (guest, source) in files {
        let guest_path = PathBuf::from(guest.get_ref());
        let plain = guest_path.is_absolute()
            && guest_path.components().count() > 1
            && guest_path
                .components()
                .all(|c| matches!(c, Component::RootDir | Component::Normal(_)));
        if !plain || guest.get_ref().ends_with('/') {
            return Err((
                guest.span(),
                format!(
                    "files: `{}` is not an absolute path of a file in the guest (such as \"/etc/app.conf\")",
                    guest.get_ref()
                ),
            ));
        }
        let resolved = dir.join(source.get_ref());
        if resolved.is_dir() {
            return Err((
                source.span(),
                format!("files: {} is a folder; name each file", resolved.display()),
            ));
        }
        if !resolved.is_file() {
            return Err((
                source.span(),
                format!(
                    "files: {} (for {}) does not exist",
                    resolved.display(),
                    guest.get_ref()
                ),
            ));
        }
        out.push(FileSpec {
            guest: guest_path,
            source: std::path::absolute(&resolved).unwrap_or(resolved),
        });
    }
    Ok(out)
}

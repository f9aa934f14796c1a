//! Each architecture's static busybox, and the applets it has. The host's comes from
//! Debian's `busybox-static` (`/bin/busybox`); another architecture's is unpacked by
//! `scripts/setup` into `<cache>/busybox/<debian arch>/`, with the applet list of the
//! host's busybox of the same version beside it (`applets`): a binary of another
//! architecture cannot be run to ask.

use std::path::{Path, PathBuf};

use super::elf::{elf_machine, is_static_elf};
use crate::error::Error;
use flotilla_host::arch::Arch;
use flotilla_host::cache::cache_dir;

/// Where the static busybox of `arch` comes from: `$FLOTILLA_BUSYBOX_<ARCH>` (or, for
/// the host's architecture, `$FLOTILLA_BUSYBOX`); else `/bin/busybox` for the host's
/// architecture and `<cache>/busybox/<debian arch>/busybox` for another.
pub fn busybox_path(arch: &Arch) -> PathBuf {
    match arch.env("FLOTILLA_BUSYBOX") {
        Some(path) => PathBuf::from(path),
        None if arch.is_host() => PathBuf::from("/bin/busybox"),
        None => cache_dir()
            .join("busybox")
            .join(arch.debian)
            .join("busybox"),
    }
}

/// Checks the static busybox of `arch` as machines will use it (static, of that
/// architecture, with its applet list): its path and the number of its applets
/// (`flotilla doctor`).
pub fn check_busybox(arch: &Arch) -> Result<(PathBuf, usize), Error> {
    let (_, applets) = busybox(arch)?;
    Ok((busybox_path(arch), applets.len()))
}

/// The static busybox of `arch`, checked to be static and of that architecture, and
/// its applets' paths (`bin/sh`, `sbin/ip`, ...).
pub(crate) fn busybox(arch: &Arch) -> Result<(Vec<u8>, Vec<String>), Error> {
    let path = busybox_path(arch);
    let hint = if arch.is_host() {
        "install busybox-static (scripts/setup does)".to_owned()
    } else {
        format!(
            "run scripts/setup: it fetches busybox-static for {}",
            arch.debian
        )
    };
    let bytes = std::fs::read(&path).map_err(|source| Error::Io {
        what: format!("reading {arch} busybox {} ({hint})", path.display()),
        source,
    })?;
    if !is_static_elf(&bytes) {
        return Err(Error::Setup {
            what: format!("{} is not a static binary", path.display()),
            hint,
        });
    }
    if elf_machine(&bytes) != Some(arch.elf_machine) {
        return Err(Error::Setup {
            what: format!("{} is not a busybox for {arch}", path.display()),
            hint,
        });
    }
    let applets = if arch.is_host() {
        applets_of(&path)?
    } else {
        listed_applets(&path.with_file_name("applets"), &hint)?
    };
    Ok((bytes, applets))
}

/// The applets `busybox --list-full` lists.
fn applets_of(busybox: &Path) -> Result<Vec<String>, Error> {
    let out = std::process::Command::new(busybox)
        .arg("--list-full")
        .output()
        .map_err(|source| Error::Io {
            what: format!("running {} --list-full", busybox.display()),
            source,
        })?;
    parse_applets(&String::from_utf8_lossy(&out.stdout)).ok_or_else(|| Error::Setup {
        what: format!("{} --list-full listed no applets", busybox.display()),
        hint: "install busybox-static".into(),
    })
}

/// The applets listed in the file `list` (`busybox --list-full`'s output).
fn listed_applets(list: &Path, hint: &str) -> Result<Vec<String>, Error> {
    let text = std::fs::read_to_string(list).map_err(|source| Error::Io {
        what: format!("reading busybox's applet list {} ({hint})", list.display()),
        source,
    })?;
    parse_applets(&text).ok_or_else(|| Error::Setup {
        what: format!("{} lists no applets", list.display()),
        hint: hint.to_owned(),
    })
}

/// Applet paths, one per line, relative, sorted; `None` if there are none.
fn parse_applets(text: &str) -> Option<Vec<String>> {
    let mut applets: Vec<String> = text
        .lines()
        .map(|l| l.trim().trim_start_matches('/').to_owned())
        .filter(|l| !l.is_empty() && !l.contains(".."))
        .collect();
    applets.sort();
    applets.dedup();
    (!applets.is_empty()).then_some(applets)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn applet_lists_are_relative_sorted_and_safe() {
        let list = parse_applets("/usr/bin/wc\n/bin/sh\n\n/bin/../etc/x\n/bin/sh\n").unwrap();
        assert_eq!(list, ["bin/sh", "usr/bin/wc"]);
        assert_eq!(parse_applets("\n"), None);
    }
}

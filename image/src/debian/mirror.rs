//! Where the packages come from: the mirror (`FLOTILLA_DEBIAN_MIRROR`, else the host's
//! own from its apt sources, else debootstrap's default), and the identity of the
//! mirror's package index of a release, which fixes the versions a build resolves.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::release::Release;
use flotilla_host::arch::Arch;

/// The environment variable that names the mirror to build from.
pub const MIRROR_ENV: &str = "FLOTILLA_DEBIAN_MIRROR";

/// The mirror images are built from: `$FLOTILLA_DEBIAN_MIRROR`, else [`host_mirror`],
/// else debootstrap's own default (read from the debootstrap script); `None` when none
/// of them names one.
pub fn mirror() -> Option<String> {
    if let Some(m) = std::env::var_os(MIRROR_ENV) {
        let m = m.to_string_lossy().trim().trim_end_matches('/').to_owned();
        if !m.is_empty() {
            return Some(m);
        }
    }
    host_mirror().or_else(|| {
        let script = flotilla_host::programs::which_system_tool("debootstrap")?;
        let text = std::fs::read_to_string(script).ok()?;
        text.lines().find_map(|l| {
            let value = l.trim().strip_prefix("DEF_MIRROR=")?;
            let value = value.trim_matches('"');
            usable_uri(value).then(|| value.to_owned())
        })
    })
}

/// The identity of the mirror's `main` package index of `release` for `arch`: the
/// SHA256 that the suite's `InRelease` (or `Release`) gives
/// `main/binary-<debian arch>/Packages.xz`.
/// The same index resolves every package name to the same version. The error says why
/// the mirror could not be asked.
pub fn index_identity(mirror: &str, release: Release, arch: &Arch) -> Result<String, String> {
    let index = format!("main/binary-{}/Packages.xz", arch.debian);
    let mut last = String::new();
    for name in ["InRelease", "Release"] {
        let url = format!("{}/dists/{release}/{name}", mirror.trim_end_matches('/'));
        match fetch(&url) {
            Ok(text) => {
                return packages_sha256(&text, &index)
                    .ok_or_else(|| format!("{url} lists no SHA256 of {index}"))
            }
            Err(e) => last = e,
        }
    }
    Err(last)
}

/// A small file of the mirror, by `wget` (which debootstrap needs too), or read from a
/// `file:` mirror.
fn fetch(url: &str) -> Result<String, String> {
    if let Some(path) = url.strip_prefix("file:") {
        let path = Path::new(path.trim_start_matches("//"));
        return std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()));
    }
    let out = Command::new("wget")
        .args(["--no-verbose", "--timeout=15", "--tries=2", "-O", "-"])
        .arg(url)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("running wget: {e}"))?;
    if out.status.success() {
        return Ok(String::from_utf8_lossy(&out.stdout).into_owned());
    }
    let said = String::from_utf8_lossy(&out.stderr);
    let said = said
        .lines()
        .rfind(|l| !l.trim().is_empty())
        .unwrap_or("no output");
    Err(format!("wget {url}: {}", said.trim()))
}

/// The SHA256 of `index` (`main/binary-amd64/Packages.xz`) in a Release file's
/// `SHA256:` list.
fn packages_sha256(release: &str, index: &str) -> Option<String> {
    let mut in_sha256 = false;
    for line in release.lines() {
        if !line.starts_with(' ') {
            in_sha256 = line.trim_end() == "SHA256:";
            continue;
        }
        let mut words = line.split_whitespace();
        let (Some(sum), Some(_size), Some(name)) = (words.next(), words.next(), words.next())
        else {
            continue;
        };
        if in_sha256 && name == index && sum.len() == 64 {
            return Some(sum.to_owned());
        }
    }
    None
}

/// The host's own Debian mirror (the first `deb` source with a suite of a [`Release`]
/// and `main`: a mirror of one release has them all), from `/etc/apt/sources.list` and `/etc/apt/sources.list.d`; `None`
/// lets debootstrap use its default.
pub fn host_mirror() -> Option<String> {
    let mut files = vec![PathBuf::from("/etc/apt/sources.list")];
    if let Ok(entries) = std::fs::read_dir("/etc/apt/sources.list.d") {
        let mut more: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
        more.sort();
        files.extend(more);
    }
    files.iter().find_map(|file| {
        let text = std::fs::read_to_string(file).ok()?;
        let name = file.to_string_lossy();
        if name.ends_with(".sources") {
            mirror_in_deb822(&text)
        } else if name.ends_with(".list") {
            mirror_in_one_line(&text)
        } else {
            None
        }
    })
}

/// Whether `suite` is a release's own suite (not its `-updates` or `-security`).
fn is_release(suite: &str) -> bool {
    suite.parse::<Release>().is_ok()
}

fn usable_uri(uri: &str) -> bool {
    ["http://", "https://", "file:/"]
        .iter()
        .any(|s| uri.starts_with(s))
}

/// `deb [options] URI SUITE COMPONENT...` lines.
fn mirror_in_one_line(text: &str) -> Option<String> {
    text.lines().find_map(|line| {
        let line = line.split('#').next().unwrap_or("").trim();
        let mut words = line.split_whitespace();
        if words.next() != Some("deb") {
            return None;
        }
        let mut rest: Vec<&str> = words.collect();
        if rest.first().is_some_and(|w| w.starts_with('[')) {
            let end = rest.iter().position(|w| w.ends_with(']'))?;
            rest.drain(..=end);
        }
        match rest.as_slice() {
            [uri, suite, components @ ..]
                if is_release(suite) && components.contains(&"main") && usable_uri(uri) =>
            {
                Some((*uri).to_owned())
            }
            _ => None,
        }
    })
}

/// deb822 stanzas (`Types:`, `URIs:`, `Suites:`, `Components:`).
fn mirror_in_deb822(text: &str) -> Option<String> {
    text.split("\n\n").find_map(|stanza| {
        let field = |key: &str| -> Vec<&str> {
            stanza
                .lines()
                .filter(|l| !l.trim_start().starts_with('#'))
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.trim().eq_ignore_ascii_case(key).then_some(v)
                })
                .map(|v| v.split_whitespace().collect())
                .unwrap_or_default()
        };
        if field("Enabled").first() == Some(&"no")
            || !field("Types").contains(&"deb")
            || !field("Suites").into_iter().any(is_release)
            || !field("Components").contains(&"main")
        {
            return None;
        }
        field("URIs")
            .into_iter()
            .find(|u| usable_uri(u))
            .map(str::to_owned)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_index_is_known_by_its_sha256() {
        let release = "Origin: Debian\nMD5Sum:\n 0123  8790396 main/binary-amd64/Packages.xz\n\
                       SHA256:\n aaaa  12 main/binary-all/Packages.xz\n \
                       9e0b5aabb2465b3d2e7a7fe27f9913846277833f7a2826e7767acccff5b588c5  8790396 main/binary-amd64/Packages.xz\n\
                       \x20bbbb  9 main/binary-arm64/Packages.xz\n\
                       Acquire-By-Hash: yes\n";
        assert_eq!(
            packages_sha256(release, "main/binary-amd64/Packages.xz").as_deref(),
            Some("9e0b5aabb2465b3d2e7a7fe27f9913846277833f7a2826e7767acccff5b588c5")
        );
        assert_eq!(
            packages_sha256(release, "main/binary-arm64/Packages.xz"),
            None,
            "not 64 hex digits"
        );
        assert_eq!(
            packages_sha256(
                "SHA256:\n abc 1 main/binary-amd64/Packages\n",
                "main/binary-amd64/Packages.xz"
            ),
            None
        );
        // A closed port: the error says what was asked and what wget said.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let e = index_identity(
            &format!("http://127.0.0.1:{port}/debian"),
            Release::Bookworm,
            Arch::host(),
        )
        .unwrap_err();
        assert!(
            e.contains(&format!(
                "wget http://127.0.0.1:{port}/debian/dists/bookworm/Release"
            )),
            "{e}"
        );
        assert!(e.contains("refused"), "{e}");
    }

    #[test]
    fn mirrors_are_read_from_both_source_formats() {
        let one_line = "# comment\ndeb-src http://src.example/debian bookworm main\n\
                        deb [arch=amd64 signed-by=/k.gpg] http://a.example/debian bookworm main contrib\n";
        assert_eq!(
            mirror_in_one_line(one_line).as_deref(),
            Some("http://a.example/debian")
        );
        assert_eq!(
            mirror_in_one_line("deb http://s.example/ bookworm-security main\n"),
            None
        );
        let deb822 = "Types: deb\nURIs: http://b.example/debian-security\n\
                      Suites: bookworm-security\nComponents: main\n\n\
                      Types: deb deb-src\n# URIs: http://commented.example/\n\
                      URIs: http://c.example/debian\nSuites: bookworm bookworm-updates\n\
                      Components: main\n";
        assert_eq!(
            mirror_in_deb822(deb822).as_deref(),
            Some("http://c.example/debian")
        );
        assert_eq!(
            mirror_in_deb822("Types: deb\nURIs: http://d/\nSuites: nodistro\nComponents: main\n"),
            None
        );
        // A trixie host's sources serve bookworm machines too, and the other way round.
        assert_eq!(
            mirror_in_one_line("deb http://t.example/debian trixie main\n").as_deref(),
            Some("http://t.example/debian")
        );
        assert_eq!(
            mirror_in_deb822(
                "Types: deb\nURIs: http://e/\nSuites: trixie-updates trixie\nComponents: main\n"
            )
            .as_deref(),
            Some("http://e/")
        );
    }
}

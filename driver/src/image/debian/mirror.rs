//! Where the packages come from: the Debian release, and the host's own mirror from
//! its apt sources.

use std::path::PathBuf;

/// The Debian release the images are made of.
pub const SUITE: &str = "bookworm";

/// The host's own Debian mirror for [`SUITE`] (the first `deb` source with that suite
/// and `main`), from `/etc/apt/sources.list` and `/etc/apt/sources.list.d`; `None`
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
                if *suite == SUITE && components.contains(&"main") && usable_uri(uri) =>
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
            || !field("Suites").contains(&SUITE)
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
    }
}

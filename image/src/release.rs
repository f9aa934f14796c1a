//! The Debian release an image is made of ([`Release`]): its suite on the mirror
//! (debootstrap's, apt's), its version (`VERSION_ID` in `/etc/os-release`), and its
//! cloud kernel, which `scripts/setup` fetches into `<cache>/kernel/<release>-<arch>`.

use crate::error::Error;

/// A Debian release Debian machines are made of.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Release {
    /// Debian 12, oldstable since August 2025, whose cloud kernel (on any host)
    /// the default guest boots (`<cache>/kernel/current-<arch>`).
    Bookworm,
    /// Debian 13, stable since August 2025: the default.
    #[default]
    Trixie,
}

impl Release {
    /// Every release, oldest first.
    pub const ALL: [Release; 2] = [Release::Bookworm, Release::Trixie];

    /// Its codename: the suite on the mirror and the name specs use (`release = "trixie"`).
    pub fn name(self) -> &'static str {
        match self {
            Release::Bookworm => "bookworm",
            Release::Trixie => "trixie",
        }
    }

    /// Its major version number, `VERSION_ID` in its `/etc/os-release`.
    pub fn version(self) -> u32 {
        match self {
            Release::Bookworm => 12,
            Release::Trixie => 13,
        }
    }

    /// Whether the default guest boots this release's cloud kernel: its kernel is
    /// `<cache>/kernel/current-<arch>` (and `$FLOTILLA_KERNEL_DIR`), as before there
    /// were releases to choose.
    pub fn is_default_guest_kernel(self) -> bool {
        self == Release::Bookworm
    }

    /// The names, for messages: `bookworm, trixie`.
    pub fn names() -> String {
        Release::ALL.map(Release::name).join(", ")
    }
}

impl std::fmt::Display for Release {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Release {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        Release::ALL
            .into_iter()
            .find(|r| r.name() == s)
            .ok_or_else(|| {
                Error::Image(format!(
                    "`{s}` is not a Debian release Flotilla builds ({})",
                    Release::names()
                ))
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn releases_parse_by_name() {
        for r in Release::ALL {
            assert_eq!(r.name().parse::<Release>().unwrap(), r);
        }
        assert_eq!(Release::default(), Release::Trixie);
        assert_eq!(Release::Trixie.version(), 13);
        assert_eq!(Release::Bookworm.version(), 12);
        assert!(Release::Bookworm.is_default_guest_kernel());
        let e = "buster".parse::<Release>().unwrap_err().to_string();
        assert!(
            e.contains("`buster` is not a Debian release Flotilla builds (bookworm, trixie)"),
            "{e}"
        );
    }
}

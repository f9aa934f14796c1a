//! The init system of a Debian image ([`Init`]): what runs as PID 1 and which
//! packages make it.

use crate::error::Error;

/// The init system of an image: what runs as PID 1 and starts the agent's service.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Init {
    /// systemd (`systemd-sysv`); the agent is a systemd unit.
    #[default]
    Systemd,
    /// sysvinit (`sysvinit-core`, with `sysv-rc` and `initscripts`); the agent is an
    /// init script in `/etc/rc2.d` to `rc5.d`.
    Sysvinit,
    /// Debian's OpenRC (`openrc`), run from sysvinit's `/etc/inittab`; the agent is an
    /// `openrc-run` script in the `default` runlevel.
    Openrc,
    /// No service manager: stage 1 starts the agent itself as PID 1 of the Debian root
    /// (as in the default guest), for machines that only need the userland. The image
    /// carries `/etc/flotilla/agent-init` so that stage 1 knows.
    Agent,
}

impl Init {
    /// Every choice, in the order `--help` lists them.
    pub const ALL: [Init; 4] = [Init::Systemd, Init::Sysvinit, Init::Openrc, Init::Agent];

    /// The name on the command line (`--init NAME`).
    pub fn name(self) -> &'static str {
        match self {
            Init::Systemd => "systemd",
            Init::Sysvinit => "sysvinit",
            Init::Openrc => "openrc",
            Init::Agent => "agent",
        }
    }

    /// What debootstrap installs for it. OpenRC conflicts with `sysv-rc`, which
    /// debootstrap's resolver always picks for `sysvinit-core`: `openrc` replaces it
    /// with apt in the tree afterwards. The agent needs none: minbase has no init
    /// (Debian's `init` is only `important`).
    pub fn packages(self) -> &'static [&'static str] {
        match self {
            Init::Systemd => &["systemd-sysv"],
            Init::Sysvinit | Init::Openrc => &["sysvinit-core"],
            Init::Agent => &[],
        }
    }
}

impl std::fmt::Display for Init {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Init {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        Init::ALL
            .into_iter()
            .find(|i| i.name() == s)
            .ok_or_else(|| {
                Error::Image(format!(
                    "`{s}` is not an init system of a Debian image (systemd, sysvinit, openrc \
                     or agent)"
                ))
            })
    }
}

/// Packages that make or run PID 1, chosen by [`Init`] and not by the package list.
pub(super) const INIT_PACKAGES: &[&str] = &[
    "systemd-sysv",
    "sysvinit-core",
    "sysv-rc",
    "file-rc",
    "openrc",
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inits_parse_by_name() {
        for init in Init::ALL {
            assert_eq!(init.name().parse::<Init>().unwrap(), init);
        }
        assert_eq!(Init::default(), Init::Systemd);
        assert_eq!("agent".parse::<Init>().unwrap(), Init::Agent);
        assert!(Init::Agent.packages().is_empty());
        let e = "upstart".parse::<Init>().unwrap_err().to_string();
        assert!(
            e.contains(
                "`upstart` is not an init system of a Debian image (systemd, sysvinit, openrc or agent)"
            ),
            "{e}"
        );
    }
}

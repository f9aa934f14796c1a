//! The in-guest agent's static binaries, one per architecture: built by this crate's
//! `build.rs` and embedded, so the `flotilla` binary carries everything the default
//! image of every architecture needs.

use std::borrow::Cow;
use std::path::PathBuf;

use crate::error::Error;
use flotilla_host::arch::Arch;

/// Each architecture's name and its agent, built at build time.
static EMBEDDED_AGENTS: &[(&str, &[u8])] = include!(concat!(env!("OUT_DIR"), "/agents.rs"));

/// The agent binary for machines of `arch`: `$FLOTILLA_AGENT_<ARCH>` (or, for the
/// host's architecture, `$FLOTILLA_AGENT`) if set, else the one embedded in this build.
pub fn agent_binary(arch: &Arch) -> Result<Cow<'static, [u8]>, Error> {
    if let Some(path) = arch.env("FLOTILLA_AGENT") {
        return std::fs::read(&path)
            .map(Cow::Owned)
            .map_err(|source| Error::Io {
                what: format!(
                    "reading the {arch} agent {} (FLOTILLA_AGENT)",
                    PathBuf::from(&path).display()
                ),
                source,
            });
    }
    embedded_agent(arch)
        .map(Cow::Borrowed)
        .ok_or_else(|| Error::Setup {
            what: format!("this build embeds no agent for {arch}"),
            hint: "rebuild flotilla".into(),
        })
}

/// The agent for `arch` embedded in this build.
pub fn embedded_agent(arch: &Arch) -> Option<&'static [u8]> {
    EMBEDDED_AGENTS
        .iter()
        .find(|(name, _)| *name == arch.name)
        .map(|(_, bytes)| *bytes)
}

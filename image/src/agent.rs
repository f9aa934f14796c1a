//! The in-guest agent's static binary: built by this crate's `build.rs` and embedded,
//! so the `flotilla` binary carries everything the default image needs.

use std::borrow::Cow;
use std::path::PathBuf;

use crate::error::Error;

/// The agent binary built for the guest and embedded at build time.
static EMBEDDED_AGENT: &[u8] = include_bytes!(env!("FLOTILLA_AGENT_PATH"));

/// The agent binary for the default image: `$FLOTILLA_AGENT` if set, else the one
/// embedded in this build.
pub fn agent_binary() -> Result<Cow<'static, [u8]>, Error> {
    match std::env::var_os("FLOTILLA_AGENT") {
        Some(path) => std::fs::read(&path)
            .map(Cow::Owned)
            .map_err(|source| Error::Io {
                what: format!("reading FLOTILLA_AGENT={}", PathBuf::from(&path).display()),
                source,
            }),
        None => Ok(Cow::Borrowed(EMBEDDED_AGENT)),
    }
}

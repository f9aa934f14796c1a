//! The one command that builds the agent users get: the static `agent`-profile binary
//! (LTO, `panic = "abort"`, `+crt-static`) for a Linux musl target
//! (`x86_64-unknown-linux-musl`, `aarch64-unknown-linux-musl`), linked by rust-lld
//! (`.cargo/config.toml`): the same way for every architecture, with no C toolchain
//! for the guest's architecture and no C library on the host it must match.
//!
//! Included with `#[path]` by `image/build.rs`, which embeds the result in the
//! `flotilla` binary, and by the agent's test harness, which boots the very same file,
//! so that the agent the tests check is the agent that ships. Both build into
//! `<target dir>/agent`, so whichever runs second finds it up to date.

use std::path::{Path, PathBuf};
use std::process::Command;

/// `cargo build` of the static agent for the Rust target `triple` from the workspace
/// whose manifest is `manifest`, into `target_dir`; returns the command and the path of
/// the binary it makes.
pub fn static_agent_build(
    cargo: &Path,
    manifest: &Path,
    target_dir: &Path,
    triple: &str,
) -> (Command, PathBuf) {
    let mut cmd = Command::new(cargo);
    cmd.args([
        "build",
        "--quiet",
        "-p",
        "flotilla-agent",
        "--bin",
        "flotilla-agent",
    ])
    .args(["--profile", "agent", "--target", triple])
    .arg("--target-dir")
    .arg(target_dir)
    .arg("--manifest-path")
    .arg(manifest)
    .env("RUSTFLAGS", "-C target-feature=+crt-static");
    // The outer build's settings are not the agent's.
    for var in [
        "CARGO_ENCODED_RUSTFLAGS",
        "RUSTC_WRAPPER",
        "RUSTC_WORKSPACE_WRAPPER",
        "CARGO_TARGET_DIR",
        "CARGO_BUILD_TARGET",
        "CARGO_PRIMARY_PACKAGE",
    ] {
        cmd.env_remove(var);
    }
    let binary = target_dir.join(triple).join("agent").join("flotilla-agent");
    (cmd, binary)
}

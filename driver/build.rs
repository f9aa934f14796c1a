//! Builds the in-guest agent as a static binary and hands its path to the crate, which
//! embeds it: the `flotilla` binary then carries everything the default image needs.
//!
//! The nested build uses its own target directory (next to this build's) and the
//! `agent` profile. `FLOTILLA_AGENT_PREBUILT=<path>` skips it and embeds that file.

use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-env-changed=FLOTILLA_AGENT_PREBUILT");
    let manifest = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let agent_src = manifest.join("..").join("guest-agent");
    println!("cargo:rerun-if-changed={}", agent_src.join("src").display());
    println!(
        "cargo:rerun-if-changed={}",
        agent_src.join("Cargo.toml").display()
    );

    if let Some(prebuilt) = env::var_os("FLOTILLA_AGENT_PREBUILT") {
        println!(
            "cargo:rustc-env=FLOTILLA_AGENT_PATH={}",
            Path::new(&prebuilt).display()
        );
        return;
    }

    let out_dir = PathBuf::from(env::var_os("OUT_DIR").expect("set by cargo"));
    // OUT_DIR is <target>/<profile>/build/<pkg>/out; share one agent build per target dir.
    let target_dir = out_dir
        .ancestors()
        .nth(4)
        .map(|t| t.join("agent"))
        .unwrap_or_else(|| out_dir.join("agent"));
    let triple = "x86_64-unknown-linux-gnu";
    let cargo = env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
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
    .arg(&target_dir)
    .arg("--manifest-path")
    .arg(manifest.join("..").join("Cargo.toml"))
    .env("RUSTFLAGS", "-C target-feature=+crt-static");
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
    let status = cmd.status().expect("running cargo to build flotilla-agent");
    if !status.success() {
        panic!("building the static flotilla-agent failed ({status})");
    }
    let binary = target_dir.join(triple).join("agent").join("flotilla-agent");
    println!("cargo:rustc-env=FLOTILLA_AGENT_PATH={}", binary.display());
}

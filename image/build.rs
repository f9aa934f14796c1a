//! Builds the in-guest agent as a static binary and hands its path to the crate, which
//! embeds it: the `flotilla` binary then carries everything the default image needs.
//!
//! The nested build uses its own target directory (next to this build's) and the
//! `agent` profile. `FLOTILLA_AGENT_PREBUILT=<path>` skips it and embeds that file.

use std::env;
use std::path::{Path, PathBuf};

#[path = "../guest-agent/static_build.rs"]
mod static_build;

fn main() {
    println!("cargo:rerun-if-env-changed=FLOTILLA_AGENT_PREBUILT");
    let manifest = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let agent_src = manifest.join("..").join("guest-agent");
    println!("cargo:rerun-if-changed={}", agent_src.join("src").display());
    println!(
        "cargo:rerun-if-changed={}",
        agent_src.join("Cargo.toml").display()
    );
    println!(
        "cargo:rerun-if-changed={}",
        agent_src.join("static_build.rs").display()
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
    let cargo = PathBuf::from(env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    let (mut cmd, binary) = static_build::static_agent_build(
        &cargo,
        &manifest.join("..").join("Cargo.toml"),
        &target_dir,
    );
    let status = cmd.status().expect("running cargo to build flotilla-agent");
    if !status.success() {
        panic!("building the static flotilla-agent failed ({status})");
    }
    println!("cargo:rustc-env=FLOTILLA_AGENT_PATH={}", binary.display());
}

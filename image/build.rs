//! Builds the in-guest agent as a static binary for every architecture of
//! `flotilla_host::arch::ARCHES` and writes `agents.rs`, the table of their paths that
//! the crate embeds: the `flotilla` binary then carries everything the default image of
//! each architecture needs.
//!
//! The nested builds use their own target directory (next to this build's) and the
//! `agent` profile. `FLOTILLA_AGENT_PREBUILT_<ARCH>=<path>` (`..._X86_64`,
//! `..._AARCH64`) skips one and embeds that file.

use std::env;
use std::fmt::Write as _;
use std::path::PathBuf;

use flotilla_host::arch::ARCHES;

#[path = "../guest-agent/static_build.rs"]
mod static_build;

fn main() {
    let manifest = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let agent_src = manifest.join("..").join("guest-agent");
    for watched in ["src", "Cargo.toml", "static_build.rs"] {
        println!(
            "cargo:rerun-if-changed={}",
            agent_src.join(watched).display()
        );
    }
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").expect("set by cargo"));
    // OUT_DIR is <target>/<profile>/build/<pkg>/out; share one agent build per target dir.
    let target_dir = out_dir
        .ancestors()
        .nth(4)
        .map(|t| t.join("agent"))
        .unwrap_or_else(|| out_dir.join("agent"));
    let cargo = PathBuf::from(env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));

    let mut table = String::from("&[\n");
    for arch in &ARCHES {
        let var = format!("FLOTILLA_AGENT_PREBUILT_{}", arch.name.to_uppercase());
        println!("cargo:rerun-if-env-changed={var}");
        let binary = match env::var_os(&var) {
            Some(prebuilt) => PathBuf::from(prebuilt),
            None => {
                let (mut cmd, binary) = static_build::static_agent_build(
                    &cargo,
                    &manifest.join("..").join("Cargo.toml"),
                    &target_dir,
                    arch.rust_target,
                );
                let status = cmd.status().expect("running cargo to build flotilla-agent");
                if !status.success() {
                    panic!(
                        "building the static flotilla-agent for {} failed ({status}); \
                         is its target installed (`rustup target add {}`, scripts/setup does)?",
                        arch.name, arch.rust_target
                    );
                }
                binary
            }
        };
        let _ = writeln!(
            table,
            "    ({:?}, include_bytes!({:?})),",
            arch.name,
            binary.display().to_string()
        );
    }
    table.push(']');
    std::fs::write(out_dir.join("agents.rs"), table).expect("writing agents.rs");
}

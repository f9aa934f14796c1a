//! The spec as written: what serde reads from the TOML, with the spans of the values
//! that [`Spec::parse`](super::types::Spec::parse) checks, for its file:line:col errors.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;
use toml::Spanned;

use super::types::{self, JoinSpec};
use crate::agent_client::AgentKind;

/// The whole file as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSpec {
    pub(super) name: Option<Spanned<String>>,
    pub(super) script: Option<Spanned<PathBuf>>,
    pub(super) timeout: Option<Spanned<u64>>,
    pub(super) boot_timeout: Option<Spanned<u64>>,
    pub(super) command_timeout: Option<Spanned<u64>>,
    #[serde(default)]
    pub(super) network: RawNetwork,
    pub(super) coverage: Option<Spanned<RawCoverage>>,
    #[serde(default)]
    pub(super) machines: BTreeMap<Spanned<String>, Spanned<RawMachine>>,
}

/// The `[network]` table.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawNetwork {
    pub(super) backend: Option<Spanned<String>>,
    pub(super) offset: Option<Spanned<u8>>,
    #[serde(default)]
    pub(super) join: Vec<Spanned<JoinSpec>>,
}

/// The `[coverage]` table.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCoverage {
    #[serde(default)]
    pub(super) enabled: bool,
    pub(super) fail_under: Option<Spanned<f64>>,
    #[serde(default)]
    pub(super) llvm_binaries: Vec<Spanned<PathBuf>>,
}

/// `[machines.NAME]` as written; [`Spec::parse`](super::types::Spec::parse) checks it into a
/// [`MachineSpec`](super::types::MachineSpec).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawMachine {
    #[serde(default = "types::default_memory")]
    pub(super) memory: u32,
    #[serde(default = "types::default_cpus")]
    pub(super) cpus: u32,
    #[serde(default)]
    pub(super) kernel_args: String,
    #[serde(default)]
    pub(super) display: bool,
    #[serde(default)]
    pub(super) arch: Option<String>,
    #[serde(default)]
    pub(super) snapshot: Option<bool>,
    #[serde(default)]
    pub(super) image: Option<PathBuf>,
    #[serde(default)]
    pub(super) agent: AgentKind,
    #[serde(default = "types::default_vlans")]
    pub(super) vlans: Vec<u8>,
    #[serde(default)]
    pub(super) forward: Vec<RawForward>,
    #[serde(default)]
    pub(super) disks: Vec<Spanned<RawDisk>>,
    #[serde(default)]
    pub(super) packages: Vec<Spanned<String>>,
    #[serde(default)]
    pub(super) files: BTreeMap<Spanned<String>, Spanned<PathBuf>>,
    pub(super) init: Option<Spanned<String>>,
    pub(super) release: Option<Spanned<String>>,
}

/// One `forward` entry as written: the host port's span is where a duplicate is reported.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawForward {
    pub(super) host: Option<Spanned<u16>>,
    pub(super) guest: u16,
}

/// `[[machines.NAME.disks]]` as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDisk {
    pub(super) size: Option<Spanned<toml::Value>>,
    pub(super) base: Option<Spanned<PathBuf>>,
    pub(super) name: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) inject_errors: Vec<Spanned<RawInjectError>>,
}

/// One `inject_errors` rule of a disk as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawInjectError {
    pub(super) event: Spanned<String>,
    pub(super) errno: Option<Spanned<i64>>,
    #[serde(default)]
    pub(super) once: bool,
}

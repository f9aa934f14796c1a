//! The checked spec: what [`Spec::parse`] returns and the driver runs.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;

use crate::agent_client::AgentKind;
use flotilla_host::arch::Arch;
use flotilla_image::debian::{Init, Release};

/// The file name looked up when a directory is given instead of a spec file.
pub const SPEC_FILE_NAME: &str = "flotilla.toml";

/// A parsed and checked spec.
#[derive(Debug, Clone)]
pub struct Spec {
    /// The spec file itself.
    pub path: PathBuf,
    pub name: String,
    /// The test script, resolved against the spec's folder.
    pub script: Option<PathBuf>,
    /// Limit for the whole test run.
    pub timeout: std::time::Duration,
    /// How long a machine may take to be ready, if the spec says.
    pub boot_timeout: Option<std::time::Duration>,
    /// How long one command may take unless its call says otherwise, if the spec says.
    pub command_timeout: Option<std::time::Duration>,
    pub machines: BTreeMap<String, MachineSpec>,
    /// How the VLANs are made.
    pub backend: flotilla_vmnet::Backend,
    /// Machine numbers start at `offset + 1` (for networks that join another's VLANs).
    pub offset: u8,
    /// VLANs joined to another driver's switches.
    pub join: Vec<JoinSpec>,
    /// The `[coverage]` table.
    pub coverage: CoverageSpec,
}

/// Distributed coverage: the `[coverage]` table (`flotilla test --coverage` and
/// `--coverage-fail-under` do the same from the command line).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CoverageSpec {
    /// Collect coverage data from every machine and report it at the end of the test.
    pub enabled: bool,
    /// Fail the test when the combined line coverage is under this percentage.
    pub fail_under: Option<f64>,
    /// Programs built with LLVM's source-based coverage (clang
    /// `-fprofile-instr-generate -fcoverage-mapping`, Rust `-C instrument-coverage`),
    /// resolved against the spec's folder: their coverage maps turn the machines'
    /// `.profraw` data into line counts. GCC's data needs nothing (the `.gcno` files
    /// sit in the build tree).
    pub llvm_binaries: Vec<PathBuf>,
}

/// A VLAN shared with another driver's network: `[[network.join]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JoinSpec {
    /// Our VLAN.
    pub vlan: u8,
    /// The other network's switch for that VLAN (its log names it).
    pub switch: PathBuf,
}

/// A forwarded port: `127.0.0.1:host` on the host to `guest` in the machine.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ForwardSpec {
    /// Host port on 127.0.0.1; 0 or absent picks a free one.
    #[serde(default)]
    pub host: u16,
    pub guest: u16,
}

/// One machine of a spec.
#[derive(Debug, Clone)]
pub struct MachineSpec {
    /// Memory in MiB.
    pub memory: u32,
    /// Virtual CPUs.
    pub cpus: u32,
    /// Extra kernel command line arguments.
    pub kernel_args: String,
    /// The guest's architecture (`arch = "aarch64"`); the host's unless the spec says.
    pub arch: &'static Arch,
    /// A VGA screen (for `screenshot`), which needs the slower SeaBIOS firmware; without
    /// it machines boot through qboot, about a second faster under TCG.
    pub display: bool,
    /// Start from a saved, booted state: the first boot saves the machine once its
    /// agent is ready, later boots of an identical machine restore that state and give
    /// it its own MACs, host name, addresses, clock and fresh randomness. `None` (the
    /// default): wherever it is safe; `Some(false)`: never (`snapshot = false`);
    /// `Some(true)`: as `None`, and the terminal says why when the machine cannot
    /// (qemu-ga, coverage, disks kept with `--keep-state`). `--no-snapshot` turns
    /// snapshots off for a whole run.
    pub snapshot: Option<bool>,
    /// A qcow2 disk image to boot (e.g. from `flotilla image debian`), resolved against
    /// the spec's folder; machines write to a per-run overlay, never to it.
    pub image: Option<PathBuf>,
    /// Which agent the image runs: `"flotilla"` (default) or `"qga"` (stock
    /// qemu-guest-agent).
    pub agent: AgentKind,
    /// The VLANs the machine has a NIC on.
    pub vlans: Vec<u8>,
    /// Ports forwarded from 127.0.0.1 on the host.
    pub forward: Vec<ForwardSpec>,
    /// Extra disks, in the guest's order (`/dev/vdb`, ... after an `image`'s `/dev/vda`).
    pub disks: Vec<DiskSpec>,
    /// Debian packages the machine's image has, by name or as local `.deb` files.
    pub packages: Vec<PackageSpec>,
    /// Host files put into the machine's Debian image.
    pub files: Vec<FileSpec>,
    /// The init system of the machine's Debian image, if the spec names one.
    pub init: Option<Init>,
    /// The Debian release of the machine's image, if the spec names one: of the image
    /// built for it (default [`Release::default`], trixie), or, next to `image`, the
    /// release whose cloud kernel that image boots (default: the default guest's,
    /// bookworm's).
    pub release: Option<Release>,
}

impl MachineSpec {
    /// Whether the machine boots a Debian image built from the spec (it has
    /// `packages`, `files`, `init` or `release`).
    pub fn is_debian(&self) -> bool {
        !self.packages.is_empty()
            || !self.files.is_empty()
            || self.init.is_some()
            || (self.release.is_some() && self.image.is_none())
    }
}

/// One entry of a machine's `packages`, with its place in the spec (for errors found
/// while the image is built, such as a package the mirror does not have).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackageSpec {
    pub source: PackageSource,
    /// 1-based line and column of the entry in the spec file.
    pub line: usize,
    pub column: usize,
}

/// A Debian package: a name from the mirror, or a local `.deb` file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PackageSource {
    Name(String),
    /// A `.deb` file (absolute), installed with the dependencies it names.
    Deb(PathBuf),
}

/// One entry of a machine's `files`: a host file copied into its image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileSpec {
    /// The absolute path in the guest.
    pub guest: PathBuf,
    /// The host file (absolute); its mode is kept.
    pub source: PathBuf,
}

/// An extra disk of a machine: `[[machines.NAME.disks]]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskSpec {
    /// The QEMU drive id and the virtio serial the guest sees (`/sys/block/vdX/serial`,
    /// `/dev/disk/by-id/virtio-NAME` under udev); also the file name in the state dir.
    pub name: String,
    pub source: DiskSource,
    /// QEMU blkdebug rules; empty for a disk without error injection.
    pub inject_errors: Vec<InjectError>,
}

/// What a disk starts as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DiskSource {
    /// A blank qcow2 image of this many bytes.
    Blank { bytes: u64 },
    /// A qcow2 overlay over this qcow2 image (absolute), which is never written.
    Overlay { base: PathBuf },
}

/// One QEMU blkdebug `inject-error` rule: once QEMU's block layer reports `event` on
/// the disk's file, its requests fail with `errno` (only the next one if `once`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InjectError {
    /// A blkdebug event, e.g. `read_aio` (guest data read) or `write_aio` (written).
    pub event: String,
    /// The error the guest gets: 5 (EIO) unless told.
    pub errno: u32,
    /// Fail one request, then remove the rule.
    pub once: bool,
}

impl Default for MachineSpec {
    fn default() -> Self {
        MachineSpec {
            memory: default_memory(),
            cpus: default_cpus(),
            kernel_args: String::new(),
            arch: Arch::host(),
            display: false,
            snapshot: None,
            image: None,
            agent: AgentKind::Flotilla,
            vlans: default_vlans(),
            forward: Vec::new(),
            disks: Vec::new(),
            packages: Vec::new(),
            files: Vec::new(),
            init: None,
            release: None,
        }
    }
}

pub(super) fn default_vlans() -> Vec<u8> {
    vec![1]
}

pub(super) fn default_memory() -> u32 {
    256
}

pub(super) fn default_cpus() -> u32 {
    1
}

#[cfg(test)]
mod book {
    const SOURCE: &str = include_str!("types.rs");
    /// The book's chapter with the spec table.
    const SPEC_REFERENCE: &str = include_str!("../../../docs/src/spec-reference.md");

    /// The `pub` field names of a struct in this file.
    fn fields(name: &str) -> Vec<&'static str> {
        let start = SOURCE
            .find(&format!("struct {name} {{"))
            .expect("the struct");
        let body = &SOURCE[start..];
        let body = &body[..body.find("\n}").expect("its end")];
        body.lines()
            .filter_map(|l| l.trim().strip_prefix("pub "))
            .filter_map(|l| l.split(':').next())
            .collect()
    }

    #[test]
    fn the_book_documents_every_spec_key() {
        let section = SPEC_REFERENCE;
        let mut keys: Vec<String> = fields("MachineSpec")
            .into_iter()
            .map(|f| format!("`machines.NAME.{f}`"))
            .collect();
        keys.extend(
            [
                "`name`",
                "`script`",
                "`timeout`",
                "`boot_timeout`",
                "`command_timeout`",
                "`network.backend`",
                "`network.offset`",
                "`[[network.join]]`",
                "`coverage.enabled`",
                "`coverage.fail_under`",
                "`coverage.llvm_binaries`",
            ]
            .map(String::from),
        );
        for key in keys {
            assert!(
                section.contains(&key),
                "docs/src/spec-reference.md's table lacks {key}"
            );
        }
    }
}

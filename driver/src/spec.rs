//! The spec: a TOML file naming the machines of a test and its script.
//!
//! ```toml
//! name = "hello"            # optional, defaults to the folder's name
//! script = "test.rhai"      # relative to the spec file
//! timeout = 600             # seconds for the whole test
//! boot_timeout = 120        # seconds a machine may take to be ready
//! command_timeout = 300     # seconds a command may take unless the call says otherwise
//!
//! [network]
//! backend = "vde"           # or "multicast" (insecure, opt-in)
//! offset = 0                # machine numbers (and addresses) start at offset + 1
//!
//! [[network.join]]          # share VLAN 1 with another driver's network
//! vlan = 1
//! switch = "/tmp/flotilla-abc123/vlan1.switch"
//!
//! [machines.server]
//! memory = 256              # MiB
//! cpus = 1
//! vlans = [1]               # default [1]; VLAN v is 192.168.v.0/24
//! forward = [{ host = 8080, guest = 80 }]  # 127.0.0.1:8080 -> guest port 80
//! image = "debian.qcow2"    # boot a disk image instead of the default initramfs
//! kernel_args = "loglevel=4"  # appended to the kernel command line
//! display = true            # a VGA screen for screenshot (boots about 1.5 s slower)
//!
//! [[machines.server.disks]]  # /dev/vdb (after the image's /dev/vda; /dev/vda without one)
//! size = "64M"              # a blank qcow2: K, M or G suffix; a bare integer is MiB
//! name = "data"             # drive id and virtio serial; default disk1, disk2, ...
//!
//! [[machines.server.disks]]
//! base = "data.qcow2"       # a qcow2 overlay over this image; the image is never written
//! inject_errors = [{ event = "write_aio", once = true }]  # QEMU blkdebug rules
//! ```
//!
//! Every error names the file, line and column: unknown keys, wrong types and missing
//! files alike.

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use toml::Spanned;

use crate::Error;

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
}

/// The `[network]` table.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct NetworkSpec {
    backend: Option<Spanned<String>>,
    offset: Option<Spanned<u8>>,
    #[serde(default)]
    join: Vec<Spanned<JoinSpec>>,
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
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MachineSpec {
    /// Memory in MiB.
    #[serde(default = "default_memory")]
    pub memory: u32,
    /// Virtual CPUs.
    #[serde(default = "default_cpus")]
    pub cpus: u32,
    /// Extra kernel command line arguments.
    #[serde(default)]
    pub kernel_args: String,
    /// A VGA screen (for `screenshot`), which needs the slower SeaBIOS firmware; without
    /// it machines boot through qboot, about a second faster under TCG.
    #[serde(default)]
    pub display: bool,
    /// A qcow2 disk image to boot (e.g. from `flotilla image debian`), resolved against
    /// the spec's folder; machines write to a per-run overlay, never to it.
    #[serde(default)]
    pub image: Option<PathBuf>,
    /// Which agent the image runs: `"flotilla"` (default) or `"qga"` (stock
    /// qemu-guest-agent).
    #[serde(default)]
    pub agent: crate::guest::AgentKind,
    /// The VLANs the machine has a NIC on.
    #[serde(default = "default_vlans")]
    pub vlans: Vec<u8>,
    /// Ports forwarded from 127.0.0.1 on the host.
    #[serde(default)]
    pub forward: Vec<ForwardSpec>,
    /// Extra disks, in the guest's order (`/dev/vdb`, ... after an `image`'s `/dev/vda`).
    #[serde(skip)]
    pub disks: Vec<DiskSpec>,
    /// `[[machines.NAME.disks]]` as written, checked into `disks` by [`Spec::parse`].
    #[serde(default, rename = "disks")]
    raw_disks: Vec<Spanned<RawDisk>>,
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

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDisk {
    size: Option<Spanned<toml::Value>>,
    base: Option<Spanned<PathBuf>>,
    name: Option<Spanned<String>>,
    #[serde(default)]
    inject_errors: Vec<Spanned<RawInjectError>>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawInjectError {
    event: Spanned<String>,
    errno: Option<Spanned<i64>>,
    #[serde(default)]
    once: bool,
}

/// The events of QEMU 7.2's blkdebug (`BlkdebugEvent` in qapi/block-core.json).
pub const BLKDEBUG_EVENTS: &[&str] = &[
    "l1_update",
    "l1_grow_alloc_table",
    "l1_grow_write_table",
    "l1_grow_activate_table",
    "l2_load",
    "l2_update",
    "l2_update_compressed",
    "l2_alloc_cow_read",
    "l2_alloc_write",
    "read_aio",
    "read_backing_aio",
    "read_compressed",
    "write_aio",
    "write_compressed",
    "vmstate_load",
    "vmstate_save",
    "cow_read",
    "cow_write",
    "reftable_load",
    "reftable_grow",
    "reftable_update",
    "refblock_load",
    "refblock_update",
    "refblock_update_part",
    "refblock_alloc",
    "refblock_alloc_hookup",
    "refblock_alloc_write",
    "refblock_alloc_write_blocks",
    "refblock_alloc_write_table",
    "refblock_alloc_switch_table",
    "cluster_alloc",
    "cluster_alloc_bytes",
    "cluster_free",
    "flush_to_os",
    "flush_to_disk",
    "pwritev_rmw_head",
    "pwritev_rmw_after_head",
    "pwritev_rmw_tail",
    "pwritev_rmw_after_tail",
    "pwritev",
    "pwritev_zero",
    "pwritev_done",
    "empty_image_prepare",
    "l1_shrink_write_table",
    "l1_shrink_free_l2_clusters",
    "cor_write",
    "cluster_alloc_space",
];

impl Default for MachineSpec {
    fn default() -> Self {
        MachineSpec {
            memory: default_memory(),
            cpus: default_cpus(),
            kernel_args: String::new(),
            display: false,
            image: None,
            agent: crate::guest::AgentKind::Flotilla,
            vlans: default_vlans(),
            forward: Vec::new(),
            disks: Vec::new(),
            raw_disks: Vec::new(),
        }
    }
}

fn default_vlans() -> Vec<u8> {
    vec![1]
}

fn default_memory() -> u32 {
    256
}

fn default_cpus() -> u32 {
    1
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSpec {
    name: Option<Spanned<String>>,
    script: Option<Spanned<PathBuf>>,
    timeout: Option<Spanned<u64>>,
    boot_timeout: Option<Spanned<u64>>,
    command_timeout: Option<Spanned<u64>>,
    #[serde(default)]
    network: NetworkSpec,
    #[serde(default)]
    machines: BTreeMap<Spanned<String>, Spanned<MachineSpec>>,
}

impl Spec {
    /// Loads a spec file, or `flotilla.toml` inside a directory.
    pub fn load(path: &Path) -> Result<Spec, Error> {
        let path = if path.is_dir() {
            path.join(SPEC_FILE_NAME)
        } else {
            path.to_path_buf()
        };
        let text = std::fs::read_to_string(&path).map_err(|source| Error::Io {
            what: format!("reading spec {}", path.display()),
            source,
        })?;
        Spec::parse(&path, &text)
    }

    /// Parses spec text; `path` is used for messages and to resolve relative files.
    pub fn parse(path: &Path, text: &str) -> Result<Spec, Error> {
        let located = |span: Range<usize>, message: String| {
            let (line, column) = line_column(text, span.start);
            Error::Spec {
                file: path.to_path_buf(),
                line,
                column,
                message,
            }
        };
        let raw: RawSpec = toml::from_str(text).map_err(|e| {
            let span = e.span().unwrap_or(0..0);
            located(span, e.message().trim().to_owned())
        })?;
        let dir = path.parent().unwrap_or(Path::new("."));
        let name = match raw.name {
            Some(name) => {
                check_name(name.get_ref())
                    .map_err(|m| located(name.span(), format!("name: {m}")))?;
                name.into_inner()
            }
            None => default_name(path),
        };
        let script = match raw.script {
            Some(script) => {
                let resolved = dir.join(script.get_ref());
                if !resolved.is_file() {
                    return Err(located(
                        script.span(),
                        format!("script file {} does not exist", resolved.display()),
                    ));
                }
                Some(resolved)
            }
            None => None,
        };
        let timeout = match raw.timeout {
            Some(t) if *t.get_ref() == 0 => {
                return Err(located(
                    t.span(),
                    "timeout must be at least 1 second".into(),
                ))
            }
            Some(t) => std::time::Duration::from_secs(*t.get_ref()),
            None => std::time::Duration::from_secs(600),
        };
        let mut limits = [None, None];
        for (slot, (key, value)) in limits.iter_mut().zip([
            ("boot_timeout", &raw.boot_timeout),
            ("command_timeout", &raw.command_timeout),
        ]) {
            if let Some(v) = value {
                if *v.get_ref() == 0 {
                    return Err(located(
                        v.span(),
                        format!("{key} must be at least 1 second"),
                    ));
                }
                *slot = Some(std::time::Duration::from_secs(*v.get_ref()));
            }
        }
        let [boot_timeout, command_timeout] = limits;
        if raw.machines.is_empty() {
            return Err(located(
                0..0,
                "no machines: add a table such as [machines.server]".into(),
            ));
        }
        let mut machines = BTreeMap::new();
        for (name, machine) in raw.machines {
            check_machine_name(name.get_ref())
                .map_err(|m| located(name.span(), format!("machine `{}`: {m}", name.get_ref())))?;
            let span = machine.span();
            let mut machine = machine.into_inner();
            if let Some(image) = &machine.image {
                let resolved = dir.join(image);
                if !resolved.is_file() {
                    return Err(located(
                        key_span(text, span.clone(), "image"),
                        format!(
                            "machine `{}`: image {} does not exist (build one with `flotilla image debian -o FILE`)",
                            name.get_ref(),
                            resolved.display()
                        ),
                    ));
                }
                machine.image = Some(std::path::absolute(&resolved).unwrap_or(resolved));
            }
            if machine.memory < 64 {
                return Err(located(
                    span,
                    format!(
                        "machine `{}`: memory = {} MiB is too small (at least 64)",
                        name.get_ref(),
                        machine.memory
                    ),
                ));
            }
            let mut seen = std::collections::BTreeSet::new();
            for &vlan in &machine.vlans {
                if vlan == 0 || vlan > flotilla_vmnet::MAX_VLAN || !seen.insert(vlan) {
                    return Err(located(
                        span,
                        format!(
                            "machine `{}`: vlans must be distinct numbers from 1 to {}",
                            name.get_ref(),
                            flotilla_vmnet::MAX_VLAN
                        ),
                    ));
                }
            }
            if machine.forward.iter().any(|f| f.guest == 0) {
                return Err(located(
                    span,
                    format!("machine `{}`: forward needs a guest port", name.get_ref()),
                ));
            }
            if machine.cpus == 0 || machine.cpus > 64 {
                return Err(located(
                    span,
                    format!("machine `{}`: cpus must be 1 to 64", name.get_ref()),
                ));
            }
            let raw_disks = std::mem::take(&mut machine.raw_disks);
            machine.disks = check_disks(raw_disks, dir)
                .map_err(|(span, m)| located(span, format!("machine `{}`: {m}", name.get_ref())))?;
            machines.insert(name.into_inner(), machine);
        }
        let backend = match raw.network.backend {
            Some(b) => b
                .get_ref()
                .parse()
                .map_err(|m| located(b.span(), format!("network.backend: {m}")))?,
            None => flotilla_vmnet::Backend::default(),
        };
        let offset = match &raw.network.offset {
            Some(o)
                if usize::from(*o.get_ref()) + machines.len() > flotilla_vmnet::MAX_MACHINES =>
            {
                return Err(located(
                    o.span(),
                    format!(
                        "network.offset {} leaves no addresses for {} machine(s)",
                        o.get_ref(),
                        machines.len()
                    ),
                ))
            }
            Some(o) => *o.get_ref(),
            None => 0,
        };
        let mut join = Vec::new();
        for j in raw.network.join {
            let span = j.span();
            let j = j.into_inner();
            if backend != flotilla_vmnet::Backend::Vde {
                return Err(located(span, "network.join needs the vde backend".into()));
            }
            let on_vlan = machines.values().any(|m| m.vlans.contains(&j.vlan));
            if !on_vlan {
                return Err(located(
                    span,
                    format!("network.join: no machine is on VLAN {}", j.vlan),
                ));
            }
            join.push(j);
        }
        Ok(Spec {
            offset,
            join,
            backend,
            path: path.to_path_buf(),
            name,
            script,
            timeout,
            boot_timeout,
            command_timeout,
            machines,
        })
    }
}

/// The longest disk name: a virtio-blk serial holds 20 bytes.
const MAX_DISK_NAME: usize = 20;

/// Checks `[[machines.NAME.disks]]`; an error carries the span it is about.
fn check_disks(
    raw: Vec<Spanned<RawDisk>>,
    dir: &Path,
) -> Result<Vec<DiskSpec>, (Range<usize>, String)> {
    let mut disks: Vec<DiskSpec> = Vec::new();
    for (index, disk) in raw.into_iter().enumerate() {
        let span = disk.span();
        let disk = disk.into_inner();
        let name = match disk.name {
            Some(name) => {
                let ok = name.get_ref().len() <= MAX_DISK_NAME
                    && name.get_ref().starts_with(|c: char| c.is_ascii_lowercase())
                    && name
                        .get_ref()
                        .chars()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "_-".contains(c));
                if !ok || name.get_ref() == "root" {
                    return Err((
                        name.span(),
                        format!(
                            "disk name `{}` must start with a lowercase letter and use only \
                             lowercase letters, digits, `_` and `-` (at most {MAX_DISK_NAME} \
                             characters; `root` is the image's)",
                            name.get_ref()
                        ),
                    ));
                }
                if disks.iter().any(|d| &d.name == name.get_ref()) {
                    return Err((
                        name.span(),
                        format!("two disks are named `{}`", name.get_ref()),
                    ));
                }
                name.into_inner()
            }
            None => format!("disk{}", index + 1),
        };
        let source = match (disk.size, disk.base) {
            (Some(size), None) => DiskSource::Blank {
                bytes: parse_size(size.get_ref())
                    .map_err(|m| (size.span(), format!("disk `{name}`: size {m}")))?,
            },
            (None, Some(base)) => {
                let resolved = dir.join(base.get_ref());
                if !resolved.is_file() {
                    return Err((
                        base.span(),
                        format!("disk `{name}`: base {} does not exist", resolved.display()),
                    ));
                }
                DiskSource::Overlay {
                    base: std::path::absolute(&resolved).unwrap_or(resolved),
                }
            }
            _ => {
                return Err((
                    span,
                    format!(
                        "disk `{name}` needs exactly one of `size` (a blank disk) and \
                         `base` (an overlay over an image)"
                    ),
                ))
            }
        };
        let mut inject_errors = Vec::new();
        for rule in disk.inject_errors {
            let rule = rule.into_inner();
            if !BLKDEBUG_EVENTS.contains(&rule.event.get_ref().as_str()) {
                return Err((
                    rule.event.span(),
                    format!(
                        "disk `{name}`: unknown blkdebug event `{}` (e.g. `read_aio`, \
                         `write_aio`, `flush_to_disk`; see QEMU's BlkdebugEvent)",
                        rule.event.get_ref()
                    ),
                ));
            }
            let errno = match rule.errno {
                Some(e) => u32::try_from(*e.get_ref())
                    .ok()
                    .filter(|e| (1..=133).contains(e))
                    .ok_or_else(|| {
                        (
                            e.span(),
                            format!("disk `{name}`: errno must be 1 to 133 (5 is EIO)"),
                        )
                    })?,
                None => 5,
            };
            inject_errors.push(InjectError {
                event: rule.event.into_inner(),
                errno,
                once: rule.once,
            });
        }
        disks.push(DiskSpec {
            name,
            source,
            inject_errors,
        });
    }
    Ok(disks)
}

/// A disk size in bytes: an integer is MiB; a string is a positive integer with a
/// `K`, `M` or `G` suffix (powers of 1024), e.g. `"512K"`, `"64M"`, `"2G"`.
fn parse_size(value: &toml::Value) -> Result<u64, String> {
    const MAX: u64 = 1 << 50; // 1 PiB: more is likelier a typo than a wish
    let bytes = match value {
        toml::Value::Integer(mib) => u64::try_from(*mib)
            .ok()
            .and_then(|m| m.checked_mul(1 << 20)),
        toml::Value::String(text) => {
            let text = text.trim();
            let unit = match text.chars().last() {
                Some('K' | 'k') => 1 << 10,
                Some('M' | 'm') => 1 << 20,
                Some('G' | 'g') => 1 << 30,
                _ => 0,
            };
            text.get(..text.len().saturating_sub(1))
                .filter(|digits| unit > 0 && digits.chars().all(|c| c.is_ascii_digit()))
                .and_then(|digits| digits.parse::<u64>().ok())
                .and_then(|n| n.checked_mul(unit))
        }
        _ => None,
    };
    match bytes {
        Some(b) if b > 0 && b <= MAX => Ok(b),
        _ => Err(format!(
            "{value} is not a size: write an integer of MiB (64) or a string with a \
             K, M or G suffix (\"64M\"); at most 1 PiB"
        )),
    }
}

fn default_name(path: &Path) -> String {
    let stem = if path.file_name().and_then(|f| f.to_str()) == Some(SPEC_FILE_NAME) {
        path.parent()
            .and_then(|p| p.canonicalize().ok())
            .and_then(|p| p.file_name().map(|f| f.to_string_lossy().into_owned()))
    } else {
        path.file_stem().map(|f| f.to_string_lossy().into_owned())
    };
    stem.filter(|s| check_name(s).is_ok())
        .unwrap_or_else(|| "test".to_owned())
}

fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty()
        || name.len() > 64
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
    {
        return Err(format!(
            "`{name}` must be 1-64 characters of letters, digits, `-`, `_` or `.`"
        ));
    }
    Ok(())
}

/// Machine names are script identifiers and host names: `[a-z][a-z0-9_]*`, at most 32
/// characters (the host name turns `_` into `-`).
pub fn check_machine_name(name: &str) -> Result<(), String> {
    let mut chars = name.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_lowercase());
    if !first_ok
        || name.len() > 32
        || !chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
    {
        return Err(
            "a machine name must start with a lowercase letter and use only \
             lowercase letters, digits and `_` (at most 32 characters)"
                .into(),
        );
    }
    if crate::script::RESERVED.contains(&name) {
        return Err(format!("`{name}` is reserved in test scripts"));
    }
    Ok(())
}

/// The span of the value of `key` inside a table's span (the table's span if absent).
fn key_span(text: &str, table: Range<usize>, key: &str) -> Range<usize> {
    let Some(body) = text.get(table.clone()) else {
        return table;
    };
    let mut offset = table.start;
    for line in body.split_inclusive('\n') {
        let trimmed = line.trim_start();
        if let Some(rest) = trimmed.strip_prefix(key) {
            if let Some(eq) = rest.trim_start().strip_prefix('=') {
                let value_at = line.len() - eq.trim_start().len();
                return offset + value_at..offset + line.len();
            }
        }
        offset += line.len();
    }
    table
}

/// 1-based line and column of a byte offset.
pub(crate) fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let column = before.rfind('\n').map_or(offset, |nl| offset - nl - 1) + 1;
    (line, column)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Spec, Error> {
        Spec::parse(Path::new("/nonexistent/spec.toml"), text)
    }

    fn message(text: &str) -> String {
        match parse(text) {
            Ok(_) => panic!("spec unexpectedly parsed"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn minimal_spec() {
        let spec = parse("[machines.server]\n[machines.client]\nmemory = 512\n").unwrap();
        assert_eq!(spec.name, "spec");
        assert_eq!(spec.machines.len(), 2);
        assert_eq!(spec.machines["client"].memory, 512);
        assert_eq!(spec.machines["server"].memory, 256);
        assert_eq!(spec.timeout.as_secs(), 600);
    }

    #[test]
    fn limits() {
        let spec = parse("boot_timeout = 30\ncommand_timeout = 5\n[machines.a]\n").unwrap();
        assert_eq!(spec.boot_timeout, Some(std::time::Duration::from_secs(30)));
        assert_eq!(
            spec.command_timeout,
            Some(std::time::Duration::from_secs(5))
        );
        assert_eq!(parse("[machines.a]\n").unwrap().boot_timeout, None);
        let m = message("boot_timeout = 0\n[machines.a]\n");
        assert_eq!(
            m,
            "/nonexistent/spec.toml:1:16: boot_timeout must be at least 1 second"
        );
        let m = message("command_timeout = -1\n[machines.a]\n");
        assert!(m.starts_with("/nonexistent/spec.toml:1:19: "), "{m}");
    }

    #[test]
    fn unknown_key_names_line_and_column() {
        let m = message("[machines.server]\nmemroy = 512\n");
        assert!(m.starts_with("/nonexistent/spec.toml:2:1: "), "{m}");
        assert!(m.contains("unknown field `memroy`"), "{m}");
    }

    #[test]
    fn wrong_type_names_line_and_column() {
        let m = message("[machines.server]\nmemory = \"lots\"\n");
        assert!(m.starts_with("/nonexistent/spec.toml:2:10: "), "{m}");
        assert!(m.contains("invalid type"), "{m}");
    }

    #[test]
    fn missing_script_names_the_key() {
        let m = message("script = \"nope.rhai\"\n[machines.a]\n");
        assert!(m.starts_with("/nonexistent/spec.toml:1:10: "), "{m}");
        assert!(m.contains("nope.rhai does not exist"), "{m}");
    }

    #[test]
    fn bad_machine_name() {
        let m = message("[machines.Server]\n");
        assert!(m.starts_with("/nonexistent/spec.toml:1:11: "), "{m}");
        assert!(m.contains("machine `Server`"), "{m}");
    }

    #[test]
    fn network_keys() {
        let spec = parse(
            "[network]\nbackend = \"multicast\"\n[machines.r]\nvlans = [1, 2]\nforward = [{ guest = 80 }]\n[machines.c]\n",
        )
        .unwrap();
        assert_eq!(spec.backend, flotilla_vmnet::Backend::Multicast);
        assert_eq!(spec.machines["r"].vlans, vec![1, 2]);
        assert_eq!(spec.machines["r"].forward[0].guest, 80);
        assert_eq!(spec.machines["c"].vlans, vec![1]);
        let m = message("[network]\nbackend = \"tap\"\n[machines.a]\n");
        assert!(
            m.starts_with(
                "/nonexistent/spec.toml:2:11: network.backend: unknown network backend `tap`"
            ),
            "{m}"
        );
        let m = message("[machines.a]\nvlans = [0]\n");
        assert!(
            m.contains("vlans must be distinct numbers from 1 to 254"),
            "{m}"
        );
        let m = message("[machines.a]\nvlans = [300]\n");
        assert!(m.starts_with("/nonexistent/spec.toml:2:10: "), "{m}");
    }

    #[test]
    fn join_and_offset() {
        let spec = parse(
            "[network]\noffset = 10\n[[network.join]]\nvlan = 1\nswitch = \"/x/vlan1.switch\"\n[machines.b]\n",
        )
        .unwrap();
        assert_eq!(spec.offset, 10);
        assert_eq!(spec.join[0].switch, Path::new("/x/vlan1.switch"));
        let m = message("[[network.join]]\nvlan = 2\nswitch = \"/x\"\n[machines.b]\n");
        assert!(m.contains("network.join: no machine is on VLAN 2"), "{m}");
        let m = message("[network]\noffset = 250\n[machines.b]\n");
        assert!(
            m.starts_with("/nonexistent/spec.toml:2:10: network.offset 250"),
            "{m}"
        );
    }

    #[test]
    fn disks() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("spec.toml");
        std::fs::write(dir.path().join("data.qcow2"), b"").unwrap();
        let text = "[machines.s]\n\
                    [[machines.s.disks]]\nsize = 64\n\
                    [[machines.s.disks]]\nsize = \"512K\"\nname = \"scratch\"\n\
                    [[machines.s.disks]]\nbase = \"data.qcow2\"\n\
                    inject_errors = [{ event = \"write_aio\" }, { event = \"read_aio\", errno = 28, once = true }]\n";
        let spec = Spec::parse(&path, text).unwrap();
        let disks = &spec.machines["s"].disks;
        assert_eq!(disks.len(), 3);
        assert_eq!(disks[0].name, "disk1");
        assert_eq!(disks[0].source, DiskSource::Blank { bytes: 64 << 20 });
        assert_eq!(disks[1].name, "scratch");
        assert_eq!(disks[1].source, DiskSource::Blank { bytes: 512 << 10 });
        assert_eq!(disks[2].name, "disk3");
        assert_eq!(
            disks[2].source,
            DiskSource::Overlay {
                base: dir.path().join("data.qcow2")
            }
        );
        assert_eq!(
            disks[2].inject_errors,
            [
                InjectError {
                    event: "write_aio".into(),
                    errno: 5,
                    once: false
                },
                InjectError {
                    event: "read_aio".into(),
                    errno: 28,
                    once: true
                }
            ]
        );
        assert!(parse("[machines.s]\n").unwrap().machines["s"]
            .disks
            .is_empty());
    }

    #[test]
    fn bad_disks_name_line_and_column() {
        let disk = |body: &str| message(&format!("[machines.s]\n[[machines.s.disks]]\n{body}"));
        let m = disk("size = \"64X\"\n");
        assert!(
            m.starts_with(
                "/nonexistent/spec.toml:3:8: machine `s`: disk `disk1`: size \"64X\" is not a size"
            ),
            "{m}"
        );
        for bad in ["0", "-1", "\"M\"", "\"1.5G\"", "\"99999999999G\"", "true"] {
            let m = disk(&format!("size = {bad}\n"));
            assert!(m.contains("is not a size"), "{bad}: {m}");
        }
        let m = disk("base = \"nope.qcow2\"\n");
        assert!(m.starts_with("/nonexistent/spec.toml:3:8: "), "{m}");
        assert!(
            m.contains("disk `disk1`: base /nonexistent/nope.qcow2 does not exist"),
            "{m}"
        );
        let m = disk("");
        assert!(m.starts_with("/nonexistent/spec.toml:2:"), "{m}");
        assert!(m.contains("needs exactly one of `size`"), "{m}");
        let m = disk("size = 1\nbase = \"x.qcow2\"\n");
        assert!(m.contains("needs exactly one of `size`"), "{m}");
        let m = disk("size = 1\nsise = 2\n");
        assert!(m.starts_with("/nonexistent/spec.toml:4:1: "), "{m}");
        assert!(m.contains("unknown field `sise`"), "{m}");
        let m = disk("size = 1\nname = \"Data\"\n");
        assert!(m.starts_with("/nonexistent/spec.toml:4:8: "), "{m}");
        assert!(m.contains("disk name `Data` must start"), "{m}");
        let m = disk("size = 1\nname = \"root\"\n");
        assert!(m.contains("disk name `root`"), "{m}");
        let m = disk("size = 1\nname = \"a\"\n[[machines.s.disks]]\nsize = 1\nname = \"a\"\n");
        assert!(m.starts_with("/nonexistent/spec.toml:7:8: "), "{m}");
        assert!(m.contains("two disks are named `a`"), "{m}");
        let m = disk("size = 1\ninject_errors = [{ event = \"write\" }]\n");
        assert!(m.starts_with("/nonexistent/spec.toml:4:28: "), "{m}");
        assert!(m.contains("unknown blkdebug event `write`"), "{m}");
        let m = disk("size = 1\ninject_errors = [{ event = \"pwritev\", errno = 0 }]\n");
        assert!(m.starts_with("/nonexistent/spec.toml:4:47: "), "{m}");
        assert!(m.contains("errno must be 1 to 133"), "{m}");
        let m = disk("size = 1\ninject_errors = [{ event = \"pwritev\", sector = 3 }]\n");
        assert!(m.contains("unknown field `sector`"), "{m}");
    }

    #[test]
    fn no_machines() {
        assert!(message("name = \"x\"\n").contains("no machines"));
    }

    #[test]
    fn line_column_counts_from_one() {
        assert_eq!(line_column("ab\ncd", 0), (1, 1));
        assert_eq!(line_column("ab\ncd", 4), (2, 2));
    }
}

#[cfg(test)]
mod readme {
    const SOURCE: &str = include_str!("spec.rs");
    const README: &str = include_str!("../../README.md");

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
    fn readme_documents_every_spec_key() {
        let section = &README[README.find("## Spec reference").expect("section")..];
        let section = &section[..section[3..].find("\n## ").expect("next section")];
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
            ]
            .map(String::from),
        );
        for key in keys {
            assert!(section.contains(&key), "README's spec table lacks {key}");
        }
    }
}

#[cfg(test)]
mod examples {
    use std::path::Path;

    #[test]
    fn every_example_has_a_readme_parses_and_is_listed() {
        let readme = include_str!("../../README.md");
        let section = &readme[readme.find("## Examples").expect("an Examples section")..];
        let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
        let mut seen = 0;
        for entry in std::fs::read_dir(&examples).expect("examples/") {
            let dir = entry.expect("an entry").path();
            let name = dir
                .file_name()
                .expect("a name")
                .to_string_lossy()
                .into_owned();
            let own = std::fs::read_to_string(dir.join("README.md"))
                .unwrap_or_else(|_| panic!("examples/{name} has no README.md"));
            assert!(
                own.contains(&format!("flotilla test examples/{name}")),
                "{name}"
            );
            super::Spec::load(&dir).unwrap_or_else(|e| panic!("examples/{name}: {e}"));
            assert!(
                section.contains(&format!("[`examples/{name}`](examples/{name})")),
                "README's Examples section lacks examples/{name}"
            );
            seen += 1;
        }
        assert!(seen >= 3, "{seen} examples");
    }
}

//! [`Spec::load`] and [`Spec::parse`]: the raw spec checked into a [`Spec`], every
//! error at the file, line and column it is about.

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::Path;
use std::time::Duration;

use toml::Spanned;

use super::debian::{check_files, check_init, check_packages, check_release};
use super::disks::check_disks;
use super::forwards::{check_forwards, duplicate_host_port, HostPort};
use super::names::{check_machine_name, check_name};
use super::raw::{RawCoverage, RawMachine, RawNetwork, RawSpec};
use super::types::{CoverageSpec, JoinSpec, MachineSpec, Spec, SPEC_FILE_NAME};
use crate::agent_client::AgentKind;
use crate::error::Error;
use flotilla_host::arch::Arch;

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
        let src = Source { path, text };
        let raw: RawSpec = toml::from_str(text).map_err(|e| {
            let span = e.span().unwrap_or(0..0);
            let message = implicit_machine(text, span.clone())
                .unwrap_or_else(|| e.message().trim().to_owned());
            src.error(span, message)
        })?;
        let dir = path.parent().unwrap_or(Path::new("."));
        let name = match raw.name {
            Some(name) => {
                check_name(name.get_ref())
                    .map_err(|m| src.error(name.span(), format!("name: {m}")))?;
                name.into_inner()
            }
            None => default_name(path),
        };
        let script = match raw.script {
            Some(script) => {
                let resolved = dir.join(script.get_ref());
                if !resolved.is_file() {
                    return Err(src.error(
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
                return Err(src.error(t.span(), "timeout must be at least 1 second".into()))
            }
            Some(t) => Duration::from_secs(*t.get_ref()),
            None => Duration::from_secs(600),
        };
        let boot_timeout = limit(&src, "boot_timeout", raw.boot_timeout)?;
        let command_timeout = limit(&src, "command_timeout", raw.command_timeout)?;
        if raw.machines.is_empty() {
            return Err(src.error(
                0..0,
                "no machines: add a table such as [machines.server]".into(),
            ));
        }
        let mut machines = BTreeMap::new();
        let mut host_ports = Vec::new();
        for (name, machine) in raw.machines {
            let machine = check_machine(&src, dir, &name, machine, &mut host_ports)?;
            machines.insert(name.into_inner(), machine);
        }
        if let Some((span, message)) = duplicate_host_port(&host_ports) {
            return Err(src.error(span, message));
        }
        let (backend, offset, join) = check_network(&src, raw.network, &machines)?;
        let coverage = match raw.coverage {
            Some(c) => {
                check_coverage(c.into_inner(), dir).map_err(|(span, m)| src.error(span, m))?
            }
            None => CoverageSpec::default(),
        };
        Ok(Spec {
            coverage,
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

/// The spec being checked: where its errors point.
struct Source<'a> {
    path: &'a Path,
    text: &'a str,
}

impl Source<'_> {
    /// An error at the line and column where `span` starts.
    fn error(&self, span: Range<usize>, message: String) -> Error {
        let (line, column) = line_column(self.text, span.start);
        Error::Spec {
            file: self.path.to_path_buf(),
            line,
            column,
            message,
        }
    }
}

/// A limit in seconds (`boot_timeout`, `command_timeout`): at least 1.
fn limit(src: &Source, key: &str, value: Option<Spanned<u64>>) -> Result<Option<Duration>, Error> {
    match value {
        Some(v) if *v.get_ref() == 0 => {
            Err(src.error(v.span(), format!("{key} must be at least 1 second")))
        }
        Some(v) => Ok(Some(Duration::from_secs(*v.get_ref()))),
        None => Ok(None),
    }
}

/// What to say when the error at `span` is on a header such as
/// `[[machines.NAME.disks]]` whose machine has no `[machines.NAME]` table of its own (the
/// TOML reader cannot place such an implicit table, and says only "invalid type").
fn implicit_machine(text: &str, span: Range<usize>) -> Option<String> {
    let start = text.get(..span.start)?.rfind('\n').map_or(0, |n| n + 1);
    let line = text[start..].lines().next()?.trim();
    let header = line.trim_start_matches('[').trim_end_matches(']').trim();
    let mut parts = header.split('.').map(str::trim);
    if parts.next()? != "machines" {
        return None;
    }
    let name = parts.next()?;
    let rest: Vec<&str> = parts.collect();
    if rest.is_empty()
        || text
            .lines()
            .any(|l| l.trim() == format!("[machines.{name}]"))
    {
        return None;
    }
    Some(format!(
        "machine `{name}` has no table of its own: write `[machines.{name}]` (even with no keys) before `{line}`"
    ))
}

/// The machine's architecture (the host's unless it says), known, and able to have
/// what the machine asks of it (a screen).
fn check_arch(
    machine: &RawMachine,
    text: &str,
    span: Range<usize>,
) -> Result<&'static Arch, (Range<usize>, String)> {
    let arch = match machine.arch.as_deref() {
        None => Arch::host(),
        Some(name) => Arch::named(name).ok_or_else(|| {
            (
                key_span(text, span.clone(), "arch"),
                format!(
                    "unknown architecture `{name}`: machines can be {}",
                    Arch::names()
                ),
            )
        })?,
    };
    if machine.display && !arch.vga {
        return Err((
            key_span(text, span, "display"),
            format!(
                "{arch} machines have no screen (`display`): Debian's {} cloud kernel has no graphics driver",
                arch.debian
            ),
        ));
    }
    Ok(arch)
}

/// One `[machines.NAME]` table checked; its forwarded host ports join `host_ports`.
fn check_machine(
    src: &Source,
    dir: &Path,
    name: &Spanned<String>,
    machine: Spanned<RawMachine>,
    host_ports: &mut Vec<HostPort>,
) -> Result<MachineSpec, Error> {
    let text = src.text;
    check_machine_name(name.get_ref())
        .map_err(|m| src.error(name.span(), format!("machine `{}`: {m}", name.get_ref())))?;
    let span = machine.span();
    let mut machine = machine.into_inner();
    let error = |span: Range<usize>, m: String| {
        src.error(span, format!("machine `{}`: {m}", name.get_ref()))
    };
    if let Some(image) = &machine.image {
        let resolved = dir.join(image);
        if !resolved.is_file() {
            return Err(error(
                key_span(text, span.clone(), "image"),
                format!(
                    "image {} does not exist (build one with `flotilla image debian -o FILE`)",
                    resolved.display()
                ),
            ));
        }
        machine.image = Some(std::path::absolute(&resolved).unwrap_or(resolved));
    }
    if machine.memory < 64 {
        return Err(error(
            span,
            format!("memory = {} MiB is too small (at least 64)", machine.memory),
        ));
    }
    let mut seen = std::collections::BTreeSet::new();
    for &vlan in &machine.vlans {
        if vlan == 0 || vlan > flotilla_vmnet::MAX_VLAN || !seen.insert(vlan) {
            return Err(error(
                span,
                format!(
                    "vlans must be distinct numbers from 1 to {}",
                    flotilla_vmnet::MAX_VLAN
                ),
            ));
        }
    }
    let forward = check_forwards(
        name.get_ref(),
        std::mem::take(&mut machine.forward),
        host_ports,
    )
    .map_err(|m| error(span.clone(), m))?;
    if machine.cpus == 0 || machine.cpus > 64 {
        return Err(error(span, "cpus must be 1 to 64".into()));
    }
    let arch = check_arch(&machine, text, span.clone()).map_err(|(span, m)| error(span, m))?;
    let in_machine = |(span, m): (Range<usize>, String)| error(span, m);
    let disks = check_disks(machine.disks, dir).map_err(in_machine)?;
    let init = check_init(machine.init).map_err(in_machine)?;
    let release = check_release(machine.release).map_err(in_machine)?;
    let packages = check_packages(
        machine.packages,
        init.unwrap_or_default(),
        arch,
        dir,
        |at| line_column(text, at),
    )
    .map_err(in_machine)?;
    let files = check_files(machine.files, dir).map_err(in_machine)?;
    // `release` next to `image` names the kernel the image boots (its release's); alone,
    // it makes a Debian machine as the others do.
    let built = init.is_some() || !packages.is_empty() || !files.is_empty();
    let debian = built || (release.is_some() && machine.image.is_none());
    if built && machine.image.is_some() {
        return Err(error(
            key_span(text, span.clone(), "image"),
            "`image` boots an image of your own; `packages`, `files` and `init` describe the Debian image flotilla builds: use one or the other".into(),
        ));
    }
    if debian && machine.agent != AgentKind::Flotilla {
        return Err(error(
            key_span(text, span.clone(), "agent"),
            "the Debian image built from `packages`, `files`, `init` and `release` runs flotilla-agent; `agent` is for an `image` of your own".into(),
        ));
    }
    Ok(MachineSpec {
        memory: machine.memory,
        cpus: machine.cpus,
        kernel_args: machine.kernel_args,
        arch,
        display: machine.display,
        snapshot: machine.snapshot,
        image: machine.image,
        agent: machine.agent,
        vlans: machine.vlans,
        forward,
        disks,
        packages,
        files,
        init,
        release,
    })
}

/// The `[network]` table checked against the machines: the backend, the address
/// offset and the VLANs joined to other networks.
fn check_network(
    src: &Source,
    raw: RawNetwork,
    machines: &BTreeMap<String, MachineSpec>,
) -> Result<(flotilla_vmnet::Backend, u8, Vec<JoinSpec>), Error> {
    let backend = match raw.backend {
        Some(b) => b
            .get_ref()
            .parse()
            .map_err(|m| src.error(b.span(), format!("network.backend: {m}")))?,
        None => flotilla_vmnet::Backend::default(),
    };
    let offset = match &raw.offset {
        Some(o) if usize::from(*o.get_ref()) + machines.len() > flotilla_vmnet::MAX_MACHINES => {
            return Err(src.error(
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
    for j in raw.join {
        let span = j.span();
        let j = j.into_inner();
        if backend != flotilla_vmnet::Backend::Vde {
            return Err(src.error(span, "network.join needs the vde backend".into()));
        }
        let on_vlan = machines.values().any(|m| m.vlans.contains(&j.vlan));
        if !on_vlan {
            return Err(src.error(
                span,
                format!("network.join: no machine is on VLAN {}", j.vlan),
            ));
        }
        join.push(j);
    }
    Ok((backend, offset, join))
}

/// The `[coverage]` table: a floor between 0 and 100, LLVM binaries that exist.
fn check_coverage(raw: RawCoverage, dir: &Path) -> Result<CoverageSpec, (Range<usize>, String)> {
    let fail_under = match raw.fail_under {
        Some(f) if !(0.0..=100.0).contains(f.get_ref()) => {
            return Err((
                f.span(),
                format!(
                    "coverage.fail_under = {} is not a percentage (0 to 100)",
                    f.get_ref()
                ),
            ))
        }
        f => f.map(|f| *f.get_ref()),
    };
    let mut llvm_binaries = Vec::new();
    for binary in raw.llvm_binaries {
        let resolved = dir.join(binary.get_ref());
        if !resolved.is_file() {
            return Err((
                binary.span(),
                format!(
                    "coverage.llvm_binaries: {} does not exist (build it before the test)",
                    resolved.display()
                ),
            ));
        }
        llvm_binaries.push(std::path::absolute(&resolved).unwrap_or(resolved));
    }
    Ok(CoverageSpec {
        enabled: raw.enabled,
        fail_under,
        llvm_binaries,
    })
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
fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let column = before.rfind('\n').map_or(offset, |nl| offset - nl - 1) + 1;
    (line, column)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::{DiskSource, InjectError};

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
    fn an_architecture_is_known_and_fits_the_machine() {
        let spec = parse(
            "[machines.a]\narch = \"aarch64\"\n[machines.b]\narch = \"arm64\"\n[machines.c]\n",
        )
        .unwrap();
        assert_eq!(spec.machines["a"].arch.name, "aarch64");
        assert_eq!(spec.machines["b"].arch.name, "aarch64", "Debian's name too");
        assert!(spec.machines["c"].arch.is_host());
        let m = message("[machines.a]\narch = \"riscv\"\n");
        assert!(
            m.contains(":2:8: machine `a`: unknown architecture `riscv`: machines can be \"x86_64\", \"aarch64\""),
            "{m}"
        );
        let m = message("[machines.a]\narch = \"aarch64\"\ndisplay = true\n");
        assert!(
            m.contains(":3:11: machine `a`: aarch64 machines have no screen"),
            "{m}"
        );
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
    fn a_machine_named_only_in_a_sub_table_is_told_to_write_its_own() {
        assert_eq!(
            message("[[machines.server.disks]]\nname = \"data\"\nsize = 64\n"),
            "/nonexistent/spec.toml:1:19: machine `server` has no table of its own: write \
             `[machines.server]` (even with no keys) before `[[machines.server.disks]]`"
        );
        // With its table first, the same disks parse.
        let spec =
            parse("[machines.server]\n[[machines.server.disks]]\nname = \"data\"\nsize = 64\n")
                .unwrap();
        assert_eq!(spec.machines["server"].disks.len(), 1);
    }

    #[test]
    fn coverage_table() {
        assert_eq!(
            parse("[machines.a]\n").unwrap().coverage,
            CoverageSpec::default()
        );
        let spec = parse("[coverage]\nenabled = true\nfail_under = 75.5\n[machines.a]\n").unwrap();
        assert!(spec.coverage.enabled);
        assert_eq!(spec.coverage.fail_under, Some(75.5));
        assert_eq!(
            message("[coverage]\nfail_under = 120.0\n[machines.a]\n"),
            "/nonexistent/spec.toml:2:14: coverage.fail_under = 120 is not a percentage (0 to 100)"
        );
        assert_eq!(
            message("[coverage]\nllvm_binaries = [\"build/server\"]\n[machines.a]\n"),
            "/nonexistent/spec.toml:2:18: coverage.llvm_binaries: /nonexistent/build/server \
             does not exist (build it before the test)"
        );
        let m = message("[coverage]\nenable = true\n[machines.a]\n");
        assert!(
            m.starts_with("/nonexistent/spec.toml:2:1: unknown field `enable`"),
            "{m}"
        );
        // A binary that exists is kept, absolute.
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("prog"), b"").unwrap();
        let spec = Spec::parse(
            &dir.path().join("spec.toml"),
            "[coverage]\nllvm_binaries = [\"prog\"]\n[machines.a]\n",
        )
        .unwrap();
        assert_eq!(spec.coverage.llvm_binaries, [dir.path().join("prog")]);
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
    fn a_host_port_is_forwarded_once() {
        let text = "[machines.b]\nforward = [{ host = 8080, guest = 80 }]\n\
                    [machines.a]\nforward = [{ host = 8081, guest = 22 }, { host = 8080, guest = 80 }]\n";
        let m = message(text);
        assert_eq!(
            m,
            "/nonexistent/spec.toml:4:50: machine `a`: forward: host port 8080 is already forwarded by machine `b` (each host port can be forwarded once)"
        );
        let m = message(
            "[machines.a]\nforward = [{ host = 22, guest = 22 },\n  { host = 22, guest = 23 }]\n",
        );
        assert!(m.starts_with("/nonexistent/spec.toml:3:12: "), "{m}");
        assert!(
            m.contains("host port 22 is forwarded twice by machine `a`"),
            "{m}"
        );
        // 0 or no host port picks a free one each time: never a duplicate.
        let spec = parse(
            "[machines.a]\nforward = [{ guest = 1 }, { host = 0, guest = 2 }]\n[machines.b]\nforward = [{ guest = 1 }]\n",
        )
        .unwrap();
        assert_eq!(spec.machines["a"].forward.len(), 2);
        let m = message("[machines.a]\nforward = [{ host = 1 }]\n");
        assert!(m.contains("missing field `guest`"), "{m}");
        let m = message("[machines.a]\nforward = [{ host = 5, guest = 0 }]\n");
        assert!(m.contains("machine `a`: forward needs a guest port"), "{m}");
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
    fn debian_machines() {
        use crate::spec::{FileSpec, PackageSource};
        use flotilla_image::debian::{Init, Release};
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("spec.toml");
        std::fs::create_dir(dir.path().join("dist")).unwrap();
        std::fs::write(dir.path().join("dist/app_1.0_amd64.deb"), b"").unwrap();
        std::fs::write(dir.path().join("app.conf"), b"").unwrap();
        let text = "[machines.web]\n\
                    packages = [\"nginx\", \"./dist/app_1.0_amd64.deb\"]\n\
                    files = { \"/etc/app.conf\" = \"app.conf\" }\n\
                    [machines.old]\ninit = \"sysvinit\"\nrelease = \"bookworm\"\n\
                    [machines.plain]\n[machines.bare]\nrelease = \"trixie\"\n\
                    [machines.own]\nimage = \"app.conf\"\nrelease = \"trixie\"\n";
        let spec = Spec::parse(&path, text).unwrap();
        let web = &spec.machines["web"];
        assert!(web.is_debian());
        assert_eq!(web.init, None);
        assert_eq!(web.packages.len(), 2);
        assert_eq!(web.packages[0].source, PackageSource::Name("nginx".into()));
        assert_eq!((web.packages[0].line, web.packages[0].column), (2, 13));
        assert_eq!(
            web.packages[1].source,
            PackageSource::Deb(dir.path().join("./dist/app_1.0_amd64.deb"))
        );
        assert_eq!((web.packages[1].line, web.packages[1].column), (2, 22));
        assert_eq!(
            web.files,
            [FileSpec {
                guest: "/etc/app.conf".into(),
                source: dir.path().join("app.conf"),
            }]
        );
        assert_eq!(spec.machines["old"].init, Some(Init::Sysvinit));
        assert!(spec.machines["old"].is_debian());
        assert!(!spec.machines["plain"].is_debian());
        assert_eq!(web.release, None, "the default release");
        assert_eq!(spec.machines["old"].release, Some(Release::Bookworm));
        // `release` alone makes a Debian machine; next to `image`, it names the kernel.
        let bare = &spec.machines["bare"];
        assert!(bare.is_debian());
        assert_eq!(bare.release, Some(Release::Trixie));
        let own = &spec.machines["own"];
        assert!(!own.is_debian());
        assert_eq!(own.release, Some(Release::Trixie));
    }

    #[test]
    fn bad_debian_machines_name_line_and_column() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("spec.toml");
        std::fs::write(dir.path().join("app.conf"), b"").unwrap();
        std::fs::write(dir.path().join("x.qcow2"), b"").unwrap();
        let message = |body: &str| {
            let text = format!("[machines.web]\n{body}");
            let e = Spec::parse(&path, &text).unwrap_err().to_string();
            e.strip_prefix(&format!("{}:", path.display()))
                .unwrap_or_else(|| panic!("{e}"))
                .to_owned()
        };
        let m = message("files = { \"/etc/app.conf\" = \"nope.conf\" }\n");
        assert!(m.starts_with("2:29: machine `web`: files: "), "{m}");
        assert!(
            m.contains("nope.conf (for /etc/app.conf) does not exist"),
            "{m}"
        );
        let m = message("files = { \"etc/app.conf\" = \"app.conf\" }\n");
        assert!(
            m.starts_with("2:11: machine `web`: files: `etc/app.conf` is not an absolute path"),
            "{m}"
        );
        for bad in ["/", "/etc/../x", "/etc/"] {
            let m = message(&format!("files = {{ \"{bad}\" = \"app.conf\" }}\n"));
            assert!(m.contains("is not an absolute path"), "{bad}: {m}");
        }
        let m = message("files = { \"/etc/x\" = \".\" }\n");
        assert!(m.contains("is a folder; name each file"), "{m}");
        let m = message("packages = [\"curl\",\n  \"Nginx\"]\n");
        assert!(
            m.starts_with("3:3: machine `web`: packages: `Nginx` is not a Debian package name"),
            "{m}"
        );
        // A package of another architecture than the machine's.
        let root = dir.path().join("pkg");
        std::fs::create_dir_all(root.join("DEBIAN")).unwrap();
        std::fs::write(
            root.join("DEBIAN/control"),
            "Package: app\nVersion: 1.0\nArchitecture: amd64\nMaintainer: t <t@x.invalid>\n\
             Description: t\n",
        )
        .unwrap();
        let built = std::process::Command::new("dpkg-deb")
            .args(["--build", "--root-owner-group"])
            .arg(&root)
            .arg(dir.path().join("app_1.0_amd64.deb"))
            .stdout(std::process::Stdio::null())
            .status()
            .unwrap();
        assert!(built.success());
        let m = message("arch = \"aarch64\"\npackages = [\"./app_1.0_amd64.deb\"]\n");
        assert!(
            m.starts_with("3:13: machine `web`: ")
                && m.contains(
                    "is a package for amd64 (x86_64), and this machine is aarch64 (arm64)"
                ),
            "{m}"
        );
        let fits = "[machines.web]\narch = \"x86_64\"\npackages = [\"./app_1.0_amd64.deb\"]\n";
        Spec::parse(&path, fits).unwrap();
        let m = message("packages = [\"./gone_1.0_amd64.deb\"]\n");
        assert!(m.starts_with("2:13: machine `web`: package file "), "{m}");
        assert!(m.contains("gone_1.0_amd64.deb does not exist"), "{m}");
        let m = message("init = \"upstart\"\n");
        assert!(
            m.starts_with("2:8: machine `web`: init: `upstart` is not an init system"),
            "{m}"
        );
        let m = message("init = \"sysvinit\"\npackages = [\"systemd-sysv\"]\n");
        assert!(
            m.starts_with("3:13: machine `web`: packages: package `systemd-sysv` makes the init system, which is sysvinit"),
            "{m}"
        );
        let m = message("packages = [\"curl\"]\nimage = \"x.qcow2\"\n");
        assert!(
            m.starts_with("3:9: machine `web`: `image` boots an image of your own"),
            "{m}"
        );
        let m = message("packages = [\"curl\"]\nrelease = \"buster\"\n");
        assert!(
            m.starts_with(
                "3:11: machine `web`: release: `buster` is not a Debian release Flotilla builds (bookworm, trixie)"
            ),
            "{m}"
        );
        let m = message("release = 13\n");
        assert!(m.starts_with("2:11: "), "{m}");
        assert!(m.contains("invalid type"), "{m}");
        let m = message("release = \"trixie\"\nagent = \"qga\"\n");
        assert!(m.starts_with("3:9: machine `web`: the Debian image"), "{m}");
        let m = message("init = \"systemd\"\nagent = \"qga\"\n");
        assert!(m.starts_with("3:9: machine `web`: the Debian image"), "{m}");
        let m = message("packages = \"curl\"\n");
        assert!(m.starts_with("2:12: "), "{m}");
        assert!(m.contains("invalid type"), "{m}");
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
mod examples {
    use std::path::Path;

    #[test]
    fn every_example_has_a_readme_parses_and_is_listed() {
        // The book's Examples chapter.
        let section = include_str!("../../../docs/src/examples.md");
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
            crate::spec::Spec::load(&dir).unwrap_or_else(|e| panic!("examples/{name}: {e}"));
            assert!(
                section.contains(&format!("[`examples/{name}`](../../examples/{name})")),
                "docs/src/examples.md lacks examples/{name}"
            );
            seen += 1;
        }
        assert!(seen >= 3, "{seen} examples");
    }
}

//! `flotilla-agent install --root DIR [--binary FILE]`: put the agent (this executable,
//! or the agent binary `FILE`, e.g. one built for another architecture, which cannot
//! run here) into a guest root filesystem so that it starts as a service at boot: a systemd unit, and an init script enabled for
//! OpenRC (when the tree has `/etc/runlevels` or `openrc-run`, as Alpine and Debian's
//! `openrc` do; run by `supervise-daemon`) or else for sysvinit (runlevel links, and
//! an entry in insserv's makefiles when the tree boots from them, as Debian's
//! `sysv-rc` does). Plain file writes: no root, no chroot, no maintainer scripts.

use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

pub const BIN_PATH: &str = "usr/local/bin/flotilla-agent";
pub const UNIT_PATH: &str = "etc/systemd/system/flotilla-agent.service";
pub const INIT_SCRIPT_PATH: &str = "etc/init.d/flotilla-agent";

pub const SYSTEMD_UNIT: &str = "\
[Unit]
Description=Flotilla guest agent
# Early: the host's test starts while the rest of the boot goes on, and waits for what
# it needs (wait_for_unit of multi-user.target). The agent needs the journal's socket
# and the API file systems systemd mounts before any unit; it waits for its
# virtio-serial port by itself.
DefaultDependencies=no
After=systemd-journald.socket
Conflicts=shutdown.target
Before=shutdown.target

[Service]
Type=simple
# The host configures the NICs once the agent is up: the kernel's settings from
# sysctl.d (e.g. net.core.default_qdisc) come first, without waiting for
# systemd-sysctl.service, which applies them again after systemd-modules-load.
ExecStartPre=-/usr/lib/systemd/systemd-sysctl
ExecStart=/usr/local/bin/flotilla-agent
# Ahead of the rest of the boot for the CPU, while systemd is starting up only.
StartupCPUWeight=1000
Restart=always
RestartSec=1s

[Install]
WantedBy=multi-user.target
";

pub const INIT_SCRIPT: &str = r#"#!/bin/sh
### BEGIN INIT INFO
# Provides:          flotilla-agent
# Required-Start:    $local_fs
# Required-Stop:     $local_fs
# Default-Start:     2 3 4 5
# Default-Stop:      0 1 6
# Short-Description: Flotilla guest agent
### END INIT INFO

DAEMON=/usr/local/bin/flotilla-agent
PIDFILE=/run/flotilla-agent.pid

running() {
    [ -f "$PIDFILE" ] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null
}

case "$1" in
    start)
        if running; then
            echo "flotilla-agent is already running"
            exit 0
        fi
        mkdir -p "$(dirname "$PIDFILE")"
        # A session of its own: Debian's rc runs the scripts on a terminal that
        # goes away once the boot is done.
        if command -v setsid >/dev/null 2>&1; then
            setsid "$DAEMON" </dev/null >/dev/console 2>&1 &
        else
            "$DAEMON" </dev/null >/dev/console 2>&1 &
        fi
        echo $! >"$PIDFILE"
        ;;
    stop)
        if running; then
            pid=$(cat "$PIDFILE")
            kill -TERM "$pid"
            for _ in 1 2 3 4 5 6 7 8 9 10; do
                kill -0 "$pid" 2>/dev/null || break
                sleep 0.5
            done
            kill -KILL "$pid" 2>/dev/null
        fi
        rm -f "$PIDFILE"
        ;;
    restart|force-reload)
        "$0" stop
        "$0" start
        ;;
    status)
        if running; then
            echo "flotilla-agent is running"
            exit 0
        fi
        echo "flotilla-agent is not running"
        exit 3
        ;;
    *)
        echo "usage: $0 {start|stop|restart|status}" >&2
        exit 3
        ;;
esac
"#;

pub const OPENRC_SCRIPT: &str = r#"#!/sbin/openrc-run
description="Flotilla guest agent"
command="/usr/local/bin/flotilla-agent"
# supervise-daemon starts it again a second after it dies, however often.
supervisor=supervise-daemon
respawn_delay=1
respawn_max=0
pidfile="/run/flotilla-agent.pid"
output_log="/dev/console"
error_log="/dev/console"

depend() {
    # Ordering only: Debian's OpenRC has no localmount service (its sysinit
    # runlevel mounts everything), and a missing `need` would stop the agent.
    after localmount modules udev
}
"#;

/// The service's name in insserv's makefiles.
const SERVICE: &str = "flotilla-agent";

/// Whether the tree uses OpenRC.
fn uses_openrc(root: &Path) -> bool {
    ["etc/runlevels", "sbin/openrc-run", "usr/sbin/openrc-run"]
        .iter()
        .any(|p| root.join(p).exists())
}

/// The installer's usage line.
pub const USAGE: &str = "flotilla-agent install --root DIR [--binary FILE]";

/// `--root DIR` and `--binary FILE` (or `--root=DIR`, `--binary=FILE`), in any order.
fn parse_args<'a>(args: &[&'a str]) -> Option<(&'a str, Option<&'a str>)> {
    let (mut root, mut binary) = (None, None);
    let mut rest = args.iter();
    while let Some(arg) = rest.next() {
        let (name, value) = match arg.split_once('=') {
            Some((name, value)) => (name, value),
            None => (*arg, *rest.next()?),
        };
        let slot = match name {
            "--root" => &mut root,
            "--binary" => &mut binary,
            _ => return None,
        };
        if slot.replace(value).is_some() {
            return None;
        }
    }
    Some((root?, binary))
}

pub fn main(args: &[&str]) -> ExitCode {
    let Some((root, binary)) = parse_args(args) else {
        eprintln!("flotilla-agent: usage: {USAGE}");
        return ExitCode::from(2);
    };
    match install(Path::new(root), binary.map(Path::new)) {
        Ok(paths) => {
            for p in paths {
                println!("installed {}", p.display());
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("flotilla-agent: install into {root}: {e}");
            ExitCode::FAILURE
        }
    }
}

fn context(what: String) -> impl FnOnce(io::Error) -> io::Error {
    move |e| io::Error::new(e.kind(), format!("{what}: {e}"))
}

/// The agent binary to install: the file `binary`, which must be an ELF executable, or
/// else this executable.
fn agent_binary(binary: Option<&Path>) -> io::Result<Vec<u8>> {
    let path = match binary {
        Some(path) => path.to_path_buf(),
        None => std::env::current_exe().map_err(context("finding this executable".into()))?,
    };
    let bin = std::fs::read(&path).map_err(context(format!("reading {}", path.display())))?;
    if !bin.starts_with(b"\x7fELF") {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{} is not an ELF executable", path.display()),
        ));
    }
    Ok(bin)
}

/// Install into `root` the agent `binary` (by default this executable); returns the
/// paths created.
pub fn install(root: &Path, binary: Option<&Path>) -> io::Result<Vec<PathBuf>> {
    if !root.is_dir() {
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            "not a directory".to_string(),
        ));
    }
    let bin = agent_binary(binary)?;
    let mut done = Vec::new();
    done.push(write_file(&root.join(BIN_PATH), &bin, 0o755)?);
    done.push(write_file(
        &root.join(UNIT_PATH),
        SYSTEMD_UNIT.as_bytes(),
        0o644,
    )?);
    done.push(symlink(
        "/etc/systemd/system/flotilla-agent.service",
        &root.join("etc/systemd/system/multi-user.target.wants/flotilla-agent.service"),
    )?);
    if uses_openrc(root) {
        done.push(write_file(
            &root.join(INIT_SCRIPT_PATH),
            OPENRC_SCRIPT.as_bytes(),
            0o755,
        )?);
        done.push(symlink(
            "/etc/init.d/flotilla-agent",
            &root.join("etc/runlevels/default/flotilla-agent"),
        )?);
        return Ok(done);
    }
    done.push(write_file(
        &root.join(INIT_SCRIPT_PATH),
        INIT_SCRIPT.as_bytes(),
        0o755,
    )?);
    for level in ["2", "3", "4", "5"] {
        done.push(symlink(
            "../init.d/flotilla-agent",
            &root.join(format!("etc/rc{level}.d/S99flotilla-agent")),
        )?);
    }
    for level in ["0", "1", "6"] {
        done.push(symlink(
            "../init.d/flotilla-agent",
            &root.join(format!("etc/rc{level}.d/K01flotilla-agent")),
        )?);
    }
    // Debian's sysv-rc boots in parallel from insserv's makefiles when they exist and
    // then runs only the scripts they list (insserv itself needs a chroot).
    for name in [".depend.start", ".depend.stop"] {
        let path = root.join("etc/init.d").join(name);
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(context(format!("reading {}", path.display()))(e)),
        };
        if let Some(text) = with_target(&text, SERVICE) {
            done.push(write_file(&path, text.as_bytes(), 0o644)?);
        }
    }
    Ok(done)
}

/// An insserv makefile (`TARGETS = a b`, then `a: b` dependency lines) that also
/// lists `service` as a target with no dependencies; `None` when it already does.
fn with_target(makefile: &str, service: &str) -> Option<String> {
    let mut found = false;
    let mut out = String::with_capacity(makefile.len() + service.len() + 16);
    for line in makefile.lines() {
        match line.strip_prefix("TARGETS =") {
            Some(targets) if !found => {
                found = true;
                if targets.split_whitespace().any(|t| t == service) {
                    return None;
                }
                out.push_str(line.trim_end());
                out.push(' ');
                out.push_str(service);
            }
            _ => out.push_str(line),
        }
        out.push('\n');
    }
    if !found {
        out.insert_str(0, &format!("TARGETS = {service}\n"));
    }
    Some(out)
}

/// Write atomically (temp file + rename) with an exact mode.
fn write_file(path: &Path, data: &[u8], mode: u32) -> io::Result<PathBuf> {
    let parent = path.parent().unwrap_or(Path::new("/"));
    std::fs::create_dir_all(parent).map_err(context(format!("creating {}", parent.display())))?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = parent.join(format!(".{name}.flotilla-install.tmp"));
    let write = || -> io::Result<()> {
        std::fs::write(&tmp, data)?;
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(mode))?;
        std::fs::rename(&tmp, path)
    };
    write().map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        context(format!("writing {}", path.display()))(e)
    })?;
    Ok(path.to_path_buf())
}

fn symlink(target: &str, link: &Path) -> io::Result<PathBuf> {
    let parent = link.parent().unwrap_or(Path::new("/"));
    std::fs::create_dir_all(parent).map_err(context(format!("creating {}", parent.display())))?;
    if std::fs::symlink_metadata(link).is_ok() {
        std::fs::remove_file(link).map_err(context(format!("replacing {}", link.display())))?;
    }
    std::os::unix::fs::symlink(target, link)
        .map_err(context(format!("linking {}", link.display())))?;
    Ok(link.to_path_buf())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn install_arguments_in_either_form_and_order() {
        assert_eq!(parse_args(&["--root", "/r"]), Some(("/r", None)));
        assert_eq!(parse_args(&["--root=/r"]), Some(("/r", None)));
        assert_eq!(
            parse_args(&["--binary", "/b", "--root=/r"]),
            Some(("/r", Some("/b")))
        );
        assert_eq!(
            parse_args(&["--root", "/r", "--binary=/b"]),
            Some(("/r", Some("/b")))
        );
        for bad in [
            &[][..],
            &["--binary", "/b"],
            &["--root"],
            &["--root", "/r", "--root", "/s"],
            &["--root", "/r", "--arch", "aarch64"],
            &["/r"],
        ] {
            assert_eq!(parse_args(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn the_agent_joins_insserv_targets_once() {
        let makefile = "TARGETS = killprocs bootlogs rc.local\nINTERACTIVE =\nrc.local: bootlogs\n";
        let added = with_target(makefile, "flotilla-agent").unwrap();
        assert_eq!(
            added,
            "TARGETS = killprocs bootlogs rc.local flotilla-agent\nINTERACTIVE =\nrc.local: bootlogs\n"
        );
        assert_eq!(with_target(&added, "flotilla-agent"), None);
        // A target whose name only contains ours is another one.
        assert!(with_target("TARGETS = flotilla-agent2\n", "flotilla-agent").is_some());
        assert_eq!(
            with_target("", "flotilla-agent").as_deref(),
            Some("TARGETS = flotilla-agent\n")
        );
    }
}

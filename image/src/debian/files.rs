//! File and process helpers of the image build: running a tool and quoting its
//! failure, writing into the tree, measuring it, cleaning up after killed builds.

use std::io::Write as _;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use crate::error::Error;

/// Finds `name` in `PATH` or the sbin folders (root's tools are there).
pub(super) fn tool(name: &str, package: &str) -> Result<PathBuf, Error> {
    flotilla_host::programs::which_system_tool(name).ok_or_else(|| Error::Setup {
        what: format!("building a Debian image needs `{name}`, which is not installed"),
        hint: format!("apt-get install {package} (scripts/setup does)"),
    })
}

/// Runs `cmd`; a failure quotes the end of its output.
pub(super) fn run(cmd: &mut Command, what: &str) -> Result<(), Error> {
    cmd.stdin(Stdio::null());
    let output: Output = cmd.output().map_err(|source| Error::Io {
        what: format!(
            "{what}: starting {}",
            Path::new(cmd.get_program()).display()
        ),
        source,
    })?;
    if output.status.success() {
        return Ok(());
    }
    let mut lines = tail(&output.stderr, 20);
    if lines.is_empty() {
        lines = tail(&output.stdout, 20);
    }
    Err(Error::Tool {
        what: what.to_owned(),
        status: flotilla_host::process::describe_status(output.status),
        output: lines,
    })
}

/// Adds the end of debootstrap's own log (where the real cause usually is).
pub(super) fn with_debootstrap_log(e: Error, tree: &Path) -> Error {
    let Error::Tool {
        what,
        status,
        mut output,
    } = e
    else {
        return e;
    };
    // debootstrap names most failures itself ("E: ..."); the log helps when it did not.
    if !output.iter().any(|l| l.starts_with("E: ")) {
        if let Ok(log) = std::fs::read(tree.join("debootstrap/debootstrap.log")) {
            output.push("(end of debootstrap/debootstrap.log:)".into());
            output.extend(tail(&log, 15));
        }
    }
    Error::Tool {
        what,
        status,
        output,
    }
}

fn tail(bytes: &[u8], n: usize) -> Vec<String> {
    let text = String::from_utf8_lossy(bytes);
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    lines[lines.len().saturating_sub(n)..]
        .iter()
        .map(|l| (*l).to_owned())
        .collect()
}

/// Bytes the tree takes, counting whole 4 KiB blocks per file (as ext4 stores them).
pub(super) fn tree_size(root: &Path) -> Result<u64, Error> {
    let mut total = 0u64;
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let entries = std::fs::read_dir(&dir).map_err(|source| Error::Io {
            what: format!("measuring {}", dir.display()),
            source,
        })?;
        for entry in entries.flatten() {
            let Ok(meta) = entry.metadata() else { continue };
            // One block per inode at least (directories, symlinks, small files).
            total += meta.len().div_ceil(4096).max(1) * 4096;
            if meta.is_dir() {
                stack.push(entry.path());
            }
        }
    }
    Ok(total)
}

pub(super) fn absolute(path: &Path) -> Result<PathBuf, Error> {
    std::path::absolute(path).map_err(|source| Error::Io {
        what: format!("resolving {}", path.display()),
        source,
    })
}

pub(super) fn create_dir(dir: &Path) -> Result<(), Error> {
    std::fs::create_dir_all(dir).map_err(|source| Error::Io {
        what: format!("creating {}", dir.display()),
        source,
    })
}

pub(super) fn write_file(path: &Path, data: &[u8], mode: u32) -> Result<(), Error> {
    let write = || -> std::io::Result<()> {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        // A symlink in the tree (e.g. resolv.conf) must not lead outside it.
        if std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink()) {
            std::fs::remove_file(path)?;
        }
        let mut f = std::fs::File::create(path)?;
        f.write_all(data)?;
        f.set_permissions(std::fs::Permissions::from_mode(mode))
    };
    write().map_err(|source| Error::Io {
        what: format!("writing {}", path.display()),
        source,
    })
}

pub(super) fn symlink(target: &str, link: &Path) -> Result<(), Error> {
    let make = || -> std::io::Result<()> {
        if let Some(parent) = link.parent() {
            std::fs::create_dir_all(parent)?;
        }
        if std::fs::symlink_metadata(link).is_ok() {
            std::fs::remove_file(link)?;
        }
        std::os::unix::fs::symlink(target, link)
    };
    make().map_err(|source| Error::Io {
        what: format!("linking {} to {target}", link.display()),
        source,
    })
}

/// Removes the files in `dir` whose names end with `suffix` (all with ""); a missing
/// folder is fine.
pub(super) fn remove_dir_contents(dir: &Path, suffix: &str) -> Result<(), Error> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Ok(());
    };
    for entry in entries.flatten() {
        let is_file = entry.file_type().is_ok_and(|t| t.is_file());
        if is_file && entry.file_name().to_string_lossy().ends_with(suffix) {
            std::fs::remove_file(entry.path()).map_err(|source| Error::Io {
                what: format!("removing {}", entry.path().display()),
                source,
            })?;
        }
    }
    Ok(())
}

/// Removes work folders (`.build-<pid>-*`) and half-written tarballs (`.<name>.<pid>`)
/// of builds whose process is gone (killed, or interrupted with Ctrl-C).
pub(super) fn remove_stale_work(cache: &Path) {
    let Ok(entries) = std::fs::read_dir(cache) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let pid = if let Some(rest) = name.strip_prefix(".build-") {
            rest.split('-').next()
        } else if name.starts_with('.') && name.contains(".tar.") {
            name.rsplit('.').next()
        } else {
            None
        };
        let Some(pid) = pid.and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        let path = entry.path();
        let _ = if path.is_dir() {
            std::fs::remove_dir_all(&path)
        } else {
            std::fs::remove_file(&path)
        };
    }
}

/// Copies the host file `source` to `guest` (an absolute path) in `tree`, with its mode.
pub(super) fn copy_into_tree(tree: &Path, source: &Path, guest: &Path) -> Result<(), Error> {
    let data = std::fs::read(source).map_err(|source_error| Error::Io {
        what: format!("reading {}", source.display()),
        source: source_error,
    })?;
    let mode = std::fs::metadata(source)
        .map(|m| m.permissions().mode() & 0o7777)
        .map_err(|source_error| Error::Io {
            what: format!("reading {}", source.display()),
            source: source_error,
        })?;
    let inside = guest.strip_prefix("/").unwrap_or(guest);
    write_file(&tree.join(inside), &data, mode)
}

/// A name for a file being written in `path`'s folder before it is renamed to `path`:
/// `.NAME.PID` and `suffix`, so that what a killed build left can be told from what
/// a running one writes.
pub(super) fn temporary_beside(path: &Path, suffix: &str) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.{}{suffix}", std::process::id()))
}

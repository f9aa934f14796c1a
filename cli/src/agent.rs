//! `flotilla agent`: the static in-guest agent this binary carries, for images of a
//! user's own.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;
use std::process::{Command, ExitCode};

use flotilla_driver::{agent_binary, Arch, Error};

/// Exit status when the agent could not be written or installed.
const EXIT_ERROR: u8 = 2;

/// `--arch`: an architecture's name, or a usage error listing those there are.
pub fn parse_arch(name: &str) -> Result<&'static Arch, String> {
    Arch::named(name)
        .ok_or_else(|| format!("unknown architecture `{name}`; known: {}", Arch::names()))
}

/// Writes the agent binary for `arch` to `output` (mode 0755).
pub fn extract(output: &Path, arch: &Arch) -> ExitCode {
    match write_agent(output, arch) {
        Ok(()) => {
            println!("{}", output.display());
            ExitCode::SUCCESS
        }
        Err(e) => {
            crate::print_chain(&e);
            ExitCode::from(EXIT_ERROR)
        }
    }
}

/// Runs the agent's own installer (`flotilla-agent install --root DIR`) from a
/// temporary copy: it copies itself into the tree and adds its service. For another
/// architecture than the host's, whose agent cannot run here, the host's agent installs
/// that one (`--binary FILE`).
pub fn install(root: &Path, arch: &Arch) -> ExitCode {
    let dir = match tempfile::Builder::new().prefix("flotilla-agent-").tempdir() {
        Ok(d) => d,
        Err(source) => {
            crate::print_chain(&Error::Io {
                what: "creating a folder for the agent's installer".into(),
                source,
            });
            return ExitCode::from(EXIT_ERROR);
        }
    };
    let installer = dir.path().join("flotilla-agent");
    if let Err(e) = write_agent(&installer, Arch::host()) {
        crate::print_chain(&e);
        return ExitCode::from(EXIT_ERROR);
    }
    let mut command = Command::new(&installer);
    command.arg("install").arg("--root").arg(root);
    if !arch.is_host() {
        let binary = dir.path().join(format!("flotilla-agent-{arch}"));
        if let Err(e) = write_agent(&binary, arch) {
            crate::print_chain(&e);
            return ExitCode::from(EXIT_ERROR);
        }
        command.arg("--binary").arg(binary);
    }
    // The installer prints what it wrote, or its error, and exits 0 or 2.
    match command.status() {
        Ok(status) if status.success() => ExitCode::SUCCESS,
        Ok(_) => ExitCode::from(EXIT_ERROR),
        Err(source) => {
            crate::print_chain(&Error::Io {
                what: format!("running the agent's installer {}", installer.display()),
                source,
            });
            ExitCode::from(EXIT_ERROR)
        }
    }
}

/// Writes the agent for `arch` to `path` (boxed: the driver's error is large).
fn write_agent(path: &Path, arch: &Arch) -> Result<(), Box<Error>> {
    let binary = agent_binary(arch).map_err(Error::from)?;
    let write = || -> std::io::Result<()> {
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o755)
            .open(path)?;
        file.write_all(&binary)?;
        // An existing file keeps its mode on open: set it.
        file.set_permissions(std::fs::Permissions::from_mode(0o755))
    };
    write().map_err(|source| {
        Box::new(Error::Io {
            what: format!("writing the agent to {}", path.display()),
            source,
        })
    })
}

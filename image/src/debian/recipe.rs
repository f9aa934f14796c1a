//! What goes into a Debian image ([`Recipe`]), and its description: one line per input
//! (architecture, init, packages, local `.deb` files and guest files by content, the agent, the
//! kernel, the builder's own source), whose hash is the image's cache key.

use std::fmt::Write as _;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::init::Init;
use crate::error::Error;
use crate::release::Release;
use flotilla_host::arch::Arch;

/// Everything a Debian image is made of, besides the mirror's index (which fixes the
/// packages' versions).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recipe {
    /// The architecture of its packages, agent and kernel modules.
    pub arch: &'static Arch,
    /// The Debian release of its packages and its kernel's modules.
    pub release: Release,
    /// The init system.
    pub init: Init,
    /// Debian package names, on top of the default packages and the init's.
    pub packages: Vec<String>,
    /// Local `.deb` files (absolute), installed with the dependencies they name.
    pub debs: Vec<PathBuf>,
    /// Host files copied into the tree after the packages, modes kept.
    pub files: Vec<GuestFile>,
    /// The file system's size; default: the tree plus the default free space.
    pub size_mib: Option<u64>,
}

impl Default for Recipe {
    /// The host's architecture, the default release (trixie), systemd, nothing added.
    fn default() -> Recipe {
        Recipe {
            arch: Arch::host(),
            release: Release::default(),
            init: Init::default(),
            packages: Vec::new(),
            debs: Vec::new(),
            files: Vec::new(),
            size_mib: None,
        }
    }
}

/// A host file put into the image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuestFile {
    /// Where it goes: an absolute path in the guest.
    pub guest: PathBuf,
    /// The host file (absolute); its mode is kept, its owner becomes root.
    pub source: PathBuf,
}

/// The image builder's own source: a change to how images are made is a new image.
const BUILDER: &[&str] = &[
    include_str!("mod.rs"),
    include_str!("builder_vm.rs"),
    include_str!("files.rs"),
    include_str!("init.rs"),
    include_str!("packages.rs"),
    include_str!("recipe.rs"),
    include_str!("../release.rs"),
    include_str!("stages.rs"),
    include_str!("tune.rs"),
];

impl Recipe {
    /// The description of every input: `packages` is the whole checked list (defaults
    /// and init included), `kernel` the version whose modules go in, `agent` the agent
    /// binary. Reads the local `.deb` files and guest files for their content.
    pub(super) fn describe(
        &self,
        packages: &[String],
        kernel: &str,
        agent: &[u8],
    ) -> Result<String, Error> {
        let mut text = String::new();
        let _ = writeln!(text, "suite {}", self.release);
        let _ = writeln!(text, "arch {}", self.arch.debian);
        let _ = writeln!(text, "init {}", self.init);
        let _ = writeln!(text, "packages {}", packages.join(" "));
        let mut debs: Vec<(String, String)> = Vec::new();
        for deb in &self.debs {
            let name = deb
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            debs.push((name, hex(&Sha256::digest(read(deb)?))));
        }
        debs.sort();
        debs.dedup();
        for (name, sum) in debs {
            let _ = writeln!(text, "deb {name} {sum}");
        }
        let mut files = self.files.clone();
        files.sort_by(|a, b| a.guest.cmp(&b.guest));
        for f in &files {
            let (data, mode) = read_with_mode(&f.source)?;
            let _ = writeln!(
                text,
                "file {} {mode:04o} {}",
                f.guest.display(),
                hex(&Sha256::digest(data))
            );
        }
        match self.size_mib {
            Some(size) => {
                let _ = writeln!(text, "size {size} MiB");
            }
            None => text.push_str("size default\n"),
        }
        let _ = writeln!(text, "agent {}", hex(&Sha256::digest(agent)));
        let _ = writeln!(text, "kernel {kernel}");
        let mut builder = Sha256::new();
        for source in BUILDER {
            builder.update(source.as_bytes());
        }
        let _ = writeln!(text, "builder {}", hex(&builder.finalize()));
        Ok(text)
    }
}

/// The cache key of a description: 24 hex digits of its SHA256.
pub(super) fn key(description: &str) -> String {
    hex(&Sha256::digest(description.as_bytes())[..12])
}

pub(super) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn read(path: &Path) -> Result<Vec<u8>, Error> {
    std::fs::read(path).map_err(|source| Error::Io {
        what: format!("reading {}", path.display()),
        source,
    })
}

/// A file's bytes and permission bits.
pub(super) fn read_with_mode(path: &Path) -> Result<(Vec<u8>, u32), Error> {
    let data = read(path)?;
    let mode = std::fs::metadata(path)
        .map_err(|source| Error::Io {
            what: format!("reading {}", path.display()),
            source,
        })?
        .permissions()
        .mode()
        & 0o7777;
    Ok((data, mode))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_description_changes_with_every_input() {
        let dir = tempfile::tempdir().unwrap();
        let conf = dir.path().join("app.conf");
        std::fs::write(&conf, "a = 1\n").unwrap();
        std::fs::set_permissions(&conf, std::fs::Permissions::from_mode(0o640)).unwrap();
        let deb = dir.path().join("app_1.0_amd64.deb");
        std::fs::write(&deb, "not really a deb").unwrap();
        let recipe = Recipe {
            packages: vec!["curl".into()],
            debs: vec![deb.clone()],
            files: vec![GuestFile {
                guest: "/etc/app.conf".into(),
                source: conf.clone(),
            }],
            ..Recipe::default()
        };
        let packages = ["curl".to_owned()];
        let base = recipe.describe(&packages, "6.1.0", b"agent").unwrap();
        assert!(base.contains("init systemd\n"), "{base}");
        assert!(base.contains("\nfile /etc/app.conf 0640 "), "{base}");
        assert!(base.contains("\ndeb app_1.0_amd64.deb "), "{base}");
        assert_eq!(
            base,
            recipe.describe(&packages, "6.1.0", b"agent").unwrap(),
            "the same inputs describe the same"
        );
        let keys = |r: &Recipe, kernel: &str, agent: &[u8]| {
            key(&r.describe(&packages, kernel, agent).unwrap())
        };
        let k = keys(&recipe, "6.1.0", b"agent");
        assert_eq!(k.len(), 24);
        assert_ne!(k, keys(&recipe, "6.1.1", b"agent"));
        assert_ne!(k, keys(&recipe, "6.1.0", b"agent 2"));
        let mut sysv = recipe.clone();
        sysv.init = Init::Sysvinit;
        assert_ne!(k, keys(&sysv, "6.1.0", b"agent"));
        // Identical recipes of two architectures never share an image.
        let mut arm64 = recipe.clone();
        arm64.arch = Arch::named("aarch64").unwrap();
        assert!(arm64
            .describe(&packages, "6.1.0", b"agent")
            .unwrap()
            .contains("\narch arm64\n"));
        assert_ne!(k, keys(&arm64, "6.1.0", b"agent"));
        // Nor do identical recipes of two releases.
        assert!(base.contains("suite trixie\n"), "{base}");
        let mut bookworm = recipe.clone();
        bookworm.release = Release::Bookworm;
        assert!(bookworm
            .describe(&packages, "6.1.0", b"agent")
            .unwrap()
            .starts_with("suite bookworm\n"));
        assert_ne!(k, keys(&bookworm, "6.1.0", b"agent"));
        std::fs::set_permissions(&conf, std::fs::Permissions::from_mode(0o600)).unwrap();
        let k2 = keys(&recipe, "6.1.0", b"agent");
        assert_ne!(k, k2, "a mode is content");
        std::fs::write(&conf, "a = 2\n").unwrap();
        let k3 = keys(&recipe, "6.1.0", b"agent");
        assert_ne!(k2, k3);
        std::fs::write(&deb, "another deb").unwrap();
        assert_ne!(k3, keys(&recipe, "6.1.0", b"agent"));
        let e = Recipe {
            debs: vec![dir.path().join("gone.deb")],
            ..Recipe::default()
        }
        .describe(&packages, "6.1.0", b"agent")
        .unwrap_err();
        assert!(e.to_string().contains("gone.deb"), "{e}");
    }
}

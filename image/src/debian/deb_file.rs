//! What a local `.deb` file says of itself: the architecture it is built for, read with
//! `dpkg-deb`, so that a package of another architecture than its machine's is a spec
//! error before anything is built.

use std::path::Path;
use std::process::Command;

use flotilla_host::arch::Arch;

/// The `Architecture` field of the package `deb` (`amd64`, `arm64`, `all`, ...);
/// `None` when it cannot be read (no `dpkg-deb`, not a package: the build says so).
pub fn deb_architecture(deb: &Path) -> Option<String> {
    let out = Command::new("dpkg-deb")
        .arg("--field")
        .arg(deb)
        .arg("Architecture")
        .output()
        .ok()?;
    let field = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    (out.status.success() && !field.is_empty()).then_some(field)
}

/// Why the package `deb` cannot go into a machine of `arch`, if it cannot: it names
/// another architecture than `arch`'s (or `all`).
pub fn deb_mismatch(deb: &Path, arch: &Arch) -> Option<String> {
    let field = deb_architecture(deb)?;
    if field == "all" || field == arch.debian {
        return None;
    }
    let theirs = Arch::named(&field).map_or(String::new(), |a| format!(" ({a})"));
    Some(format!(
        "{} is a package for {field}{theirs}, and this machine is {arch} ({}): build it for {} or set the machine's `arch`",
        deb.display(),
        arch.debian,
        arch.debian
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A package named `name` for `arch`, built with `dpkg-deb` in `dir`.
    fn package(dir: &Path, name: &str, arch: &str) -> std::path::PathBuf {
        let root = dir.join(format!("{name}-root"));
        std::fs::create_dir_all(root.join("DEBIAN")).unwrap();
        std::fs::write(
            root.join("DEBIAN/control"),
            format!(
                "Package: {name}\nVersion: 1.0\nArchitecture: {arch}\n\
                 Maintainer: t <t@example.invalid>\nDescription: test\n"
            ),
        )
        .unwrap();
        let deb = dir.join(format!("{name}_1.0_{arch}.deb"));
        let status = Command::new("dpkg-deb")
            .args(["--build", "--root-owner-group"])
            .arg(&root)
            .arg(&deb)
            .stdout(std::process::Stdio::null())
            .status()
            .unwrap();
        assert!(status.success());
        deb
    }

    #[test]
    fn a_package_of_another_architecture_is_named_as_such() {
        let dir = tempfile::tempdir().unwrap();
        let (x86, arm64) = (
            Arch::named("x86_64").unwrap(),
            Arch::named("aarch64").unwrap(),
        );
        let amd64_deb = package(dir.path(), "app", "amd64");
        let all_deb = package(dir.path(), "docs", "all");
        assert_eq!(deb_architecture(&amd64_deb).as_deref(), Some("amd64"));
        assert_eq!(deb_mismatch(&amd64_deb, x86), None);
        assert_eq!(deb_mismatch(&all_deb, arm64), None);
        let why = deb_mismatch(&amd64_deb, arm64).unwrap();
        assert!(
            why.contains("is a package for amd64 (x86_64), and this machine is aarch64 (arm64)"),
            "{why}"
        );
        // Not a package: nothing to say here (the build says what is wrong).
        let empty = dir.path().join("empty.deb");
        std::fs::write(&empty, b"").unwrap();
        assert_eq!(deb_mismatch(&empty, arm64), None);
    }
}

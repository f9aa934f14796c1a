//! Debian machines declared in the spec, through the binary: the nginx example, and
//! bad input (a package the mirror lacks, a mirror that cannot be reached, a missing
//! `files` source, an unknown `--arch`, an unknown release, a package one release
//! lacks), each an error that says what is wrong, with exit status 2.

use std::path::{Path, PathBuf};

use super::{
    assert_no_qemu_left, flotilla, flotilla_test, run_expecting, tag, workspace, write_spec,
};

/// The cache the tests share (`FLOTILLA_CACHE`'s rule).
pub(super) fn shared_cache() -> PathBuf {
    flotilla_driver::image::cache_dir()
}

/// A cache of its own in `dir/cache` that sees the shared cache's base trees (so no
/// debootstrap) but none of its images; returns the environment that selects it.
fn private_cache(dir: &Path) -> Vec<(&'static str, PathBuf)> {
    // The shared cache gets the systemd base tree first (debootstrap, once for all the
    // tests that need it; other tests use this image too).
    run_expecting(
        flotilla()
            .args(["image", "debian", "-o"])
            .arg(dir.join("shared.qcow2")),
        0,
    );
    let cache = dir.join("cache");
    std::fs::create_dir_all(cache.join("debian")).unwrap();
    let shared = shared_cache();
    if let Ok(entries) = std::fs::read_dir(shared.join("debian")) {
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.ends_with(".tar") && !name.starts_with('.') {
                std::os::unix::fs::symlink(e.path(), cache.join("debian").join(&name)).unwrap();
            }
        }
    }
    vec![
        ("FLOTILLA_CACHE", cache),
        ("FLOTILLA_KERNEL_DIR", shared.join("kernel/current-amd64")),
        (
            "FLOTILLA_KERNEL_DIR_TRIXIE",
            shared.join("kernel/trixie-amd64"),
        ),
    ]
}

/// The files in the private cache's images folder.
fn images(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir.join("cache/debian/images"))
        .map(|entries| {
            entries
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// A port nothing listens on.
fn closed_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn nginx_example_passes() {
    let out_dir = tempfile::tempdir().unwrap();
    let tag = tag();
    let t = run_expecting(
        flotilla_test(Path::new("examples/nginx"), out_dir.path(), &tag)
            // A cold boot, so that systemd's console (coloured) is in the output:
            // a machine restored from a snapshot prints no boot lines.
            .arg("--no-snapshot")
            .current_dir(workspace()),
        0,
    );
    // Both images named before anything boots; the packaged service is waited for.
    assert!(
        t.contains("web: Debian image (trixie 13, systemd; packages: nginx; 1 file(s))"),
        "{t}"
    );
    assert!(
        t.contains("client: Debian image (trixie 13, systemd; packages: curl; 0 file(s))"),
        "{t}"
    );
    assert!(t.contains("web: waiting for unit nginx"), "{t}");
    assert!(
        t.contains("the host fetched the page from 127.0.0.1:"),
        "{t}"
    );
    assert!(t.contains("PASSED: nginx"), "{t}");
    // systemd colours its console; output that is no terminal carries none of it.
    assert!(t.contains("web # ") && !t.contains('\x1b'), "{t}");
    assert_no_qemu_left(&tag);
}

#[test]
fn a_package_the_mirror_lacks_is_a_spec_error_and_nothing_is_cached() {
    let dir = tempfile::tempdir().unwrap();
    let env = private_cache(dir.path());
    write_spec(
        dir.path(),
        "script = \"t.rhai\"\n[machines.vm]\npackages = [\"curl\",\n  \"flotilla-no-such-package\"]\n",
        "vm.succeed(\"true\");\n",
    );
    refused_for_a_missing_package(
        dir.path(),
        &env,
        "4:3",
        "Debian trixie has no package `flotilla-no-such-package`",
    );
}

/// `flotilla test` of `dir`'s spec ends with exit 2 and a spec error at `at` (line:col)
/// that says `what` and names the mirror, and nothing was cached.
fn refused_for_a_missing_package(
    dir: &Path,
    env: &[(&'static str, PathBuf)],
    at: &str,
    what: &str,
) -> String {
    let spec = dir.join("flotilla.toml");
    let t = run_expecting(
        flotilla()
            .arg("test")
            .arg(&spec)
            .arg("--out")
            .arg(dir.join("out"))
            .envs(env.iter().cloned()),
        2,
    );
    assert!(
        t.contains(&format!(
            "error: {}:{at}: machine `vm`: {what} (mirror ",
            spec.display()
        )),
        "{t}"
    );
    assert!(t.contains("nothing was cached"), "{t}");
    assert_eq!(images(dir), Vec::<String>::new(), "{t}");
    t
}

#[test]
fn an_unreachable_mirror_says_so_and_what_is_cached() {
    let dir = tempfile::tempdir().unwrap();
    let env = private_cache(dir.path());
    // An image built from the real mirror first...
    let image = dir.path().join("plain.qcow2");
    run_expecting(
        flotilla()
            .args(["image", "debian", "-o"])
            .arg(&image)
            .envs(env.clone()),
        0,
    );
    let cached = images(dir.path());
    assert_eq!(cached.len(), 2, "an image and its manifest: {cached:?}");
    // ... serves the same content when the mirror cannot be reached.
    let mirror = format!("http://127.0.0.1:{}/debian", closed_port());
    let t = run_expecting(
        flotilla()
            .args(["image", "debian", "-o"])
            .arg(&image)
            .envs(env.clone())
            .env("FLOTILLA_DEBIAN_MIRROR", &mirror),
        0,
    );
    assert!(
        t.contains(&format!(
            "debian: the mirror {mirror} cannot be reached (wget {mirror}/dists/trixie/Release: "
        )),
        "{t}"
    );
    assert!(
        t.contains("using the cached image of the same content"),
        "{t}"
    );
    // Other content cannot be built: the error names the mirror and what is cached.
    write_spec(
        dir.path(),
        "script = \"t.rhai\"\n[machines.vm]\npackages = [\"curl\"]\n",
        "vm.succeed(\"true\");\n",
    );
    let t = run_expecting(
        flotilla()
            .arg("test")
            .arg(dir.path())
            .arg("--out")
            .arg(dir.path().join("out"))
            .envs(env)
            .env("FLOTILLA_DEBIAN_MIRROR", &mirror),
        2,
    );
    assert!(
        t.contains(&format!(
            "error: building the image: the Debian mirror {mirror} cannot be reached (wget {mirror}/dists/trixie/Release: "
        )),
        "{t}"
    );
    assert!(t.contains("refused"), "{t}");
    assert!(
        t.contains("and no image of this content is cached\ncached images:\n  "),
        "{t}"
    );
    let listed = cached.iter().find(|n| n.ends_with(".qcow2")).unwrap();
    assert!(
        t.contains(&format!(
            "{listed} (init systemd; packages iproute2 kmod procps systemd-sysv udev)"
        )),
        "{t}"
    );
    assert!(t.contains("cached base trees:\n  "), "{t}");
    assert!(
        t.contains("hint: FLOTILLA_DEBIAN_MIRROR=URL names another mirror"),
        "{t}"
    );
    assert_eq!(images(dir.path()), cached);
}

#[test]
fn a_missing_files_source_is_a_spec_error() {
    let dir = tempfile::tempdir().unwrap();
    write_spec(
        dir.path(),
        "script = \"t.rhai\"\n[machines.vm]\nfiles = { \"/etc/x.conf\" = \"nope.conf\" }\n",
        "vm.succeed(\"true\");\n",
    );
    let spec = dir.path().join("flotilla.toml");
    refused_by_test_and_run(
        &spec,
        &format!(
            "error: {}:3:27: machine `vm`: files: {} (for /etc/x.conf) does not exist",
            spec.display(),
            dir.path().join("nope.conf").display()
        ),
    );
}

/// `flotilla test` and `flotilla run` of `spec` both end with exit 2 and print `error`.
fn refused_by_test_and_run(spec: &Path, error: &str) {
    for command in ["test", "run"] {
        let t = run_expecting(flotilla().arg(command).arg(spec), 2);
        assert!(t.contains(error), "{command}: {t}");
    }
}

#[test]
fn an_unknown_architecture_is_refused_before_anything_is_built() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("x.qcow2");
    let t = run_expecting(
        flotilla()
            .args(["image", "debian", "--arch", "sparc64", "-o"])
            .arg(&out),
        2,
    );
    assert!(
        t.contains("unknown architecture `sparc64`: images can be \"x86_64\", \"aarch64\""),
        "{t}"
    );
    assert!(!out.exists());
}

#[test]
fn a_package_one_release_lacks_is_a_spec_error_naming_the_release() {
    let dir = tempfile::tempdir().unwrap();
    let env = private_cache(dir.path());
    // neofetch is bookworm's only, fastfetch trixie's only.
    for (release, package) in [("trixie", "neofetch"), ("bookworm", "fastfetch")] {
        write_spec(
            dir.path(),
            &format!(
                "script = \"t.rhai\"\n[machines.vm]\nrelease = \"{release}\"\n\
                 packages = [\"jq\", \"{package}\"]\n"
            ),
            "vm.succeed(\"true\");\n",
        );
        refused_for_a_missing_package(
            dir.path(),
            &env,
            "4:19",
            &format!("Debian {release} has no package `{package}`"),
        );
    }
}

#[test]
fn an_unknown_release_is_refused_before_anything_is_built() {
    let dir = tempfile::tempdir().unwrap();
    write_spec(
        dir.path(),
        "script = \"t.rhai\"\n[machines.vm]\npackages = [\"curl\"]\nrelease = \"buster\"\n",
        "vm.succeed(\"true\");\n",
    );
    let spec = dir.path().join("flotilla.toml");
    refused_by_test_and_run(
        &spec,
        &format!(
            "error: {}:4:11: machine `vm`: release: `buster` is not a Debian release Flotilla builds (bookworm, trixie)",
            spec.display()
        ),
    );
    let out = dir.path().join("x.qcow2");
    let t = run_expecting(
        flotilla()
            .args(["image", "debian", "--release", "buster", "-o"])
            .arg(&out),
        2,
    );
    assert!(
        t.contains("`buster` is not a Debian release Flotilla builds (bookworm, trixie)"),
        "{t}"
    );
    assert!(!out.exists());
}

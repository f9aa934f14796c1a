//! Tests from nixpkgs' nixos/tests, their `testScript` unchanged but for Nix store
//! paths, on Debian machines that have what their NixOS nodes had
//! (`tests/nixos/README.md` says what each one is and what changed).

use flotilla_driver::Spec;

use super::{run_passing, workspace};

/// Runs `tests/nixos/<name>`; it must pass.
async fn run_nixos_test(name: &str) {
    let spec = Spec::load(&workspace().join("tests/nixos").join(name)).unwrap();
    assert!(
        spec.script
            .as_ref()
            .is_some_and(|s| s.extension().is_some_and(|e| e == "py")),
        "{name}: a NixOS test's script is Python"
    );
    let log = run_passing(&spec).await;
    assert!(
        log.contains(&format!("test `nixos-{name}` passed")),
        "{log}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn nixos_simple_boots_to_multi_user_and_shuts_down() {
    run_nixos_test("simple").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn nixos_lighttpd_serves_and_reloads() {
    run_nixos_test("lighttpd").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn nixos_memcached_answers_a_python_client() {
    run_nixos_test("memcached").await;
}

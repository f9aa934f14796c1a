//! arm64 Debian machines (trixie, the default release) on an x86 host: one spec with a machine of each init, each
//! with a package from the mirror, a local `.deb` and a file, built without running arm64 code on the
//! host (the builder VM, unless qemu-user is registered with binfmt_misc), then booted
//! under TCG.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use flotilla_driver::Fleet;

use super::{host_run, spec};

/// Packs `dir/greet_1.0_all.deb`: a shell script, for every architecture, that needs
/// jq (reproducibly: the same bytes each time, so the images stay cached).
fn build_deb(dir: &Path) {
    let root = dir.join("pkg");
    std::fs::create_dir_all(root.join("DEBIAN")).unwrap();
    std::fs::create_dir_all(root.join("usr/bin")).unwrap();
    let script = root.join("usr/bin/greet");
    std::fs::write(
        &script,
        "#!/bin/sh\nexec jq -r .greeting /etc/flotilla-test.json\n",
    )
    .unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::write(
        root.join("DEBIAN/control"),
        "Package: greet\nVersion: 1.0\nArchitecture: all\n\
         Maintainer: Flotilla tests <tests@localhost>\nDepends: jq\n\
         Description: prints the greeting\n",
    )
    .unwrap();
    host_run(
        "touch",
        Command::new("find").arg(&root).args([
            "-exec",
            "touch",
            "--no-dereference",
            "--date=@1700000000",
            "{}",
            "+",
        ]),
    );
    host_run(
        "dpkg-deb",
        Command::new("dpkg-deb")
            .args(["--root-owner-group", "-Zgzip", "--build"])
            .arg(&root)
            .arg(dir.join("greet_1.0_all.deb"))
            .env("SOURCE_DATE_EPOCH", "1700000000"),
    );
}

/// The spec's inputs in `dir`: the file and the `.deb`.
fn write_inputs(dir: &Path) {
    let json = dir.join("test.json");
    std::fs::write(&json, "{\"greeting\": \"hello from arm64\"}\n").unwrap();
    std::fs::set_permissions(&json, std::fs::Permissions::from_mode(0o640)).unwrap();
    build_deb(dir);
}

const SPEC: &str = "[machines.systemd]\n\
     arch = \"aarch64\"\n\
     packages = [\"jq\", \"./greet_1.0_all.deb\"]\n\
     files = { \"/etc/flotilla-test.json\" = \"test.json\" }\n\
     memory = 512\n\
     [machines.sysvinit]\n\
     arch = \"aarch64\"\n\
     init = \"sysvinit\"\n\
     packages = [\"jq\", \"./greet_1.0_all.deb\"]\n\
     files = { \"/etc/flotilla-test.json\" = \"test.json\" }\n\
     memory = 512\n\
     [machines.openrc]\n\
     arch = \"aarch64\"\n\
     init = \"openrc\"\n\
     packages = [\"jq\", \"./greet_1.0_all.deb\"]\n\
     files = { \"/etc/flotilla-test.json\" = \"test.json\" }\n\
     memory = 512\n\
     [machines.agent]\n\
     arch = \"aarch64\"\n\
     init = \"agent\"\n\
     packages = [\"jq\", \"./greet_1.0_all.deb\"]\n\
     files = { \"/etc/flotilla-test.json\" = \"test.json\" }\n\
     memory = 512\n";

#[tokio::test(flavor = "multi_thread")]
async fn arm64_debian_machines_of_every_init_run_a_package() {
    let dir = tempfile::tempdir().unwrap();
    write_inputs(dir.path());
    let (spec1, mut options) = spec(&dir, SPEC);
    // OpenRC and sysvinit under TCG of another architecture take minutes to boot.
    options.boot_timeout = Duration::from_secs(900);
    let started = Instant::now();
    // The first build of each init debootstraps (the second stage in the arm64 VM):
    // many minutes under TCG; later ones take the cached images.
    let net = Fleet::new(&spec1, options).unwrap();
    eprintln!("images ready in {:.1} s", started.elapsed().as_secs_f64());
    let log = std::fs::read_to_string(dir.path().join("out/driver.log")).unwrap();
    assert_eq!(log.matches(": Debian image (").count(), 4, "{log}");
    if log.contains("debian: built the image") && !log.contains("binfmt_misc (qemu-") {
        assert!(
            log.contains("debian: arm64 second stage in an arm64 VM"),
            "{log}"
        );
    }
    let trixie_kernel = format!(
        "{}\n",
        flotilla_driver::image::Kernel::of_release(
            flotilla_driver::debian::Release::Trixie,
            flotilla_driver::Arch::named("aarch64").unwrap()
        )
        .unwrap()
        .version
    );
    for (name, pid1) in [
        ("systemd", "systemd"),
        ("sysvinit", "init"),
        ("openrc", "init"),
        ("agent", "flotilla-agent"),
    ] {
        let m = net.machine(name).unwrap();
        let booting = Instant::now();
        m.start().await.unwrap();
        eprintln!(
            "{name}: ready {:.1} s after start()",
            booting.elapsed().as_secs_f64()
        );
        assert_eq!(m.succeed("uname -m").await.unwrap(), "aarch64\n", "{name}");
        // The default release, trixie, on its own arm64 kernel.
        assert_eq!(
            m.succeed(". /etc/os-release && echo $VERSION_ID")
                .await
                .unwrap(),
            "13\n",
            "{name}"
        );
        assert_eq!(
            m.succeed("uname -r").await.unwrap(),
            trixie_kernel,
            "{name}"
        );
        assert_eq!(
            m.succeed("dpkg --print-architecture").await.unwrap(),
            "arm64\n",
            "{name}"
        );
        assert_eq!(
            m.succeed("jq -r .greeting /etc/flotilla-test.json")
                .await
                .unwrap(),
            "hello from arm64\n",
            "{name}"
        );
        assert_eq!(
            m.succeed("greet").await.unwrap(),
            "hello from arm64\n",
            "{name}"
        );
        assert_eq!(
            m.succeed("stat -c '%a %U' /etc/flotilla-test.json")
                .await
                .unwrap(),
            "640 root\n",
            "{name}"
        );
        assert_eq!(
            m.succeed("dpkg-query -W -f='${Architecture}' jq")
                .await
                .unwrap(),
            "arm64",
            "{name}"
        );
        assert_eq!(
            m.succeed("cat /proc/1/comm").await.unwrap(),
            format!("{pid1}\n"),
            "{name}"
        );
        // The agent of the image is the arm64 one, installed by itself.
        m.succeed("test -x /usr/local/bin/flotilla-agent")
            .await
            .unwrap();
        m.succeed("test ! -e /usr/sbin/policy-rc.d && test ! -e /flotilla-build")
            .await
            .unwrap();
        match name {
            "systemd" => {
                m.succeed("systemctl is-active flotilla-agent")
                    .await
                    .unwrap();
            }
            "sysvinit" => {
                m.succeed("/etc/init.d/flotilla-agent status")
                    .await
                    .unwrap();
            }
            "openrc" => {
                m.succeed("rc-service flotilla-agent status").await.unwrap();
            }
            _ => {}
        }
        m.stop().await;
    }
    net.stop_all().await;
    drop(net);

    // Again: every image is cached.
    let again = tempfile::tempdir().unwrap();
    write_inputs(again.path());
    let (spec2, options) = spec(&again, SPEC);
    let started = Instant::now();
    let net = Fleet::new(&spec2, options).unwrap();
    eprintln!(
        "cached images ready in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let log2 = std::fs::read_to_string(again.path().join("out/driver.log")).unwrap();
    assert_eq!(log2.matches("debian: cached image ").count(), 4, "{log2}");
    assert!(!log2.contains("debian: built the image"), "{log2}");
    drop(net);
}

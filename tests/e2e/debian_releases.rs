//! Debian machines of both releases in one spec: a trixie machine (the default
//! release) and a bookworm one, each with a package only its release has and a file,
//! each on its release's userland (`VERSION_ID`) and its release's cloud kernel
//! (`uname -r`) with that kernel's modules.

use std::time::{Duration, Instant};

use flotilla_driver::debian::Release;
use flotilla_driver::image::Kernel;
use flotilla_driver::{Arch, Fleet};

use super::spec;

/// `fastfetch` is trixie's only, `neofetch` bookworm's only.
const SPEC: &str = "[machines.current]\n\
     packages = [\"fastfetch\"]\n\
     files = { \"/etc/flotilla-release-test\" = \"note\" }\n\
     memory = 512\n\
     [machines.legacy]\n\
     release = \"bookworm\"\n\
     init = \"sysvinit\"\n\
     packages = [\"neofetch\"]\n\
     files = { \"/etc/flotilla-release-test\" = \"note\" }\n\
     memory = 512\n";

#[tokio::test(flavor = "multi_thread")]
async fn machines_of_both_releases_boot_their_own_userland_and_kernel() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("note"), "one note for both\n").unwrap();
    let (spec, mut options) = spec(&dir, SPEC);
    options.boot_timeout = Duration::from_secs(300);
    let started = Instant::now();
    let net = Fleet::new(&spec, options).unwrap();
    eprintln!("images ready in {:.1} s", started.elapsed().as_secs_f64());
    let log = std::fs::read_to_string(dir.path().join("out/driver.log")).unwrap();
    assert!(
        log.contains("current: Debian image (trixie 13, systemd; packages: fastfetch; 1 file(s))"),
        "{log}"
    );
    assert!(
        log.contains("legacy: Debian image (bookworm 12, sysvinit; packages: neofetch; 1 file(s))"),
        "{log}"
    );
    let kernel = |release| Kernel::of_release(release, Arch::host()).unwrap().version;
    let (trixie_kernel, bookworm_kernel) = (kernel(Release::Trixie), kernel(Release::Bookworm));
    assert_ne!(trixie_kernel, bookworm_kernel);
    assert!(
        log.contains(&format!("Debian trixie machines: kernel {trixie_kernel}")),
        "{log}"
    );
    net.start_all().await.unwrap();
    for (name, version, kernel, tool, init) in [
        ("current", "13", &trixie_kernel, "fastfetch", "systemd"),
        ("legacy", "12", &bookworm_kernel, "neofetch", "init"),
    ] {
        let m = net.machine(name).unwrap();
        assert_eq!(
            m.succeed(". /etc/os-release && echo $VERSION_ID")
                .await
                .unwrap(),
            format!("{version}\n"),
            "{name}"
        );
        assert_eq!(
            m.succeed("uname -r").await.unwrap(),
            format!("{kernel}\n"),
            "{name}"
        );
        // The image has its kernel's modules: modprobe finds them.
        m.succeed(&format!(
            "test -d /lib/modules/{kernel} && modprobe -n -v vfat"
        ))
        .await
        .unwrap();
        m.succeed(&format!("command -v {tool}")).await.unwrap();
        assert_eq!(
            m.succeed("cat /etc/flotilla-release-test").await.unwrap(),
            "one note for both\n"
        );
        assert_eq!(
            m.succeed("cat /proc/1/comm").await.unwrap(),
            format!("{init}\n"),
            "{name}"
        );
    }
    net.stop_all().await;
}

//! `flotilla-agent install --root DIR` on the host.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use crate::harness;

/// The permission bits of `path`.
fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o7777
}

/// `sh -n`: the script parses (openrc-run scripts too: they are sh with extra functions).
#[track_caller]
fn assert_sh_syntax(script: &Path) {
    let status = Command::new("sh").arg("-n").arg(script).status().unwrap();
    assert!(status.success(), "{} has a syntax error", script.display());
}

#[test]
fn install_into_root() {
    let root = harness::scratch_dir("root");
    harness::install(&root);

    let bin = root.join("usr/local/bin/flotilla-agent");
    assert_eq!(
        std::fs::read(&bin).unwrap(),
        std::fs::read(harness::agent_bin()).unwrap()
    );
    assert_eq!(mode(&bin), 0o755);
    let unit =
        std::fs::read_to_string(root.join("etc/systemd/system/flotilla-agent.service")).unwrap();
    assert!(
        unit.contains("ExecStart=/usr/local/bin/flotilla-agent\n"),
        "{unit}"
    );
    assert!(unit.contains("WantedBy=multi-user.target"), "{unit}");
    let wants = root.join("etc/systemd/system/multi-user.target.wants/flotilla-agent.service");
    assert_eq!(
        std::fs::read_link(wants).unwrap().to_str(),
        Some("/etc/systemd/system/flotilla-agent.service")
    );
    let script = root.join("etc/init.d/flotilla-agent");
    assert_eq!(mode(&script), 0o755);
    assert_sh_syntax(&script);
    for link in ["etc/rc2.d/S99flotilla-agent", "etc/rc0.d/K01flotilla-agent"] {
        assert_eq!(
            std::fs::read_link(root.join(link)).unwrap().to_str(),
            Some("../init.d/flotilla-agent")
        );
    }

    // Idempotent.
    harness::install(&root);
    std::fs::remove_dir_all(&root).unwrap();

    // A missing root is an error naming it.
    let out = harness::run_install(Path::new("/nonexistent/root"));
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/root"));
}

#[test]
fn install_into_an_openrc_root() {
    let root = harness::scratch_dir("openrc");
    std::fs::create_dir_all(root.join("etc/runlevels/default")).unwrap();
    harness::install(&root);
    let script = std::fs::read_to_string(root.join("etc/init.d/flotilla-agent")).unwrap();
    assert!(script.starts_with("#!/sbin/openrc-run\n"), "{script}");
    assert!(
        script.contains("command=\"/usr/local/bin/flotilla-agent\""),
        "{script}"
    );
    // Supervised, and no hard dependency that Debian's OpenRC lacks (localmount).
    assert!(script.contains("supervisor=supervise-daemon\n"), "{script}");
    assert!(!script.contains("need "), "{script}");
    assert_eq!(
        std::fs::read_link(root.join("etc/runlevels/default/flotilla-agent"))
            .unwrap()
            .to_str(),
        Some("/etc/init.d/flotilla-agent")
    );
    // No sysvinit runlevel links in an OpenRC tree; the systemd unit is still there.
    assert!(!root.join("etc/rc2.d").exists());
    assert!(root
        .join("etc/systemd/system/flotilla-agent.service")
        .exists());
    assert_sh_syntax(&root.join("etc/init.d/flotilla-agent"));
    std::fs::remove_dir_all(&root).unwrap();
}

#[test]
fn install_into_a_debian_sysvinit_root_lists_the_agent_for_startpar() {
    let root = harness::scratch_dir("sysv");
    let init_d = root.join("etc/init.d");
    std::fs::create_dir_all(&init_d).unwrap();
    // insserv's makefiles, as Debian's sysv-rc boots from them.
    std::fs::write(
        init_d.join(".depend.start"),
        "TARGETS = killprocs bootlogs rc.local\nINTERACTIVE =\nrc.local: bootlogs\n",
    )
    .unwrap();
    std::fs::write(
        init_d.join(".depend.stop"),
        "TARGETS = sendsigs umountfs halt\nhalt: umountfs\n",
    )
    .unwrap();
    for _ in 0..2 {
        harness::install(&root);
    }
    // Listed once, however often it is installed.
    assert_eq!(
        std::fs::read_to_string(init_d.join(".depend.start")).unwrap(),
        "TARGETS = killprocs bootlogs rc.local flotilla-agent\nINTERACTIVE =\nrc.local: bootlogs\n"
    );
    assert_eq!(
        std::fs::read_to_string(init_d.join(".depend.stop")).unwrap(),
        "TARGETS = sendsigs umountfs halt flotilla-agent\nhalt: umountfs\n"
    );
    let script = std::fs::read_to_string(init_d.join("flotilla-agent")).unwrap();
    assert!(script.contains("setsid \"$DAEMON\""), "{script}");
    assert!(root.join("etc/rc2.d/S99flotilla-agent").is_symlink());
    std::fs::remove_dir_all(&root).unwrap();
}

#[test]
fn the_agent_under_test_is_the_static_build_that_ships() {
    if std::env::var_os("FLOTILLA_AGENT_BIN").is_some() {
        // A binary named by the caller is tested as it is.
        return;
    }
    let bin = harness::agent_bin();
    // The `agent` profile in the `<target>/agent` folder that image/build.rs embeds.
    assert!(
        bin.ends_with("agent/x86_64-unknown-linux-musl/agent/flotilla-agent"),
        "{}",
        bin.display()
    );
    assert!(
        harness::is_static(&bin),
        "{} is dynamically linked",
        bin.display()
    );
    // The check tells the two apart: this test binary itself is dynamic.
    assert!(!harness::is_static(&std::env::current_exe().unwrap()));
}

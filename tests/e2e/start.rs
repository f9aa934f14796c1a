//! QEMU failing at start: its own words and the machine in the error, never a QMP
//! socket error; forwarded host ports that are taken.

use super::*;

/// A port that was free a moment ago.
fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_host_port_taken_after_the_check_is_named_with_qemus_words() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let net = network(
        &dir,
        &format!("[machines.web]\nforward = [{{ host = {port}, guest = 80 }}]\n"),
    );
    let web = net.machine("web").unwrap();
    // Taken after Fleet::new checked it: QEMU itself cannot listen on it.
    let taken = std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();
    let e = fails_within(Duration::from_secs(30), web.start()).await;
    let m = e.to_string();
    assert!(
        matches!(&e, Error::PortBusy { machine, port: p, guest: 80, .. } if machine == "web" && *p == port),
        "{e:?}"
    );
    assert!(
        m.starts_with(&format!(
            "machine `web`: forwarding 127.0.0.1:{port} to guest port 80: host port {port} is already in use; qemu exited with status 1"
        )),
        "{m}"
    );
    assert!(
        m.contains(&format!(
            "Could not set up host forwarding rule 'tcp:127.0.0.1:{port}-"
        )),
        "{m}"
    );
    assert!(!m.contains("qmp"), "{m}");
    assert!(!e.is_test_failure());
    assert_gone(&web).await;
    let qemu_log = std::fs::read_to_string(dir.path().join("out/web/qemu.log")).unwrap();
    assert!(
        qemu_log.contains("Could not set up host forwarding rule"),
        "{qemu_log}"
    );

    // Freed, the machine boots; a forward at run time to a taken port is named too.
    drop(taken);
    web.start().await.unwrap();
    let other = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let busy = other.local_addr().unwrap().port();
    let e = web.forward(busy, 22).await.unwrap_err();
    assert_eq!(
        e.to_string().lines().next().unwrap(),
        format!("machine `web`: forwarding 127.0.0.1:{busy} to guest port 22: host port {busy} is already in use")
    );
    // The machine's own forward is taken too (by its QEMU).
    let e = web.forward(port, 22).await.unwrap_err();
    assert!(matches!(e, Error::PortBusy { .. }), "{e:?}");
    // A free one still works.
    assert_ne!(web.forward(0, 22).await.unwrap(), 0);
    net.stop_all().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn qemu_failing_at_start_is_quoted_not_a_qmp_error() {
    // A kept disk that is not a qcow2 image (a broken --keep-state folder): QEMU
    // refuses the drive right after opening its QMP socket.
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    std::fs::create_dir_all(state.join("vm")).unwrap();
    std::fs::write(state.join("vm/disk1.qcow2"), b"not a disk image\n").unwrap();
    let (spec, mut options) = spec(&dir, "[machines.vm]\n[[machines.vm.disks]]\nsize = 8\n");
    options.keep_state = Some(state.clone());
    let net = Fleet::new(&spec, options).unwrap();
    let vm = net.machine("vm").unwrap();
    for _ in 0..2 {
        let e = fails_within(Duration::from_secs(30), vm.start()).await;
        let m = e.to_string();
        assert!(matches!(e, Error::Boot { .. }), "{e:?}");
        assert!(
            m.starts_with(
                "machine `vm`: qemu exited with status 1 before the agent was ready; qemu said: "
            ),
            "{m}"
        );
        assert!(m.contains("disk1.qcow2"), "{m}");
        assert!(m.contains("qcow2"), "{m}");
        assert!(!m.contains("qmp"), "{m}");
        assert_gone(&vm).await;
    }
    net.stop_all().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_boot_cancelled_midway_leaves_no_qemu() {
    // A test's timeout or Ctrl-C drops a boot under way: its QEMU must go with it.
    let dir = tempfile::tempdir().unwrap();
    let net = network(&dir, "[machines.vm]\nmemory = 256\nsnapshot = false\n");
    let vm = net.machine("vm").unwrap();
    let mut boot = Box::pin(vm.start());
    let started = Instant::now();
    while vm.qemu_pid().is_none() {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "qemu never started"
        );
        tokio::select! {
            r = &mut boot => panic!("the boot ended before it could be cancelled: {r:?}"),
            _ = tokio::time::sleep(Duration::from_millis(5)) => {}
        }
    }
    drop(boot);
    assert_gone(&vm).await;
    net.stop_all().await;
}

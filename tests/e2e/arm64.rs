//! arm64 machines beside x86 ones (`arch = "aarch64"`): one VLAN, host names, a
//! service reached from the other architecture and from the host through a forward,
//! files both ways, no screen, a panic; snapshots saved and restored per
//! architecture.

use super::snapshot::{driver_log, remove_state, snapshot_spec, tag};
use flotilla_driver::StartKind;

use super::*;

/// A spec of an arm64 `board` serving HTTP on port 80 (forwarded) and an x86 `pc`.
const PAIR: &str = "[machines.board]\narch = \"aarch64\"\nforward = [{ guest = 80 }]\n\
                    snapshot = false\n[machines.pc]\nsnapshot = false\n";

#[tokio::test(flavor = "multi_thread")]
async fn arm64_and_x86_machines_share_a_vlan_a_service_and_files() {
    let dir = tempfile::tempdir().unwrap();
    let net = network(&dir, PAIR);
    net.start_all().await.unwrap();
    let (board, pc) = (net.machine("board").unwrap(), net.machine("pc").unwrap());
    assert_eq!(board.succeed("uname -m").await.unwrap(), "aarch64\n");
    assert_eq!(pc.succeed("uname -m").await.unwrap(), "x86_64\n");
    let log = driver_log(&dir);
    assert!(log.contains("board: starting (aarch64, "), "{log}");
    assert!(
        log.contains("aarch64: kernel ") && log.contains("KVM runs only the host's"),
        "{log}"
    );

    // By name, both ways, on VLAN 1.
    pc.succeed("ping -c 1 -W 5 board").await.unwrap();
    board.succeed("ping -c 1 -W 5 pc").await.unwrap();

    // A service on the arm64 machine: from the x86 one, and from the host.
    board
        .succeed(
            "mkdir -p /www && echo served-by-$(uname -m) > /www/index.html && httpd -h /www -p 80",
        )
        .await
        .unwrap();
    board
        .wait_for_open_port(80, Duration::from_secs(30))
        .await
        .unwrap();
    let page = pc.succeed("wget -q -O - http://board/").await.unwrap();
    assert_eq!(page, "served-by-aarch64\n");
    let port = board.forwarded_port(80).expect("port 80 forwarded");
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    use std::io::{Read as _, Write as _};
    stream
        .write_all(b"GET / HTTP/1.0\r\nHost: board\r\n\r\n")
        .unwrap();
    let mut reply = String::new();
    stream.read_to_string(&mut reply).unwrap();
    assert!(reply.ends_with("served-by-aarch64\n"), "{reply}");

    // Files both ways.
    let local = dir.path().join("in.txt");
    std::fs::write(&local, "from the host\n").unwrap();
    board.copy_to(&local, "/tmp/in.txt").await.unwrap();
    assert_eq!(
        board.succeed("cat /tmp/in.txt").await.unwrap(),
        "from the host\n"
    );
    let back = dir.path().join("back.txt");
    board.copy_from("/proc/cpuinfo", &back).await.unwrap();
    let cpuinfo = std::fs::read_to_string(&back).unwrap();
    // The Neoverse-N1's part number.
    assert!(cpuinfo.contains("CPU part\t: 0xd0c"), "{cpuinfo}");

    // No screen: the error says why.
    let e = board.get_screen_text().await.unwrap_err().to_string();
    assert!(e.contains("aarch64 machines have none"), "{e}");

    // A panic: no pvpanic on arm64, so the machine powers off; the error quotes the
    // console's panic line.
    let e = board
        .succeed("echo c > /proc/sysrq-trigger")
        .await
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("machine `board`: the guest kernel panicked"),
        "{e}"
    );
    net.stop_all().await;
    assert_gone(&board).await;
    assert_gone(&pc).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn snapshots_are_saved_and_restored_per_architecture() {
    let tag = tag();
    let text = format!(
        "{}{}",
        snapshot_spec(&["board"], &tag, "arch = \"aarch64\""),
        snapshot_spec(&["pc"], &tag, "")
    );
    let first = tempfile::tempdir().unwrap();
    let net = network(&first, &text);
    let (board, pc) = (net.machine("board").unwrap(), net.machine("pc").unwrap());
    let (board_state, pc_state) = (board.snapshot_file().unwrap(), pc.snapshot_file().unwrap());
    assert_ne!(board_state, pc_state, "one state per architecture");
    net.start_all().await.unwrap();
    net.stop_all().await;
    let log = driver_log(&first);
    for m in ["board", "pc"] {
        assert!(log.contains(&format!("{m}: snapshot: saved ")), "{log}");
    }

    let second = tempfile::tempdir().unwrap();
    let net = network(&second, &text);
    net.start_all().await.unwrap();
    let log = driver_log(&second);
    for (m, file) in [("board", &board_state), ("pc", &pc_state)] {
        assert!(
            log.contains(&format!("{m}: snapshot: restored from {}", file.display())),
            "{log}"
        );
    }
    let board = net.machine("board").unwrap();
    assert_eq!(board.started_as(), Some(StartKind::Restored));
    assert_eq!(board.succeed("uname -m").await.unwrap(), "aarch64\n");
    assert_eq!(board.succeed("hostname").await.unwrap(), "board\n");
    board.succeed("ping -c 1 -W 5 pc").await.unwrap();
    net.stop_all().await;
    remove_state(&board_state);
    remove_state(&pc_state);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_arm64_image_boots_on_arm64_and_is_refused_by_x86_with_a_reason() {
    let dir = tempfile::tempdir().unwrap();
    let arm64 = flotilla_driver::Arch::named("aarch64").unwrap();
    super::disk::make_image_for(dir.path(), arm64, |_| {});
    let text = "boot_timeout = 60\n[machines.board]\narch = \"aarch64\"\nimage = \"root.qcow2\"\n";
    let net = network(&dir, text);
    let board = net.machine("board").unwrap();
    let mounts = board
        .succeed("uname -m; grep ' / ' /proc/mounts")
        .await
        .unwrap();
    assert!(
        mounts.starts_with("aarch64\n/dev/vda / ext4 rw"),
        "{mounts}"
    );
    net.stop_all().await;

    let x86 = tempfile::tempdir().unwrap();
    let image = dir.path().join("root.qcow2");
    let text = format!(
        "boot_timeout = 60\n[machines.pc]\narch = \"x86_64\"\nimage = \"{}\"\n",
        image.display()
    );
    let net = network(&x86, &text);
    let pc = net.machine("pc").unwrap();
    let e = fails_within(Duration::from_secs(60), pc.succeed("true"))
        .await
        .to_string();
    assert!(e.contains("machine `pc`"), "{e}");
    assert!(
        e.contains("the image is for aarch64 (/sbin/init is), and this machine is x86_64"),
        "{e}"
    );
    net.stop_all().await;
}

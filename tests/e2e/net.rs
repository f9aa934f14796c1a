//! Networks on real VMs: both backends, partitions, link control, captures, forwards.

use std::time::Duration;

use flotilla_driver::{http, Fleet, Spec};

use super::{network, run_example, run_passing};

#[tokio::test(flavor = "multi_thread")]
async fn webserver_example_passes() {
    run_example("webserver").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn webserver_example_passes_on_multicast() {
    let mut spec = Spec::load(&super::workspace().join("examples/webserver")).unwrap();
    spec.backend = flotilla_vmnet::Backend::Multicast;
    let log = run_passing(&spec).await;
    assert!(log.contains("the multicast backend is insecure"), "{log}");
}

#[tokio::test(flavor = "multi_thread")]
async fn router_example_passes() {
    run_example("router").await;
}

async fn ping(net: &Fleet, from: &str, to: &str) -> bool {
    let m = net.machine(from).unwrap();
    m.execute(&format!("ping -c 1 -W 2 {to}"))
        .await
        .unwrap()
        .success()
}

#[tokio::test(flavor = "multi_thread")]
async fn vde_partition_block_and_capture() {
    let dir = tempfile::tempdir().unwrap();
    let net = network(&dir, "[machines.a]\n[machines.b]\n[machines.c]\n");
    net.start_all().await.unwrap();
    let a = net.machine("a").unwrap();
    let pcap = a.capture(1).await.unwrap();
    let vlan_pcap = net.capture_vlan(1).await.unwrap();

    assert!(ping(&net, "a", "b").await && ping(&net, "a", "c").await);
    // Partition {a, b} | {c}.
    net.partition(1, &[vec!["a".into(), "b".into()], vec!["c".into()]])
        .await
        .unwrap();
    assert!(ping(&net, "a", "b").await, "a and b share a group");
    assert!(!ping(&net, "a", "c").await, "c is cut off");
    assert!(!ping(&net, "c", "b").await, "c is cut off");
    net.heal(1).await.unwrap();
    let wait = Duration::from_secs(30);
    a.wait_until_succeeds("ping -c 1 -W 2 c", wait)
        .await
        .unwrap();

    // Block one machine's link.
    let b = net.machine("b").unwrap();
    b.set_link(1, false).await.unwrap();
    assert!(!ping(&net, "a", "b").await, "b's link is down");
    assert!(ping(&net, "a", "c").await, "others are unaffected");
    b.set_link(1, true).await.unwrap();
    a.wait_until_succeeds("ping -c 1 -W 2 b", wait)
        .await
        .unwrap();

    // Impair a's link: 150 ms each way shows in the round trip; loss shows in a count.
    use flotilla_vmnet::Impairment;
    let rtt = |out: &str| -> f64 {
        let line = out.lines().find(|l| l.contains("round-trip")).expect(out);
        let avg = line.split('=').nth(1).unwrap().split('/').nth(1).unwrap();
        avg.trim().parse().unwrap()
    };
    let clean = rtt(&a.succeed("ping -c 3 -i 0.2 b").await.unwrap());
    let delay = Impairment {
        delay_ms: 150,
        ..Impairment::default()
    };
    a.impair(1, delay).await.unwrap();
    let slow = rtt(&a.succeed("ping -c 3 -i 0.2 -W 3 b").await.unwrap());
    assert!(slow >= clean + 280.0, "clean {clean} ms, delayed {slow} ms");
    let lossy = Impairment {
        loss_percent: 50.0,
        ..Impairment::default()
    };
    a.impair(1, lossy).await.unwrap();
    let out = a.execute("ping -c 40 -i 0.1 -W 1 b").await.unwrap().stdout;
    let received: u32 = out
        .lines()
        .find(|l| l.contains("packets received"))
        .and_then(|l| l.split(", ").nth(1))
        .and_then(|p| p.split(' ').next())
        .and_then(|n| n.parse().ok())
        .expect(&out);
    // 50% each way: about 10 of 40 round trips survive; 0 or 40 would mean no effect.
    assert!(
        (1..=30).contains(&received),
        "{received} of 40 received: {out}"
    );
    // Bandwidth: 256 KiB at 128 KiB/s takes about two seconds (clean: a blink).
    b.succeed("mkdir -p /w && dd if=/dev/zero of=/w/blob bs=1024 count=256 2>/dev/null && httpd -p 80 -h /w")
        .await
        .unwrap();
    let narrow = Impairment {
        bandwidth: 128 * 1024,
        jitter_ms: 1,
        ..Impairment::default()
    };
    a.impair(1, narrow).await.unwrap();
    let started = std::time::Instant::now();
    let got = a
        .succeed("wget -q -O - http://b/blob | wc -c")
        .await
        .unwrap();
    let took = started.elapsed();
    assert_eq!(got.trim(), "262144");
    assert!(
        took >= Duration::from_millis(1500),
        "256 KiB at 128 KiB/s took {took:?}"
    );
    a.impair(1, Impairment::default()).await.unwrap();
    a.succeed("ping -c 5 -i 0.1 -W 2 b").await.unwrap();

    // Traffic between b and c, which a's NIC does not carry, for the VLAN capture.
    let c = net.machine("c").unwrap();
    c.succeed("ping -c 3 -i 0.2 b").await.unwrap();
    net.stop_all().await;
    // The captures are pcap files (magic a1b2c3d4, either byte order) with frames.
    for file in [&pcap, &vlan_pcap] {
        let bytes = std::fs::read(file).unwrap();
        assert!(bytes.len() > 24 + 16 * 4, "{} bytes", bytes.len());
        assert!(
            bytes[..4] == [0xd4, 0xc3, 0xb2, 0xa1] || bytes[..4] == [0xa1, 0xb2, 0xc3, 0xd4],
            "{} is not a pcap file",
            file.display()
        );
    }
    // The VLAN capture saw c's pings to b: IPv4 ICMP echo requests from 192.168.1.3
    // to 192.168.1.2 (a is 1, b is 2, c is 3).
    let frames = pcap_frames(&std::fs::read(&vlan_pcap).unwrap());
    let c_to_b = frames
        .iter()
        .filter(|f| {
            f.len() >= 34
                && f[12..14] == [0x08, 0x00]
                && f[23] == 1
                && f[26..30] == [192, 168, 1, 3]
                && f[30..34] == [192, 168, 1, 2]
        })
        .count();
    assert!(
        c_to_b >= 3,
        "{c_to_b} ICMP frames from c to b in {} frames",
        frames.len()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn multicast_backend_connects_machines_and_says_it_is_insecure() {
    let dir = tempfile::tempdir().unwrap();
    let net = network(
        &dir,
        "[network]\nbackend = \"multicast\"\n[machines.web]\n[machines.fetcher]\n",
    );
    net.start_all().await.unwrap();
    let web = net.machine("web").unwrap();
    web.succeed("mkdir -p /w && echo mc > /w/index.html && httpd -p 80 -h /w")
        .await
        .unwrap();
    let fetcher = net.machine("fetcher").unwrap();
    let page = fetcher
        .succeed("timeout 10 wget -q -O - http://web/")
        .await
        .unwrap();
    assert_eq!(page, "mc\n");
    // Forward a port at run time and fetch through it from the host.
    let port = web.forward(0, 80).await.unwrap();
    let body = http::get(
        &format!("http://127.0.0.1:{port}/"),
        Duration::from_secs(10),
    )
    .await
    .unwrap();
    assert_eq!(body, "mc\n");
    // Link control works on this backend too.
    web.set_link(1, false).await.unwrap();
    fetcher
        .fail("timeout 3 wget -q -O - http://web/")
        .await
        .unwrap();
    web.set_link(1, true).await.unwrap();
    fetcher
        .wait_until_succeeds(
            "timeout 3 wget -q -O - http://web/",
            Duration::from_secs(30),
        )
        .await
        .unwrap();
    // Impairment needs the VDE backend's wirefilters: a clear error here.
    let e = web
        .impair(1, flotilla_vmnet::Impairment::default())
        .await
        .unwrap_err();
    assert!(e.to_string().contains("needs the vde backend"), "{e}");
    net.stop_all().await;
    let log = std::fs::read_to_string(dir.path().join("out/driver.log")).unwrap();
    assert!(log.contains("the multicast backend is insecure"), "{log}");
}

/// The frames of a little-endian pcap file.
fn pcap_frames(bytes: &[u8]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut at = 24;
    while at + 16 <= bytes.len() {
        let len = u32::from_le_bytes(bytes[at + 8..at + 12].try_into().unwrap()) as usize;
        at += 16;
        if at + len > bytes.len() {
            break;
        }
        out.push(bytes[at..at + len].to_vec());
        at += len;
    }
    out
}

/// The agent configures the network itself (no `ip`, no processes), to the same state
/// the shell script of older agents produces.
#[tokio::test(flavor = "multi_thread")]
async fn agent_configures_the_network_natively() {
    let dir = tempfile::tempdir().unwrap();
    let net = network(&dir, "[machines.r]\nvlans = [1, 2]\n[machines.s]\n");
    net.start_all().await.unwrap();
    let r = net.machine("r").unwrap();
    let s = net.machine("s").unwrap();
    let log = std::fs::read_to_string(dir.path().join("out/driver.log")).unwrap();
    for name in ["r", "s"] {
        let line = format!("{name}: network configured by the agent (net-config request) in ");
        assert!(log.contains(&line), "{log}");
    }
    assert!(
        !log.contains("network configured by a shell script"),
        "{log}"
    );

    assert_eq!(r.succeed("hostname").await.unwrap(), "r\n");
    let addrs = r
        .succeed(
            "ip -o addr show | grep -v -e ' lo ' -e ' fe80:' | grep -o 'inet6\\? [^ ]*' | sort",
        )
        .await
        .unwrap();
    assert_eq!(
        addrs,
        "inet 10.0.2.15/24\ninet 192.168.1.1/24\ninet 192.168.2.1/24\n\
         inet6 2001:db8:1::1/64\ninet6 2001:db8:2::1/64\n"
    );
    assert_eq!(
        r.succeed("cat /etc/hosts").await.unwrap(),
        "127.0.0.1 localhost\n::1 localhost\n192.168.1.1 r\n2001:db8:1::1 r\n\
         192.168.1.2 s\n2001:db8:1::2 s\n"
    );
    let sysctls = "cat /proc/sys/net/ipv4/ip_forward /proc/sys/net/ipv6/conf/all/forwarding";
    assert_eq!(r.succeed(sysctls).await.unwrap(), "1\n1\n");
    assert_eq!(s.succeed(sysctls).await.unwrap(), "0\n0\n");
    // Both address families work at once (no duplicate address detection to wait for).
    r.succeed("ping -c 1 -W 2 s && ping -c 1 -W 2 2001:db8:1::2")
        .await
        .unwrap();
    net.stop_all().await;
}

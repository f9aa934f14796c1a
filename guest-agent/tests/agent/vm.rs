//! The agent against the real thing: a Debian kernel under QEMU (TCG), busybox, and the
//! agent as /init of an initramfs (or as a service under busybox init).

use std::time::{Duration, Instant};

use crate::harness::{self, argv, sh, Arch, Conn, Vm};
use flotilla_agent::proto::{
    self, ErrorBody, FileDone, FileInfo, FilePull, FilePush, Frame, Kind, NetConfig, NicConfig,
    ShutdownRequest, WindowSize, MAX_CHUNK,
};

on_every_arch!(
    commands_files_and_shutdown,
    commands_on_a_terminal,
    net_config_without_processes,
    sigterm_to_pid1_powers_off,
    panic_of_pid1_powers_off,
    reboot_request_restarts,
    service_mode_under_busybox_init,
    screen_text_reads_the_console
);

fn boot(arch: &Arch, append: &str) -> Vm {
    let cpio = harness::initramfs(arch, |_| {});
    Vm::boot(arch, &cpio, append)
}

/// A connection to the agent that has said Hello.
fn session(vm: &Vm) -> Conn {
    let mut c = vm.connect();
    c.hello();
    c
}

/// A connection to the agent that has said Hello, and heard that it has `feature`.
#[track_caller]
fn session_with(vm: &Vm, feature: &str) -> Conn {
    let mut c = vm.connect();
    let hello = c.hello();
    assert!(hello.features.iter().any(|f| f == feature), "{hello:?}");
    c
}

/// Asks the agent to power off (or reboot) and checks that it acknowledges.
#[track_caller]
fn request_shutdown(c: &mut Conn, reboot: bool) {
    c.send(&Frame::json(Kind::Shutdown, 0, &ShutdownRequest { reboot }));
    assert_eq!(c.recv().kind, Kind::ShutdownAck);
}

/// Waits for QEMU to exit by itself, the kernel having said `last_words`.
#[track_caller]
fn assert_exits_saying(vm: &mut Vm, last_words: &str) {
    vm.wait_exit(Duration::from_secs(60));
    assert!(vm.serial().contains(last_words), "{}", vm.serial());
}

/// Counts the `sleep 100` processes left (those of killed commands).
const SLEEP_100S: &str = "ps -o args | grep -v grep | grep -c 'sleep 100' || true";

/// Shell that waits until no `sleep 100` is left, 30 s at most: killed processes go at
/// once (a loaded guest may take a moment to reap them); live ones stay and are counted.
fn until_no_sleep_100() -> String {
    format!(
        "n=0; while [ \"$({SLEEP_100S})\" != 0 ]; do \
         n=$((n + 1)); [ $n -lt 300 ] || break; usleep 100000; done"
    )
}

fn commands_files_and_shutdown(arch: &Arch) {
    require_vm!(arch);
    let mut vm = boot(arch, "flotilla.hostname=test virtio_pci.force_legacy=1");

    // Readiness line and Hello.
    let ready = vm.ready_line.clone();
    let fields: Vec<&str> = ready.split_whitespace().collect();
    assert_eq!(fields[0], proto::READY_PREFIX, "{ready}");
    assert_eq!(fields[1], "proto=1");
    assert_eq!(fields[2], format!("version={}", env!("CARGO_PKG_VERSION")));
    let boot_ms: u64 = fields[3].strip_prefix("boot_ms=").unwrap().parse().unwrap();
    assert!(boot_ms > 0);
    let mut c = vm.connect();
    let hello = c.hello();
    assert_eq!(hello.version, proto::PROTOCOL_VERSION);
    assert_eq!(hello.boot_ms, boot_ms);

    // Basic commands; the kernel release; PID-1 setup.
    let kver = std::fs::read_to_string(harness::kernel_dir(arch).join("version")).unwrap();
    let out = c.exec(1, &argv(&["uname", "-r"]));
    assert_eq!(out.stdout_str().trim(), kver.trim());
    assert_eq!(out.status.unwrap().code, Some(0));
    let out = c.exec(1, &argv(&["hostname"]));
    assert_eq!(out.stdout_str().trim(), "test");
    let out = c.exec(
        1,
        &sh("cat /sys/module/virtio_pci/parameters/force_legacy; \
             grep -c -E ' (/proc|/sys|/dev|/dev/pts|/dev/shm|/tmp|/run) ' /proc/mounts; \
             cat /sys/class/net/lo/operstate; ip -o addr show lo | grep -c 127.0.0.1"),
    );
    assert_eq!(out.stdout_str(), "Y\n7\nunknown\n1\n", "{out:?}");

    // Exit codes, stderr, signals.
    let out = c.exec(2, &sh("echo out; echo err >&2; exit 3"));
    assert_eq!(out.stdout, b"out\n");
    assert_eq!(out.stderr, b"err\n");
    assert_eq!(out.status.unwrap().code, Some(3));
    let st = c.exec(2, &sh("kill -9 $$")).status.unwrap();
    assert_eq!((st.code, st.signal, st.timed_out), (None, Some(9), false));

    // Spawn failures: one Error naming the program and errno, no Exit; stream reusable.
    let out = c.exec(3, &argv(&["no-such-program", "x"]));
    let err = out.error.unwrap();
    assert!(
        err.contains("no-such-program") && err.contains("errno 2"),
        "{err}"
    );
    let mut bad_cwd = argv(&["true"]);
    bad_cwd.cwd = Some("/nonexistent".into());
    let err = c.exec(3, &bad_cwd).error.unwrap();
    assert!(err.contains("/nonexistent"), "{err}");
    assert_eq!(c.exec(3, &argv(&["true"])).status.unwrap().code, Some(0));

    // Environment and cwd.
    let mut r = sh("echo $PATH; echo $HOME $TERM $FOO; pwd");
    r.env = vec![("FOO".into(), "bar baz".into())];
    r.cwd = Some("/tmp".into());
    assert_eq!(
        c.exec(4, &r).stdout_str(),
        "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\n/root dumb bar baz\n/tmp\n"
    );

    // Output is streamed as produced, not at exit: the command goes on only once the
    // host has seen its first line (held back until exit, it would never come).
    let mut r = sh("echo 1; read go; echo $go");
    r.stdin = true;
    c.send(&Frame::json(Kind::Exec, 5, &r));
    let f = c.recv();
    assert_eq!(
        (f.stream, f.kind, &f.payload[..]),
        (5, Kind::Stdout, &b"1\n"[..])
    );
    c.send(&Frame::new(Kind::Stdin, 5, b"2\n".to_vec()));
    c.send(&Frame::new(Kind::StdinClose, 5, Vec::new()));
    let out = c.collect(5);
    assert_eq!(out.stdout, b"2\n");
    assert_eq!(out.status.unwrap().code, Some(0));

    // Large output arrives intact, in chunks of at most 64 KiB.
    let out = c.exec(6, &argv(&["seq", "1", "200000"]));
    let expected: String = (1..=200_000).map(|i| format!("{i}\n")).collect();
    assert!(out.stdout == expected.as_bytes(), "seq output differs");
    assert!(out.stdout_chunks.iter().all(|(_, n)| *n <= MAX_CHUNK));

    // Stdin, binary-safe.
    let mut r = sh("cat; echo end >&2");
    r.stdin = true;
    c.send(&Frame::json(Kind::Exec, 7, &r));
    let data: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    for chunk in data.chunks(50_000) {
        c.send(&Frame::new(Kind::Stdin, 7, chunk.to_vec()));
    }
    c.send(&Frame::new(Kind::StdinClose, 7, Vec::new()));
    let out = c.collect(7);
    assert!(out.stdout == data, "stdin round trip differs");
    assert_eq!(out.stderr, b"end\n");

    // Kill and timeout act on the whole process group.
    c.send(&Frame::json(
        Kind::Exec,
        8,
        &sh("sleep 100 & echo started; sleep 100; echo no"),
    ));
    let f = c.recv();
    assert_eq!(
        (f.stream, f.kind, &f.payload[..]),
        (8, Kind::Stdout, &b"started\n"[..])
    );
    c.send(&Frame::new(Kind::Kill, 8, Vec::new()));
    let st = c.collect(8).status.unwrap();
    assert_eq!(st.signal, Some(9));
    let mut r = sh("echo started; sleep 100");
    r.timeout_ms = Some(700);
    let t = Instant::now();
    let out = c.exec(9, &r);
    let st = out.status.unwrap();
    assert!(st.timed_out && st.signal == Some(9), "{st:?}");
    assert!(t.elapsed() < Duration::from_secs(20));
    let out = c.exec(9, &sh(&format!("{}; {SLEEP_100S}", until_no_sleep_100())));
    assert_eq!(out.stdout_str(), "0\n", "leftover processes");

    // Many commands at once: each waits (30 s at most) until all eight have started,
    // which only concurrent commands can do.
    for s in 10..18 {
        c.send(&Frame::json(
            Kind::Exec,
            s,
            &sh(&format!(
                "touch /tmp/at-once.{s}; n=0; \
                 while [ $(ls /tmp/at-once.* | wc -l) -lt 8 ]; do \
                 n=$((n + 1)); [ $n -lt 300 ] || exit 1; usleep 100000; done; echo {s}"
            )),
        ));
    }
    let mut done = std::collections::HashMap::new();
    while done.len() < 8 {
        let f = c.recv();
        match f.kind {
            Kind::Stdout => {
                let text = String::from_utf8(f.payload).unwrap();
                assert_eq!(text.trim(), f.stream.to_string());
            }
            Kind::Exit => {
                let status: proto::ExitStatus = f.parse_json().unwrap();
                assert_eq!(status.code, Some(0), "not concurrent: {}", f.stream);
                done.insert(f.stream, ());
            }
            other => panic!("{other:?}"),
        }
    }
    // Re-using a running stream id is refused.
    c.send(&Frame::json(Kind::Exec, 20, &sh("sleep 1")));
    let err = c.exec(20, &argv(&["true"])).error.unwrap();
    assert!(err.contains("already running"), "{err}");
    assert!(c.collect(20).status.is_some());

    // Orphans are reaped; no zombies are left behind.
    c.exec(21, &sh("(sleep 0.2 &) ; true"));
    // Until the orphan is gone, running or zombie (30 s at most): one never reaped
    // stays a zombie and is counted.
    let out = c.exec(
        21,
        &sh("n=0; while ps -o comm | grep -q '^sleep'; do \
             n=$((n + 1)); [ $n -lt 300 ] || break; usleep 100000; done; \
             ps -o stat | grep -c '^Z' || true"),
    );
    assert_eq!(out.stdout_str(), "0\n");

    // Malformed input gets Error replies; the session goes on.
    c.sock.write_all_bytes(b"garbage!");
    let mut unknown = Frame::new(Kind::Stdin, 30, b"abc".to_vec()).to_bytes();
    unknown[4] = 0x6e;
    c.sock.write_all_bytes(&unknown);
    let mut huge = Frame::new(Kind::Stdin, 31, Vec::new()).to_bytes();
    huge[12..16].copy_from_slice(&u32::MAX.to_le_bytes());
    c.sock.write_all_bytes(&huge);
    c.send(&Frame::new(Kind::Exec, 32, b"{\"command\":".to_vec()));
    c.send(&Frame::new(Kind::Exit, 33, b"{}".to_vec()));
    let mut errors = Vec::new();
    for _ in 0..5 {
        let f = c.recv();
        assert_eq!(f.kind, Kind::Error, "{f:?}");
        errors.push((f.stream, f.parse_json::<ErrorBody>().unwrap().message));
    }
    let streams: Vec<u32> = errors.iter().map(|(s, _)| *s).collect();
    assert_eq!(streams, [0, 30, 31, 32, 33], "{errors:?}");
    assert!(
        errors[1].1.contains("unknown frame kind 0x6e"),
        "{errors:?}"
    );
    assert_eq!(c.exec(34, &argv(&["echo", "ok"])).stdout, b"ok\n");

    // File push and pull: binary-safe, chunked, mode preserved.
    let content: Vec<u8> = (0..300_000u32)
        .map(|i| (i.wrapping_mul(7919) >> 3) as u8)
        .collect();
    push(&mut c, 40, "/tmp/a/b/file.bin", 0o751, &content).unwrap();
    let out = c.exec(41, &sh("stat -c '%a %s' /tmp/a/b/file.bin; ls -a /tmp/a/b"));
    assert_eq!(out.stdout_str(), "751 300000\n.\n..\nfile.bin\n");
    let (info, pulled) = pull(&mut c, 42, "/tmp/a/b/file.bin").unwrap();
    assert_eq!((info.size, info.mode), (300_000, 0o751));
    assert!(pulled == content, "pulled file differs");
    let (_, empty) = {
        push(&mut c, 43, "/tmp/empty", 0o600, &[]).unwrap();
        pull(&mut c, 43, "/tmp/empty").unwrap()
    };
    assert!(empty.is_empty());
    let err = push_no_dirs(&mut c, 44, "/nonexistent/dir/f").unwrap_err();
    assert!(err.contains("/nonexistent/dir"), "{err}");
    assert!(pull(&mut c, 45, "/nonexistent")
        .unwrap_err()
        .contains("/nonexistent"));
    assert!(pull(&mut c, 45, "/tmp")
        .unwrap_err()
        .contains("not a regular file"));

    // Reconnecting starts a new session; the old session's commands are killed.
    c.send(&Frame::json(Kind::Exec, 50, &sh("echo started; sleep 100")));
    let f = c.recv();
    assert_eq!(
        (f.stream, f.kind, &f.payload[..]),
        (50, Kind::Stdout, &b"started\n"[..])
    );
    drop(c);
    let mut c = session(&vm);
    let out = c.exec(51, &sh(&format!("{}; {SLEEP_100S}", until_no_sleep_100())));
    assert_eq!(out.stdout_str(), "0\n");

    // Shutdown: acknowledged, then QEMU exits by itself.
    request_shutdown(&mut c, false);
    assert_exits_saying(&mut vm, "reboot: Power down");
}

fn commands_on_a_terminal(arch: &Arch) {
    require_vm!(arch);
    let mut vm = boot(arch, "");
    let mut c = vm.connect();
    let hello = c.hello();
    assert!(
        hello.features.iter().any(|f| f == proto::FEATURE_PTY),
        "{hello:?}"
    );
    let size = |rows, cols| Some(WindowSize { rows, cols });

    // The terminal is stdin, stdout and stderr, and the controlling terminal.
    let mut req = sh(
        "tty; stty size; echo $TERM; test -t 0 && test -t 2 && echo err >&2; \
                      exec 3</dev/tty && echo ctty; exit 4",
    );
    req.pty = size(30, 100);
    req.env.push(("TERM".into(), "xterm".into()));
    let out = c.exec(1, &req);
    let text = out.stdout_str();
    assert!(text.starts_with("/dev/pts/"), "{out:?}");
    for want in [
        "\r\n30 100\r\n",
        "\r\nxterm\r\n",
        "\r\nerr\r\n",
        "\r\nctty\r\n",
    ] {
        assert!(text.contains(want), "{want:?} in {out:?}");
    }
    assert!(out.stderr.is_empty(), "{out:?}");
    assert_eq!(out.status.unwrap().code, Some(4));

    // Typed input reaches an interactive shell; a resize is seen at once.
    let mut req = argv(&["/bin/sh"]);
    req.pty = size(24, 80);
    req.stdin = true;
    c.send(&Frame::json(Kind::Exec, 2, &req));
    c.send(&Frame::new(Kind::Stdin, 2, b"stty size\n".to_vec()));
    let mut seen = String::new();
    while !seen.contains("24 80\r\n") {
        let f = c.recv();
        assert_eq!(
            (f.stream, f.kind),
            (2, Kind::Stdout),
            "{f:?} after {seen:?}"
        );
        seen.push_str(&String::from_utf8_lossy(&f.payload));
    }
    c.send(&Frame::json(
        Kind::Resize,
        2,
        &WindowSize {
            rows: 50,
            cols: 132,
        },
    ));
    c.send(&Frame::new(Kind::Stdin, 2, b"stty size; exit 7\n".to_vec()));
    let out = c.collect(2);
    assert!(out.stdout_str().contains("50 132\r\n"), "{out:?}");
    assert_eq!(out.status.unwrap().code, Some(7));

    // Resizing a command without a terminal, or with a bad body, is an error on its
    // stream; the command runs on.
    let mut req = argv(&["cat"]);
    req.stdin = true;
    c.send(&Frame::json(Kind::Exec, 3, &req));
    c.send(&Frame::json(
        Kind::Resize,
        3,
        &WindowSize { rows: 1, cols: 1 },
    ));
    let f = c.recv();
    assert_eq!((f.stream, f.kind), (3, Kind::Error), "{f:?}");
    assert!(
        String::from_utf8_lossy(&f.payload).contains("no terminal"),
        "{f:?}"
    );
    c.send(&Frame::new(Kind::Resize, 3, b"{\"rows\":-1}".to_vec()));
    assert_eq!(c.recv().kind, Kind::Error);
    c.send(&Frame::new(Kind::Stdin, 3, b"still here\n".to_vec()));
    c.send(&Frame::new(Kind::StdinClose, 3, Vec::new()));
    let out = c.collect(3);
    assert_eq!(out.stdout, b"still here\n", "{out:?}");

    // When the host goes away, a terminal's process group is killed at once (a new
    // Hello would kill it too: a watcher outside it notes the time of death, and says
    // so on the console, which the host waits for before it connects again).
    let mut req = sh("echo $$ > /tmp/tty.pid; echo started; sleep 1000");
    req.pty = size(24, 80);
    c.send(&Frame::json(Kind::Exec, 4, &req));
    let mut seen = Vec::new();
    while !seen.ends_with(b"started\r\n") {
        let f = c.recv();
        assert_eq!((f.stream, f.kind), (4, Kind::Stdout), "{f:?}");
        seen.extend_from_slice(&f.payload);
    }
    let watcher =
        "setsid sh -c 'p=$(cat /tmp/tty.pid); while [ -e /proc/$p ]; do usleep 20000; done; \
                   cut -d\" \" -f1 /proc/uptime > /tmp/tty.gone; \
                   echo tty-$((40 + 2))-gone > /dev/console' </dev/null >/dev/null 2>&1 &";
    assert_eq!(c.exec(5, &sh(watcher)).status.unwrap().code, Some(0));
    drop(c);
    vm.wait_serial("tty-42-gone", Duration::from_secs(60));
    let mut c = session(&vm);
    let out = c.exec(1, &sh("cut -d' ' -f1 /proc/uptime; cat /tmp/tty.gone"));
    let times: Vec<f64> = out
        .stdout_str()
        .lines()
        .map(|l| l.trim().parse().unwrap())
        .collect();
    assert_eq!(times.len(), 2, "{out:?}");
    assert!(
        times[0] >= times[1],
        "killed {} s after the new Hello",
        times[1] - times[0]
    );
}

trait WriteAll {
    fn write_all_bytes(&mut self, b: &[u8]);
}

impl WriteAll for std::os::unix::net::UnixStream {
    fn write_all_bytes(&mut self, b: &[u8]) {
        std::io::Write::write_all(self, b).unwrap();
    }
}

fn push(c: &mut Conn, stream: u32, path: &str, mode: u32, data: &[u8]) -> Result<u64, String> {
    c.send(&Frame::json(
        Kind::FilePush,
        stream,
        &FilePush {
            path: path.into(),
            mode,
            create_dirs: true,
        },
    ));
    for chunk in data.chunks(MAX_CHUNK) {
        c.send(&Frame::new(Kind::FileData, stream, chunk.to_vec()));
    }
    c.send(&Frame::new(Kind::FileEnd, stream, Vec::new()));
    let f = c.recv();
    assert_eq!(f.stream, stream);
    match f.kind {
        Kind::FileDone => Ok(f.parse_json::<FileDone>().unwrap().size),
        Kind::Error => Err(f.parse_json::<ErrorBody>().unwrap().message),
        other => panic!("{other:?}"),
    }
}

fn push_no_dirs(c: &mut Conn, stream: u32, path: &str) -> Result<u64, String> {
    c.send(&Frame::json(
        Kind::FilePush,
        stream,
        &FilePush {
            path: path.into(),
            mode: 0o644,
            create_dirs: false,
        },
    ));
    c.send(&Frame::new(Kind::FileData, stream, b"x".to_vec()));
    c.send(&Frame::new(Kind::FileEnd, stream, Vec::new()));
    let f = c.recv();
    // Exactly one reply: the rest of the failed transfer is swallowed.
    c.send(&Frame::json(Kind::Exec, stream + 1000, &argv(&["true"])));
    assert_eq!(c.collect(stream + 1000).status.unwrap().code, Some(0));
    match f.kind {
        Kind::FileDone => Ok(0),
        Kind::Error => Err(f.parse_json::<ErrorBody>().unwrap().message),
        other => panic!("{other:?}"),
    }
}

fn pull(c: &mut Conn, stream: u32, path: &str) -> Result<(FileInfo, Vec<u8>), String> {
    c.send(&Frame::json(
        Kind::FilePull,
        stream,
        &FilePull { path: path.into() },
    ));
    let f = c.recv();
    let info: FileInfo = match f.kind {
        Kind::FileInfo => f.parse_json().unwrap(),
        Kind::Error => return Err(f.parse_json::<ErrorBody>().unwrap().message),
        other => panic!("{other:?}"),
    };
    let mut data = Vec::new();
    loop {
        let f = c.recv();
        match f.kind {
            Kind::FileData => {
                assert!(f.payload.len() <= MAX_CHUNK);
                data.extend_from_slice(&f.payload);
            }
            Kind::FileEnd => return Ok((info, data)),
            Kind::Error => return Err(f.parse_json::<ErrorBody>().unwrap().message),
            other => panic!("{other:?}"),
        }
    }
}

/// Sends a NetConfig request on `stream`; the agent's error message, if any.
fn net_config(c: &mut Conn, stream: u32, body: Vec<u8>) -> Result<(), String> {
    c.send(&Frame::new(Kind::NetConfig, stream, body));
    let f = c.recv();
    assert_eq!(f.stream, stream, "{f:?}");
    match f.kind {
        Kind::NetConfigDone => Ok(()),
        Kind::Error => Err(f.parse_json::<ErrorBody>().unwrap().message),
        other => panic!("{other:?}"),
    }
}

/// The NetConfig request, on the one interface an initramfs without NIC drivers has:
/// `lo` (MAC 00:00:00:00:00:00).
fn net_config_without_processes(arch: &Arch) {
    require_vm!(arch);
    let vm = boot(arch, "flotilla.hostname=test");
    let mut c = session_with(&vm, proto::FEATURE_NET_CONFIG);
    let lo = NicConfig {
        mac: "00:00:00:00:00:00".into(),
        from_mac: None,
        ipv4: Some("127.0.0.9/16".into()),
        ipv6: Some("fd00::9/64".into()),
    };
    let unknown = NicConfig {
        mac: "52:54:00:12:09:09".into(),
        from_mac: None,
        ipv4: Some("192.168.9.9/24".into()),
        ipv6: None,
    };
    let cfg = NetConfig {
        hostname: Some("configured".into()),
        nics: vec![lo.clone(), unknown],
        forwarding: true,
        hosts: Some("10.1.2.3 far-away\n".into()),
    };

    // An unknown MAC: an error naming it, and nothing changed (the NICs are found first).
    let err = net_config(&mut c, 1, serde_json::to_vec(&cfg).unwrap()).unwrap_err();
    assert!(
        err.contains("no interface with MAC 52:54:00:12:09:09"),
        "{err}"
    );
    let check = "hostname; ip -o -4 addr show lo | grep -o 'inet [^ ]*'; \
                 ip -o -6 addr show lo | grep -c fd00:: ; \
                 cat /proc/sys/net/ipv4/ip_forward /proc/sys/net/ipv6/conf/lo/accept_dad; \
                 cat /etc/hosts 2>&1";
    let before = c.exec(2, &sh(check)).stdout_str();
    // (accept_dad of lo is -1 by default.)
    assert!(
        before.starts_with("test\ninet 127.0.0.1/8\n0\n0\n-1\n"),
        "{before}"
    );

    // Malformed requests: errors, the agent carries on.
    for (body, what) in [
        (
            &b"{\"nics\":[{\"ipv4\":\"10.0.0.1/24\"}]}"[..],
            "missing field `mac`",
        ),
        (
            br#"{"nics":[{"mac":"52:54:00:12:09"}]}"#,
            "not a MAC address",
        ),
        (
            br#"{"nics":[{"mac":"00:00:00:00:00:00","ipv4":"10.0.0.1/40"}]}"#,
            "`10.0.0.1/40`",
        ),
        (b"\xff{", "bad json body"),
    ] {
        let err = net_config(&mut c, 3, body.to_vec()).unwrap_err();
        assert!(err.contains(what), "{err}");
    }
    c.send(&Frame::json(Kind::NetConfig, 0, &NetConfig::default()));
    let f = c.recv();
    assert_eq!((f.kind, f.stream), (Kind::Error, 0));
    assert_eq!(c.exec(2, &sh(check)).stdout_str(), before);

    // The good part alone is applied.
    let cfg = NetConfig {
        nics: vec![lo],
        ..cfg
    };
    net_config(&mut c, 4, serde_json::to_vec(&cfg).unwrap()).unwrap();
    assert_eq!(
        c.exec(2, &sh(check)).stdout_str(),
        "configured\ninet 127.0.0.9/16\n1\n1\n0\n10.1.2.3 far-away\n"
    );
}

fn sigterm_to_pid1_powers_off(arch: &Arch) {
    require_vm!(arch);
    let mut vm = boot(arch, "");
    let mut c = session(&vm);
    c.send(&Frame::json(Kind::Exec, 1, &sh("kill -TERM 1; sleep 100")));
    assert_exits_saying(&mut vm, "reboot: Power down");
}

fn panic_of_pid1_powers_off(arch: &Arch) {
    require_vm!(arch);
    let cpio = harness::initramfs(arch, |_| {});
    let mut vm = Vm::start(arch, &cpio, "flotilla.agent_selftest=panic");
    vm.wait_exit(Duration::from_secs(120));
    let serial = vm.serial();
    assert!(
        serial.contains("flotilla-agent: panic: ") && serial.contains("self-test panic"),
        "{serial}"
    );
    assert!(serial.contains("reboot: Power down"), "{serial}");
    assert!(!serial.contains("Attempted to kill init"), "{serial}");
}

fn reboot_request_restarts(arch: &Arch) {
    require_vm!(arch);
    let mut vm = boot(arch, "");
    let mut c = session(&vm);
    request_shutdown(&mut c, true);
    // -no-reboot turns the restart into a QEMU exit.
    assert_exits_saying(&mut vm, "reboot: Restarting system");
}

const SERVICE_RC: &str = r#"#!/bin/sh
mkdir -p /proc /sys /dev /run /tmp
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
for m in $(cat /etc/flotilla/modules); do insmod "$m"; done
/etc/rc2.d/S99flotilla-agent start
"#;

/// `install --root` output, started by busybox init through the sysvinit script.
fn service_mode_under_busybox_init(arch: &Arch) {
    require_vm!(arch);
    let staging = harness::scratch_dir("install");
    harness::install_for(arch, &staging);
    let cpio = harness::initramfs(arch, |c| {
        c.tree(&staging);
        c.set_symlink("/init", "/bin/busybox");
        c.file(
            "/etc/inittab",
            0o644,
            b"::sysinit:/etc/rc.sh\n::shutdown:/etc/init.d/flotilla-agent stop\n".to_vec(),
        );
        c.file("/etc/rc.sh", 0o755, SERVICE_RC.as_bytes().to_vec());
    });
    std::fs::remove_dir_all(&staging).unwrap();
    let mut vm = Vm::boot(arch, &cpio, "");
    let mut c = session(&vm);
    let out = c.exec(
        1,
        &sh("cat /proc/1/comm; cat /run/flotilla-agent.pid; echo $PPID"),
    );
    let text = out.stdout_str();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], "init", "{text}");
    assert_ne!(lines[1], "1", "{text}");
    assert_eq!(lines[1], lines[2], "command's parent is the agent: {text}");
    assert_eq!(c.exec(2, &argv(&["echo", "hi"])).stdout, b"hi\n");
    // In service mode Shutdown asks the real init (busybox `poweroff`).
    request_shutdown(&mut c, false);
    assert_exits_saying(&mut vm, "reboot: Power down");
}

/// The ScreenText request: the foreground console's text, size and mode, read with no
/// process (this VM has no VGA card: the console is the kernel's own, in text mode).
fn screen_text_reads_the_console(arch: &Arch) {
    require_vm!(arch);
    let vm = boot(arch, "");
    let mut c = session_with(&vm, proto::FEATURE_SCREEN_TEXT);
    let out = c.exec(
        1,
        &sh("printf '\\033[H\\033[2J  screen  \\n\\nline 3 é\\n' > /dev/tty1"),
    );
    assert_eq!(out.status.unwrap().code, Some(0), "{}", out.stdout_str());
    c.send(&Frame::new(Kind::ScreenText, 2, Vec::new()));
    let f = c.recv();
    assert_eq!((f.kind, f.stream), (Kind::ScreenTextReply, 2), "{f:?}");
    let screen: proto::ScreenText = f.parse_json().unwrap();
    assert!(!screen.graphics, "{screen:?}");
    assert!(screen.rows > 3 && screen.cols >= 20, "{screen:?}");
    assert_eq!(screen.text, "  screen\n\nline 3 é", "{screen:?}");
    assert_eq!((screen.cursor_row, screen.cursor_col), (3, 0), "{screen:?}");
    // Stream 0 is refused; the agent carries on.
    c.send(&Frame::new(Kind::ScreenText, 0, Vec::new()));
    let f = c.recv();
    assert_eq!((f.kind, f.stream), (Kind::Error, 0), "{f:?}");
    let message = f.parse_json::<ErrorBody>().unwrap().message;
    assert!(message.contains("stream id greater than 0"), "{message}");
    assert_eq!(c.exec(3, &sh("true")).status.unwrap().code, Some(0));
}

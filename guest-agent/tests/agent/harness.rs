//! Boots the agent as /init of a hand-made initramfs under QEMU (TCG) and talks to it.
//!
//! Needs `qemu-system-x86_64`, `/bin/busybox` (static) and a kernel at
//! `$FLOTILLA_KERNEL_DIR` (default `~/.cache/flotilla/kernel/current-amd64`, with `vmlinuz`,
//! `version` and `modules/`). Tests fail, naming what is missing, when any is.
//!
//! The agent binary is the one users get: the static `agent`-profile build that
//! `flotilla` embeds (see [`agent_bin`]); `$FLOTILLA_AGENT_BIN` names another one (a
//! dynamically linked one goes in with the shared libraries `ldd` lists).

#[path = "../../static_build.rs"]
mod static_build;

use std::collections::{BTreeMap, HashMap};
use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use flotilla_agent::proto::{
    self, decode, Decoded, ErrorBody, ExecRequest, ExitStatus, Frame, Hello, HelloReply, Kind,
};

pub fn kernel_dir() -> PathBuf {
    std::env::var_os("FLOTILLA_KERNEL_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let home = std::env::var_os("HOME").unwrap_or_default();
            Path::new(&home).join(".cache/flotilla/kernel/current-amd64")
        })
}

/// Why the VM tests cannot run here, if they cannot.
pub fn missing_prerequisite() -> Option<String> {
    let k = kernel_dir();
    for f in ["vmlinuz", "version", "modules"] {
        if !k.join(f).exists() {
            return Some(format!(
                "no {} (set FLOTILLA_KERNEL_DIR)",
                k.join(f).display()
            ));
        }
    }
    if !Path::new("/bin/busybox").exists() {
        return Some("no /bin/busybox".into());
    }
    if Command::new("qemu-system-x86_64")
        .arg("--version")
        .stdout(Stdio::null())
        .status()
        .is_err()
    {
        return Some("no qemu-system-x86_64".into());
    }
    None
}

/// A newc cpio archive built in memory.
#[derive(Default)]
pub struct Cpio {
    entries: BTreeMap<String, (u32, Vec<u8>)>,
}

impl Cpio {
    pub fn dir(&mut self, path: &str) {
        let mut p = String::new();
        for part in path.trim_matches('/').split('/').filter(|s| !s.is_empty()) {
            p.push_str(part);
            self.entries
                .entry(p.clone())
                .or_insert((libc::S_IFDIR | 0o755, Vec::new()));
            p.push('/');
        }
    }

    pub fn file(&mut self, path: &str, mode: u32, data: Vec<u8>) {
        let path = path.trim_start_matches('/');
        if let Some((parent, _)) = path.rsplit_once('/') {
            self.dir(parent);
        }
        self.entries
            .insert(path.to_string(), (libc::S_IFREG | mode, data));
    }

    /// Add (or replace) a symlink.
    pub fn set_symlink(&mut self, path: &str, target: &str) {
        let path = path.trim_start_matches('/');
        self.entries.insert(
            path.to_string(),
            (libc::S_IFLNK | 0o777, target.as_bytes().to_vec()),
        );
    }

    /// Add everything under host directory `root` at the same paths in the archive.
    pub fn tree(&mut self, root: &Path) {
        let mut stack = vec![root.to_path_buf()];
        while let Some(dir) = stack.pop() {
            for e in std::fs::read_dir(&dir).unwrap().flatten() {
                let p = e.path();
                let guest = format!("/{}", p.strip_prefix(root).unwrap().display());
                let meta = std::fs::symlink_metadata(&p).unwrap();
                if meta.file_type().is_symlink() {
                    let target = std::fs::read_link(&p).unwrap();
                    self.set_symlink(&guest, &target.to_string_lossy());
                } else if meta.is_dir() {
                    self.dir(&guest);
                    stack.push(p);
                } else {
                    self.file(
                        &guest,
                        meta.permissions().mode() & 0o7777,
                        std::fs::read(&p).unwrap(),
                    );
                }
            }
        }
    }

    /// Add a symlink unless the path exists already.
    pub fn symlink(&mut self, path: &str, target: &str) {
        let path = path.trim_start_matches('/');
        if let Some((parent, _)) = path.rsplit_once('/') {
            self.dir(parent);
        }
        self.entries
            .entry(path.to_string())
            .or_insert((libc::S_IFLNK | 0o777, target.as_bytes().to_vec()));
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = flotilla_agent::cpio::Cpio::default();
        for (path, (mode, data)) in &self.entries {
            out.entry(path, *mode, (0, 0), data);
        }
        out.finish()
    }
}

/// Modules in dependency order (each module's `.modinfo` `depends=`), as
/// (in-guest path, host path).
pub fn modules_in_order(wanted: &[&str]) -> Vec<(String, PathBuf)> {
    let kdir = kernel_dir();
    let version = std::fs::read_to_string(kdir.join("version")).unwrap();
    let version = version.trim();
    let mut by_name = HashMap::new();
    let mut stack = vec![kdir.join("modules/kernel")];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if let Some(n) = p.file_name().and_then(|n| n.to_str()) {
                if let Some(stem) = n.strip_suffix(".ko") {
                    by_name.insert(stem.replace('-', "_"), p);
                }
            }
        }
    }
    let mut order: Vec<(String, PathBuf)> = Vec::new();
    fn visit(
        name: &str,
        by_name: &HashMap<String, PathBuf>,
        version: &str,
        kdir: &Path,
        order: &mut Vec<(String, PathBuf)>,
    ) {
        let Some(path) = by_name.get(name) else {
            return; // built in
        };
        if order.iter().any(|(_, p)| p == path) {
            return;
        }
        let bytes = std::fs::read(path).unwrap();
        let deps = bytes
            .windows(8)
            .position(|w| w == b"depends=")
            .map(|at| {
                let rest = &bytes[at + 8..];
                let end = rest.iter().position(|b| *b == 0).unwrap_or(0);
                String::from_utf8_lossy(&rest[..end]).into_owned()
            })
            .unwrap_or_default();
        for dep in deps.split(',').filter(|d| !d.is_empty()) {
            visit(dep, by_name, version, kdir, order);
        }
        let rel = path.strip_prefix(kdir.join("modules")).unwrap();
        let guest = format!("/lib/modules/{version}/{}", rel.display());
        order.push((guest, path.clone()));
    }
    for w in wanted {
        visit(w, &by_name, version, &kdir, &mut order);
    }
    order
}

/// The agent binary under test: `$FLOTILLA_AGENT_BIN`, else the one users get, the
/// static `agent`-profile build that `flotilla` embeds, built once per run by the same
/// command as `image/build.rs` ([`static_build`]) into the same folder
/// (`<target>/agent`): up to date already when the driver was built.
pub fn agent_bin() -> PathBuf {
    static BIN: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BIN.get_or_init(|| match std::env::var_os("FLOTILLA_AGENT_BIN") {
        Some(path) => PathBuf::from(path),
        None => build_shipped_agent(),
    })
    .clone()
}

fn build_shipped_agent() -> PathBuf {
    // This executable is <target>/<profile>/deps/<name>.
    let exe = std::env::current_exe().unwrap();
    let target = exe
        .ancestors()
        .nth(3)
        .expect("the test runs from a cargo target folder");
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("../Cargo.toml");
    let cargo = PathBuf::from(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    let (mut cmd, binary) = static_build::static_agent_build(
        &cargo,
        &manifest,
        &target.join("agent"),
        "x86_64-unknown-linux-musl",
    );
    let status = cmd
        .status()
        .expect("running cargo to build the static agent");
    assert!(
        status.success(),
        "building the static agent failed ({status})"
    );
    binary
}

/// An empty folder `flotilla-agent-NAME-PID` in the temp dir (emptied if it was there).
pub fn scratch_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("flotilla-agent-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Runs `flotilla-agent install --root ROOT`.
pub fn run_install(root: &Path) -> std::process::Output {
    Command::new(agent_bin())
        .args(["install", "--root"])
        .arg(root)
        .output()
        .unwrap()
}

/// [`run_install`], which must succeed.
#[track_caller]
pub fn install(root: &Path) {
    let out = run_install(root);
    assert!(out.status.success(), "{out:?}");
}

/// Whether `ldd` says the executable at `path` is statically linked.
pub fn is_static(path: &Path) -> bool {
    let out = Command::new("ldd").arg(path).output().expect("running ldd");
    let text = String::from_utf8_lossy(&out.stdout);
    text.contains("statically linked") || text.contains("not a dynamic executable")
}

/// The agent binary and any shared libraries it needs, as (guest path, bytes).
fn agent_files() -> Vec<(String, Vec<u8>)> {
    let bin = agent_bin();
    let mut files = vec![("/init".to_string(), std::fs::read(&bin).unwrap())];
    let ldd = Command::new("ldd").arg(&bin).output();
    if let Ok(out) = ldd {
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            let path = match line.split_once("=>") {
                Some((_, rhs)) => rhs.split_whitespace().next(),
                None => line.split_whitespace().next(),
            };
            if let Some(p) = path.filter(|p| p.starts_with('/')) {
                files.push((p.to_string(), std::fs::read(p).unwrap()));
            }
        }
    }
    files
}

pub fn initramfs(extra: impl FnOnce(&mut Cpio)) -> Vec<u8> {
    let mut c = Cpio::default();
    for (path, data) in agent_files() {
        c.file(&path, 0o755, data);
    }
    c.file(
        "/bin/busybox",
        0o755,
        std::fs::read("/bin/busybox").unwrap(),
    );
    let list = Command::new("/bin/busybox")
        .arg("--list-full")
        .output()
        .unwrap();
    for applet in String::from_utf8_lossy(&list.stdout).lines() {
        c.symlink(applet, "/bin/busybox");
    }
    let mut listing = String::new();
    for (guest, host) in modules_in_order(&["virtio_pci", "virtio_console"]) {
        c.file(&guest, 0o644, std::fs::read(host).unwrap());
        listing.push_str(&guest);
        listing.push('\n');
    }
    c.file("/etc/flotilla/modules", 0o644, listing.into_bytes());
    c.dir("/root");
    extra(&mut c);
    c.encode()
}

static NEXT_VM: AtomicU32 = AtomicU32::new(0);

/// A running VM; killed on drop.
pub struct Vm {
    pub dir: PathBuf,
    child: Option<Child>,
    pub ready_line: String,
}

impl Vm {
    pub fn boot(cpio: &[u8], append: &str) -> Vm {
        let mut vm = Vm::start(cpio, append);
        vm.ready_line = vm.wait_serial(proto::READY_PREFIX, Duration::from_secs(120));
        vm
    }

    /// Start QEMU without waiting for the agent.
    pub fn start(cpio: &[u8], append: &str) -> Vm {
        let dir = std::env::temp_dir().join(format!(
            "flotilla-agent-test-{}-{}",
            std::process::id(),
            NEXT_VM.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("initrd.cpio"), cpio).unwrap();
        let serial = std::fs::File::create(dir.join("serial.log")).unwrap();
        let kdir = kernel_dir();
        let mut cmd = Command::new("qemu-system-x86_64");
        cmd.args(["-M", "q35", "-accel", "tcg", "-cpu", "max", "-m", "256"])
            .args([
                "-display",
                "none",
                "-nodefaults",
                "-no-reboot",
                "-serial",
                "stdio",
            ])
            .arg("-kernel")
            .arg(kdir.join("vmlinuz"))
            .arg("-initrd")
            .arg(dir.join("initrd.cpio"))
            .arg("-append")
            .arg(format!("console=ttyS0 quiet panic=-1 {append}"))
            .args(["-device", "virtio-serial-pci", "-chardev"])
            .arg(format!(
                "socket,id=agent,path={},server=on,wait=off",
                dir.join("agent.sock").display()
            ))
            .args([
                "-device",
                &format!("virtserialport,chardev=agent,name={}", proto::PORT_NAME),
            ])
            .stdin(Stdio::null())
            .stdout(serial.try_clone().unwrap())
            .stderr(serial);
        // SAFETY: prctl is async-signal-safe.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let child = cmd.spawn().unwrap();
        Vm {
            dir,
            child: Some(child),
            ready_line: String::new(),
        }
    }

    pub fn serial(&self) -> String {
        std::fs::read_to_string(self.dir.join("serial.log")).unwrap_or_default()
    }

    /// Wait for a serial line containing `needle`; return it.
    pub fn wait_serial(&mut self, needle: &str, timeout: Duration) -> String {
        let start = Instant::now();
        loop {
            let log = self.serial();
            if let Some(line) = log.lines().find(|l| l.contains(needle)) {
                return line.to_string();
            }
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("qemu exited ({status}) before `{needle}`; serial:\n{log}");
            }
            assert!(
                start.elapsed() < timeout,
                "no `{needle}` on serial after {timeout:?}:\n{log}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn connect(&self) -> Conn {
        Conn::connect(&self.dir.join("agent.sock"))
    }

    /// Wait for QEMU to exit on its own.
    pub fn wait_exit(&mut self, timeout: Duration) -> std::process::ExitStatus {
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                return status;
            }
            assert!(
                start.elapsed() < timeout,
                "qemu still running after {timeout:?}; serial:\n{}",
                self.serial()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// A synchronous connection to the agent.
pub struct Conn {
    pub sock: UnixStream,
    buf: Vec<u8>,
}

/// What a command produced.
#[derive(Debug, Default)]
pub struct Output {
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub status: Option<ExitStatus>,
    pub error: Option<String>,
    pub stdout_chunks: Vec<(Duration, usize)>,
}

impl Output {
    pub fn stdout_str(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }
}

impl Conn {
    pub fn connect(path: &Path) -> Conn {
        let sock = UnixStream::connect(path).unwrap();
        sock.set_read_timeout(Some(Duration::from_secs(60)))
            .unwrap();
        Conn {
            sock,
            buf: Vec::new(),
        }
    }

    pub fn send(&mut self, f: &Frame) {
        self.sock.write_all(&f.to_bytes()).unwrap();
    }

    pub fn recv(&mut self) -> Frame {
        loop {
            match decode(&self.buf) {
                Decoded::Frame(f, n) => {
                    self.buf.drain(..n);
                    return f;
                }
                Decoded::Incomplete => {
                    let mut chunk = [0u8; 65536];
                    let n = match self.sock.read(&mut chunk) {
                        // A signal to the test process (a child's exit) is no answer.
                        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                        r => r.unwrap(),
                    };
                    assert!(n > 0, "agent connection closed");
                    self.buf.extend_from_slice(&chunk[..n]);
                }
                other => panic!("agent sent something undecodable: {other:?}"),
            }
        }
    }

    /// Says Hello, again every 5 s until the agent answers (at most a minute): a Hello
    /// sent in the instant the host side connects has been seen to go unanswered on a
    /// loaded machine, and a repeated Hello is harmless (it restarts the session).
    pub fn hello(&mut self) -> HelloReply {
        let hello = Frame::json(
            Kind::Hello,
            0,
            &Hello {
                version: proto::PROTOCOL_VERSION,
            },
        );
        self.sock
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let mut tries = 0;
        let f = loop {
            self.send(&hello);
            tries += 1;
            match self.try_recv() {
                Ok(f) => break f,
                Err(e)
                    if tries < 12
                        && matches!(
                            e.kind(),
                            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                        ) => {}
                Err(e) => panic!("no HelloReply after {tries} Hellos: {e}"),
            }
        };
        self.sock
            .set_read_timeout(Some(Duration::from_secs(60)))
            .unwrap();
        assert_eq!(f.kind, Kind::HelloReply, "{f:?}");
        f.parse_json().unwrap()
    }

    fn try_recv(&mut self) -> std::io::Result<Frame> {
        loop {
            match decode(&self.buf) {
                Decoded::Frame(f, n) => {
                    self.buf.drain(..n);
                    return Ok(f);
                }
                Decoded::Incomplete => {
                    let mut chunk = [0u8; 65536];
                    let n = match self.sock.read(&mut chunk) {
                        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                        r => r?,
                    };
                    assert!(n > 0, "agent connection closed");
                    self.buf.extend_from_slice(&chunk[..n]);
                }
                other => panic!("agent sent something undecodable: {other:?}"),
            }
        }
    }

    /// Collect frames of `stream` until Exit or Error.
    pub fn collect(&mut self, stream: u32) -> Output {
        let start = Instant::now();
        let mut out = Output::default();
        loop {
            let f = self.recv();
            assert_eq!(f.stream, stream, "frame for another stream: {f:?}");
            match f.kind {
                Kind::Stdout => {
                    out.stdout_chunks.push((start.elapsed(), f.payload.len()));
                    out.stdout.extend_from_slice(&f.payload);
                }
                Kind::Stderr => out.stderr.extend_from_slice(&f.payload),
                Kind::Exit => {
                    out.status = Some(f.parse_json().unwrap());
                    return out;
                }
                Kind::Error => {
                    out.error = Some(f.parse_json::<ErrorBody>().unwrap().message);
                    return out;
                }
                other => panic!("unexpected {other:?}"),
            }
        }
    }

    pub fn exec(&mut self, stream: u32, req: &ExecRequest) -> Output {
        self.send(&Frame::json(Kind::Exec, stream, req));
        self.collect(stream)
    }
}

pub fn req(command: proto::Command) -> ExecRequest {
    ExecRequest {
        command,
        env: Vec::new(),
        cwd: None,
        stdin: false,
        timeout_ms: None,
        pty: None,
    }
}

pub fn sh(script: &str) -> ExecRequest {
    req(proto::Command::Shell(script.into()))
}

pub fn argv(args: &[&str]) -> ExecRequest {
    req(proto::Command::Argv(
        args.iter().map(|s| s.to_string()).collect(),
    ))
}

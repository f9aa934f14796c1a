//! One QEMU machine: its process, console, QMP connection and agent.

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use flotilla_agent::proto;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::Command;
use tokio::sync::watch;

use crate::accel::{Accel, AccelChoice};
use crate::agent::{AgentConn, AgentError, ExecOutput, ExecSession};
use crate::fabric::Fabric;
use crate::guest::{AgentKind, Guest, GuestError, QGA_PORT};
use crate::image::Kernel;
use crate::log::Log;
use crate::process::{describe_status, Process};
use crate::spec::{DiskSource, MachineSpec};
use crate::Error;
use flotilla_vmnet::{Forward, UserNet};

/// How many console lines an error quotes.
const TAIL_LINES: usize = 20;
/// How many console lines are kept in memory.
const KEEP_LINES: usize = 500;
/// QEMU device ids of the agent's and qemu-ga's serial ports (in VSERPORT_CHANGE).
const AGENT_PORT_ID: &str = "agent-port";
const QGA_PORT_ID: &str = "qga-port";
/// How an error says the agent went away.
const AGENT_GONE: &str = "the agent closed its port in the guest (it exited or was stopped)";
/// Text that means the guest kernel panicked.
const PANIC_MARKER: &str = "Kernel panic - not syncing";

/// Everything a machine needs to start; made by [`crate::Fleet`].
#[derive(Debug)]
pub struct MachineConfig {
    pub name: String,
    pub spec: MachineSpec,
    pub kernel: Kernel,
    /// The file QEMU boots: the kernel's unpacked `vmlinux`, or its `vmlinuz`
    /// ([`crate::vmlinux::boot_kernel`], and always for a machine with a display).
    pub boot_kernel: PathBuf,
    pub initrd: PathBuf,
    pub accel: AccelChoice,
    /// Private (0700) folder for this machine's sockets.
    pub socket_dir: PathBuf,
    /// Folder of the machine's disk files (`root.qcow2`, `<disk>.qcow2`): the socket
    /// folder, or `<keep-state dir>/<machine>` to keep them across runs.
    pub state_dir: PathBuf,
    pub log: Log,
    /// How long the guest may take to report readiness.
    pub boot_timeout: Duration,
    /// Default limit for one command.
    pub command_timeout: Duration,
    /// The QEMU binary.
    pub qemu: PathBuf,
    /// The run's network.
    pub fabric: Arc<Fabric>,
    /// The host-access NIC and its forwarded ports.
    pub user_net: Mutex<UserNet>,
    /// qboot, for machines without a display (`None`: SeaBIOS for all).
    pub firmware: Option<PathBuf>,
    /// The network's polling conditions, checked before every command.
    pub(crate) conditions: Arc<crate::conditions::Conditions>,
}

/// The result of [`Machine::execute`].
#[derive(Debug, Clone)]
pub struct CommandResult {
    /// Exit code; `None` when the command was killed by a signal.
    pub code: Option<i32>,
    /// The signal that killed the command, if any.
    pub signal: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl CommandResult {
    /// True when the command exited with status 0.
    pub fn success(&self) -> bool {
        self.code == Some(0)
    }

    fn describe(&self) -> String {
        match (self.code, self.signal) {
            (Some(c), _) => format!("exit status {c}"),
            (None, Some(s)) => format!("signal {s} ({})", crate::process::signal_name(s)),
            _ => "no status".into(),
        }
    }
}

#[derive(Debug, Default)]
struct ConsoleState {
    /// The readiness line's boot time, once seen.
    ready: Option<u64>,
    /// The first panic line, once seen.
    panic: Option<String>,
    /// QEMU closed its stdout (it exited).
    eof: bool,
}

#[derive(Debug)]
struct Console {
    lines: Mutex<VecDeque<String>>,
    /// How many lines have arrived; wakes `wait_for_console_text`.
    count: watch::Sender<u64>,
}

impl Default for Console {
    fn default() -> Self {
        Console {
            lines: Mutex::default(),
            count: watch::Sender::new(0),
        }
    }
}

impl Console {
    fn push(&self, line: String) {
        if let Ok(mut lines) = self.lines.lock() {
            if lines.len() == KEEP_LINES {
                lines.pop_front();
            }
            lines.push_back(line);
        }
        self.count.send_modify(|c| *c += 1);
    }

    /// The first kept line (of the last few hundred) that matches.
    fn find(&self, re: &regex::Regex) -> Option<String> {
        let lines = self.lines.lock().ok()?;
        lines.iter().find(|l| re.is_match(l)).cloned()
    }

    fn tail(&self, n: usize) -> Vec<String> {
        self.lines
            .lock()
            .map(|l| l.iter().skip(l.len().saturating_sub(n)).cloned().collect())
            .unwrap_or_default()
    }
}

#[derive(Debug)]
struct Running {
    process: Arc<Process>,
    qmp: flotilla_qmp::Client,
    /// The agent connection, and how many times the guest had closed the agent's port
    /// when it was made: a later close means the agent restarted, and the next call
    /// connects again.
    guest: std::sync::RwLock<(u64, Option<Arc<Guest>>)>,
    port_closes: watch::Receiver<u64>,
    reconnecting: tokio::sync::Mutex<()>,
    state: watch::Receiver<ConsoleState>,
    stderr_tail: Arc<Console>,
    /// Why the VM is paused, while it is.
    paused: watch::Receiver<Option<String>>,
}

/// A machine of the network. Cheap to share; all methods take `&self`.
#[derive(Debug)]
pub struct Machine {
    config: MachineConfig,
    running: tokio::sync::Mutex<Option<Arc<Running>>>,
    console: Arc<Console>,
    qemu_pid: Mutex<Option<u32>>,
}

impl Machine {
    pub fn new(config: MachineConfig) -> Machine {
        Machine {
            config,
            running: tokio::sync::Mutex::new(None),
            console: Arc::default(),
            qemu_pid: Mutex::new(None),
        }
    }

    pub fn name(&self) -> &str {
        &self.config.name
    }

    fn log(&self, message: &str) {
        self.config.log.machine(&self.config.name, message);
    }

    /// How long a command may take unless its call says otherwise.
    pub fn command_timeout(&self) -> Duration {
        self.config.command_timeout
    }

    /// A QMP failure as this machine's error.
    fn qmp_failed(&self, source: flotilla_qmp::Error) -> Error {
        Error::Qmp {
            machine: self.config.name.clone(),
            source,
        }
    }

    /// The host name the guest gets.
    pub fn hostname(&self) -> String {
        self.config.name.replace('_', "-")
    }

    /// The QEMU command line for this machine.
    pub fn qemu_command(&self) -> Command {
        let c = &self.config;
        let dir = &c.socket_dir;
        let mut cmd = Command::new(&c.qemu);
        cmd.arg("-name")
            .arg(format!("{},process=flotilla-{}", c.name, c.name));
        cmd.args([
            "-M",
            "q35",
            "-nodefaults",
            "-no-user-config",
            "-display",
            "none",
        ]);
        cmd.arg("-no-reboot");
        // qboot loads the kernel at once; SeaBIOS (QEMU's default) takes about a second
        // more under TCG but sets up the VGA text screen, so machines with a display
        // use it.
        if let (false, Some(qboot)) = (c.spec.display, &c.firmware) {
            cmd.arg("-bios").arg(qboot);
        }
        match c.accel.accel {
            Accel::Kvm => cmd.args(["-accel", "kvm", "-cpu", "host"]),
            Accel::Tcg => cmd.args(["-accel", "tcg", "-cpu", "max"]),
        };
        cmd.arg("-m").arg(c.spec.memory.to_string());
        cmd.arg("-smp").arg(c.spec.cpus.to_string());
        cmd.args([
            "-chardev",
            "stdio,id=console,signal=off",
            "-serial",
            "chardev:console",
        ]);
        cmd.arg("-qmp").arg(format!(
            "unix:{},server=on,wait=off",
            dir.join("qmp.sock").display()
        ));
        cmd.arg("-kernel").arg(&c.boot_kernel);
        cmd.arg("-initrd").arg(&c.initrd);
        let mut append = format!(
            "console=ttyS0 quiet panic=-1 rdinit=/init cryptomgr.notests flotilla.hostname={}",
            self.hostname()
        );
        if c.spec.image.is_some() {
            append.push_str(" root=/dev/vda rw");
        }
        if !c.spec.kernel_args.trim().is_empty() {
            append.push(' ');
            append.push_str(c.spec.kernel_args.trim());
        }
        cmd.arg("-append").arg(append);
        cmd.args(["-device", "virtio-serial-pci,id=vser0"]);
        cmd.arg("-chardev").arg(format!(
            "socket,id=agent,path={},server=on,wait=off",
            dir.join("agent.sock").display()
        ));
        cmd.arg("-device").arg(format!(
            "virtserialport,bus=vser0.0,chardev=agent,name={},id={AGENT_PORT_ID}",
            proto::PORT_NAME
        ));
        // Every machine has the stock guest agent's port too: an image with qemu-ga
        // is reachable through it whichever agent drives the machine.
        cmd.arg("-chardev").arg(format!(
            "socket,id=qga,path={},server=on,wait=off",
            dir.join("qga.sock").display()
        ));
        cmd.arg("-device").arg(format!(
            "virtserialport,bus=vser0.0,chardev=qga,name={QGA_PORT},id={QGA_PORT_ID}"
        ));
        cmd.args(["-device", "virtio-rng-pci"]);
        // A standard VGA card: its text console is what `screenshot` captures. (The
        // PS/2 keyboard for `send_key` is part of q35, display or not.)
        if c.spec.display {
            cmd.args(["-device", "VGA"]);
        }
        // pvpanic: a guest panic raises GUEST_PANICKED and pauses the VM, keeping its
        // state (console, screen) for the error report instead of rebooting it.
        cmd.args(["-device", "pvpanic-pci", "-action", "panic=pause"]);
        // The root image's disk first (/dev/vda), then the extra disks in spec order;
        // every -device in command-line order, so PCI slots follow that order.
        if c.spec.image.is_some() {
            let drive = drive_options(ROOT_DISK, &self.disk_path(ROOT_DISK), &[]);
            cmd.arg("-drive").arg(drive);
            cmd.arg("-device")
                .arg(format!("virtio-blk-pci,drive={ROOT_DISK}"));
        }
        for disk in &c.spec.disks {
            let path = self.disk_path(&disk.name);
            cmd.arg("-drive")
                .arg(drive_options(&disk.name, &path, &disk.inject_errors));
            cmd.arg("-device")
                .arg(format!("virtio-blk-pci,drive={0},serial={0}", disk.name));
        }
        if let Ok(args) = c.fabric.plan.qemu_args(&c.name) {
            cmd.args(args);
        }
        if let Ok(user) = c.user_net.lock() {
            cmd.args(user.qemu_args());
        }
        cmd.stdin(std::process::Stdio::piped());
        cmd.stdout(std::process::Stdio::piped());
        cmd.stderr(std::process::Stdio::piped());
        cmd
    }

    /// Starts the machine unless it is running, and waits until its agent is ready.
    pub async fn start(&self) -> Result<(), Error> {
        self.running().await.map(|_| ())
    }

    /// The process id of the machine's latest QEMU, from the moment it is spawned (also
    /// while it boots, and after it exited).
    pub fn qemu_pid(&self) -> Option<u32> {
        self.qemu_pid.lock().ok().and_then(|p| *p)
    }

    /// The QMP client of the running machine.
    pub async fn qmp(&self) -> Result<flotilla_qmp::Client, Error> {
        Ok(self.running().await?.qmp.clone())
    }

    /// A client for the machine's qemu-guest-agent port (useful when the image runs
    /// qemu-ga beside flotilla-agent).
    pub async fn qga_client(&self) -> Result<flotilla_qmp::qga::GuestAgent, Error> {
        self.running().await?;
        let path = self.config.socket_dir.join("qga.sock");
        flotilla_qmp::qga::GuestAgent::connect_unix(&path)
            .await
            .map_err(|source| Error::Agent {
                machine: self.config.name.clone(),
                doing: "connecting to qemu-guest-agent".into(),
                source: source.into(),
            })
    }

    /// Waits until a console line matches the regular expression `pattern` (lines seen
    /// before the call count too); returns the line. Fails at once if QEMU exits.
    pub async fn wait_for_console_text(
        &self,
        pattern: &str,
        timeout: Duration,
    ) -> Result<String, Error> {
        let re = regex::Regex::new(pattern).map_err(|e| {
            Error::Usage(format!(
                "machine `{}`: wait_for_console_text: bad regular expression `{pattern}`: {e}",
                self.config.name
            ))
        })?;
        self.log(&format!("waiting for console text matching `{pattern}`"));
        let _busy = self.config.log.activity(format!(
            "{}: waiting for console text `{pattern}`",
            self.config.name
        ));
        let mut count = self.console.count.subscribe();
        let running = self.running.lock().await.clone();
        let wait = async {
            loop {
                if let Some(line) = self.console.find(&re) {
                    return line;
                }
                if count.changed().await.is_err() {
                    return std::future::pending().await;
                }
            }
        };
        let exited = async {
            match &running {
                Some(r) => r.process.exited().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            line = wait => Ok(line),
            status = exited => match &running {
                Some(r) => Err(self.died(r, &format!("qemu {} while waiting for console text `{pattern}`", describe_status(status))).await),
                None => Err(Error::Internal("no machine".into())),
            },
            _ = tokio::time::sleep(timeout) => Err(Error::Timeout {
                machine: self.config.name.clone(),
                what: format!("waiting for console text matching `{pattern}`"),
                after: timeout,
            }),
        }
    }

    /// Everything the serial console printed in this run (from `console.log`).
    pub fn console_log(&self) -> String {
        let path = self
            .config
            .log
            .dir()
            .join(&self.config.name)
            .join("console.log");
        std::fs::read_to_string(path).unwrap_or_default()
    }

    /// Waits until `path` exists in the guest.
    pub async fn wait_for_file(&self, path: &str, timeout: Duration) -> Result<(), Error> {
        self.wait_until_succeeds(&format!("test -e {}", shell_quote(path)), timeout)
            .await
            .map(|_| ())
    }

    /// Waits until something in the guest listens on TCP `port` (IPv4 or IPv6).
    pub async fn wait_for_open_port(&self, port: u16, timeout: Duration) -> Result<(), Error> {
        self.wait_until_succeeds(&listening(port), timeout)
            .await
            .map(|_| ())
    }

    /// Waits until nothing in the guest listens on TCP `port`.
    pub async fn wait_for_closed_port(&self, port: u16, timeout: Duration) -> Result<(), Error> {
        self.wait_until_fails(&listening(port), timeout)
            .await
            .map(|_| ())
    }

    /// Waits until the systemd unit is active; fails at once if it failed.
    pub async fn wait_for_unit(&self, unit: &str, timeout: Duration) -> Result<(), Error> {
        self.log(&format!("waiting for unit {unit}"));
        let deadline = Instant::now() + timeout;
        let quoted = shell_quote(unit);
        loop {
            let r = self
                .execute(&format!("systemctl is-active {quoted}"))
                .await?;
            match r.stdout.trim() {
                "active" => return Ok(()),
                "failed" => {
                    let status = self
                        .execute(&format!("systemctl status --no-pager --lines=10 {quoted}"))
                        .await
                        .map(|r| r.stdout)
                        .unwrap_or_default();
                    return Err(Error::CommandFailed {
                        machine: self.config.name.clone(),
                        command: format!("wait_for_unit {unit}"),
                        expected: "become active".into(),
                        status: "state failed".into(),
                        output: status,
                    });
                }
                _ if Instant::now() >= deadline => {
                    return Err(Error::Timeout {
                        machine: self.config.name.clone(),
                        what: format!("waiting for unit {unit} (last state: {})", r.stdout.trim()),
                        after: timeout,
                    })
                }
                _ => tokio::time::sleep(Duration::from_millis(500)).await,
            }
        }
    }

    /// The last `n` console lines.
    pub fn console_tail(&self, n: usize) -> Vec<String> {
        self.console.tail(n)
    }

    async fn running(&self) -> Result<Arc<Running>, Error> {
        let mut slot = self.running.lock().await;
        if let Some(r) = slot.as_ref() {
            if r.process.status().is_none() {
                return Ok(r.clone());
            }
            let r = slot.take();
            drop(r);
        }
        let running = Arc::new(self.boot().await?);
        *slot = Some(running.clone());
        Ok(running)
    }

    async fn boot(&self) -> Result<Running, Error> {
        let c = &self.config;
        let started = Instant::now();
        std::fs::create_dir_all(&c.socket_dir).map_err(|source| Error::Io {
            what: format!("creating {}", c.socket_dir.display()),
            source,
        })?;
        for sock in ["qmp.sock", "agent.sock"] {
            let _ = std::fs::remove_file(c.socket_dir.join(sock));
        }
        let log_dir = c.log.machine_dir(&c.name)?;
        let _busy = c.log.activity(format!("{}: booting", c.name));
        c.fabric.ensure_started().await?;
        self.ensure_disks().await?;
        let firmware = match (c.spec.display, &c.firmware) {
            (false, Some(_)) => "qboot",
            (true, _) => "SeaBIOS and a VGA screen",
            (false, None) => "SeaBIOS: QEMU has no qboot.rom, so boots take about 1 s longer",
        };
        self.log(&format!(
            "starting ({} MiB, {} cpu, {}, {firmware})",
            c.spec.memory, c.spec.cpus, c.accel.accel
        ));
        let (process, stdio) =
            Process::spawn(&c.name, self.qemu_command())
                .await
                .map_err(|source| Error::Io {
                    what: format!("machine `{}`: starting {}", c.name, c.qemu.display()),
                    source,
                })?;
        if let Ok(mut pid) = self.qemu_pid.lock() {
            *pid = Some(process.pid());
        }
        let process = Arc::new(process);
        let (state_tx, state) = watch::channel(ConsoleState::default());

        // Console reader: QEMU's stdout is the serial console.
        let console_log = log_dir.join("console.log");
        let mut console_file = tokio::fs::File::create(&console_log)
            .await
            .map_err(|source| Error::Io {
                what: format!("creating {}", console_log.display()),
                source,
            })?;
        if let Some(stdout) = stdio.stdout {
            let log = c.log.clone();
            let name = c.name.clone();
            let console = self.console.clone();
            tokio::spawn(async move {
                let mut reader = BufReader::new(stdout);
                let mut buf = Vec::new();
                loop {
                    buf.clear();
                    match reader.read_until(b'\n', &mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(_) => {}
                    }
                    let _ = console_file.write_all(&buf).await;
                    let text = String::from_utf8_lossy(&buf);
                    let line = text.trim_end_matches(['\n', '\r']).replace('\r', "");
                    log.console(&name, &line);
                    if let Some(rest) = line.strip_prefix(proto::READY_PREFIX) {
                        let boot_ms = rest
                            .split_whitespace()
                            .find_map(|kv| kv.strip_prefix("boot_ms="))
                            .and_then(|v| v.parse().ok())
                            .unwrap_or(0);
                        state_tx.send_modify(|s| s.ready = Some(boot_ms));
                    } else if line.contains(PANIC_MARKER) {
                        let l = line.clone();
                        state_tx.send_modify(|s| {
                            s.panic.get_or_insert(l);
                        });
                    }
                    console.push(line);
                }
                let _ = console_file.flush().await;
                state_tx.send_modify(|s| s.eof = true);
            });
        }
        // QEMU's own messages.
        let stderr_tail: Arc<Console> = Arc::default();
        if let Some(stderr) = stdio.stderr {
            let log = c.log.clone();
            let name = c.name.clone();
            let tail = stderr_tail.clone();
            let path = log_dir.join("qemu.log");
            tokio::spawn(async move {
                let mut file = tokio::fs::File::create(&path).await.ok();
                let mut lines = BufReader::new(stderr).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    if let Some(f) = file.as_mut() {
                        let _ = f.write_all(format!("{line}\n").as_bytes()).await;
                    }
                    log.machine(&name, &format!("qemu: {line}"));
                    tail.push(line);
                }
            });
        }
        // Keep QEMU's stdin open for the machine's lifetime (the console's input).
        let stdin = stdio.stdin;

        let qmp_path = c.socket_dir.join("qmp.sock");
        let qmp = tokio::select! {
            r = flotilla_qmp::Client::connect_unix_retry(&qmp_path, Duration::from_secs(10)) => {
                r.map_err(|source| Error::Qmp { machine: c.name.clone(), source })?
            }
            status = process.exited() => {
                return Err(self.died_early(status, &state, &stderr_tail).await);
            }
        };

        // Every QMP event goes to the log, with the machine's name.
        // STOP (and GUEST_PANICKED) mark the VM paused, so waiting calls fail instead
        // of hanging; RESUME clears it.
        // The guest closing the driving agent's port means the agent died (or stopped):
        // calls waiting on it fail instead of hanging; reopening it clears that.
        let mut events = qmp.subscribe();
        let (log, name) = (c.log.clone(), c.name.clone());
        let agent_port = match c.spec.agent {
            AgentKind::Qga => QGA_PORT_ID,
            _ => AGENT_PORT_ID,
        };
        let (paused_tx, paused) = watch::channel(None::<String>);
        let (closes_tx, port_closes) = watch::channel(0u64);
        tokio::spawn(async move {
            while let Some(event) = events.recv().await {
                match event {
                    Ok(e) => {
                        let line = format!("qmp event {} {}", e.event, e.data);
                        // Routine device chatter goes to the log file only.
                        if e.event == "NIC_RX_FILTER_CHANGED" {
                            log.file_only(&format!("{name}: {line}"));
                        } else {
                            log.machine(&name, &line);
                        }
                        if e.event == "BLOCK_IO_ERROR" {
                            log.machine(&name, &describe_io_error(&e.data));
                        }
                        match e.event.as_str() {
                            // A panic's STOP follows its GUEST_PANICKED: keep the reason.
                            "STOP" => {
                                paused_tx.send_if_modified(|p| {
                                    p.is_none()
                                        .then(|| {
                                            *p = Some("the VM was paused (qmp STOP event)".into())
                                        })
                                        .is_some()
                                });
                                None
                            }
                            "GUEST_PANICKED" => paused_tx.send_replace(Some(format!(
                                "the guest panicked (qmp GUEST_PANICKED {})",
                                e.data
                            ))),
                            "RESUME" => paused_tx.send_replace(None),
                            "VSERPORT_CHANGE" if e.data["id"] == agent_port => {
                                let open = e.data["open"].as_bool().unwrap_or(true);
                                if !open {
                                    closes_tx.send_modify(|n| *n += 1);
                                }
                                paused_tx.send_if_modified(|p| {
                                    let gone =
                                        p.as_deref().is_some_and(|p| p.starts_with(AGENT_GONE));
                                    if open && gone {
                                        *p = None;
                                        true
                                    } else if !open && p.is_none() {
                                        *p = Some(format!("{AGENT_GONE} (qmp VSERPORT_CHANGE)"));
                                        true
                                    } else {
                                        false
                                    }
                                });
                                None
                            }
                            _ => None,
                        };
                    }
                    Err(lost) => log.machine(&name, &format!("qmp: {} events lost", lost.0)),
                }
            }
        });

        let mut ready_rx = state.clone();
        let deadline = c.boot_timeout;
        let kind = c.spec.agent;
        // A QGA guest prints no readiness line: it is ready when qemu-ga answers.
        let qga_ready = async {
            if kind != AgentKind::Qga {
                return std::future::pending().await;
            }
            let path = c.socket_dir.join("qga.sock");
            let qga = loop {
                match flotilla_qmp::qga::GuestAgent::connect_unix(&path).await {
                    Ok(q) => break q,
                    Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
                }
            };
            qga.wait_ready(deadline)
                .await
                .map(|()| qga.with_timeout(Duration::from_secs(60)))
        };
        let mut qga = None;
        let boot_ms = tokio::select! {
            r = qga_ready => {
                qga = Some(r.map_err(|source| Error::Agent {
                    machine: c.name.clone(),
                    doing: "waiting for qemu-guest-agent".into(),
                    source: source.into(),
                })?);
                0
            }
            r = async {
                ready_rx
                    .wait_for(|s| (kind == AgentKind::Flotilla && s.ready.is_some()) || s.panic.is_some())
                    .await
                    .map(|s| (s.ready, s.panic.clone()))
            } => {
                let Ok((ready, panic)) = r else {
                    // The console closed without readiness: QEMU is exiting.
                    let status = match tokio::time::timeout(Duration::from_secs(5), process.exited()).await {
                        Ok(status) => status,
                        Err(_) => process.close(Duration::from_secs(2)).await,
                    };
                    return Err(self.died_early(status, &state, &stderr_tail).await);
                };
                if let Some(panic) = panic {
                    // Let the rest of the panic report arrive: pvpanic pauses the VM, or
                    // (before its module loads) panic=-1 makes QEMU exit.
                    let mut p = paused.clone();
                    let _ = tokio::time::timeout(Duration::from_secs(2), async {
                        tokio::select! {
                            _ = process.exited() => {}
                            _ = p.wait_for(|p| p.is_some()) => {}
                        }
                    }).await;
                    if process.status().is_some() {
                        let mut rx = state.clone();
                        let _ = tokio::time::timeout(Duration::from_secs(1), rx.wait_for(|s| s.eof)).await;
                    } else {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                    let _ = process.close(Duration::from_secs(1)).await;
                    return Err(Error::Boot {
                        machine: c.name.clone(),
                        problem: format!("the guest kernel panicked before the agent was ready: {}", panic.trim()),
                        console: self.console.tail(TAIL_LINES),
                    });
                }
                ready.unwrap_or_default()
            }
            status = process.exited() => {
                return Err(self.died_early(status, &state, &stderr_tail).await);
            }
            _ = tokio::time::sleep(deadline) => {
                let _ = process.close(Duration::from_secs(2)).await;
                return Err(Error::Boot {
                    machine: c.name.clone(),
                    problem: format!("no readiness line from the agent within {} s (boot_timeout)", deadline.as_secs()),
                    console: self.console.tail(TAIL_LINES),
                });
            }
        };

        let guest = match qga {
            Some(q) => Guest::Qga(q),
            None => {
                let agent_path = c.socket_dir.join("agent.sock");
                tokio::select! {
                    r = AgentConn::connect(&agent_path, Duration::from_secs(30)) => {
                        Guest::Agent(r.map_err(|source| Error::Agent { machine: c.name.clone(), doing: "connecting".into(), source: source.into() })?)
                    }
                    status = process.exited() => {
                        return Err(self.died_early(status, &state, &stderr_tail).await);
                    }
                }
            }
        };
        let configured = tokio::select! {
            r = self.configure_guest_net(&guest) => r,
            status = process.exited() => {
                return Err(self.died_early(status, &state, &stderr_tail).await);
            }
        };
        if let Err(e) = configured {
            let _ = process.close(Duration::from_secs(2)).await;
            return Err(e);
        }
        let boot = if boot_ms > 0 {
            format!("reports boot in {boot_ms} ms; ")
        } else {
            String::new()
        };
        self.log(&format!(
            "ready: {} {boot}{} ms since qemu started",
            guest.describe(),
            started.elapsed().as_millis()
        ));
        // Hold stdin in a task that ends with the process.
        let p = process.clone();
        tokio::spawn(async move {
            let _stdin = stdin;
            p.exited().await;
        });
        let closes_at_connect = *port_closes.borrow();
        Ok(Running {
            process,
            qmp,
            guest: std::sync::RwLock::new((closes_at_connect, Some(Arc::new(guest)))),
            port_closes,
            reconnecting: tokio::sync::Mutex::new(()),
            state,
            stderr_tail,
            paused,
        })
    }

    /// Where the disk named `name` (or [`ROOT_DISK`]) lives.
    fn disk_path(&self, name: &str) -> PathBuf {
        self.config.state_dir.join(format!("{name}.qcow2"))
    }

    /// Makes the disks that do not exist yet: they live as long as the state folder
    /// (the run, or across runs with `--keep-state`), so a reboot or crash keeps them.
    async fn ensure_disks(&self) -> Result<(), Error> {
        let c = &self.config;
        let root = c
            .spec
            .image
            .as_ref()
            .map(|base| (ROOT_DISK, DiskSource::Overlay { base: base.clone() }));
        let extra = c
            .spec
            .disks
            .iter()
            .map(|d| (d.name.as_str(), d.source.clone()));
        for (name, source) in root.into_iter().chain(extra) {
            let path = self.disk_path(name);
            let failed = |problem: String| Error::Disk {
                machine: c.name.clone(),
                disk: name.to_owned(),
                problem,
            };
            if path.exists() {
                if c.state_dir != c.socket_dir {
                    self.log(&format!("disk {name}: reusing {}", path.display()));
                }
                continue;
            }
            std::fs::create_dir_all(&c.state_dir)
                .map_err(|e| failed(format!("creating {}: {e}", c.state_dir.display())))?;
            let partial = path.with_extension("qcow2.partial");
            let mut cmd = Command::new("qemu-img");
            cmd.args(["create", "-q", "-f", "qcow2"]);
            let what = match &source {
                DiskSource::Blank { bytes } => {
                    cmd.arg(&partial).arg(bytes.to_string());
                    format!("blank, {} MiB", bytes.div_ceil(1 << 20))
                }
                DiskSource::Overlay { base } => {
                    cmd.args(["-F", "qcow2", "-b"]).arg(base).arg(&partial);
                    format!("overlay over {}", base.display())
                }
            };
            let out = cmd
                .output()
                .await
                .map_err(|e| failed(format!("running qemu-img: {e}")))?;
            if !out.status.success() {
                return Err(failed(format!(
                    "qemu-img could not make {} ({what}): {}",
                    path.display(),
                    String::from_utf8_lossy(&out.stderr).trim()
                )));
            }
            // Only a whole disk gets its name: a later run must not reuse half of one.
            std::fs::rename(&partial, &path).map_err(|e| {
                failed(format!(
                    "renaming {} to {}: {e}",
                    partial.display(),
                    path.display()
                ))
            })?;
            self.log(&format!("disk {name}: {what}, at {}", path.display()));
        }
        Ok(())
    }

    async fn died_early(
        &self,
        status: std::process::ExitStatus,
        state: &watch::Receiver<ConsoleState>,
        stderr: &Console,
    ) -> Error {
        let problem = format!(
            "qemu {} before the agent was ready",
            describe_status(status)
        );
        let (problem, console) = self.evidence(state, stderr, true, problem).await;
        Error::Boot {
            machine: self.config.name.clone(),
            problem,
            console,
        }
    }

    /// What an error about a dead or stuck machine quotes: once QEMU has exited, waits
    /// (at most a second) for the console and stderr readers to drain, then adds QEMU's
    /// last stderr lines to `problem` and returns the console's tail.
    async fn evidence(
        &self,
        state: &watch::Receiver<ConsoleState>,
        stderr: &Console,
        exited: bool,
        mut problem: String,
    ) -> (String, Vec<String>) {
        if exited {
            let mut rx = state.clone();
            let _ = tokio::time::timeout(Duration::from_secs(1), rx.wait_for(|s| s.eof)).await;
            // stderr is read by its own task; give it a moment to finish.
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let qemu_says = stderr.tail(5);
        if !qemu_says.is_empty() {
            let _ = write!(problem, "; qemu said: {}", qemu_says.join(" / "));
        }
        (problem, self.console.tail(TAIL_LINES))
    }

    /// Runs a shell command and returns its status and output.
    pub async fn execute(&self, command: &str) -> Result<CommandResult, Error> {
        self.execute_with_timeout(command, self.config.command_timeout)
            .await
    }

    /// [`Machine::execute`] with an explicit time limit.
    pub async fn execute_with_timeout(
        &self,
        command: &str,
        timeout: Duration,
    ) -> Result<CommandResult, Error> {
        self.config.conditions.check().await?;
        let running = self.running().await?;
        let _busy = self
            .config
            .log
            .activity(format!("{}: running `{command}`", self.config.name));
        let started = Instant::now();
        let log = self.config.log.clone();
        let name = self.config.name.clone();
        let mut lines = [LineLog::default(), LineLog::default()];
        let guest = self.guest(&running).await?;
        let exec = guest.exec_shell(command, timeout, |is_err, chunk| {
            lines[usize::from(is_err)].push(chunk, |line| log.machine(&name, &format!("  {line}")));
        });
        let output: ExecOutput = tokio::select! {
            r = exec => match r {
                Ok(output) => output,
                Err(source) => {
                    // The agent's socket closes as QEMU dies: report the death, which
                    // says more, when it follows within moments.
                    if let Ok(status) = tokio::time::timeout(Duration::from_secs(2), running.process.exited()).await {
                        return Err(self.died(&running, &format!("qemu {} while running `{command}`", describe_status(status))).await);
                    }
                    return Err(Error::Agent {
                        machine: self.config.name.clone(),
                        doing: format!("running `{command}`"),
                        source,
                    });
                }
            },
            status = running.process.exited() => {
                return Err(self.died(&running, &format!("qemu {} while running `{command}`", describe_status(status))).await);
            }
            why = paused(&running) => {
                return Err(self.died(&running, &format!("{why} while running `{command}`")).await);
            }
            _ = tokio::time::sleep(timeout) => {
                return Err(Error::Timeout {
                    machine: self.config.name.clone(),
                    what: format!("command `{command}`"),
                    after: timeout,
                });
            }
        };
        for l in &mut lines {
            l.finish(|line| self.log(&format!("  {line}")));
        }
        let result = CommandResult {
            code: output.status.code,
            signal: output.status.signal,
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        };
        self.log(&format!(
            "(finished with {} in {:.2} s)",
            result.describe(),
            started.elapsed().as_secs_f64()
        ));
        Ok(result)
    }

    /// The connection to the running machine's agent; connects again first when the
    /// agent has restarted since (the guest closed its port, and has opened it again).
    async fn guest(&self, running: &Running) -> Result<Arc<Guest>, Error> {
        let current = |r: &Running| r.guest.read().map(|g| g.clone()).unwrap_or((0, None));
        let closes = *running.port_closes.borrow();
        let gone = running
            .paused
            .borrow()
            .clone()
            .filter(|p| p.starts_with(AGENT_GONE));
        if let (seen, Some(guest)) = current(running) {
            // Still the same agent, or it is away (the call then fails as such).
            if seen == closes || gone.is_some() || !matches!(*guest, Guest::Agent(_)) {
                return Ok(guest);
            }
        }
        if let Some(why) = gone {
            return Err(self.died(running, &why).await);
        }
        let _one = running.reconnecting.lock().await;
        if let (seen, Some(guest)) = current(running) {
            if seen == closes {
                return Ok(guest); // another call connected meanwhile
            }
        }
        self.log("the agent restarted: connecting again");
        // Drop the old connection first: QEMU takes one client at a time.
        if let Ok(mut g) = running.guest.write() {
            g.1 = None;
        }
        let path = self.config.socket_dir.join("agent.sock");
        let conn = AgentConn::connect(&path, Duration::from_secs(30))
            .await
            .map_err(|source| Error::Agent {
                machine: self.config.name.clone(),
                doing: "connecting again after the agent restarted".into(),
                source: source.into(),
            })?;
        let fresh = Arc::new(Guest::Agent(conn));
        if let Ok(mut g) = running.guest.write() {
            *g = (closes, Some(fresh.clone()));
        }
        Ok(fresh)
    }

    /// Runs `fut`, a call on the running machine, unless QEMU exits, the VM pauses or
    /// the agent goes away first: those end it at once with the evidence.
    async fn guarded<T>(
        &self,
        running: &Running,
        what: &str,
        fut: impl std::future::Future<Output = Result<T, Error>>,
    ) -> Result<T, Error> {
        tokio::select! {
            r = fut => r,
            status = running.process.exited() => Err(self
                .died(running, &format!("qemu {} while {what}", describe_status(status)))
                .await),
            why = paused(running) => Err(self.died(running, &format!("{why} while {what}")).await),
        }
    }

    async fn died(&self, running: &Running, problem: &str) -> Error {
        let exited = running.process.status().is_some();
        let panic = running.state.borrow().panic.clone();
        let problem = match panic {
            Some(line) => format!("the guest kernel panicked ({}); {problem}", line.trim()),
            None => problem.to_owned(),
        };
        let (problem, console) = self
            .evidence(&running.state, &running.stderr_tail, exited, problem)
            .await;
        Error::MachineDied {
            machine: self.config.name.clone(),
            problem,
            console,
        }
    }

    /// Runs a command that must succeed (exit 0); returns its stdout.
    pub async fn succeed(&self, command: &str) -> Result<String, Error> {
        self.succeed_with_timeout(command, self.config.command_timeout)
            .await
    }

    /// [`Machine::succeed`] with its own time limit instead of the network's default.
    pub async fn succeed_with_timeout(
        &self,
        command: &str,
        timeout: Duration,
    ) -> Result<String, Error> {
        self.expect(command, timeout, true).await
    }

    /// Runs a command that must succeed (`success`) or fail; returns its stdout.
    async fn expect(
        &self,
        command: &str,
        timeout: Duration,
        success: bool,
    ) -> Result<String, Error> {
        let expected = if success { "succeed" } else { "fail" };
        self.log(&format!("must {expected}: {command}"));
        let r = self.execute_with_timeout(command, timeout).await?;
        if r.success() == success {
            return Ok(r.stdout);
        }
        Err(Error::CommandFailed {
            machine: self.config.name.clone(),
            command: command.to_owned(),
            expected: expected.into(),
            status: r.describe(),
            output: tail_text(&r.stdout, &r.stderr),
        })
    }

    /// Runs a command until it succeeds (every half second), for at most `timeout`;
    /// returns its stdout.
    pub async fn wait_until_succeeds(
        &self,
        command: &str,
        timeout: Duration,
    ) -> Result<String, Error> {
        self.wait_until(command, timeout, true).await
    }

    /// Runs a command until it fails, for at most `timeout`; returns its stdout.
    pub async fn wait_until_fails(
        &self,
        command: &str,
        timeout: Duration,
    ) -> Result<String, Error> {
        self.wait_until(command, timeout, false).await
    }

    async fn wait_until(
        &self,
        command: &str,
        timeout: Duration,
        success: bool,
    ) -> Result<String, Error> {
        let wanted = if success { "succeeds" } else { "fails" };
        self.log(&format!("waiting until this {wanted}: {command}"));
        let _busy = self.config.log.activity(format!(
            "{}: waiting until `{command}` {wanted}",
            self.config.name
        ));
        let deadline = Instant::now() + timeout;
        let mut tries = 0;
        loop {
            tries += 1;
            let left = deadline.saturating_duration_since(Instant::now());
            let r = self
                .execute_with_timeout(command, left.max(Duration::from_secs(1)))
                .await?;
            if r.success() == success {
                return Ok(r.stdout);
            }
            if Instant::now() + Duration::from_millis(500) >= deadline {
                return Err(Error::Timeout {
                    machine: self.config.name.clone(),
                    what: format!(
                        "waiting until `{command}` {wanted} ({tries} tries, last: {})",
                        r.describe()
                    ),
                    after: timeout,
                });
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// Runs a command that must fail (non-zero exit or killed); returns its stdout.
    pub async fn fail(&self, command: &str) -> Result<String, Error> {
        self.fail_with_timeout(command, self.config.command_timeout)
            .await
    }

    /// [`Machine::fail`] with its own time limit instead of the network's default.
    pub async fn fail_with_timeout(
        &self,
        command: &str,
        timeout: Duration,
    ) -> Result<String, Error> {
        self.expect(command, timeout, false).await
    }

    /// Configures the guest's host name, NICs and /etc/hosts: with one
    /// [`proto::Kind::NetConfig`] request when the agent has
    /// [`proto::FEATURE_NET_CONFIG`] (~70 ms under TCG, mostly the kernel bringing the
    /// links up), else with the shell script of
    /// [`Machine::guest_net_setup`] (a process per step: ~250 ms, and it needs `ip`).
    async fn configure_guest_net(&self, guest: &Guest) -> Result<(), Error> {
        let c = &self.config;
        let failed = |why: &str| {
            Error::Network(format!(
                "machine `{}`: configuring the guest network failed: {why}",
                c.name
            ))
        };
        let agent_error = |source: GuestError| Error::Agent {
            machine: c.name.clone(),
            doing: "configuring the guest network".into(),
            source,
        };
        let started = Instant::now();
        let how = match guest {
            Guest::Agent(a) if a.has_feature(proto::FEATURE_NET_CONFIG) => {
                let timeout = Duration::from_secs(60);
                match tokio::time::timeout(timeout, a.net_config(&self.guest_net_config())).await {
                    Ok(Ok(())) => "the agent (net-config request)",
                    Ok(Err(AgentError::Remote(why))) => return Err(failed(&why)),
                    Ok(Err(e)) => return Err(agent_error(e.into())),
                    Err(_) => return Err(agent_error(AgentError::Timeout(timeout).into())),
                }
            }
            _ => {
                let script = self.guest_net_setup();
                let out = guest
                    .exec_shell(&script, Duration::from_secs(60), |_, _| {})
                    .await
                    .map_err(agent_error)?;
                if out.status.code != Some(0) {
                    return Err(failed(String::from_utf8_lossy(&out.stderr).trim()));
                }
                "a shell script (the agent has no net-config)"
            }
        };
        c.log.file_only(&format!(
            "{}: network configured by {how} in {} ms",
            c.name,
            started.elapsed().as_millis()
        ));
        Ok(())
    }

    /// The [`proto::NetConfig`] request equivalent to [`Machine::guest_net_setup`].
    fn guest_net_config(&self) -> proto::NetConfig {
        use flotilla_vmnet::{forward, IPV4_PREFIX, IPV6_PREFIX};
        let c = &self.config;
        let plan = &c.fabric.plan;
        let me = plan.machine(&c.name).ok();
        let mut nics: Vec<proto::NicConfig> = me
            .iter()
            .flat_map(|m| &m.nics)
            .map(|nic| proto::NicConfig {
                mac: nic.mac.to_string(),
                ipv4: Some(format!("{}/{IPV4_PREFIX}", nic.ipv4)),
                ipv6: Some(format!("{}/{IPV6_PREFIX}", nic.ipv6)),
            })
            .collect();
        if let Ok(user) = c.user_net.lock() {
            nics.push(proto::NicConfig {
                mac: user.mac.to_string(),
                ipv4: Some(format!("{}/{}", forward::GUEST_ADDR, forward::GUEST_PREFIX)),
                ipv6: None,
            });
        }
        proto::NetConfig {
            hostname: Some(self.hostname()),
            nics,
            forwarding: me.is_some_and(|m| m.forwards()),
            hosts: Some(plan.hosts_file(&c.name).unwrap_or_default()),
        }
    }

    /// The shell script that configures the guest's NICs and /etc/hosts.
    fn guest_net_setup(&self) -> String {
        let c = &self.config;
        let plan = &c.fabric.plan;
        let mut s = format!("hostname {}\n", self.hostname());
        s.push_str(&plan.guest_setup(&c.name).unwrap_or_default());
        if let Ok(user) = c.user_net.lock() {
            s.push_str(&user.guest_setup());
        }
        let hosts = plan.hosts_file(&c.name).unwrap_or_default();
        s.push_str(&format!(
            "cat > /etc/hosts <<'FLOTILLA_HOSTS'\n{hosts}FLOTILLA_HOSTS\n"
        ));
        s
    }

    /// The machine's IPv4 address on `vlan`.
    pub fn ip(&self, vlan: u8) -> Result<std::net::Ipv4Addr, Error> {
        let plan = &self.config.fabric.plan;
        Ok(plan
            .nic(&self.config.name, vlan)
            .map_err(Error::Vmnet)?
            .ipv4)
    }

    /// The machine's IPv6 address on `vlan`.
    pub fn ipv6(&self, vlan: u8) -> Result<std::net::Ipv6Addr, Error> {
        let plan = &self.config.fabric.plan;
        Ok(plan
            .nic(&self.config.name, vlan)
            .map_err(Error::Vmnet)?
            .ipv6)
    }

    /// Takes the machine's link on `vlan` down (`up = false`) or back up.
    pub async fn set_link(&self, vlan: u8, up: bool) -> Result<(), Error> {
        let plan = &self.config.fabric.plan;
        let nic = plan.nic(&self.config.name, vlan).map_err(Error::Vmnet)?;
        let running = self.running().await?;
        running
            .qmp
            .set_link(&nic.device_id, up)
            .await
            .map_err(|e| self.qmp_failed(e))?;
        self.log(&format!(
            "link on vlan {vlan} {}",
            if up { "up" } else { "down (blocked)" }
        ));
        Ok(())
    }

    /// Degrades the machine's link on `vlan` (delay, jitter, loss, bandwidth);
    /// `Impairment::default()` restores it (VDE backend).
    pub async fn impair(
        &self,
        vlan: u8,
        impairment: flotilla_vmnet::Impairment,
    ) -> Result<(), Error> {
        self.config
            .fabric
            .impair(&self.config.name, vlan, impairment)
            .await
    }

    /// Every forward, as (host port on 127.0.0.1, guest port).
    pub fn forwards(&self) -> Vec<(u16, u16)> {
        self.config
            .user_net
            .lock()
            .map(|u| u.forwards.iter().map(|f| (f.host, f.guest)).collect())
            .unwrap_or_default()
    }

    /// Starts a command whose stdin, terminal and output the caller drives (an
    /// interactive shell: `request.pty`); boots the machine first if needed. Dropping
    /// the session kills the command.
    pub async fn start_session(&self, request: &proto::ExecRequest) -> Result<ExecSession, Error> {
        let running = self.running().await?;
        let refuse = |why: String| Error::Agent {
            machine: self.config.name.clone(),
            doing: "starting an interactive command".into(),
            source: GuestError::Local(why),
        };
        let guest = self.guest(&running).await?;
        let agent = match &*guest {
            Guest::Agent(a) => a,
            Guest::Qga(_) => {
                return Err(refuse(
                    "qemu-guest-agent cannot run interactive commands; use an image with flotilla-agent".into(),
                ))
            }
        };
        if request.pty.is_some() && !agent.has_feature(proto::FEATURE_PTY) {
            return Err(refuse(format!(
                "flotilla-agent {} in the guest has no terminal support\nhint: rebuild the image with this flotilla (`flotilla image debian`)",
                agent.hello.agent_version
            )));
        }
        agent.start(request).await.map_err(|source| Error::Agent {
            machine: self.config.name.clone(),
            doing: "starting an interactive command".into(),
            source: source.into(),
        })
    }

    /// The host port on 127.0.0.1 forwarded to `guest_port`, if any.
    pub fn forwarded_port(&self, guest_port: u16) -> Option<u16> {
        let user = self.config.user_net.lock().ok()?;
        user.forwards
            .iter()
            .find(|f| f.guest == guest_port)
            .map(|f| f.host)
    }

    /// Forwards 127.0.0.1:`host_port` (0 picks a free port) to `guest_port` while the
    /// machine runs; returns the host port.
    pub async fn forward(&self, host_port: u16, guest_port: u16) -> Result<u16, Error> {
        let forward = Forward::new(host_port, guest_port).map_err(Error::Vmnet)?;
        let running = self.running().await?;
        let reply = running
            .qmp
            .human_monitor_command(&forward.hmp_add())
            .await
            .map_err(|e| self.qmp_failed(e))?;
        if !reply.trim().is_empty() {
            return Err(Error::Network(format!(
                "machine `{}`: forwarding 127.0.0.1:{} to port {guest_port}: {}",
                self.config.name,
                forward.host,
                reply.trim()
            )));
        }
        if let Ok(mut user) = self.config.user_net.lock() {
            user.forwards.push(forward);
        }
        self.log(&format!(
            "forwarding 127.0.0.1:{} to guest port {guest_port}",
            forward.host
        ));
        Ok(forward.host)
    }

    /// Saves a PNG of the machine's screen (its VGA text console) as `<name>.png` in the
    /// machine's log folder (`name` may end in `.png`); returns the path. Works on a
    /// paused or panicked VM too.
    pub async fn screenshot(&self, name: &str) -> Result<PathBuf, Error> {
        if !self.config.spec.display {
            return Err(Error::Usage(format!(
                "machine `{}` has no screen to take a screenshot of: give it `display = true` in the spec",
                self.config.name
            )));
        }
        let stem = name.strip_suffix(".png").unwrap_or(name);
        if stem.is_empty() || stem.starts_with('.') || stem.contains(['/', '\\', '\0']) {
            return Err(Error::Usage(format!(
                "machine `{}`: screenshot name `{name}` must be a plain file name",
                self.config.name
            )));
        }
        let path = self
            .config
            .log
            .machine_dir(&self.config.name)?
            .join(format!("{stem}.png"));
        let running = self.running().await?;
        running
            .qmp
            .screendump_png(&path)
            .await
            .map_err(|e| self.qmp_failed(e))?;
        self.log(&format!("screenshot: {}", path.display()));
        Ok(path)
    }

    /// Presses a key combination on the machine's keyboard, e.g. `ctrl-alt-delete`,
    /// `alt-f2`, `ret` (QEMU key names joined by `-`).
    pub async fn send_key(&self, combo: &str) -> Result<(), Error> {
        let keys = crate::keys::parse_combo(combo)
            .map_err(|e| Error::Usage(format!("machine `{}`: send_key: {e}", self.config.name)))?;
        self.press(&keys).await
    }

    /// Types `text` on the machine's keyboard (US layout), one key press per character,
    /// `delay` apart.
    pub async fn send_chars(&self, text: &str, delay: Duration) -> Result<(), Error> {
        let mut presses = Vec::new();
        for c in text.chars() {
            let keys = crate::keys::char_keys(c).ok_or_else(|| {
                Error::Usage(format!(
                    "machine `{}`: send_chars: no key for {c:?} on a US keyboard",
                    self.config.name
                ))
            })?;
            presses.push(keys.into_iter().map(String::from).collect::<Vec<_>>());
        }
        self.log(&format!("typing {text:?}"));
        for keys in presses {
            self.press(&keys).await?;
            tokio::time::sleep(delay).await;
        }
        Ok(())
    }

    async fn press(&self, keys: &[String]) -> Result<(), Error> {
        let running = self.running().await?;
        let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
        running
            .qmp
            .send_keys(&keys)
            .await
            .map_err(|e| self.qmp_failed(e))
    }

    /// Captures the frames of the machine's NIC on `vlan` into a pcap file in the log
    /// folder, from now until the machine stops; returns the file's path.
    pub async fn capture(&self, vlan: u8) -> Result<PathBuf, Error> {
        let plan = &self.config.fabric.plan;
        let nic = plan.nic(&self.config.name, vlan).map_err(Error::Vmnet)?;
        let running = self.running().await?;
        let path = self
            .config
            .log
            .machine_dir(&self.config.name)?
            .join(format!("vlan{vlan}.pcap"));
        let path = std::path::absolute(&path).unwrap_or(path);
        running
            .qmp
            .execute_raw(
                "object-add",
                Some(serde_json::json!({
                    "qom-type": "filter-dump",
                    "id": format!("capture-vlan{vlan}"),
                    "netdev": nic.netdev_id,
                    "file": path.display().to_string(),
                })),
            )
            .await
            .map_err(|e| self.qmp_failed(e))?;
        self.log(&format!("capturing vlan {vlan} to {}", path.display()));
        Ok(path)
    }

    /// Copies a host file or directory (recursively) into the guest at `remote`,
    /// keeping modes; returns the bytes copied.
    pub async fn copy_to(&self, local: &std::path::Path, remote: &str) -> Result<u64, Error> {
        let running = self.running().await?;
        let started = Instant::now();
        let mut files = Vec::new();
        collect_files(local, remote, &mut files).map_err(|source| Error::Io {
            what: format!(
                "machine `{}`: reading {}",
                self.config.name,
                local.display()
            ),
            source,
        })?;
        let guest = self.guest(&running).await?;
        let copies = async {
            let mut total = 0;
            for (path, target, mode) in &files {
                total += guest
                    .push_file(path, target, *mode)
                    .await
                    .map_err(|source| Error::Agent {
                        machine: self.config.name.clone(),
                        doing: format!("copying {} to {target}", path.display()),
                        source,
                    })?;
            }
            Ok(total)
        };
        let what = format!("copying {} to {remote}", local.display());
        let total = self.guarded(&running, &what, copies).await?;
        self.log(&format!(
            "copied {} ({} file(s), {total} bytes) to {remote} in {:.2} s",
            local.display(),
            files.len(),
            started.elapsed().as_secs_f64()
        ));
        Ok(total)
    }

    /// Copies a guest file or directory (recursively) to `local` on the host, keeping
    /// modes; returns the bytes copied.
    pub async fn copy_from(&self, remote: &str, local: &std::path::Path) -> Result<u64, Error> {
        let running = self.running().await?;
        let what = format!("copying {remote} to {}", local.display());
        self.guarded(
            &running,
            &what,
            self.copy_from_running(&running, remote, local),
        )
        .await
    }

    async fn copy_from_running(
        &self,
        running: &Running,
        remote: &str,
        local: &std::path::Path,
    ) -> Result<u64, Error> {
        let started = Instant::now();
        let guest = self.guest(running).await?;
        let quoted = shell_quote(remote);
        let listing = guest
            .exec_shell(
                &format!("if [ -d {quoted} ]; then cd {quoted} && find . -type f; elif [ -e {quoted} ]; then echo; else echo \"no such file or directory: {}\" >&2; exit 1; fi", remote.replace('"', "")),
                Duration::from_secs(60),
                |_, _| {},
            )
            .await
            .map_err(|source| Error::Agent {
                machine: self.config.name.clone(),
                doing: format!("listing {remote}"),
                source,
            })?;
        if listing.status.code != Some(0) {
            return Err(Error::Agent {
                machine: self.config.name.clone(),
                doing: format!("copying {remote}"),
                source: crate::guest::GuestError::Local(
                    String::from_utf8_lossy(&listing.stderr).trim().to_owned(),
                ),
            });
        }
        let text = String::from_utf8_lossy(&listing.stdout).into_owned();
        let entries: Vec<&str> = text.lines().collect();
        let mut total = 0;
        let mut count = 0;
        // A lone empty line means `remote` is a file; otherwise the files under it.
        let copies: Vec<(String, PathBuf)> = if entries == [""] {
            vec![(remote.to_owned(), local.to_path_buf())]
        } else {
            entries
                .iter()
                .filter_map(|e| e.strip_prefix("./"))
                .map(|rel| {
                    (
                        format!("{}/{rel}", remote.trim_end_matches('/')),
                        local.join(rel),
                    )
                })
                .collect()
        };
        for (from, to) in copies {
            let (size, _) = guest
                .pull_file(&from, &to)
                .await
                .map_err(|source| Error::Agent {
                    machine: self.config.name.clone(),
                    doing: format!("copying {from} to {}", to.display()),
                    source,
                })?;
            total += size;
            count += 1;
        }
        self.log(&format!(
            "copied {remote} ({count} file(s), {total} bytes) to {} in {:.2} s",
            local.display(),
            started.elapsed().as_secs_f64()
        ));
        Ok(total)
    }

    /// Powers the guest off through the agent and waits for QEMU to exit; forces it
    /// after `timeout`.
    pub async fn shutdown(&self, timeout: Duration) -> Result<(), Error> {
        let Some(running) = self.running.lock().await.take() else {
            return Ok(());
        };
        self.log("shutting down");
        let asked = match self.guest(&running).await {
            Ok(guest) => guest.shutdown().await.is_ok(),
            Err(_) => false,
        };
        let clean = asked
            && tokio::time::timeout(timeout, running.process.exited())
                .await
                .is_ok();
        if !clean {
            self.log(&format!(
                "no power-off within {} s: stopping qemu",
                timeout.as_secs()
            ));
            let _ = tokio::time::timeout(Duration::from_secs(2), running.qmp.quit()).await;
            running.process.close(Duration::from_secs(3)).await;
        }
        Ok(())
    }

    /// Simulates a power cut: QEMU stops at once, without a guest shutdown. The next
    /// call boots the machine again (a disk image keeps what reached its overlay).
    pub async fn crash(&self) -> Result<(), Error> {
        self.log("crashing (power cut)");
        self.stop().await;
        Ok(())
    }

    /// Powers the guest off cleanly and boots it again.
    pub async fn reboot(&self, timeout: Duration) -> Result<(), Error> {
        self.log("rebooting");
        self.shutdown(timeout).await?;
        self.start().await
    }

    /// Stops QEMU at once (QMP `quit`, then signals). Idempotent; used at the end of a
    /// run, when the guest's state no longer matters.
    pub async fn stop(&self) {
        let Some(running) = self.running.lock().await.take() else {
            return;
        };
        if running.process.status().is_none() {
            let _ = tokio::time::timeout(Duration::from_secs(2), running.qmp.quit()).await;
            if tokio::time::timeout(Duration::from_secs(2), running.process.exited())
                .await
                .is_err()
            {
                running.process.close(Duration::from_secs(3)).await;
            }
        }
        let mut rx = running.state.clone();
        let _ = tokio::time::timeout(Duration::from_secs(1), rx.wait_for(|s| s.eof)).await;
    }
}

/// Cuts command output into log lines in linear time; a line longer than
/// [`LineLog::MAX`] bytes is logged cut, with the number of bytes left out.
#[derive(Default)]
struct LineLog {
    buf: Vec<u8>,
    dropped: usize,
}

impl LineLog {
    const MAX: usize = 2000;

    fn push(&mut self, mut chunk: &[u8], mut emit: impl FnMut(&str)) {
        while let Some(nl) = chunk.iter().position(|b| *b == b'\n') {
            self.take(&chunk[..nl]);
            self.flush(&mut emit);
            chunk = &chunk[nl + 1..];
        }
        self.take(chunk);
    }

    fn take(&mut self, bytes: &[u8]) {
        let room = Self::MAX.saturating_sub(self.buf.len());
        let n = room.min(bytes.len());
        self.buf.extend_from_slice(&bytes[..n]);
        self.dropped += bytes.len() - n;
    }

    fn flush(&mut self, emit: &mut impl FnMut(&str)) {
        let text = String::from_utf8_lossy(&self.buf);
        if self.dropped > 0 {
            emit(&format!("{text}... ({} more bytes)", self.dropped));
        } else {
            emit(&text);
        }
        self.buf.clear();
        self.dropped = 0;
    }

    fn finish(&mut self, mut emit: impl FnMut(&str)) {
        if !self.buf.is_empty() || self.dropped > 0 {
            self.flush(&mut emit);
        }
    }
}

/// `(host path, guest path, mode)` of every file under `local` (or `local` itself).
fn collect_files(
    local: &std::path::Path,
    remote: &str,
    out: &mut Vec<(PathBuf, String, u32)>,
) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(local)?;
    if meta.is_dir() {
        let mut entries: Vec<_> = std::fs::read_dir(local)?.collect::<Result<_, _>>()?;
        entries.sort_by_key(|e| e.file_name());
        for entry in entries {
            let name = entry.file_name();
            let target = format!(
                "{}/{}",
                remote.trim_end_matches('/'),
                name.to_string_lossy()
            );
            collect_files(&entry.path(), &target, out)?;
        }
    } else if meta.is_file() {
        out.push((
            local.to_path_buf(),
            remote.to_owned(),
            meta.permissions().mode() & 0o7777,
        ));
    }
    Ok(())
}

/// The drive id of an `image`'s disk (extra disks go by their own names).
const ROOT_DISK: &str = "root";

/// `-drive` options for a qcow2 disk file: I/O errors reach the guest
/// (`werror`/`rerror=report`) instead of pausing the VM. Error rules put QEMU's
/// blkdebug between the qcow2 format and the file, where qcow2's events fire.
fn drive_options(id: &str, file: &std::path::Path, rules: &[crate::spec::InjectError]) -> String {
    // A comma in an option value is written twice.
    let file = file.display().to_string().replace(',', ",,");
    let mut s = format!("id={id},if=none,format=qcow2,werror=report,rerror=report");
    // The file node by driver and name: a path with `:` is not a protocol prefix.
    let mut file_node = "file";
    if !rules.is_empty() {
        s.push_str(",file.driver=blkdebug");
        file_node = "file.image";
    }
    for (i, rule) in rules.iter().enumerate() {
        let rule_at = format!(",file.inject-error.{i}");
        let once = if rule.once { "on" } else { "off" };
        let _ = write!(
            s,
            "{rule_at}.event={}{rule_at}.errno={}{rule_at}.once={once}",
            rule.event, rule.errno
        );
    }
    let _ = write!(s, ",{file_node}.driver=file,{file_node}.filename={file}");
    s
}

/// A readable line for QMP's `BLOCK_IO_ERROR`:
/// `I/O error on drive disk1 (write, Input/output error; reported to the guest)`.
fn describe_io_error(data: &serde_json::Value) -> String {
    let field = |key: &str| data.get(key).and_then(|v| v.as_str()).unwrap_or("?");
    let action = match field("action") {
        "report" => "reported to the guest",
        "ignore" => "ignored",
        "stop" => "the VM stops",
        other => other,
    };
    let device = match field("device") {
        "" => field("node-name"),
        device => device,
    };
    format!(
        "I/O error on drive {device} ({}, {}; {action})",
        field("operation"),
        field("reason")
    )
}

/// Resolves with the reason once the VM is paused.
async fn paused(running: &Running) -> String {
    let mut rx = running.paused.clone();
    let why = rx
        .wait_for(|p| p.is_some())
        .await
        .map(|p| p.clone().unwrap_or_default());
    match why {
        Ok(why) => why,
        Err(_) => std::future::pending().await,
    }
}

/// A shell test that succeeds while something listens on TCP `port`, from
/// /proc/net/tcp{,6} (state 0A is LISTEN); needs only awk.
fn listening(port: u16) -> String {
    format!(
        "awk 'FNR > 1 && $4 == \"0A\" {{ print $2 }}' /proc/net/tcp /proc/net/tcp6 2>/dev/null | grep -qi ':{port:04X}$'"
    )
}

/// Single-quotes a string for `/bin/sh`.
fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

fn tail_text(stdout: &str, stderr: &str) -> String {
    let mut out = String::new();
    for (label, text) in [("stdout", stdout), ("stderr", stderr)] {
        let lines: Vec<&str> = text.lines().collect();
        if lines.is_empty() {
            continue;
        }
        let skip = lines.len().saturating_sub(10);
        let _ = writeln!(out, "{label}:");
        for l in &lines[skip..] {
            let _ = writeln!(out, "  {l}");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::LineLog;

    #[test]
    fn drive_options_escape_and_inject() {
        use crate::spec::InjectError;
        let plain = super::drive_options("disk1", "/a,b/disk1.qcow2".as_ref(), &[]);
        assert_eq!(
            plain,
            "id=disk1,if=none,format=qcow2,werror=report,rerror=report,\
             file.driver=file,file.filename=/a,,b/disk1.qcow2"
        );
        let rule = InjectError {
            event: "write_aio".into(),
            errno: 5,
            once: true,
        };
        let faulty = super::drive_options("d", "/x.qcow2".as_ref(), &[rule]);
        assert!(
            faulty.ends_with(
                ",file.driver=blkdebug,file.inject-error.0.event=write_aio\
                 ,file.inject-error.0.errno=5,file.inject-error.0.once=on\
                 ,file.image.driver=file,file.image.filename=/x.qcow2"
            ),
            "{faulty}"
        );
    }

    #[test]
    fn io_errors_read_well() {
        let data = serde_json::json!({"device": "disk1", "node-name": "#block1",
            "operation": "write", "action": "report", "reason": "Input/output error"});
        assert_eq!(
            super::describe_io_error(&data),
            "I/O error on drive disk1 (write, Input/output error; reported to the guest)"
        );
    }

    #[test]
    fn line_log_splits_and_cuts() {
        let mut out = Vec::new();
        let mut l = LineLog::default();
        l.push(b"one\ntw", |s| out.push(s.to_owned()));
        l.push(b"o\nthree", |s| out.push(s.to_owned()));
        l.finish(|s| out.push(s.to_owned()));
        assert_eq!(out, ["one", "two", "three"]);
        let mut out = Vec::new();
        let mut l = LineLog::default();
        l.push(&vec![b'x'; LineLog::MAX + 5], |s| out.push(s.to_owned()));
        l.push(b"yy\n", |s| out.push(s.to_owned()));
        assert_eq!(out.len(), 1);
        assert!(
            out[0].ends_with("... (7 more bytes)"),
            "{}",
            &out[0][LineLog::MAX - 5..]
        );
    }
}

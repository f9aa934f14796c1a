//! Flotilla's driver: starts QEMU machines from a [`Spec`], waits for the in-guest agent,
//! runs commands in the guests and test scripts against them, and cleans up.
//!
//! The same powers the `flotilla` binary has are here for `cargo test`:
//!
//! ```no_run
//! # async fn demo() -> Result<(), flotilla_driver::Error> {
//! use flotilla_driver::{Fleet, FleetOptions, Spec};
//!
//! let spec = Spec::parse("demo.toml".as_ref(), "[machines.machine]\nmemory = 256\n")?;
//! let fleet = Fleet::new(&spec, FleetOptions::new("flotilla-out/demo"))?;
//! let machine = fleet.machine("machine")?;
//! let kernel = machine.succeed("uname -r").await?;
//! assert!(kernel.contains("cloud"));
//! machine.fail("false").await?;
//! fleet.stop_all().await;
//! # Ok(()) }
//! ```
//!
//! Machines may have extra disks (blank, or overlays over an image, optionally with
//! injected I/O errors: [`spec::DiskSpec`]); [`FleetOptions::keep_state`] keeps them
//! for the next network.
//! [`repl`] evaluates script statements one by one against a running network (and tells
//! a whole statement from one that continues on the next line), [`Log::divert`] lets a
//! prompt show the log above the line being typed, and [`control`] serves a run's
//! machines to other processes (`flotilla shell`).
//!
//! Every child process dies with the driver, also when it is killed with SIGKILL; every
//! line of every console and of QEMU's stderr goes to the run's log directory.

mod accel;
mod conditions;
pub mod control;
pub mod debian;
pub mod doctor;
mod error;
mod guest;
pub mod http;
pub mod image;
mod log;
mod machine;
mod net;
pub mod process;
pub mod repl;
pub mod script;
pub mod spec;
pub mod vmlinux;

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

pub use accel::{detect as detect_accel, Accel, AccelChoice};
pub use error::Error;
pub use guest::{AgentError, AgentKind, ExecEvent, ExecSession, GuestError};
pub use log::{Diverted, Log};
pub use machine::{CommandResult, Machine, MachineConfig};
pub use spec::{MachineSpec, Spec};

/// The agent binary built for the guest and embedded at build time.
static EMBEDDED_AGENT: &[u8] = include_bytes!(env!("FLOTILLA_AGENT_PATH"));

/// The agent binary for the default image: `$FLOTILLA_AGENT` if set, else the one
/// embedded in this build.
pub fn agent_binary() -> Result<Cow<'static, [u8]>, Error> {
    match std::env::var_os("FLOTILLA_AGENT") {
        Some(path) => std::fs::read(&path)
            .map(Cow::Owned)
            .map_err(|source| Error::Io {
                what: format!("reading FLOTILLA_AGENT={}", PathBuf::from(&path).display()),
                source,
            }),
        None => Ok(Cow::Borrowed(EMBEDDED_AGENT)),
    }
}

/// The QEMU binary: `$FLOTILLA_QEMU`, else `qemu-system-x86_64` from `PATH`.
pub fn qemu_binary() -> PathBuf {
    std::env::var_os("FLOTILLA_QEMU")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("qemu-system-x86_64"))
}

/// qboot, the minimal firmware that loads a kernel straight away (about a second
/// faster than SeaBIOS under TCG), from QEMU's data folders; `None` if QEMU lacks it.
pub fn qboot_firmware() -> Option<PathBuf> {
    let mut dirs = vec![
        PathBuf::from("/usr/share/qemu"),
        PathBuf::from("/usr/local/share/qemu"),
    ];
    // A QEMU built into a prefix keeps its firmware in <prefix>/share/qemu.
    if let Ok(path) = which(&qemu_binary()) {
        if let Some(prefix) = path.parent().and_then(|bin| bin.parent()) {
            dirs.insert(0, prefix.join("share/qemu"));
        }
    }
    dirs.into_iter()
        .map(|d| d.join("qboot.rom"))
        .find(|p| p.is_file())
}

/// The full path of a program: itself if it has a slash, else the first match in PATH.
fn which(program: &std::path::Path) -> Result<PathBuf, ()> {
    if program.components().count() > 1 {
        return Ok(program.to_path_buf());
    }
    let path = std::env::var_os("PATH").ok_or(())?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|p| p.is_file())
        .ok_or(())
}

/// How a [`Fleet`] runs.
#[derive(Debug, Clone)]
pub struct FleetOptions {
    /// Where logs go: `driver.log`, and `<machine>/console.log`, `<machine>/qemu.log`.
    /// Emptied at the start of the run.
    pub log_dir: PathBuf,
    /// Echo the log on stderr.
    pub terminal: bool,
    /// How long a guest may take to report readiness.
    pub boot_timeout: Duration,
    /// Default limit for one command in a guest.
    pub command_timeout: Duration,
    /// Where [`run_test`] writes a JUnit XML report (one test case per subtest).
    pub junit: Option<PathBuf>,
    /// Where machine disks live across runs (`--keep-state DIR`): `<dir>/<machine>/`
    /// holds `root.qcow2` (the `image` overlay) and `<disk name>.qcow2`, made on first
    /// use and reused by every later run. `None`: disks are made per run and deleted.
    pub keep_state: Option<PathBuf>,
}

impl FleetOptions {
    /// Defaults: log to `log_dir` and the terminal, 120 s to boot, 300 s per command.
    pub fn new(log_dir: impl Into<PathBuf>) -> FleetOptions {
        FleetOptions {
            log_dir: log_dir.into(),
            terminal: true,
            boot_timeout: Duration::from_secs(120),
            command_timeout: Duration::from_secs(300),
            junit: None,
            keep_state: None,
        }
    }
}

/// The machines of a spec. Machines boot on first use or with [`Fleet::start_all`];
/// [`Fleet::stop_all`] (or dropping the network) stops them.
#[derive(Debug)]
pub struct Fleet {
    machines: BTreeMap<String, Arc<Machine>>,
    log: Log,
    accel: AccelChoice,
    pub(crate) fabric: Arc<net::Fabric>,
    pub(crate) conditions: Arc<conditions::Conditions>,
    /// Finished subtests, and the names of those running (outermost first).
    subtests: script::Subtests,
    subtest_stack: std::sync::Mutex<Vec<String>>,
    // Removed (with every socket in it) when the network is dropped.
    _sockets: tempfile::TempDir,
}

impl Fleet {
    /// Prepares the machines of `spec`: finds the kernel, builds (or reuses) the image,
    /// picks the accelerator. Boots nothing yet.
    pub fn new(spec: &Spec, options: FleetOptions) -> Result<Fleet, Error> {
        let log = Log::create(&options.log_dir, options.terminal)?;
        let kernel = image::Kernel::locate()?;
        let agent = agent_binary()?;
        let initrd = image::default_initramfs(&kernel, &agent)?;
        let machines_that = |f: fn(&MachineSpec) -> bool| spec.machines.values().any(f);
        let stage1 = if machines_that(|m| m.image.is_some()) {
            Some(image::stage1_initramfs(&kernel)?)
        } else {
            None
        };
        // Only machines with disks pay for loading virtio_blk.
        let with_disks = if machines_that(|m| m.image.is_none() && !m.disks.is_empty()) {
            Some(image::disk_initramfs(&kernel, &agent)?)
        } else {
            None
        };
        let accel = accel::detect();
        let boot = vmlinux::boot_kernel(&kernel);
        log.info(&format!(
            "flotilla {}: test `{}`, {} machine(s), kernel {} ({}), accelerator {}",
            env!("CARGO_PKG_VERSION"),
            spec.name,
            spec.machines.len(),
            kernel.version,
            boot.note,
            accel
        ));
        if let Some(dir) = &options.keep_state {
            log.info(&format!(
                "machine disks are kept in {} (--keep-state): existing ones are reused",
                dir.display()
            ));
        }
        let sockets = tempfile::Builder::new()
            .prefix("flotilla-")
            .tempdir()
            .map_err(|source| Error::Io {
                what: "creating the run's socket directory".into(),
                source,
            })?;
        let vlans = spec
            .machines
            .iter()
            .map(|(name, m)| (name.clone(), m.vlans.clone()))
            .collect();
        let plan =
            flotilla_vmnet::Plan::with_offset(&vlans, spec.backend, sockets.path(), spec.offset)
                .map_err(Error::Vmnet)?;
        let fabric = net::Fabric::new(plan, spec.join.clone(), log.clone());
        let conditions = Arc::new(conditions::Conditions::new(log.clone()));
        let firmware = qboot_firmware();
        let mut machines = BTreeMap::new();
        for (name, machine) in &spec.machines {
            let number = fabric.plan.machine(name).map_err(Error::Vmnet)?.number;
            let forwards = machine
                .forward
                .iter()
                .map(|f| flotilla_vmnet::Forward::new(f.host, f.guest))
                .collect::<Result<Vec<_>, _>>()
                .map_err(Error::Vmnet)?;
            for f in &forwards {
                log.machine(
                    name,
                    &format!("port {} is forwarded from 127.0.0.1:{}", f.guest, f.host),
                );
            }
            let config = MachineConfig {
                name: name.clone(),
                spec: machine.clone(),
                kernel: kernel.clone(),
                // The unpacked kernel starts through PVH, which passes no screen
                // information: a machine with a screen boots the bzImage so that tty1
                // shows on its VGA card.
                boot_kernel: if machine.display {
                    kernel.image.clone()
                } else {
                    boot.path.clone()
                },
                initrd: match (&machine.image, &stage1, &with_disks) {
                    (Some(_), Some(stage1), _) => stage1.clone(),
                    (None, _, Some(with_disks)) if !machine.disks.is_empty() => with_disks.clone(),
                    _ => initrd.clone(),
                },
                accel: accel.clone(),
                socket_dir: sockets.path().join(name),
                state_dir: match &options.keep_state {
                    Some(dir) => std::path::absolute(dir.join(name)).unwrap_or(dir.join(name)),
                    None => sockets.path().join(name),
                },
                log: log.clone(),
                boot_timeout: spec.boot_timeout.unwrap_or(options.boot_timeout),
                command_timeout: spec.command_timeout.unwrap_or(options.command_timeout),
                qemu: qemu_binary(),
                fabric: fabric.clone(),
                user_net: std::sync::Mutex::new(flotilla_vmnet::UserNet::new(number, forwards)),
                conditions: conditions.clone(),
                firmware: firmware.clone(),
            };
            machines.insert(name.clone(), Arc::new(Machine::new(config)));
        }
        Ok(Fleet {
            machines,
            conditions,
            subtests: script::Subtests::default(),
            subtest_stack: std::sync::Mutex::default(),
            fabric,
            log,
            accel,
            _sockets: sockets,
        })
    }

    /// A machine by name.
    pub fn machine(&self, name: &str) -> Result<Arc<Machine>, Error> {
        self.machines
            .get(name)
            .cloned()
            .ok_or_else(|| Error::NoSuchMachine(name.to_owned()))
    }

    /// All machines by name.
    pub fn machines(&self) -> &BTreeMap<String, Arc<Machine>> {
        &self.machines
    }

    /// The run log.
    pub fn log(&self) -> &Log {
        &self.log
    }

    /// The accelerator the machines use, and why.
    pub fn accel(&self) -> &AccelChoice {
        &self.accel
    }

    /// Boots every machine concurrently; returns when all are ready.
    pub async fn start_all(&self) -> Result<(), Error> {
        let results = futures::future::join_all(self.machines.values().map(|m| m.start())).await;
        results.into_iter().collect::<Result<Vec<()>, Error>>()?;
        Ok(())
    }

    /// Stops every machine, then the network's switches. Idempotent.
    pub async fn stop_all(&self) {
        futures::future::join_all(self.machines.values().map(|m| m.stop())).await;
        self.fabric.stop().await;
    }

    /// Splits VLAN `vlan` into groups that reach each other only within a group (VDE
    /// backend); every machine named must be running.
    pub async fn partition(&self, vlan: u8, groups: &[Vec<String>]) -> Result<(), Error> {
        self.fabric.partition(vlan, groups).await
    }

    /// Captures every frame on `vlan` into `<log>/vlan<N>.pcap` until the network stops
    /// (VDE backend); returns the path.
    pub async fn capture_vlan(&self, vlan: u8) -> Result<PathBuf, Error> {
        let path = self.log.dir().join(format!("vlan{vlan}.pcap"));
        self.fabric.capture_vlan(vlan, &path).await?;
        Ok(path)
    }

    /// The socket directory of VLAN `vlan`'s switch (VDE backend), for another driver's
    /// `[[network.join]]`. Valid while the network runs.
    pub fn switch_path(&self, vlan: u8) -> Option<PathBuf> {
        self.fabric
            .plan
            .vlans
            .get(&vlan)
            .map(|v| v.switch_dir.clone())
    }

    /// Starts the network's switches (machines start them on boot too).
    pub async fn start_switches(&self) -> Result<(), Error> {
        self.fabric.ensure_started().await
    }

    /// Adds a polling condition: `check` must succeed whenever it is checked, which is
    /// before every command any machine runs (so also between the tries of
    /// `wait_until_*`), at most once per `interval` (every time when zero). When it
    /// fails, that command fails with [`Error::Condition`] naming it. Commands the check
    /// itself runs are not checked again.
    ///
    /// ```no_run
    /// # async fn demo(net: &flotilla_driver::Fleet) -> Result<(), flotilla_driver::Error> {
    /// let server = net.machine("server")?;
    /// net.polling_condition("server's web server runs", std::time::Duration::ZERO, move || {
    ///     let server = server.clone();
    ///     async move { server.succeed("pidof httpd").await.map(drop) }
    /// });
    /// # Ok(()) }
    /// ```
    pub fn polling_condition<F, Fut>(&self, name: &str, interval: Duration, check: F)
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = Result<(), Error>> + Send + 'static,
    {
        self.conditions.add(name, interval, check);
    }

    /// Runs `body` as a named, timed section of the log, like a script's `subtest`:
    /// `subtest: NAME` before, `subtest: NAME ok (1.23 s)` or `FAILED` after, indented
    /// when nested. Each finished subtest is listed by [`Fleet::subtests`].
    pub async fn subtest<T>(
        &self,
        name: &str,
        body: impl std::future::Future<Output = Result<T, Error>>,
    ) -> Result<T, Error> {
        let (path, depth) = match self.subtest_stack.lock() {
            Ok(mut stack) => {
                stack.push(name.to_owned());
                (stack.join(" / "), stack.len() - 1)
            }
            Err(_) => (name.to_owned(), 0),
        };
        let indent = "  ".repeat(depth);
        self.log.info(&format!("{indent}subtest: {name}"));
        let started = std::time::Instant::now();
        let result = body.await;
        let duration = started.elapsed();
        if let Ok(mut stack) = self.subtest_stack.lock() {
            stack.pop();
        }
        let failure = result.as_ref().err().map(ToString::to_string);
        let verdict = if failure.is_some() { "FAILED" } else { "ok" };
        self.log.info(&format!(
            "{indent}subtest: {name} {verdict} ({:.2} s)",
            duration.as_secs_f64()
        ));
        if let Ok(mut list) = self.subtests.lock() {
            list.push(script::Subtest {
                name: path,
                duration,
                failure,
            });
        }
        result
    }

    /// The subtests run through [`Fleet::subtest`] so far, in the order they
    /// finished (for [`junit_xml`]).
    pub fn subtests(&self) -> Vec<script::Subtest> {
        self.subtests.lock().map(|l| l.clone()).unwrap_or_default()
    }

    /// What scripts act on.
    pub(crate) fn world(&self) -> script::World {
        script::World {
            machines: self.machines.clone(),
            fabric: self.fabric.clone(),
            conditions: self.conditions.clone(),
        }
    }

    /// Undoes [`Fleet::partition`].
    pub async fn heal(&self, vlan: u8) -> Result<(), Error> {
        self.fabric.heal(vlan).await
    }
}

/// Runs `attempt` until it succeeds, a second apart, for at most `timeout`; returns its
/// value, or its last error when time runs out (a script's `retry`).
pub async fn retry<T, F, Fut>(timeout: Duration, mut attempt: F) -> Result<T, Error>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, Error>>,
{
    let deadline = std::time::Instant::now() + timeout;
    loop {
        match attempt().await {
            Ok(v) => return Ok(v),
            Err(e) if std::time::Instant::now() + Duration::from_secs(1) >= deadline => {
                return Err(e)
            }
            Err(_) => tokio::time::sleep(Duration::from_secs(1)).await,
        }
    }
}

/// Runs the spec's script against its machines, then stops them, whatever happened.
/// `cancel` (Ctrl-C) and the spec's `timeout` end the run early.
pub async fn run_test(
    spec: &Spec,
    options: FleetOptions,
    cancel: CancellationToken,
) -> Result<(), Error> {
    let script = spec.script.clone().ok_or_else(|| Error::Spec {
        file: spec.path.clone(),
        line: 1,
        column: 1,
        message: "no `script` to run: add script = \"test.rhai\"".into(),
    })?;
    let junit = options.junit.clone();
    let net = Fleet::new(spec, options)?;
    let log = net.log().clone();
    let subtests = script::Subtests::default();
    let thread_subtests = subtests.clone();
    let world = net.world();
    let handle = tokio::runtime::Handle::current();
    let script_cancel = cancel.child_token();
    let (done_tx, done_rx) = tokio::sync::oneshot::channel();
    let thread_cancel = script_cancel.clone();
    let thread_log = log.clone();
    let thread = std::thread::Builder::new()
        .name("flotilla-script".into())
        .spawn(move || {
            let r = script::run(
                &script,
                &world,
                &thread_log,
                handle,
                thread_cancel,
                thread_subtests,
            );
            let _ = done_tx.send(r);
        })
        .map_err(|source| Error::Io {
            what: "starting the script thread".into(),
            source,
        })?;
    let started = std::time::Instant::now();
    let mut done_rx = done_rx;
    let finished = tokio::select! {
        r = &mut done_rx => Some(r),
        _ = tokio::time::sleep(spec.timeout) => None,
        _ = script_cancel.cancelled() => None,
    };
    let timed_out = finished.is_none() && !script_cancel.is_cancelled();
    // Stop the script (a no-op if it finished) and collect its result.
    script_cancel.cancel();
    let finished = match finished {
        Some(r) => r,
        None => done_rx.await,
    };
    let result = finished.unwrap_or_else(|_| {
        Err(Error::Internal(
            "the script thread ended without a result".into(),
        ))
    });
    let _ = thread.join();
    net.stop_all().await;
    let result = match result {
        Err(_) if timed_out => Err(Error::TestTimeout(spec.timeout)),
        Err(_) if cancel.is_cancelled() => Err(Error::Interrupted),
        other => other,
    };
    let took = started.elapsed().as_secs_f64();
    if let Some(path) = junit {
        let list = subtests.lock().map(|l| l.clone()).unwrap_or_default();
        let xml = junit_xml(&spec.name, &list, took, result.as_ref().err());
        std::fs::write(&path, xml).map_err(|source| Error::Io {
            what: format!("writing the JUnit report {}", path.display()),
            source,
        })?;
    }
    match &result {
        Ok(()) => log.info(&format!("test `{}` passed in {took:.1} s", spec.name)),
        // The caller prints the error; the log file keeps it too.
        Err(e) => log.file_only(&format!(
            "test `{}` failed after {took:.1} s: {e}",
            spec.name
        )),
    }
    result
}

/// A JUnit XML report: one test case per subtest, or one for the whole test when it
/// has none; an error outside every subtest is a test case of its own.
pub fn junit_xml(
    name: &str,
    subtests: &[script::Subtest],
    seconds: f64,
    error: Option<&Error>,
) -> String {
    fn esc(s: &str) -> String {
        s.replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;")
            .replace('"', "&quot;")
    }
    let mut cases: Vec<(String, f64, Option<String>)> = subtests
        .iter()
        .map(|s| (s.name.clone(), s.duration.as_secs_f64(), s.failure.clone()))
        .collect();
    let failed_inside = subtests.iter().any(|s| s.failure.is_some());
    match error {
        Some(e) if !failed_inside => cases.push((name.to_owned(), seconds, Some(e.to_string()))),
        None if cases.is_empty() => cases.push((name.to_owned(), seconds, None)),
        _ => {}
    }
    let failures = cases.iter().filter(|c| c.2.is_some()).count();
    let mut xml = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<testsuites>\n  <testsuite name=\"{}\" tests=\"{}\" failures=\"{failures}\" time=\"{seconds:.3}\">\n",
        esc(name),
        cases.len()
    );
    for (case, time, failure) in cases {
        xml.push_str(&format!(
            "    <testcase classname=\"{}\" name=\"{}\" time=\"{time:.3}\"",
            esc(name),
            esc(&case)
        ));
        match failure {
            Some(f) => xml.push_str(&format!(
                ">\n      <failure message=\"{}\">{}</failure>\n    </testcase>\n",
                esc(f.lines().next().unwrap_or("")),
                esc(&f)
            )),
            None => xml.push_str("/>\n"),
        }
    }
    xml.push_str("  </testsuite>\n</testsuites>\n");
    xml
}

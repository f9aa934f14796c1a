//! The machines of a spec, as one [`Fleet`]: the spec's plan ([`crate::plan`]) run,
//! its machines made together, booted together or one by one, stopped together, with
//! the run's VLAN fabric, log and polling conditions.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::accel::AccelChoice;
use crate::conditions::Conditions;
use crate::error::Error;
use crate::fabric::Fabric;
use crate::junit::{begin_subtest, Subtest, SubtestStack, Subtests};
use crate::log::Log;
use crate::machine::{Machine, MachineConfig};
use crate::plan::{BootFiles, Plan, RunFacts};
use crate::run_dir::RunDir;
use crate::spec::{CoverageSpec, Spec};

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
    /// Where [`run_test`](crate::run_test) writes a JUnit XML report (one test case per subtest).
    pub junit: Option<PathBuf>,
    /// Where machine disks live across runs (`--keep-state DIR`): `<dir>/<machine>/`
    /// holds `root.qcow2` (the `image` overlay) and `<disk name>.qcow2`, made on first
    /// use and reused by every later run. `None`: disks are made per run and deleted.
    pub keep_state: Option<PathBuf>,
    /// Collect coverage data from every machine (`--coverage`; the spec's
    /// `[coverage] enabled` too): see [`Fleet::finish_coverage`].
    pub coverage: bool,
    /// Fail the test under this combined line coverage (`--coverage-fail-under`;
    /// implies [`FleetOptions::coverage`]); overrides the spec's `fail_under`.
    pub coverage_fail_under: Option<f64>,
    /// Start machines from saved, booted states where it is safe (the default), unless
    /// their spec says `snapshot = false`; `false` (`--no-snapshot`): every machine
    /// boots.
    pub snapshot: bool,
    /// Instead of running the spec's script, serve one Python client that connects to
    /// this Unix socket ([`run_test`](crate::run_test) binds it): a program of its own
    /// or a pytest test, through the `flotilla` Python package (`flotilla test
    /// --attach SOCKET`). Its `end` request is the verdict.
    pub attach: Option<PathBuf>,
}

impl FleetOptions {
    /// Defaults: log to `log_dir` and the terminal, 120 s to boot, 300 s per command,
    /// snapshots where safe.
    pub fn new(log_dir: impl Into<PathBuf>) -> FleetOptions {
        FleetOptions {
            log_dir: log_dir.into(),
            terminal: true,
            boot_timeout: Duration::from_secs(120),
            command_timeout: Duration::from_secs(300),
            junit: None,
            keep_state: None,
            coverage: false,
            coverage_fail_under: None,
            snapshot: true,
            attach: None,
        }
    }
}

/// The machines of a spec. Machines boot on first use or with [`Fleet::start_all`];
/// [`Fleet::stop_all`] (or dropping the fleet) stops them.
#[derive(Debug)]
pub struct Fleet {
    machines: BTreeMap<String, Arc<Machine>>,
    log: Log,
    accel: AccelChoice,
    pub(crate) fabric: Arc<Fabric>,
    pub(crate) conditions: Arc<Conditions>,
    /// Finished subtests, and the names of those running (outermost first).
    subtests: Subtests,
    subtest_stack: SubtestStack,
    /// The run's coverage settings, when it collects coverage.
    coverage: Option<CoverageSpec>,
    // Removed (with every socket in it) when the fleet is dropped.
    sockets: RunDir,
}

impl Fleet {
    /// Prepares the machines of `spec` by running its plan ([`Plan::of`]): builds (or
    /// takes from the cache) the Debian images of machines with `packages`, `files` or
    /// `init`, finds the kernel, builds (or reuses) the initramfs, picks the
    /// accelerator, checks that the host ports it forwards are free
    /// ([`Error::PortBusy`] if not). Boots nothing yet.
    pub fn new(spec: &Spec, options: FleetOptions) -> Result<Fleet, Error> {
        let log = Log::create(&options.log_dir, options.terminal)?;
        Fleet::with_log(spec, options, log)
    }

    /// [`Fleet::new`] with its log already made (in `options.log_dir`): a caller that
    /// keeps it can still report an error of the preparation there.
    pub(crate) fn with_log(spec: &Spec, options: FleetOptions, log: Log) -> Result<Fleet, Error> {
        Fleet::run_plan(&Plan::of(spec), spec, options, log)
    }

    /// Runs `plan` (of `spec`, which only places the errors of its images): builds its
    /// images, prepares the boot files, makes the network in the run's folder, picks
    /// the ports, and makes each machine from its command.
    fn run_plan(plan: &Plan, spec: &Spec, options: FleetOptions, log: Log) -> Result<Fleet, Error> {
        // Machines with `packages`, `files` or `init` boot the image of that content.
        let images = crate::debian_machines::build(plan, spec, &log)?;
        let coverage = coverage_of(plan, &options);
        let boot = BootFiles::prepare(plan, coverage.is_some())?;
        log_start(&log, plan, &boot, &options, coverage.is_some());
        let sockets = RunDir::create()?;
        log.file_only(&format!("sockets in {}", sockets.path().display()));
        let vmnet = plan.network.vmnet(sockets.path())?;
        let fabric = Fabric::new(vmnet, plan.network.join.clone(), log.clone());
        let conditions = Arc::new(Conditions::new(log.clone()));
        let forwards = plan.pick_forwards()?;
        let facts = RunFacts {
            boot: &boot,
            images: &images,
            net: &fabric.plan,
            run_dir: sockets.path(),
            keep_state: options.keep_state.as_deref(),
            coverage: coverage.is_some(),
        };
        let mut machines = BTreeMap::new();
        for (name, forwards) in forwards {
            for f in &forwards {
                log.machine(
                    &name,
                    &format!("port {} is forwarded from 127.0.0.1:{}", f.guest, f.host),
                );
            }
            let command = plan.command(&name, facts, forwards)?;
            let number = fabric.plan.machine(&name).map_err(Error::Vmnet)?.number;
            let machine = plan
                .machines
                .get(&name)
                .ok_or_else(|| Error::NoSuchMachine { name: name.clone() })?;
            let config = MachineConfig {
                name: name.clone(),
                agent: machine.agent,
                log: log.clone(),
                boot_timeout: plan.boot_timeout.unwrap_or(options.boot_timeout),
                command_timeout: plan.command_timeout.unwrap_or(options.command_timeout),
                fabric: fabric.clone(),
                user_net: std::sync::Mutex::new(flotilla_vmnet::UserNet::new(
                    number,
                    command.instance.forwards(),
                )),
                conditions: conditions.clone(),
                snapshot: options.snapshot && machine.snapshot != Some(false),
                snapshot_asked: machine.snapshot == Some(true),
                command,
            };
            machines.insert(name, Arc::new(Machine::new(config)));
        }
        Ok(Fleet {
            machines,
            conditions,
            subtests: Subtests::default(),
            subtest_stack: SubtestStack::default(),
            fabric,
            log,
            accel: boot.main().accel.clone(),
            coverage,
            sockets,
        })
    }

    /// A machine by name.
    pub fn machine(&self, name: &str) -> Result<Arc<Machine>, Error> {
        self.machines
            .get(name)
            .cloned()
            .ok_or_else(|| Error::NoSuchMachine {
                name: name.to_owned(),
            })
    }

    /// All machines by name.
    pub fn machines(&self) -> &BTreeMap<String, Arc<Machine>> {
        &self.machines
    }

    /// The run's private directory (mode 0700): the machines' QMP, agent and QGA
    /// sockets, the switches' sockets, and disks made for this run only. Removed when
    /// the fleet is dropped; a later run removes it if the driver was killed.
    pub fn run_dir(&self) -> &std::path::Path {
        self.sockets.path()
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
        crate::machine::start_all(&self.machines).await
    }

    /// The run's coverage settings, when it collects coverage.
    pub fn coverage(&self) -> Option<&CoverageSpec> {
        self.coverage.as_ref()
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
    /// `[[network.join]]`. Valid while the fleet runs.
    pub fn switch_path(&self, vlan: u8) -> Option<PathBuf> {
        self.fabric
            .plan
            .vlans
            .get(&vlan)
            .map(|v| v.switch_dir.clone())
    }

    /// The network's helper processes that run (VDE backend: each VLAN's
    /// `vde_switch`, each NIC's link switch and `wirefilter`, VLAN captures' and
    /// cables' `vde_plug`), each as the log names it (`vlan 1: vde_switch`,
    /// ``machine `a` vlan 1: wirefilter``) with its pid. One that exits while the
    /// test runs, unasked, fails the calls of the machines on its VLAN
    /// ([`Error::HelperDied`]); tests kill them to check that.
    pub async fn helper_pids(&self) -> Vec<(String, u32)> {
        self.fabric.helper_pids().await
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
        let open = begin_subtest(&self.log, &self.subtest_stack, &self.subtests, name);
        let result = body.await;
        open.end(result.as_ref().err().map(ToString::to_string));
        result
    }

    /// The subtests run through [`Fleet::subtest`] so far, in the order they
    /// finished (for [`junit_xml`](crate::junit::junit_xml)).
    pub fn subtests(&self) -> Vec<Subtest> {
        self.subtests.lock().map(|l| l.clone()).unwrap_or_default()
    }

    /// Undoes [`Fleet::partition`].
    pub async fn heal(&self, vlan: u8) -> Result<(), Error> {
        self.fabric.heal(vlan).await
    }
}

/// The run's coverage settings, when it collects coverage (the options' or the
/// plan's).
fn coverage_of(plan: &Plan, options: &FleetOptions) -> Option<CoverageSpec> {
    let spec = &plan.coverage;
    (options.coverage || options.coverage_fail_under.is_some() || spec.enabled).then(|| {
        CoverageSpec {
            enabled: true,
            fail_under: options.coverage_fail_under.or(spec.fail_under),
            llvm_binaries: spec.llvm_binaries.clone(),
        }
    })
}

/// The run log's first lines: the test, its machines, kernel and accelerator; coverage
/// and kept disks.
fn log_start(log: &Log, plan: &Plan, boot: &BootFiles, options: &FleetOptions, coverage: bool) {
    log.info(&format!(
        "flotilla {}: test `{}`, {} machine(s)",
        env!("CARGO_PKG_VERSION"),
        plan.name,
        plan.machines.len(),
    ));
    for files in &boot.arches {
        log.info(&format!(
            "{}: kernel {} ({}), accelerator {}",
            files.arch, files.kernel_version, files.boot_note, files.accel
        ));
        for r in &files.releases {
            log.info(&format!(
                "{}: Debian {} machines: kernel {} ({})",
                files.arch, r.release, r.kernel_version, r.boot_note
            ));
        }
    }
    if coverage {
        log.info(&format!(
            "coverage: on; every machine's data goes to {}",
            options.log_dir.join("coverage").display()
        ));
    }
    if let Some(dir) = &options.keep_state {
        log.info(&format!(
            "machine disks are kept in {} (--keep-state): existing ones are reused",
            dir.display()
        ));
    }
}

//! The [`Machine`] type, and what a running machine holds ([`Running`]).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;

use super::config::MachineConfig;
use super::console::{Console, ConsoleState};
use super::events::Watch;
use crate::agent_client::{Guest, GuestError};
use crate::error::Error;
use flotilla_host::process::Process;

/// A booted machine: its QEMU, QMP connection and agent, and what watches them.
#[derive(Debug)]
pub(super) struct Running {
    pub(super) process: Arc<Process>,
    pub(super) qmp: flotilla_qmp::Client,
    /// The agent connection, and how many times the guest had closed the agent's port
    /// when it was made: a later close means the agent restarted, and the next call
    /// connects again.
    pub(super) guest: std::sync::RwLock<(u64, Option<Arc<Guest>>)>,
    pub(super) port_closes: watch::Receiver<u64>,
    pub(super) reconnecting: tokio::sync::Mutex<()>,
    pub(super) state: watch::Receiver<ConsoleState>,
    pub(super) stderr_tail: Arc<Console>,
    /// Why the VM is paused, while it is.
    pub(super) paused: watch::Receiver<Option<String>>,
    /// Why the guest was taken as not answering (a call past its limit that it never
    /// reported): what is left to ask it at the end of the run is skipped.
    pub(super) not_answering: Mutex<Option<String>>,
}

impl Running {
    /// Takes the guest as not answering, for `why`.
    pub(super) fn not_answering(&self, why: String) {
        if let Ok(mut w) = self.not_answering.lock() {
            w.get_or_insert(why);
        }
    }

    /// Why the guest was taken as not answering, if it was.
    pub(super) fn why_not_answering(&self) -> Option<String> {
        self.not_answering.lock().ok().and_then(|w| w.clone())
    }
}

/// A QEMU that is booting, and what tells why it died if it does.
pub(super) struct Booting {
    pub(super) process: Arc<Process>,
    pub(super) state: watch::Receiver<ConsoleState>,
    pub(super) stderr_tail: Arc<Console>,
}

/// A spawned QEMU with its QMP connection and event watcher.
pub(super) struct Spawned {
    pub(super) booting: Booting,
    pub(super) qmp: flotilla_qmp::Client,
    pub(super) events: Watch,
}

impl Spawned {
    /// The running machine, driven through `guest`.
    pub(super) fn into_running(self, guest: Guest) -> Running {
        let closes_at_connect = *self.events.port_closes.borrow();
        Running {
            process: self.booting.process,
            qmp: self.qmp,
            guest: std::sync::RwLock::new((closes_at_connect, Some(Arc::new(guest)))),
            port_closes: self.events.port_closes,
            reconnecting: tokio::sync::Mutex::new(()),
            state: self.booting.state,
            stderr_tail: self.booting.stderr_tail,
            paused: self.events.paused,
            not_answering: Mutex::new(None),
        }
    }
}

/// A machine of a fleet ([`crate::Fleet`]). Cheap to share; all methods take `&self`.
#[derive(Debug)]
pub struct Machine {
    pub(super) config: MachineConfig,
    pub(super) running: tokio::sync::Mutex<Option<Arc<Running>>>,
    pub(super) console: Arc<Console>,
    pub(super) qemu_pid: Mutex<Option<u32>>,
    /// Whether the guest kernel had gcov data when its programs were last ended for
    /// coverage (`None`: never ended).
    pub(super) kernel_gcov: Mutex<Option<bool>>,
    /// How the latest start went (`None`: never started).
    pub(super) started_as: Mutex<Option<StartKind>>,
    /// Bytes for the serial console's input (QEMU's stdin), while its QEMU runs.
    pub(super) console_input: Mutex<Option<tokio::sync::mpsc::UnboundedSender<Vec<u8>>>>,
}

/// How a machine's latest start went: [`Machine::started_as`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartKind {
    /// Booted from its kernel (cold), whether or not it then saved a snapshot; also a
    /// machine whose snapshot was refused and that booted instead.
    Booted,
    /// Restored from a saved, booted state (`snapshot: restored from ...` in the log).
    Restored,
}

impl Machine {
    pub(crate) fn new(config: MachineConfig) -> Machine {
        Machine {
            config,
            running: tokio::sync::Mutex::new(None),
            console: Arc::default(),
            qemu_pid: Mutex::new(None),
            kernel_gcov: Mutex::new(None),
            started_as: Mutex::new(None),
            console_input: Mutex::new(None),
        }
    }

    pub fn name(&self) -> &str {
        &self.config.name
    }

    pub(super) fn log(&self, message: &str) {
        self.config.log.machine(&self.config.name, message);
    }

    /// How long a command may take unless its call says otherwise.
    pub fn command_timeout(&self) -> Duration {
        self.config.command_timeout
    }

    /// A QMP failure as this machine's error.
    pub(super) fn qmp_failed(&self, source: flotilla_qmp::Error) -> Error {
        Error::Qmp {
            machine: self.config.name.clone(),
            source,
        }
    }

    /// A failure talking to the guest's agent while `doing` something, as this
    /// machine's error.
    pub(super) fn agent_failed(
        &self,
        doing: impl Into<String>,
        source: impl Into<GuestError>,
    ) -> Error {
        Error::Agent {
            machine: self.config.name.clone(),
            doing: doing.into(),
            source: source.into(),
        }
    }

    /// The host name the guest gets.
    pub fn hostname(&self) -> String {
        self.config.hostname()
    }

    /// Whether the machine's QEMU is running: started (booted or restored) and not
    /// exited since (a guest that powered itself off is not).
    pub async fn is_up(&self) -> bool {
        self.running
            .lock()
            .await
            .as_ref()
            .is_some_and(|r| r.process.status().is_none())
    }

    /// The process id of the machine's latest QEMU, from the moment it is spawned (also
    /// while it boots, and after it exited).
    pub fn qemu_pid(&self) -> Option<u32> {
        self.qemu_pid.lock().ok().and_then(|p| *p)
    }

    /// How the machine's latest start went: booted or restored from a snapshot; `None`
    /// before its first start. Benchmarks and tests check with it that a machine
    /// meant to be restored was (a refused snapshot boots cold, and says so only in
    /// the log).
    pub fn started_as(&self) -> Option<StartKind> {
        self.started_as.lock().ok().and_then(|k| *k)
    }

    /// The QMP client of the running machine.
    pub async fn qmp(&self) -> Result<flotilla_qmp::Client, Error> {
        Ok(self.running().await?.qmp.clone())
    }

    /// A client for the machine's qemu-guest-agent port (useful when the image runs
    /// qemu-ga beside flotilla-agent).
    pub async fn qga_client(&self) -> Result<flotilla_qmp::qga::GuestAgent, Error> {
        self.running().await?;
        let path = self.config.socket_dir().join("qga.sock");
        flotilla_qmp::qga::GuestAgent::connect_unix(&path)
            .await
            .map_err(|source| self.agent_failed("connecting to qemu-guest-agent", source))
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

    /// The last `n` console lines.
    pub fn console_tail(&self, n: usize) -> Vec<String> {
        self.console.tail(n)
    }
}

//! Deaths of the network's helper processes: a watcher per helper (a VLAN's
//! `vde_switch`, a NIC's link switch and `wirefilter`, a VLAN capture's or a cable's
//! `vde_plug`) that, when the helper exits without the driver asking, logs it at once
//! (terminal and `driver.log`), marks it on the timeline (`events.jsonl`, so
//! `report.html`) and records it in the run's [`Deaths`], which make the calls it
//! concerns fail.
//!
//! A helper the driver stops itself (at clean-up, or dropped) is no death: its
//! [`Watched`] guard says so before the signal is sent. A helper that exits because
//! one it depends on died first (a capture's `vde_plug` when its VLAN's switch is
//! killed) is logged as a consequence, and the first death stays the cause.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use tokio::sync::watch;

use crate::error::Error;
use crate::log::Log;
use flotilla_host::process::{describe_status, ExitWatch};

/// What a VLAN's switch is called.
pub(crate) const SWITCH: &str = "vde_switch";
/// What a NIC's link switch is called.
pub(crate) const LINK_SWITCH: &str = "link switch (vde_switch)";
/// What a NIC's wire filter is called.
pub(crate) const WIREFILTER: &str = "wirefilter";
/// What a VLAN capture's plug is called.
pub(crate) const CAPTURE: &str = "capture (vde_plug)";

/// A helper process, as the log and errors name it: `vlan 1: vde_switch`, or for a
/// machine's link `machine `server` vlan 1: wirefilter`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct HelperName {
    pub vlan: u8,
    /// The machine whose link it is (a link switch, a wirefilter).
    pub machine: Option<String>,
    /// What it is: `vde_switch`, `link switch (vde_switch)`, `wirefilter`, ...
    pub what: String,
}

impl HelperName {
    /// A helper of the whole VLAN.
    pub fn vlan(vlan: u8, what: impl Into<String>) -> HelperName {
        HelperName {
            vlan,
            machine: None,
            what: what.into(),
        }
    }

    /// A helper of `machine`'s link on `vlan`.
    pub fn link(machine: &str, vlan: u8, what: impl Into<String>) -> HelperName {
        HelperName {
            vlan,
            machine: Some(machine.to_owned()),
            what: what.into(),
        }
    }

    /// Whether `other`'s death explains this helper's: every helper of a VLAN hangs
    /// on its switch, and a wirefilter on its link switch too.
    pub fn depends_on(&self, other: &HelperName) -> bool {
        let is_switch = |h: &HelperName| h.machine.is_none() && h.what == SWITCH;
        if self.vlan != other.vlan || self == other || is_switch(self) {
            return false;
        }
        is_switch(other)
            || (self.what == WIREFILTER
                && other.what == LINK_SWITCH
                && self.machine.is_some()
                && self.machine == other.machine)
    }
}

impl std::fmt::Display for HelperName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if let Some(machine) = &self.machine {
            write!(f, "machine `{machine}` ")?;
        }
        write!(f, "vlan {}: {}", self.vlan, self.what)
    }
}

/// A helper that exited while the test ran, unasked.
#[derive(Debug, Clone)]
pub(crate) struct Death {
    pub helper: HelperName,
    /// How: `was killed by signal 9 (SIGKILL)`, `exited with status 1`.
    pub status: String,
}

impl Death {
    /// The error of a call this death fails; `during`, what the call was doing when
    /// it happened (`machine `b` was running `sleep 9``), for a call it cut short.
    pub fn error(&self, during: Option<String>) -> Error {
        Error::HelperDied {
            helper: self.helper.to_string(),
            vlan: self.helper.vlan,
            machine: self.helper.machine.clone(),
            status: self.status.clone(),
            during,
        }
    }
}

/// The helper deaths of a run, in the order they happened. Cheap to clone.
#[derive(Debug, Clone)]
pub(crate) struct Deaths {
    list: Arc<watch::Sender<Vec<Death>>>,
}

impl Default for Deaths {
    fn default() -> Deaths {
        Deaths {
            list: Arc::new(watch::channel(Vec::new()).0),
        }
    }
}

impl Deaths {
    /// The first death, the one every later call reports.
    pub fn first(&self) -> Option<Death> {
        self.list.borrow().first().cloned()
    }

    /// Resolves with the first death of a helper of one of `vlans`, at once if there
    /// was one.
    pub async fn on(&self, vlans: &[u8]) -> Death {
        let mut rx = self.list.subscribe();
        let concerned = |list: &Vec<Death>| {
            list.iter()
                .find(|d| vlans.contains(&d.helper.vlan))
                .cloned()
        };
        let found = match rx.wait_for(|list| concerned(list).is_some()).await {
            Ok(list) => concerned(&list),
            // The sender lives as long as `self`.
            Err(_) => None,
        };
        match found {
            Some(death) => death,
            None => std::future::pending().await,
        }
    }

    fn record(&self, death: Death) {
        self.list.send_modify(|list| list.push(death));
    }
}

/// The watch on one helper; dropping it, or [`Watched::stopping`], tells the watcher
/// that the driver stops the helper itself.
#[derive(Debug)]
pub(crate) struct Watched {
    asked: Arc<AtomicBool>,
}

impl Watched {
    /// The driver is about to stop the helper: its exit is no death.
    pub fn stopping(&self) {
        self.asked.store(true, Ordering::SeqCst);
    }
}

impl Drop for Watched {
    fn drop(&mut self) {
        self.stopping();
    }
}

/// Watches `helper` (its exit, `exit`) until it exits. Unasked, that is a death:
/// logged, marked and recorded in `deaths`, unless one of `upstream` (the helpers it
/// depends on) had exited already, which makes it a consequence, only logged. The
/// watching task ends when the helper exits, whoever ends it.
pub(crate) fn watch(
    helper: HelperName,
    exit: ExitWatch,
    upstream: Vec<(HelperName, ExitWatch)>,
    deaths: &Deaths,
    log: &Log,
) -> Watched {
    let asked = Arc::new(AtomicBool::new(false));
    let watched = Watched {
        asked: asked.clone(),
    };
    let deaths = deaths.clone();
    let log = log.clone();
    tokio::spawn(async move {
        let status = describe_status(exit.exited().await);
        if asked.load(Ordering::SeqCst) {
            return;
        }
        if let Some((cause, _)) = upstream.iter().find(|(_, e)| e.has_exited()) {
            log.info(&format!("{helper} {status}, after {cause}"));
            return;
        }
        log.info(&format!(
            "{helper} {status} while the test ran: the calls under way on vlan {} and every later call fail",
            helper.vlan
        ));
        log.mark(
            helper.machine.as_deref(),
            "helper",
            &helper.to_string(),
            Err(status.clone()),
            None,
        );
        deaths.record(Death { helper, status });
    });
    watched
}

#[cfg(test)]
mod tests {
    use super::*;
    use flotilla_host::process::Process;
    use std::time::Duration;

    fn sleeper() -> tokio::process::Command {
        let mut cmd = tokio::process::Command::new("sleep");
        cmd.arg("30");
        cmd
    }

    #[test]
    fn helpers_hang_on_their_vlan_s_switch_and_a_wirefilter_on_its_link_switch() {
        let switch = HelperName::vlan(1, SWITCH);
        let link = HelperName::link("a", 1, LINK_SWITCH);
        let filter = HelperName::link("a", 1, WIREFILTER);
        let capture = HelperName::vlan(1, CAPTURE);
        for h in [&link, &filter, &capture] {
            assert!(h.depends_on(&switch), "{h}");
            assert!(!switch.depends_on(h), "{h}");
        }
        assert!(filter.depends_on(&link));
        assert!(!link.depends_on(&filter));
        assert!(!filter.depends_on(&HelperName::link("b", 1, LINK_SWITCH)));
        assert!(!filter.depends_on(&HelperName::vlan(2, SWITCH)));
        assert!(!capture.depends_on(&link));
        assert_eq!(filter.to_string(), "machine `a` vlan 1: wirefilter");
        assert_eq!(switch.to_string(), "vlan 1: vde_switch");
    }

    #[tokio::test]
    async fn a_killed_helper_is_a_death_and_a_stopped_one_is_not() {
        let dir = tempfile::tempdir().unwrap();
        let log = Log::create(dir.path(), false).unwrap();
        let deaths = Deaths::default();
        let (switch, _io) = Process::spawn("switch", sleeper()).await.unwrap();
        let (plug, _io) = Process::spawn("plug", sleeper()).await.unwrap();
        let (filter, _io) = Process::spawn("filter", sleeper()).await.unwrap();
        let switch_name = HelperName::vlan(1, "vde_switch");
        let _w1 = watch(
            switch_name.clone(),
            switch.exit_watch(),
            vec![],
            &deaths,
            &log,
        );
        let _w2 = watch(
            HelperName::vlan(1, "capture (vde_plug)"),
            plug.exit_watch(),
            vec![(switch_name, switch.exit_watch())],
            &deaths,
            &log,
        );
        let w3 = watch(
            HelperName::link("a", 2, "wirefilter"),
            filter.exit_watch(),
            vec![],
            &deaths,
            &log,
        );
        // Stopped by the driver: no death.
        w3.stopping();
        filter.close(Duration::from_secs(30)).await;
        // The switch dies, then the plug that hung on it.
        switch.signal(libc::SIGKILL);
        let death = tokio::time::timeout(Duration::from_secs(30), deaths.on(&[1]))
            .await
            .expect("the death was not recorded within 30 s");
        assert_eq!(death.helper.to_string(), "vlan 1: vde_switch");
        plug.signal(libc::SIGTERM);
        plug.exited().await;
        let e = death.error(None).to_string();
        assert_eq!(
            e,
            "vlan 1: vde_switch was killed by signal 9 (SIGKILL) while the test ran"
        );
        // The watchers log as they end; give the plug's a moment on a busy host.
        let text = || std::fs::read_to_string(dir.path().join("driver.log")).unwrap();
        let started = std::time::Instant::now();
        while !text().contains("capture") && started.elapsed() < Duration::from_secs(30) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let text = text();
        assert!(
            text.contains("vlan 1: capture (vde_plug) was killed by signal 15 (SIGTERM), after vlan 1: vde_switch"),
            "{text}"
        );
        assert!(!text.contains("wirefilter"), "{text}");
        assert_eq!(deaths.list.borrow().len(), 1);
        let events = std::fs::read_to_string(dir.path().join("events.jsonl")).unwrap();
        assert!(
            events.contains(r#""kind":"helper","label":"vlan 1: vde_switch","outcome":"failed","message":"was killed by signal 9 (SIGKILL)""#),
            "{events}"
        );
        // A link's death names the machine; it concerns its VLAN only.
        let e = Death {
            helper: HelperName::link("server", 2, "wirefilter"),
            status: "exited with status 1".into(),
        }
        .error(Some("machine `server` was running `sleep 9`".into()))
        .to_string();
        assert_eq!(e, "machine `server` vlan 2: wirefilter exited with status 1 while the test ran (machine `server` was running `sleep 9`)");
        assert!(
            tokio::time::timeout(Duration::from_millis(50), deaths.on(&[2]))
                .await
                .is_err()
        );
    }
}

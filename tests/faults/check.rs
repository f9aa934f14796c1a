//! What a finished run must show: an end within the bound with the expected status, an
//! error that names the fault's machine or VLAN, nothing of it left running, and a
//! complete log folder.

use std::path::Path;
use std::time::{Duration, Instant};

use crate::fault::{Fault, Kind, Outcome, MACHINES};
use crate::procs;
use crate::run::{End, Run};

/// The problems of one run, by column of the table.
#[derive(Default, Debug)]
pub struct Verdict {
    pub passed: bool,
    pub hang: Option<String>,
    pub unclear: Option<String>,
    pub leak: Option<String>,
    pub incomplete: Option<String>,
}

impl Verdict {
    pub fn ok(&self) -> bool {
        self.hang.is_none()
            && self.unclear.is_none()
            && self.leak.is_none()
            && self.incomplete.is_none()
    }
}

/// `name` as a word of `text` (`ash` is not in `crash`), case-insensitive.
fn names(text: &str, name: &str) -> bool {
    let text = text.to_lowercase();
    let name = name.to_lowercase();
    let word = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_');
    text.match_indices(&name).any(|(i, _)| {
        !word(text[..i].chars().next_back()) && !word(text[i + name.len()..].chars().next())
    })
}

/// The end and the error.
pub fn ending(fault: &Fault, run: &Run, v: &mut Verdict) {
    if let Err(why) = &run.injected {
        v.unclear = Some(format!("fault not injected: {why}"));
        return;
    }
    let failed = match (run.end, fault.outcome()) {
        (End::Hung, _) => {
            v.hang = Some(format!("still running after {:.0} s: killed", run.secs));
            return;
        }
        (End::Signalled(9), Outcome::Killed) => return,
        (End::Exited(0), Outcome::PassesOrFails) => {
            v.passed = true;
            false
        }
        (End::Exited(1), Outcome::Fails | Outcome::PassesOrFails) => true,
        (end, _) => {
            v.unclear = Some(format!("ended {end:?}, expected {:?}", fault.outcome()));
            return;
        }
    };
    let log = std::fs::read_to_string(run.out.join("driver.log")).unwrap_or_default();
    if matches!(fault.kind, Kind::SnapshotTruncated | Kind::SnapshotFlipped)
        && !log.contains("refused")
    {
        v.unclear = Some("driver.log does not say that the corrupted state was refused".into());
        return;
    }
    if !failed {
        return;
    }
    let wanted = fault.names();
    let ok = if wanted.is_empty() {
        MACHINES
            .iter()
            .chain(&["vlan 1"])
            .any(|n| names(&run.output, n))
    } else {
        // A machine as the product's errors name it; a VLAN as `vlan N`; the machine of
        // a VLAN's fault (its link) as a word.
        wanted.iter().all(|n| match fault.kind {
            Kind::KillSwitch | Kind::KillWirefilter => names(&run.output, n),
            _ => run.output.contains(&format!("machine `{n}`")),
        })
    };
    if !ok {
        let first = run
            .output
            .lines()
            .find(|l| l.contains("FAILED") || l.to_lowercase().contains("error"))
            .unwrap_or("(no error line)");
        v.unclear = Some(format!("error does not name {wanted:?}: {first}"));
    }
}

/// Processes of the run (its TMPDIR in their command line or environment), given a few
/// seconds to go (a killed driver's children die by their parent-death signal), and
/// run directories (`flotilla-*`) in the TMPDIR other than `allowed`.
pub fn leaks(tmp: &Path, allowed: Option<&Path>, v: &mut Verdict) {
    let until = Instant::now() + Duration::from_secs(5);
    let mut left = procs::naming(tmp);
    while !left.is_empty() && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(100));
        left = procs::naming(tmp);
    }
    let mut found = Vec::new();
    for p in &left {
        found.push(format!("pid {} {}", p.pid, p.line()));
        procs::signal(p.pid, libc::SIGKILL);
    }
    for d in run_dirs(tmp) {
        if Some(d.as_path()) != allowed {
            found.push(format!("run dir {}", d.display()));
            let _ = std::fs::remove_dir_all(&d);
        }
    }
    if !found.is_empty() {
        v.leak = Some(found.join("; "));
    }
}

pub fn run_dirs(tmp: &Path) -> Vec<std::path::PathBuf> {
    std::fs::read_dir(tmp)
        .map(|es| {
            es.flatten()
                .filter(|e| e.file_name().to_string_lossy().starts_with("flotilla-"))
                .map(|e| e.path())
                .collect()
        })
        .unwrap_or_default()
}

/// The log folder: `driver.log`, `events.jsonl`, each machine's `console.log` and
/// `qemu.log`, and a `report.html` whose verdict is the run's.
pub fn logs(run: &Run, v: &mut Verdict) {
    let mut missing = Vec::new();
    let mut need = vec!["driver.log".to_owned(), "events.jsonl".to_owned()];
    for m in MACHINES {
        need.push(format!("{m}/console.log"));
        need.push(format!("{m}/qemu.log"));
    }
    for f in &need {
        // QEMU's stderr may well be empty; the others never are.
        let ok = std::fs::metadata(run.out.join(f))
            .is_ok_and(|m| m.len() > 0 || f.ends_with("qemu.log"));
        if !ok {
            missing.push(f.clone());
        }
    }
    let verdicts: &[&str] = match run.end {
        End::Exited(0) => &["passed"],
        End::Exited(_) => &["failed", "timed out"],
        // A killed driver's page, drawn afterwards by `flotilla report`.
        _ => &["did not finish"],
    };
    match std::fs::read_to_string(run.out.join("report.html")) {
        Ok(html) => {
            let title = html
                .split_once("<title>")
                .and_then(|(_, t)| t.split_once("</title>"))
                .map(|(t, _)| t.to_owned())
                .unwrap_or_default();
            if !verdicts.iter().any(|w| title.ends_with(w)) {
                missing.push(format!(
                    "report.html verdict `{title}` (wanted {verdicts:?})"
                ));
            }
        }
        Err(_) => missing.push("report.html".into()),
    }
    if !missing.is_empty() {
        v.incomplete = Some(missing.join(", "));
    }
}

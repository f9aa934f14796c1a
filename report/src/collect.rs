//! What a run's log folder holds, read for the page: the steps of `events.jsonl`, each
//! machine's console and QEMU lines with their times from `driver.log`, screenshots and
//! other files. Everything here is untrusted text; what cannot be read becomes a note.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use serde::Serialize;

use crate::steps::{self, Event, Outcome};

/// The page's name in a run's log folder (not one of the files it links).
pub const FILE: &str = "report.html";

/// The console log's line after the boot lines of a restored state (the saving
/// machine's boot).
pub const RESTORED_MARK: &str =
    "[flotilla: restored from a snapshot; the lines above are the boot that saved it]";

/// A log line longer than this many bytes is cut.
pub(super) const MAX_LINE: usize = 4000;
/// The most lines of one log a page holds (the last ones); more are left to the file.
const MAX_LINES: usize = 200_000;
/// A screenshot bigger than this is linked, not inlined.
const MAX_INLINE_PNG: u64 = 4 << 20;
/// The console lines quoted under a failure.
const TAIL: usize = 20;

/// A log line: seconds since the run started (none for lines of an earlier run, such
/// as a restored state's boot), and its text.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct Line(pub Option<f64>, pub String);

/// A step of the timeline.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct Step {
    /// None: the test's own (a subtest, the error).
    pub machine: Option<String>,
    pub kind: String,
    pub label: String,
    pub start: f64,
    /// None for a mark (no duration).
    pub end: Option<f64>,
    /// `ok`, `failed`, `ended` (no verdict), `unfinished` (never ended).
    pub outcome: &'static str,
    pub message: Option<String>,
    pub file: Option<String>,
    /// The step that failed the test.
    pub failing: bool,
}

impl Step {
    /// A step that started at `start` and has not ended.
    fn new(machine: &Option<String>, kind: &str, label: &str, start: f64) -> Step {
        Step {
            machine: machine.clone(),
            kind: kind.to_owned(),
            label: label.to_owned(),
            start,
            end: None,
            outcome: "unfinished",
            message: None,
            file: None,
            failing: false,
        }
    }
}

/// One machine's evidence.
#[derive(Debug, Default, Serialize)]
pub(crate) struct MachineLogs {
    pub name: String,
    pub console: Vec<Line>,
    pub qemu: Vec<Line>,
    /// (file name, `data:` URI) of each screenshot.
    #[serde(skip)]
    pub screenshots: Vec<(String, String)>,
    /// Other files, relative to the log folder (logs, captures, big screenshots).
    #[serde(skip)]
    pub files: Vec<String>,
}

/// A run's log folder, read.
#[derive(Debug, Default)]
pub(crate) struct Collected {
    pub machines: Vec<MachineLogs>,
    pub steps: Vec<Step>,
    /// The run's own files worth a link (driver.log, the coverage report, copies).
    pub files: Vec<String>,
    /// What could not be read, for the reader of the page.
    pub notes: Vec<String>,
    /// The run's last recorded time.
    pub end: f64,
}

/// Reads the log folder `dir`.
pub(crate) fn collect(dir: &Path) -> Collected {
    let mut c = Collected::default();
    let names = machine_folders(dir);
    let (events, bad) = match std::fs::read(dir.join(steps::FILE)) {
        Ok(bytes) => steps::parse(&String::from_utf8_lossy(&bytes)),
        Err(e) => {
            c.notes
                .push(format!("no timeline: reading {}: {e}", steps::FILE));
            (Vec::new(), 0)
        }
    };
    if bad > 0 {
        c.notes.push(format!(
            "{}: {bad} line(s) could not be read (cut by a crash?) and are left out",
            steps::FILE
        ));
    }
    let mut by_machine: BTreeMap<String, MachineLogs> = names
        .iter()
        .map(|n| {
            let logs = MachineLogs {
                name: n.clone(),
                ..MachineLogs::default()
            };
            (n.clone(), logs)
        })
        .collect();
    match std::fs::read(dir.join("driver.log")) {
        Ok(bytes) => {
            let (cut, end) = driver_lines(&bytes, &mut by_machine);
            c.end = end;
            if cut > 0 {
                c.notes.push(format!(
                    "driver.log: {cut} line(s) longer than {MAX_LINE} bytes are cut"
                ));
            }
        }
        Err(e) => c
            .notes
            .push(format!("no console times: reading driver.log: {e}")),
    }
    c.steps = timeline(&events, c.end);
    c.end = c
        .steps
        .iter()
        .map(|s| s.end.unwrap_or(s.start))
        .fold(c.end, f64::max);
    for step in &c.steps {
        if let Some(m) = &step.machine {
            by_machine.entry(m.clone()).or_insert_with(|| MachineLogs {
                name: m.clone(),
                ..MachineLogs::default()
            });
        }
    }
    for m in by_machine.values_mut() {
        machine_files(dir, m, &mut c.notes);
        for (log, lines) in [("console", &mut m.console), ("qemu", &mut m.qemu)] {
            let over = lines.len().saturating_sub(MAX_LINES);
            if over > 0 {
                lines.drain(..over);
                c.notes.push(format!(
                    "{}: the first {over} {log} line(s) are left out (see its {log}.log)",
                    m.name
                ));
            }
        }
    }
    c.machines = by_machine.into_values().collect();
    c.files = run_files(dir, &names);
    c
}

/// The sub-folders of `dir` that are machines': those with a console or QEMU log (not
/// `coverage/`). Their names are what the spec allowed; this page checks no names.
fn machine_folders(dir: &Path) -> BTreeSet<String> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return BTreeSet::new();
    };
    entries
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| {
            ["console.log", "qemu.log"]
                .iter()
                .any(|f| dir.join(n).join(f).is_file())
        })
        .collect()
}

/// Sorts `driver.log`'s console and QEMU lines into the machines' logs; how many lines
/// were cut, and the last time seen.
fn driver_lines(bytes: &[u8], machines: &mut BTreeMap<String, MachineLogs>) -> (usize, f64) {
    let mut cut = 0;
    let mut end = 0.0f64;
    for raw in bytes.split(|b| *b == b'\n') {
        let (line, was_cut) = bounded(raw);
        cut += usize::from(was_cut);
        let Some((t, rest)) = timed(&line) else {
            continue;
        };
        end = end.max(t);
        if let Some((name, text)) = rest.split_once(" # ") {
            if let Some(m) = machines.get_mut(name) {
                m.console.push(Line(Some(t), text.to_owned()));
                continue;
            }
        }
        if let Some((name, text)) = rest.split_once(": qemu: ") {
            if let Some(m) = machines.get_mut(name) {
                m.qemu.push(Line(Some(t), text.to_owned()));
            }
        }
    }
    (cut, end)
}

/// A line's text, at most [`MAX_LINE`] bytes (invalid UTF-8 replaced), and whether it
/// was cut.
pub(super) fn bounded(raw: &[u8]) -> (String, bool) {
    let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
    if raw.len() <= MAX_LINE {
        return (String::from_utf8_lossy(raw).into_owned(), false);
    }
    let mut text = String::from_utf8_lossy(&raw[..MAX_LINE]).into_owned();
    text.push_str(&format!(" … ({} bytes cut)", raw.len() - MAX_LINE));
    (text, true)
}

/// `[  12.345] rest` as (12.345, rest).
fn timed(line: &str) -> Option<(f64, &str)> {
    let (t, rest) = line.strip_prefix('[')?.split_once("] ")?;
    let t: f64 = t.trim().parse().ok()?;
    t.is_finite().then_some((t, rest))
}

/// The steps of `events`, in the order they started; a step that never ended lasts
/// until `end`. When the run has an `error` mark, the last failed step (not a
/// subtest) is the failing one, or without one the last step cut short.
fn timeline(events: &[Event], end: f64) -> Vec<Step> {
    let mut steps = Vec::new();
    let mut open: BTreeMap<u64, usize> = BTreeMap::new();
    let mut last = end;
    for e in events {
        match e {
            Event::Start {
                t,
                id,
                machine,
                kind,
                label,
            } => {
                last = last.max(*t);
                open.insert(*id, steps.len());
                steps.push(Step::new(machine, kind, label, *t));
            }
            Event::End {
                t,
                id,
                outcome,
                message,
            } => {
                last = last.max(*t);
                if let Some(s) = open.remove(id).and_then(|i| steps.get_mut(i)) {
                    s.end = Some(*t);
                    s.outcome = outcome_name(*outcome);
                    s.message.clone_from(message);
                }
            }
            Event::Mark {
                t,
                machine,
                kind,
                label,
                outcome,
                message,
                file,
            } => {
                last = last.max(*t);
                steps.push(Step {
                    outcome: outcome_name(*outcome),
                    message: message.clone(),
                    file: file.clone(),
                    ..Step::new(machine, kind, label, *t)
                });
            }
        }
    }
    // Steps a crash left open last until the end of what was recorded.
    for i in open.into_values() {
        if let Some(s) = steps.get_mut(i) {
            s.end = Some(last);
        }
    }
    if steps.iter().any(|s| s.kind == "error") {
        // The last step that failed; with none (a timeout, Ctrl-C), the last one cut
        // short.
        let last_of = |outcomes: &[&str]| {
            steps
                .iter()
                .enumerate()
                .filter(|(_, s)| outcomes.contains(&s.outcome))
                .filter(|(_, s)| !matches!(&*s.kind, "subtest" | "error"))
                .max_by(|(_, a), (_, b)| {
                    let at = |s: &Step| s.end.unwrap_or(s.start);
                    at(a).total_cmp(&at(b))
                })
                .map(|(i, _)| i)
        };
        let failing = last_of(&["failed"]).or_else(|| last_of(&["ended", "unfinished"]));
        if let Some(s) = failing.and_then(|i| steps.get_mut(i)) {
            s.failing = true;
        }
    }
    steps
}

fn outcome_name(o: Outcome) -> &'static str {
    match o {
        Outcome::Ok => "ok",
        Outcome::Failed => "failed",
        Outcome::Ended => "ended",
    }
}

/// A machine's folder: its console lines of an earlier boot (a restored state's), its
/// screenshots and files.
fn machine_files(dir: &Path, m: &mut MachineLogs, notes: &mut Vec<String>) {
    let folder = dir.join(&m.name);
    if let Ok(bytes) = std::fs::read(folder.join("console.log")) {
        let lines: Vec<&[u8]> = bytes.split(|b| *b == b'\n').collect();
        let restored = lines.iter().position(|l| *l == RESTORED_MARK.as_bytes());
        let earlier: Vec<Line> = match restored {
            // The lines of the boot that saved the state, and the mark.
            Some(at) => lines[..=at]
                .iter()
                .map(|l| Line(None, bounded(l).0))
                .collect(),
            // No times from driver.log: the file's lines, untimed.
            None if m.console.is_empty() => lines
                .iter()
                .filter(|l| !l.is_empty())
                .map(|l| Line(None, bounded(l).0))
                .collect(),
            None => Vec::new(),
        };
        m.console.splice(0..0, earlier);
    }
    let Ok(entries) = std::fs::read_dir(&folder) else {
        return;
    };
    let mut names: Vec<String> = entries
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
        .filter_map(|e| e.file_name().into_string().ok())
        .collect();
    names.sort();
    for name in names {
        let rel = format!("{}/{name}", m.name);
        let path = folder.join(&name);
        let small = std::fs::metadata(&path).is_ok_and(|md| md.len() <= MAX_INLINE_PNG);
        if name.ends_with(".png") && small {
            match std::fs::read(&path) {
                Ok(png) if png.starts_with(b"\x89PNG") => {
                    let uri = format!(
                        "data:image/png;base64,{}",
                        flotilla_qmp::base64::encode(&png)
                    );
                    m.screenshots.push((name, uri));
                    continue;
                }
                Ok(_) => notes.push(format!("{rel}: not a PNG file; linked")),
                Err(e) => notes.push(format!("{rel}: {e}; linked")),
            }
        }
        m.files.push(rel);
    }
}

/// The run folder's own files worth a link, and its folders other than the machines'
/// (the coverage report's page instead of its folder).
fn run_files(dir: &Path, machines: &BTreeSet<String>) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<String> = entries
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let is_dir = e.file_type().ok()?.is_dir();
            match (is_dir, &*name) {
                (false, FILE) => None,
                (false, _) => Some(name),
                (true, "coverage") => {
                    let page = ["coverage/index.html", "coverage/genhtml/index.html"];
                    page.iter()
                        .find(|p| dir.join(p).is_file())
                        .map(|p| (*p).to_owned())
                }
                (true, _) if machines.contains(&name) => None,
                (true, _) => Some(format!("{name}/")),
            }
        })
        .collect();
    files.sort();
    files
}

/// The last [`TAIL`] console lines of `machine`.
pub(crate) fn console_tail(c: &Collected, machine: &str) -> Vec<String> {
    let Some(m) = c.machines.iter().find(|m| m.name == machine) else {
        return Vec::new();
    };
    let skip = m.console.len().saturating_sub(TAIL);
    m.console.iter().skip(skip).map(|l| l.1.clone()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, path: &str, bytes: &[u8]) {
        let p = dir.join(path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, bytes).unwrap();
    }

    #[test]
    fn console_and_qemu_lines_go_to_their_machines_with_their_times() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        write(d, "server/console.log", b"");
        write(d, "client/qemu.log", b"");
        write(
            d,
            "driver.log",
            b"[   0.100] flotilla 0.1.0: test `t`\n\
              [   1.250] server # Linux version 6.1 # with a hash\n\
              [   1.300] client: qemu: warning: x: y\n\
              [   1.400] client: starting\n\
              [   1.500] nosuch # not a machine\n\
              [   2.000] server # bad \xff byte\n\
              garbage\n\
              [   2.5",
        );
        let c = collect(d);
        let names: Vec<&str> = c.machines.iter().map(|m| &*m.name).collect();
        assert_eq!(names, ["client", "server"]);
        let server = &c.machines[1];
        assert_eq!(
            server.console,
            [
                Line(Some(1.25), "Linux version 6.1 # with a hash".into()),
                Line(Some(2.0), "bad \u{fffd} byte".into())
            ]
        );
        assert_eq!(
            c.machines[0].qemu,
            [Line(Some(1.3), "warning: x: y".into())]
        );
        assert!(c.machines[0].console.is_empty());
        assert_eq!(c.end, 2.0);
        // No events file: a note, no steps.
        assert!(
            c.notes.iter().any(|n| n.starts_with("no timeline")),
            "{:?}",
            c.notes
        );
        assert!(c.steps.is_empty());
    }

    #[test]
    fn without_driver_log_the_console_file_is_shown_untimed_and_a_long_log_is_cut() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        write(d, "vm/console.log", b"one\ntwo\n");
        let mut long = Vec::new();
        for i in 0..MAX_LINES + 5 {
            long.extend_from_slice(format!("[   1.000] big # {i}\n").as_bytes());
        }
        write(d, "big/console.log", b"");
        let c = collect(d);
        assert!(
            c.notes.iter().any(|n| n.starts_with("no console times")),
            "{:?}",
            c.notes
        );
        let vm = c.machines.iter().find(|m| m.name == "vm").unwrap();
        assert_eq!(
            vm.console,
            [Line(None, "one".into()), Line(None, "two".into())]
        );
        write(d, "driver.log", &long);
        let c = collect(d);
        let big = c.machines.iter().find(|m| m.name == "big").unwrap();
        assert_eq!(big.console.len(), MAX_LINES);
        assert_eq!(big.console[0].1, "5");
        assert!(c
            .notes
            .iter()
            .any(|n| n == "big: the first 5 console line(s) are left out (see its console.log)"));
    }

    #[test]
    fn a_restored_machine_keeps_the_saving_boot_lines_first() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        write(
            d,
            "vm/console.log",
            format!("old boot\n{RESTORED_MARK}\nnew\n").as_bytes(),
        );
        write(d, "driver.log", b"[   3.000] vm # new\n");
        let c = collect(d);
        let console = &c.machines[0].console;
        assert_eq!(console.len(), 3);
        assert_eq!(console[0], Line(None, "old boot".into()));
        assert_eq!(console[1].1, RESTORED_MARK);
        assert_eq!(console[2], Line(Some(3.0), "new".into()));
    }

    #[test]
    fn steps_pair_up_a_crash_leaves_one_open_and_the_last_failure_is_failing() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let lines = [
            r#"{"event":"start","t":1.0,"id":0,"machine":"vm","kind":"boot","label":"booting"}"#,
            r#"{"event":"end","t":2.0,"id":0,"outcome":"ok"}"#,
            r#"{"event":"start","t":2.0,"id":1,"kind":"subtest","label":"s"}"#,
            r#"{"event":"start","t":2.1,"id":2,"machine":"vm","kind":"command","label":"`false`"}"#,
            r#"{"event":"end","t":2.2,"id":2,"outcome":"failed","message":"exit status 1"}"#,
            r#"{"event":"end","t":2.3,"id":1,"outcome":"failed","message":"x"}"#,
            r#"{"event":"start","t":2.4,"id":3,"machine":"vm","kind":"command","label":"`sleep 9`"}"#,
            r#"{"event":"mark","t":2.5,"kind":"error","label":"x","outcome":"failed"}"#,
            r#"{"event":"end","t":2."#,
        ];
        write(d, steps::FILE, lines.join("\n").as_bytes());
        let c = collect(d);
        assert_eq!(c.steps.len(), 5);
        let failing: Vec<&str> = c
            .steps
            .iter()
            .filter(|s| s.failing)
            .map(|s| &*s.label)
            .collect();
        assert_eq!(failing, ["`false`"]);
        assert_eq!(c.steps[1].outcome, "failed");
        assert_eq!(c.steps[3].outcome, "unfinished");
        assert_eq!(c.steps[3].end, Some(2.5));
        assert_eq!(
            c.machines.len(),
            1,
            "a machine named only by steps has a lane"
        );
        assert!(c
            .notes
            .iter()
            .any(|n| n.contains("1 line(s) could not be read")));
    }

    #[test]
    fn a_huge_line_is_cut_and_screenshots_are_inlined_or_linked() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let mut log = b"[   1.000] vm # ".to_vec();
        log.extend(std::iter::repeat(b'x').take(MAX_LINE * 3));
        write(d, "driver.log", &log);
        write(d, "vm/console.log", b"");
        write(d, "vm/shot.png", b"\x89PNG\r\n\x1a\nrest");
        write(d, "vm/fake.png", b"GIF89a");
        write(d, "vm/vlan1.pcap", b"");
        write(d, "coverage/index.html", b"");
        write(d, "copied.txt", b"");
        let c = collect(d);
        let line = &c.machines[0].console[0].1;
        assert!(
            line.len() < MAX_LINE + 40 && line.ends_with("bytes cut)"),
            "{line}"
        );
        assert!(c.notes.iter().any(|n| n.contains("1 line(s) longer")));
        let vm = &c.machines[0];
        assert_eq!(vm.screenshots.len(), 1);
        assert!(vm.screenshots[0]
            .1
            .starts_with("data:image/png;base64,iVBORw0K"));
        assert_eq!(vm.files, ["vm/console.log", "vm/fake.png", "vm/vlan1.pcap"]);
        assert_eq!(c.files, ["copied.txt", "coverage/index.html", "driver.log"]);
    }
}

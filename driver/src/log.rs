//! The run log: every line goes to the terminal (unless quiet) and to `driver.log` in the
//! run's log directory, with the time since the run started. Console lines read
//! `server # <line>`, driver messages about a machine read `server: <message>`.
//!
//! On a terminal, a status line under the log shows what is in progress for more than a
//! second (boots, commands, waits) and for how long; log lines scroll above it.
//!
//! [`Log::divert`] hands the terminal's lines to a sink instead, for as long as its guard
//! lives: a line editor can then print them above its prompt rather than into the line
//! being typed.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use crate::error::Error;
use crate::spec::names::check_machine_name;
use flotilla_report::steps::{Event, Outcome, Recorder};

/// A cloneable handle to the run log.
#[derive(Debug, Clone)]
pub struct Log {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    start: Instant,
    dir: PathBuf,
    file: Mutex<File>,
    terminal: bool,
    /// Colour the terminal: stderr is a TTY and `NO_COLOR` is unset.
    colour: bool,
    /// Where terminal lines go (stderr), and whether the status line is showing.
    out: Mutex<Terminal>,
    /// What is in progress, by id; shown in the status line on a TTY.
    activities: Mutex<BTreeMap<u64, (String, Instant)>>,
    next_activity: AtomicU64,
    /// Show the status line (stderr is a TTY, colour allowed, and `terminal`).
    progress: bool,
    /// `events.jsonl`: every activity and mark, for the report's timeline.
    steps: Recorder,
}

struct Terminal {
    writer: Box<dyn Write + Send>,
    /// The status line currently drawn, if any.
    status: Option<String>,
    /// While a [`Diverted`] guard lives: its id, and where lines go instead of `writer`.
    sink: Option<(u64, Sink)>,
    next_sink: u64,
}

/// Takes terminal lines in place of the terminal (see [`Log::divert`]).
type Sink = Box<dyn FnMut(&str) + Send>;

impl std::fmt::Debug for Terminal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Terminal")
            .field("status", &self.status)
            .field("diverted", &self.sink.is_some())
            .finish()
    }
}

impl Terminal {
    /// Takes the status line off the screen, if one is drawn.
    fn clear_status(&mut self) {
        if self.status.take().is_some() {
            let _ = self.writer.write_all(b"\r\x1b[2K");
            let _ = self.writer.flush();
        }
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Leave no status line under the last log line.
        if let Ok(out) = self.out.get_mut() {
            out.clear_status();
        }
    }
}

/// Something in progress, shown in the status line until dropped, and a step of the
/// run's timeline (`events.jsonl`) from its start to [`Activity::finish`] or its drop.
#[derive(Debug)]
pub struct Activity {
    log: Log,
    id: u64,
    /// The verdict [`Activity::finish`] gave, written at the drop.
    outcome: Option<(Outcome, Option<String>)>,
}

impl Activity {
    /// Ends the step with a verdict: `Ok` with an optional note (`exit status 0`), or
    /// `Err` with why it failed (its first line is kept).
    pub fn finish(mut self, outcome: Result<Option<String>, String>) {
        self.outcome = Some(match outcome {
            Ok(note) => (Outcome::Ok, note),
            Err(why) => (Outcome::Failed, Some(first_line(&why))),
        });
    }

    /// Ends the step with `result`'s verdict (its error's message when it failed).
    pub fn finish_with<T, E: std::fmt::Display>(self, result: &Result<T, E>) {
        self.finish(result.as_ref().map(|_| None).map_err(ToString::to_string));
    }
}

impl Drop for Activity {
    fn drop(&mut self) {
        if let Ok(mut a) = self.log.inner.activities.lock() {
            a.remove(&self.id);
        }
        let (outcome, message) = self.outcome.take().unwrap_or((Outcome::Ended, None));
        self.log.inner.steps.record(&Event::End {
            t: self.log.now(),
            id: self.id,
            outcome,
            message,
        });
    }
}

/// The first line of `text`, at most 300 characters.
fn first_line(text: &str) -> String {
    let line = text.lines().next().unwrap_or("");
    let mut cut: String = line.chars().take(300).collect();
    if cut.len() < line.len() {
        cut.push('…');
    }
    cut
}

/// Terminal lines go to a sink while this lives (see [`Log::divert`]); dropping it
/// sends them to the terminal again.
#[derive(Debug)]
#[must_use = "the lines go back to the terminal when the guard is dropped"]
pub struct Diverted {
    log: Log,
    id: u64,
}

impl Drop for Diverted {
    fn drop(&mut self) {
        if let Ok(mut out) = self.log.inner.out.lock() {
            // A later diversion replaced this one: leave it in place.
            if out.sink.as_ref().is_some_and(|(id, _)| *id == self.id) {
                out.sink = None;
            }
        }
    }
}

/// Activities younger than this are not shown (most commands take milliseconds).
const SHOW_AFTER: Duration = Duration::from_secs(1);
/// How often the status line is redrawn.
const REDRAW: Duration = Duration::from_millis(250);

/// The status line for `activities` at `now`: those older than [`SHOW_AFTER`], oldest
/// first, cut to `width` characters; `None` when there is nothing to show.
fn status_line(
    activities: &BTreeMap<u64, (String, Instant)>,
    now: Instant,
    width: usize,
) -> Option<String> {
    let mut shown: Vec<(&String, Duration)> = activities
        .values()
        .map(|(label, since)| (label, now.saturating_duration_since(*since)))
        .filter(|(_, age)| *age >= SHOW_AFTER)
        .collect();
    if shown.is_empty() {
        return None;
    }
    shown.sort_by_key(|s| std::cmp::Reverse(s.1));
    let parts: Vec<String> = shown
        .iter()
        .map(|(label, age)| format!("{label} ({:.0} s)", age.as_secs_f64().floor()))
        .collect();
    let line = format!("… {}", parts.join(" · "));
    Some(line.chars().take(width.max(20)).collect())
}

impl Log {
    /// Creates `dir` (emptying a previous run's files there) and `dir/driver.log`.
    pub fn create(dir: &Path, terminal: bool) -> Result<Log, Error> {
        let io = |what: String| move |source| Error::Io { what, source };
        if dir.exists() {
            std::fs::remove_dir_all(dir)
                .map_err(io(format!("clearing log directory {}", dir.display())))?;
        }
        std::fs::create_dir_all(dir)
            .map_err(io(format!("creating log directory {}", dir.display())))?;
        let path = dir.join("driver.log");
        let file = File::create(&path).map_err(io(format!("creating {}", path.display())))?;
        let tty = std::io::IsTerminal::is_terminal(&std::io::stderr());
        let colour = tty && std::env::var_os("NO_COLOR").is_none();
        let dumb = std::env::var("TERM").map_or(true, |t| t == "dumb");
        Ok(Log::with_writer(
            dir,
            file,
            Recorder::create(dir),
            terminal,
            colour,
            terminal && tty && !dumb,
            Box::new(std::io::stderr()),
        ))
    }

    fn with_writer(
        dir: &Path,
        file: File,
        steps: Recorder,
        terminal: bool,
        colour: bool,
        progress: bool,
        writer: Box<dyn Write + Send>,
    ) -> Log {
        let log = Log {
            inner: Arc::new(Inner {
                start: Instant::now(),
                dir: dir.to_path_buf(),
                file: Mutex::new(file),
                terminal,
                colour,
                out: Mutex::new(Terminal {
                    writer,
                    status: None,
                    sink: None,
                    next_sink: 0,
                }),
                activities: Mutex::default(),
                next_activity: AtomicU64::new(0),
                progress,
                steps,
            }),
        };
        if progress {
            let weak = Arc::downgrade(&log.inner);
            let _ = std::thread::Builder::new()
                .name("flotilla-progress".into())
                .spawn(move || redraw_until_dropped(&weak));
        }
        log
    }

    /// Marks `label` as in progress until the returned guard is dropped; on a TTY the
    /// status line shows it once it has lasted a second. A label `name: what` is a
    /// step of machine `name` on the timeline (see [`Log::step`]).
    pub fn activity(&self, label: String) -> Activity {
        match label.split_once(": ") {
            Some((machine, what)) if check_machine_name(machine).is_ok() => {
                let (machine, what) = (machine.to_owned(), what.to_owned());
                self.step(Some(&machine), "step", &what)
            }
            _ => self.step(None, "step", &label),
        }
    }

    /// What is under way now (the steps in progress), the longest first, each as
    /// `label (N s)`.
    pub fn in_progress(&self) -> Vec<String> {
        let now = Instant::now();
        let Ok(activities) = self.inner.activities.lock() else {
            return Vec::new();
        };
        let mut steps: Vec<(&String, Duration)> = activities
            .values()
            .map(|(label, since)| (label, now.saturating_duration_since(*since)))
            .collect();
        steps.sort_by_key(|s| std::cmp::Reverse(s.1));
        steps
            .iter()
            .map(|(label, age)| format!("{label} ({:.0} s)", age.as_secs_f64().floor()))
            .collect()
    }

    /// A step of the timeline, of `machine` (or of the test itself), in progress until
    /// the guard is finished or dropped; shown in the status line as `machine: label`
    /// (`machine: running label` for a command).
    /// `kind` classes it on the page: `boot`, `restore`, `command`, `wait`, `subtest`.
    pub fn step(&self, machine: Option<&str>, kind: &str, label: &str) -> Activity {
        let id = self.inner.next_activity.fetch_add(1, Ordering::Relaxed);
        self.inner.steps.record(&Event::Start {
            t: self.now(),
            id,
            machine: machine.map(str::to_owned),
            kind: kind.to_owned(),
            label: label.to_owned(),
        });
        // Subtests are in the log already, and hold the other steps. Kept without a
        // status line too: a test's timeout names what was under way.
        if kind != "subtest" {
            // A command's label is the command alone: the status line says what is
            // done with it.
            let verb = if kind == "command" { "running " } else { "" };
            let shown = match machine {
                Some(m) => format!("{m}: {verb}{label}"),
                None => format!("{verb}{label}"),
            };
            if let Ok(mut a) = self.inner.activities.lock() {
                a.insert(id, (shown, Instant::now()));
            }
        }
        Activity {
            log: self.clone(),
            id,
            outcome: None,
        }
    }

    /// Runs `work` as a [`Log::step`] that ends with its result's verdict (a failure's
    /// message); dropped unfinished, the step just ends.
    pub(crate) async fn in_step<T, E: std::fmt::Display>(
        &self,
        machine: Option<&str>,
        kind: &str,
        label: &str,
        work: impl std::future::Future<Output = Result<T, E>>,
    ) -> Result<T, E> {
        let step = self.step(machine, kind, label);
        let result = work.await;
        step.finish_with(&result);
        result
    }

    /// A step without a duration on the timeline (a screenshot, a failed condition);
    /// `file` is what it made, in the log folder.
    pub(crate) fn mark(
        &self,
        machine: Option<&str>,
        kind: &str,
        label: &str,
        outcome: Result<(), String>,
        file: Option<&Path>,
    ) {
        let (outcome, message) = match outcome {
            Ok(()) => (Outcome::Ok, None),
            Err(why) => (Outcome::Failed, Some(first_line(&why))),
        };
        let file = file.map(|f| {
            let f = f.strip_prefix(self.dir()).unwrap_or(f);
            f.to_string_lossy().into_owned()
        });
        self.inner.steps.record(&Event::Mark {
            t: self.now(),
            machine: machine.map(str::to_owned),
            kind: kind.to_owned(),
            label: label.to_owned(),
            outcome,
            message,
            file,
        });
    }

    /// Sends the lines the terminal would get (as they would show there, colour
    /// included, without their newline) to `sink` instead, until the returned guard is
    /// dropped; the log file gets them as usual. Meanwhile no status line is drawn: one
    /// showing is cleared now, and it comes back after the guard is dropped.
    ///
    /// For a line editor waiting for input, whose printer shows each line above the
    /// prompt and draws the prompt again. `sink` is called with the terminal's lock
    /// held: it must return at once (hand the line to a channel, say) and not log.
    /// A later call replaces the sink until its own guard is dropped.
    pub fn divert(&self, sink: impl FnMut(&str) + Send + 'static) -> Diverted {
        let id = match self.inner.out.lock() {
            Ok(mut out) => {
                out.clear_status();
                let id = out.next_sink;
                out.next_sink += 1;
                out.sink = Some((id, Box::new(sink)));
                id
            }
            // A poisoned lock: nothing reaches the terminal any more anyway.
            Err(_) => u64::MAX,
        };
        Diverted {
            log: self.clone(),
            id,
        }
    }

    /// The run's log directory.
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// A machine's own log folder (console.log, qemu.log), created on demand.
    pub fn machine_dir(&self, machine: &str) -> Result<PathBuf, Error> {
        let dir = self.inner.dir.join(machine);
        std::fs::create_dir_all(&dir).map_err(|source| Error::Io {
            what: format!("creating {}", dir.display()),
            source,
        })?;
        Ok(dir)
    }

    /// Seconds since the run started.
    pub fn elapsed(&self) -> f64 {
        self.inner.start.elapsed().as_secs_f64()
    }

    /// [`Log::elapsed`] to the millisecond, as `driver.log` has it, for `events.jsonl`.
    fn now(&self) -> f64 {
        (self.elapsed() * 1e3).round() / 1e3
    }

    fn write(&self, line: &str) {
        self.write_styled(line, None);
    }

    /// Writes a line; on a colour terminal the `name` prefix (the part before the
    /// first `: ` or ` # `) is coloured per machine and console lines are dimmed.
    fn write_styled(&self, line: &str, name: Option<&str>) {
        if self.inner.terminal {
            let text = match name.filter(|_| self.inner.colour) {
                Some(name) => {
                    let rest = &line[name.len().min(line.len())..];
                    let console = rest.starts_with(" # ");
                    let dim = if console { "\x1b[2m" } else { "" };
                    format!(
                        "\x1b[1;38;5;{}m{name}\x1b[0m{dim}{rest}\x1b[0m",
                        colour_of(name)
                    )
                }
                None => line.to_owned(),
            };
            let status =
                if self.inner.progress {
                    self.inner.activities.lock().ok().and_then(|a| {
                        status_line(&a, Instant::now(), crate::terminal::status_width())
                    })
                } else {
                    None
                };
            if let Ok(mut out) = self.inner.out.lock() {
                if let Some((_, sink)) = &mut out.sink {
                    sink(&text);
                } else {
                    // The line goes above the status line, which is drawn again below it.
                    let clear = if out.status.is_some() {
                        "\r\x1b[2K"
                    } else {
                        ""
                    };
                    let again = status
                        .as_ref()
                        .map(|s| format!("\x1b[2m{s}\x1b[0m"))
                        .unwrap_or_default();
                    out.status = status;
                    let _ = write!(out.writer, "{clear}{text}\n{again}");
                    let _ = out.writer.flush();
                }
            }
        }
        if let Ok(mut f) = self.inner.file.lock() {
            let _ = writeln!(f, "[{:8.3}] {line}", self.elapsed());
        }
    }

    /// A message for the log file only (the caller shows it on the terminal itself).
    pub fn file_only(&self, message: &str) {
        if let Ok(mut f) = self.inner.file.lock() {
            for line in message.lines() {
                let _ = writeln!(f, "[{:8.3}] {line}", self.elapsed());
            }
        }
    }

    /// A message from the driver itself.
    pub fn info(&self, message: &str) {
        for line in message.lines() {
            self.write(line);
        }
    }

    /// A message about one machine: `name: message`.
    pub fn machine(&self, machine: &str, message: &str) {
        for line in message.lines() {
            self.write_styled(&format!("{machine}: {line}"), Some(machine));
        }
    }

    /// A line from a machine's serial console: `name # line`, without the guest's
    /// terminal escape sequences and control characters (`console.log` keeps them).
    pub fn console(&self, machine: &str, line: &str) {
        let line = without_escapes(line);
        self.write_styled(&format!("{machine} # {line}"), Some(machine));
    }
}

/// `line` without terminal escape sequences (CSI such as colours, OSC such as a window
/// title, and two-byte ones) and other control characters but tab: a guest's console
/// must neither put colour codes into output that is no terminal nor drive the user's
/// terminal.
fn without_escapes(line: &str) -> std::borrow::Cow<'_, str> {
    if !line.chars().any(|c| c.is_control() && c != '\t') {
        return line.into();
    }
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\x1b' => match chars.next() {
                // CSI: parameters and intermediates up to a final byte in @..~.
                Some('[') => {
                    for c in chars.by_ref() {
                        if ('@'..='~').contains(&c) {
                            break;
                        }
                    }
                }
                // OSC, DCS, APC, PM, SOS: up to BEL or ST (ESC \\).
                Some(']' | 'P' | '_' | '^' | 'X') => {
                    while let Some(c) = chars.next() {
                        if c == '\x07' || (c == '\x1b' && chars.next_if_eq(&'\\').is_some()) {
                            break;
                        }
                    }
                }
                // A two-byte sequence (ESC c, ESC 7, ...), with an intermediate maybe.
                Some(' '..='/') => {
                    chars.next();
                }
                _ => {}
            },
            '\t' => out.push(c),
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    out.into()
}

/// Redraws the status line every [`REDRAW`] while the log lives.
fn redraw_until_dropped(inner: &Weak<Inner>) {
    loop {
        std::thread::sleep(REDRAW);
        let Some(inner) = inner.upgrade() else { return };
        let width = crate::terminal::status_width();
        let line = match inner.activities.lock() {
            Ok(a) => status_line(&a, Instant::now(), width),
            Err(_) => return,
        };
        let Ok(mut out) = inner.out.lock() else {
            return;
        };
        if out.status == line || out.sink.is_some() {
            continue;
        }
        let drawn = match &line {
            Some(l) => format!("\r\x1b[2K\x1b[2m{l}\x1b[0m"),
            None => "\r\x1b[2K".to_owned(),
        };
        let _ = out.writer.write_all(drawn.as_bytes());
        let _ = out.writer.flush();
        out.status = line;
    }
}

/// A readable ANSI 256-colour for a machine name, the same every run.
fn colour_of(name: &str) -> u8 {
    const PALETTE: [u8; 8] = [33, 35, 36, 39, 71, 135, 172, 166];
    let h = name
        .bytes()
        .fold(5381u32, |h, b| h.wrapping_mul(33) ^ u32::from(b));
    PALETTE[h as usize % PALETTE.len()]
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    #[test]
    fn console_lines_lose_escapes_and_control_characters() {
        let cases = [
            ("plain line\twith tab", "plain line\twith tab"),
            ("[\x1b[0;32m  OK  \x1b[0m] Started", "[  OK  ] Started"),
            ("\x1b]0;title\x07after", "after"),
            ("\x1b]2;title\x1b\\after", "after"),
            ("\x1b[?25l\x1b[2Jclear\x1bc\x1b(Bx", "clearx"),
            ("bell\x07 and nul\0 and del\x7f", "bell and nul and del"),
            ("cut \x1b[1;3", "cut "),
            ("écran \x1b[1mgras\x1b[m", "écran gras"),
        ];
        for (raw, shown) in cases {
            assert_eq!(without_escapes(raw), shown, "{raw:?}");
        }
    }

    #[test]
    fn activities_and_marks_are_steps_in_events_jsonl() {
        let dir = tempfile::tempdir().unwrap();
        let log = Log::create(&dir.path().join("run"), false).unwrap();
        // The plain call shape: `name: what` is a step of machine `name`.
        drop(log.activity("vm: reading the screen".into()));
        drop(log.activity("all machines: starting".into()));
        log.step(Some("vm"), "command", "`false`")
            .finish(Err("exit status 1\nmore".into()));
        let shot = log.dir().join("vm/a.png");
        log.mark(Some("vm"), "screenshot", "a.png", Ok(()), Some(&shot));
        let text = std::fs::read_to_string(log.dir().join(flotilla_report::steps::FILE)).unwrap();
        let (events, bad) = flotilla_report::steps::parse(&text);
        assert_eq!((events.len(), bad), (7, 0), "{text}");
        let Event::Start {
            machine,
            kind,
            label,
            ..
        } = &events[0]
        else {
            panic!("{text}")
        };
        assert_eq!(
            (machine.as_deref(), &**kind, &**label),
            (Some("vm"), "step", "reading the screen")
        );
        assert!(matches!(
            &events[1],
            Event::End {
                outcome: Outcome::Ended,
                ..
            }
        ));
        assert!(matches!(&events[2], Event::Start { machine: None, .. }));
        assert!(matches!(
            &events[5],
            Event::End { outcome: Outcome::Failed, message: Some(m), .. } if m == "exit status 1"
        ));
        assert!(matches!(
            &events[6],
            Event::Mark { file: Some(f), .. } if f == "vm/a.png"
        ));
    }

    #[test]
    fn status_line_shows_what_lasts_oldest_first() {
        let now = Instant::now();
        let mut a = BTreeMap::new();
        assert_eq!(status_line(&a, now, 80), None);
        a.insert(
            1,
            ("server: booting".to_owned(), now - Duration::from_secs(3)),
        );
        a.insert(
            2,
            ("client: booting".to_owned(), now - Duration::from_secs(5)),
        );
        a.insert(3, ("server: running `true`".to_owned(), now));
        assert_eq!(
            status_line(&a, now, 80).unwrap(),
            "… client: booting (5 s) · server: booting (3 s)"
        );
        assert_eq!(status_line(&a, now, 30).unwrap().chars().count(), 30);
    }

    /// A writer that keeps what it is given (the suite's progress tests use it too).
    #[derive(Clone, Default)]
    pub(crate) struct Capture(Arc<Mutex<Vec<u8>>>);

    impl Write for Capture {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl Capture {
        fn text(&self) -> String {
            String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
        }

        /// What was written since the last call, taken out.
        pub(crate) fn take(&self) -> String {
            String::from_utf8(std::mem::take(&mut *self.0.lock().unwrap())).unwrap()
        }

        /// Waits until what was written satisfies `done` (the redraw thread runs every
        /// [`REDRAW`]; a busy host may delay it by seconds); what was written then.
        #[track_caller]
        fn wait_until(&self, what: &str, done: impl Fn(&str) -> bool) -> String {
            let started = Instant::now();
            loop {
                let text = self.text();
                if done(&text) {
                    return text;
                }
                assert!(
                    started.elapsed() < Duration::from_secs(30),
                    "no {what} within 30 s: {text:?}"
                );
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }

    #[test]
    fn a_command_step_says_running_in_the_status_line() {
        let dir = tempfile::tempdir().unwrap();
        let file = File::create(dir.path().join("driver.log")).unwrap();
        let log = Log::with_writer(
            dir.path(),
            file,
            Recorder::create(dir.path()),
            true,
            false,
            true,
            Box::new(Capture::default()),
        );
        let _command = log.step(Some("vm"), "command", "`true`");
        let _wait = log.step(Some("vm"), "wait", "waiting for unit `x`");
        let shown: Vec<String> = log
            .inner
            .activities
            .lock()
            .unwrap()
            .values()
            .map(|a| a.0.clone())
            .collect();
        assert_eq!(shown, ["vm: running `true`", "vm: waiting for unit `x`"]);
        // With the status line on, the steps are recorded all the same.
        let text = std::fs::read_to_string(dir.path().join(flotilla_report::steps::FILE)).unwrap();
        let (events, bad) = flotilla_report::steps::parse(&text);
        assert_eq!((events.len(), bad), (2, 0), "{text}");
    }

    #[test]
    fn status_line_is_drawn_under_log_lines_and_cleared() {
        let dir = tempfile::tempdir().unwrap();
        let file = File::create(dir.path().join("driver.log")).unwrap();
        let out = Capture::default();
        let log = Log::with_writer(
            dir.path(),
            file,
            Recorder::default(),
            true,
            false,
            true,
            Box::new(out.clone()),
        );
        let busy = log.activity("vm: booting".into());
        // Drawn once the activity is a second old (its age then depends on the host's
        // load: whole seconds, matched up to the digits).
        out.wait_until("status line", |t| {
            t.contains("\r\x1b[2K\x1b[2m… vm: booting (")
        });
        log.info("a line");
        drop(busy);
        // Cleared at the end: the next redraw after the drop.
        let text = out.wait_until("clearing", |t| t.ends_with("\r\x1b[2K"));
        // Drawn, cleared for the log line, drawn again under it.
        let (before, after) = text.split_once("a line\n").expect("the log line");
        assert!(
            before.starts_with("\r\x1b[2K\x1b[2m… vm: booting (")
                && before.ends_with(" s)\x1b[0m\r\x1b[2K"),
            "{text:?}"
        );
        assert!(after.starts_with("\x1b[2m… vm: booting ("), "{text:?}");
        // Without a terminal nothing is drawn.
        let file = File::create(dir.path().join("driver2.log")).unwrap();
        let quiet = Capture::default();
        let log = Log::with_writer(
            dir.path(),
            file,
            Recorder::default(),
            true,
            false,
            false,
            Box::new(quiet.clone()),
        );
        let _busy = log.activity("vm: booting".into());
        // Absence can only be waited for: past SHOW_AFTER and a few redraws (longer on a
        // busy host only checks more).
        std::thread::sleep(Duration::from_millis(1300));
        log.info("b");
        assert_eq!(
            String::from_utf8(quiet.0.lock().unwrap().clone()).unwrap(),
            "b\n"
        );
    }

    #[test]
    fn diverted_lines_go_to_the_sink_and_no_status_line_is_drawn() {
        let dir = tempfile::tempdir().unwrap();
        let file = File::create(dir.path().join("driver.log")).unwrap();
        let out = Capture::default();
        let log = Log::with_writer(
            dir.path(),
            file,
            Recorder::default(),
            true,
            true,
            true,
            Box::new(out.clone()),
        );
        let taken =
            |c: &Capture| String::from_utf8(std::mem::take(&mut *c.0.lock().unwrap())).unwrap();
        let busy = log.activity("vm: booting".into());
        out.wait_until("status line", |t| t.contains("\x1b[2m… vm: booting ("));
        taken(&out);

        // Diverting clears the status line; lines then go to the sink only, coloured as
        // on the terminal, and the status line stays away while the guard lives.
        let sunk = Arc::new(Mutex::new(Vec::<String>::new()));
        let s = sunk.clone();
        let diverted = log.divert(move |line| s.lock().unwrap().push(line.to_owned()));
        // (A redraw may have come between `taken` and `divert`: only status lines.)
        let cleared = taken(&out);
        assert!(
            cleared.ends_with("\r\x1b[2K")
                && cleared
                    .split("\r\x1b[2K")
                    .all(|s| s.is_empty() || s.starts_with("\x1b[2m… vm: booting (")),
            "{cleared:?}"
        );
        log.info("plain");
        log.console("vm", "console line");
        // Absence: a few redraw periods pass with nothing drawn (a busy host that
        // delays the redraw thread only makes this check less strict, never fail).
        std::thread::sleep(Duration::from_millis(600));
        assert_eq!(taken(&out), "");
        assert_eq!(
            *sunk.lock().unwrap(),
            [
                "plain".to_owned(),
                format!(
                    "\x1b[1;38;5;{}mvm\x1b[0m\x1b[2m # console line\x1b[0m",
                    colour_of("vm")
                ),
            ]
        );

        // A later diversion wins until its own guard goes; an earlier guard's drop
        // leaves it in place.
        let second = Arc::new(Mutex::new(Vec::<String>::new()));
        let s = second.clone();
        let replaced = log.divert(move |line| s.lock().unwrap().push(line.to_owned()));
        drop(diverted);
        log.info("to the second");
        assert_eq!(*second.lock().unwrap(), ["to the second"]);
        assert_eq!(sunk.lock().unwrap().len(), 2);
        drop(replaced);

        // Back on the terminal, under a status line drawn again.
        log.info("back");
        out.wait_until("status line", |t| t.contains("… vm: booting ("));
        let text = taken(&out);
        // (The redraw thread may have drawn it between the drop and the line.)
        let (before, _) = text.split_once("back\n").expect("the log line");
        assert!(
            before.is_empty() || before.starts_with("\r\x1b[2K\x1b[2m… vm: booting ("),
            "{text:?}"
        );
        assert!(text.contains("… vm: booting ("), "{text:?}");
        drop(busy);
        let file = std::fs::read_to_string(dir.path().join("driver.log")).unwrap();
        for line in ["plain", "vm # console line", "to the second", "back"] {
            assert!(file.contains(&format!("] {line}\n")), "{line} in {file}");
        }
    }
}

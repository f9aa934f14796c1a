//! What a suite shows while it runs. On a terminal, one live view under the finished
//! tests' lines: a line per running test with its elapsed time and state (the last line
//! of its `driver.log`), redrawn in place. Elsewhere plain lines: one when a test
//! starts, one when it ends. Each test's own log goes only to its folder.

use std::collections::BTreeMap;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use super::verdicts::{TestReport, Verdict};

/// The suite's output while it runs.
pub struct Progress {
    out: Box<dyn Write + Send>,
    /// Redraw a live view (a terminal) rather than print plain lines.
    live: bool,
    /// Print nothing until the summary.
    quiet: bool,
    running: BTreeMap<usize, Running>,
    total: usize,
    finished: usize,
    /// Lines of the live view now on the screen.
    drawn: usize,
    width: fn() -> usize,
}

impl std::fmt::Debug for Progress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Progress")
            .field("live", &self.live)
            .field("running", &self.running.len())
            .finish()
    }
}

#[derive(Debug)]
struct Running {
    id: String,
    since: Instant,
    attempt: u32,
    log_dir: PathBuf,
}

impl Progress {
    /// Progress on stderr for `total` tests: live on a terminal (not `TERM=dumb`),
    /// plain lines elsewhere, nothing but the summary when `quiet`.
    pub fn stderr(total: usize, quiet: bool) -> Progress {
        let tty = std::io::IsTerminal::is_terminal(&std::io::stderr());
        let dumb = std::env::var("TERM").map_or(true, |t| t == "dumb");
        Progress::new(Box::new(std::io::stderr()), total, tty && !dumb, quiet)
    }

    pub fn new(out: Box<dyn Write + Send>, total: usize, live: bool, quiet: bool) -> Progress {
        Progress {
            out,
            live: live && !quiet,
            quiet,
            running: BTreeMap::new(),
            total,
            finished: 0,
            drawn: 0,
            width: crate::terminal::status_width,
        }
    }

    /// Test number `index` starts its attempt `attempt` (from 1), logging to `log_dir`.
    pub fn started(&mut self, index: usize, id: &str, attempt: u32, log_dir: &Path) {
        self.running.insert(
            index,
            Running {
                id: id.to_owned(),
                since: Instant::now(),
                attempt,
                log_dir: log_dir.to_path_buf(),
            },
        );
        if !self.live && !self.quiet {
            let again = if attempt > 1 {
                format!(" (attempt {attempt})")
            } else {
                String::new()
            };
            self.line(&format!(
                "START     {id}{again} (logs in {})",
                log_dir.display()
            ));
        }
        self.redraw();
    }

    /// An attempt failed and the test runs again.
    pub fn retrying(&mut self, id: &str, attempt: u32, error: &str) {
        if !self.quiet {
            let first = error.lines().next().unwrap_or("");
            self.line(&format!(
                "RETRY     {id}: attempt {attempt} failed: {first}"
            ));
        }
    }

    /// A test ended (or will never start).
    pub fn finished(&mut self, index: usize, report: &TestReport) {
        self.running.remove(&index);
        self.finished += 1;
        if !self.quiet {
            let time = if report.attempts.is_empty() {
                String::new()
            } else {
                format!(" in {:.1} s", report.seconds())
            };
            let why = match (report.verdict, report.final_error()) {
                (Verdict::Passed, _) => String::new(),
                (Verdict::Flaky, _) => format!(" (passed on attempt {})", report.attempts.len()),
                (_, Some(e)) => format!(": {}", e.lines().next().unwrap_or("")),
                (_, None) => String::new(),
            };
            self.line(&format!(
                "{:9} {}{time}{why}",
                report.verdict.label(),
                report.id
            ));
        }
        self.redraw();
    }

    /// Redraws the live view (the elapsed times and states move on).
    pub fn tick(&mut self) {
        self.redraw();
    }

    /// Takes the live view off the screen (before the summary).
    pub fn clear(&mut self) {
        self.erase();
        let _ = self.out.flush();
    }

    /// A line above the live view.
    fn line(&mut self, text: &str) {
        self.erase();
        let _ = writeln!(self.out, "{text}");
        let _ = self.out.flush();
    }

    fn erase(&mut self) {
        if self.drawn > 0 {
            let _ = write!(self.out, "\x1b[{}A\x1b[J", self.drawn);
            self.drawn = 0;
        }
    }

    fn redraw(&mut self) {
        if !self.live {
            return;
        }
        let width = (self.width)();
        let now = Instant::now();
        let mut lines = vec![format!(
            "running {} · {} of {} done · {} waiting",
            self.running.len(),
            self.finished,
            self.total,
            self.total - self.finished - self.running.len()
        )];
        let id_width = self.running.values().map(|r| r.id.len()).max().unwrap_or(0);
        for r in self.running.values() {
            let again = if r.attempt > 1 {
                format!("attempt {} · ", r.attempt)
            } else {
                String::new()
            };
            let state =
                last_line(&r.log_dir.join("driver.log")).unwrap_or_else(|| "starting".into());
            lines.push(format!(
                "  {:id_width$} {:>5.0} s  {again}{state}",
                r.id,
                now.duration_since(r.since).as_secs_f64().floor()
            ));
        }
        let mut text = String::new();
        if self.drawn > 0 {
            text.push_str(&format!("\x1b[{}A\x1b[J", self.drawn));
        }
        for l in &lines {
            // Cut to the width: a wrapped line would break the count of lines drawn.
            let cut: String = l.chars().take(width).collect();
            text.push_str(&format!("\x1b[2m{cut}\x1b[0m\n"));
        }
        self.drawn = lines.len();
        let _ = self.out.write_all(text.as_bytes());
        let _ = self.out.flush();
    }
}

/// The last line of a log file, without its `[   1.234] ` time, with no control
/// characters; `None` before the file has a line.
fn last_line(path: &Path) -> Option<String> {
    let mut file = std::fs::File::open(path).ok()?;
    let len = file.metadata().ok()?.len();
    file.seek(SeekFrom::Start(len.saturating_sub(4096))).ok()?;
    let mut tail = Vec::new();
    file.read_to_end(&mut tail).ok()?;
    let text = String::from_utf8_lossy(&tail);
    let line = text.lines().rev().find(|l| !l.trim().is_empty())?;
    let line = match line.split_once("] ") {
        Some((time, rest)) if time.starts_with('[') => rest,
        _ => line,
    };
    Some(line.chars().filter(|c| !c.is_control()).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::tests::Capture;
    use crate::suite::verdicts::Attempt;

    fn passed(id: &str) -> TestReport {
        TestReport {
            id: id.to_owned(),
            name: id.to_owned(),
            verdict: Verdict::Passed,
            attempts: vec![Attempt {
                log_dir: PathBuf::from("x"),
                seconds: 1.25,
                subtests: vec![],
                error: None,
            }],
            error: None,
        }
    }

    #[test]
    fn plain_lines_say_when_a_test_starts_and_ends() {
        let out = Capture::default();
        let mut p = Progress::new(Box::new(out.clone()), 2, false, false);
        p.started(0, "a", 1, Path::new("out/a"));
        p.tick();
        p.retrying("a", 1, "error: boom\n  caused by: x");
        p.started(0, "a", 2, Path::new("out/a/attempt-2"));
        p.finished(0, &passed("a"));
        assert_eq!(
            out.take(),
            "START     a (logs in out/a)\n\
             RETRY     a: attempt 1 failed: error: boom\n\
             START     a (attempt 2) (logs in out/a/attempt-2)\n\
             PASSED    a in 1.2 s\n"
        );
        let mut q = Progress::new(Box::new(out.clone()), 1, true, true);
        q.started(0, "a", 1, Path::new("out/a"));
        q.finished(0, &passed("a"));
        assert_eq!(out.take(), "", "quiet");
    }

    #[test]
    fn the_live_view_shows_each_running_test_and_is_redrawn_in_place() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("driver.log"),
            "[   0.100] first\n[   1.500] server: \x1b[1mready\n",
        )
        .unwrap();
        let out = Capture::default();
        let mut p = Progress::new(Box::new(out.clone()), 3, true, false);
        p.width = || 80;
        p.started(0, "examples/hello", 1, dir.path());
        p.started(1, "b", 2, Path::new("/nonexistent"));
        let text = out.take();
        let last = text.rsplit("\x1b[J").next().unwrap();
        assert_eq!(
            last,
            "\x1b[2mrunning 2 · 0 of 3 done · 1 waiting\x1b[0m\n\
             \x1b[2m  examples/hello     0 s  server: [1mready\x1b[0m\n\
             \x1b[2m  b                  0 s  attempt 2 · starting\x1b[0m\n"
        );
        // A finished test's line goes above the view, which is drawn again under it.
        p.finished(0, &passed("examples/hello"));
        let text = out.take();
        assert!(
            text.starts_with("\x1b[3A\x1b[JPASSED    examples/hello in 1.2 s\n"),
            "{text:?}"
        );
        assert!(text.ends_with("\x1b[2mrunning 1 · 1 of 3 done · 1 waiting\x1b[0m\n\x1b[2m  b     0 s  attempt 2 · starting\x1b[0m\n"), "{text:?}");
        p.clear();
        assert_eq!(out.take(), "\x1b[2A\x1b[J");
    }
}

//! A whole test run: the spec's script on its own thread against a [`Fleet`], bounded
//! by the spec's timeout and Ctrl-C, with a JUnit report at the end; and [`retry`], the
//! script's `retry` for Rust tests.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

use crate::error::Error;
use crate::fleet::{Fleet, FleetOptions};
use crate::junit::{junit_xml, Subtest, Subtests};
use crate::script;
use crate::spec::Spec;
use crate::world::World;
use flotilla_report as report;

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
    run(spec, options, cancel, false).await.map_err(|f| f.error)
}

/// A test that did not pass: the verdict, and with `keep_failed` the machines still up.
#[derive(Debug)]
pub(crate) struct Failed {
    pub error: Error,
    pub kept: Option<Kept>,
}

/// What a failed script leaves for a prompt: the running machines, the script as it
/// stopped, and where it stopped (also when the verdict only says "timed out").
#[derive(Debug)]
pub(crate) struct Kept {
    pub fleet: Fleet,
    pub script: script::Stopped,
    pub at: Option<Place>,
}

/// A place in a script file: line and column count from 1.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Place {
    pub file: PathBuf,
    pub line: usize,
    pub column: usize,
}

/// Lines of the script shown before the failing one.
const CONTEXT: usize = 2;

impl Place {
    /// The failing line with the lines before it and a caret under its column, as
    /// compilers show one; empty if the file cannot be read.
    pub fn excerpt(&self) -> String {
        let source = std::fs::read_to_string(&self.file).unwrap_or_default();
        self.excerpt_of(&source)
    }

    fn excerpt_of(&self, source: &str) -> String {
        let Some(failing) = source.lines().nth(self.line.wrapping_sub(1)) else {
            return String::new();
        };
        let first = self.line.saturating_sub(CONTEXT).max(1);
        let width = self.line.to_string().len();
        let mut out = format!(
            "{:width$}--> {}:{}:{}\n{:width$} |\n",
            "",
            self.file.display(),
            self.line,
            self.column,
            ""
        );
        for (number, line) in source
            .lines()
            .enumerate()
            .skip(first - 1)
            .take(self.line - first)
        {
            let _ = writeln!(out, "{:>width$} | {line}", number + 1);
        }
        let _ = writeln!(out, "{:>width$} | {failing}", self.line);
        // Tabs stay tabs, so that the caret lines up however the terminal shows them.
        let pad: String = failing
            .chars()
            .take(self.column.saturating_sub(1))
            .map(|c| if c == '\t' { '\t' } else { ' ' })
            .collect();
        let _ = writeln!(out, "{:width$} | {pad}^", "");
        out
    }
}

impl From<Error> for Failed {
    fn from(error: Error) -> Failed {
        Failed { error, kept: None }
    }
}

/// [`run_test`]; with `keep_failed`, a script that ran and failed (not interrupted)
/// leaves its machines up and returns them with the script's state, and coverage is
/// left for whoever stops them.
pub(crate) async fn run(
    spec: &Spec,
    mut options: FleetOptions,
    cancel: CancellationToken,
    keep_failed: bool,
) -> Result<(), Failed> {
    let junit = options.junit.take();
    let run = run_script(spec, options, cancel, keep_failed).await?;
    if let Some(path) = junit {
        let error = run.result.as_ref().err().map(|f| &f.error);
        let xml = junit_xml(&spec.name, &run.subtests, run.seconds, error);
        if let Err(source) = std::fs::write(&path, xml) {
            if let Err(Failed {
                kept: Some(kept), ..
            }) = &run.result
            {
                kept.fleet.stop_all().await;
            }
            return Err(Failed::from(Error::Io {
                what: format!("writing the JUnit report {}", path.display()),
                source,
            }));
        }
    }
    run.result
}

/// What one run of a test left: its result and its finished subtests.
#[derive(Debug)]
pub(crate) struct TestRun {
    pub result: Result<(), Error>,
    pub subtests: Vec<Subtest>,
}

/// [`run_test`] without the JUnit report: the run's result and subtests, for a caller
/// that reports them (the suite). `options.junit` is ignored.
pub(crate) async fn run_attempt(
    spec: &Spec,
    options: FleetOptions,
    cancel: CancellationToken,
) -> TestRun {
    match run_script(spec, options, cancel, false).await {
        Ok(run) => TestRun {
            result: run.result.map_err(|f| f.error),
            subtests: run.subtests,
        },
        Err(f) => TestRun {
            result: Err(f.error),
            subtests: Vec::new(),
        },
    }
}

/// A script's run: its result (with the machines kept, if asked and it failed), its
/// finished subtests and how long it ran.
struct ScriptRun {
    result: Result<(), Failed>,
    subtests: Vec<Subtest>,
    seconds: f64,
}

/// The run itself; `Err` only when the machines could not be made at all (a report
/// says why when the log folder could be made).
async fn run_script(
    spec: &Spec,
    options: FleetOptions,
    cancel: CancellationToken,
    keep_failed: bool,
) -> Result<ScriptRun, Failed> {
    let script = match &options.attach {
        Some(socket) => Script::Attached {
            socket: socket.clone(),
            base: spec.path.parent().unwrap_or(Path::new(".")).to_path_buf(),
        },
        None => Script::File(script_file(spec)?),
    };
    let log = crate::log::Log::create(&options.log_dir, options.terminal)?;
    // Machines that could not be prepared (an image, a busy port): the folder has the
    // log, and the report says why.
    let net = match Fleet::with_log(spec, options, log.clone()) {
        Ok(net) => net,
        Err(error) => {
            write_report(&log, &spec.name, Some(&error), None, 0.0);
            return Err(Failed::from(error));
        }
    };
    let subtests = Subtests::default();
    let script_cancel = cancel.child_token();
    let (thread, done_rx) = start_script_thread(
        script,
        World::of(&net),
        log.clone(),
        script_cancel.clone(),
        subtests.clone(),
    )?;
    let started = std::time::Instant::now();
    let ended = wait_for_script(spec, &script_cancel, done_rx, &log).await;
    let _ = thread.join();
    let (result, stopped) = ended.outcome;
    // What a prompt goes on from: a script that ran and failed, not interrupted.
    let kept = match (&result, stopped) {
        (Err(cause), Some(script)) if keep_failed && !cancel.is_cancelled() => {
            Some((script, place(cause)))
        }
        _ => None,
    };
    let below_floor = stop_machines(&net, &cancel, kept.is_some()).await;
    // Where the script was, also when the verdict is the timeout's.
    let at = result.as_ref().err().and_then(place);
    let result = match result {
        Err(_) if ended.timed_out => Err(Error::TestTimeout {
            limit: spec.timeout,
            running: ended.running,
        }),
        Err(_) if cancel.is_cancelled() => Err(Error::Interrupted),
        // A helper that died after the script's last call broke the run all the same.
        Ok(()) => net.fabric.check_helpers(),
        other => other,
    };
    // The report is evidence; only a floor the user asked for turns it into a verdict.
    let result = match (result, below_floor) {
        (Ok(()), Some(floor)) => Err(floor),
        (result, _) => result,
    };
    let took = started.elapsed().as_secs_f64();
    let list = subtests.lock().map(|l| l.clone()).unwrap_or_default();
    write_report(&log, &spec.name, result.as_ref().err(), at.as_ref(), took);
    log_verdict(&log, &spec.name, &result, took);
    let result = result.map_err(|error| Failed {
        error,
        kept: kept.map(|(script, at)| Kept {
            fleet: net,
            script,
            at,
        }),
    });
    Ok(ScriptRun {
        result,
        subtests: list,
        seconds: took,
    })
}

/// The spec's script file; an error at the spec's first line when it has none.
fn script_file(spec: &Spec) -> Result<PathBuf, Error> {
    spec.script.clone().ok_or_else(|| Error::Spec {
        file: spec.path.clone(),
        line: 1,
        column: 1,
        message: "no `script` to run: add script = \"test.rhai\"".into(),
    })
}

/// What runs against the machines: the spec's script, or a Python client that
/// attaches to `socket` (relative host paths of its calls start at `base`).
enum Script {
    File(PathBuf),
    Attached { socket: PathBuf, base: PathBuf },
}

/// What the script's thread sends when the script ends: its result, and the script
/// as it stopped.
type Outcome = (Result<(), Error>, Option<script::Stopped>);

/// Starts the script on its own thread, against `world`; the receiver gets its
/// outcome.
fn start_script_thread(
    script: Script,
    world: World,
    log: crate::log::Log,
    cancel: CancellationToken,
    subtests: Subtests,
) -> Result<(std::thread::JoinHandle<()>, oneshot::Receiver<Outcome>), Error> {
    let handle = tokio::runtime::Handle::current();
    let (done_tx, done_rx) = oneshot::channel();
    let thread = std::thread::Builder::new()
        .name("flotilla-script".into())
        .spawn(move || {
            let python = match script {
                Script::File(path) if !crate::python::is_python(&path) => {
                    let ran = script::run(&path, &world, &log, handle, cancel, subtests);
                    let _ = done_tx.send(ran);
                    return;
                }
                Script::File(path) => crate::python::Client::Script(path),
                Script::Attached { socket, base } => {
                    crate::python::Client::Attached { socket, base }
                }
            };
            // On the runtime, where its (large) future lives on the heap.
            let task = handle.spawn(async move {
                crate::python::run(python, &world, &log, cancel, subtests).await
            });
            let ran = handle.block_on(task).unwrap_or_else(|e| {
                Err(Error::Internal(format!(
                    "the Python script's task failed: {e}"
                )))
            });
            let ran = (ran, None);
            let _ = done_tx.send(ran);
        })
        .map_err(|source| Error::Io {
            what: "starting the script thread".into(),
            source,
        })?;
    Ok((thread, done_rx))
}

/// How the script ended: its outcome, whether the spec's timeout ended it, and what
/// was under way then.
struct ScriptEnd {
    outcome: Outcome,
    timed_out: bool,
    running: Vec<String>,
}

/// Waits for the script to end, for the spec's timeout, or for `script_cancel`; then
/// stops the script (a no-op if it finished) and collects its outcome.
async fn wait_for_script(
    spec: &Spec,
    script_cancel: &CancellationToken,
    mut done_rx: oneshot::Receiver<Outcome>,
    log: &crate::log::Log,
) -> ScriptEnd {
    let finished = tokio::select! {
        r = &mut done_rx => Some(r),
        _ = tokio::time::sleep(spec.timeout) => None,
        _ = script_cancel.cancelled() => None,
    };
    let timed_out = finished.is_none() && !script_cancel.is_cancelled();
    // What was under way when the limit fired, before the cancel ends it.
    let running = if timed_out {
        log.in_progress()
    } else {
        Vec::new()
    };
    // Stop the script (a no-op if it finished) and collect its result.
    script_cancel.cancel();
    let finished = match finished {
        Some(r) => r,
        None => done_rx.await,
    };
    let outcome = finished.unwrap_or_else(|_| {
        let lost = Error::Internal("the script thread ended without a result".into());
        (Err(lost), None)
    });
    ScriptEnd {
        outcome,
        timed_out,
        running,
    }
}

/// Stops the machines, unless they are `kept` for a prompt (interrupted, they stop
/// all the same); machines that stop have their coverage collected first. Returns the
/// error of a coverage floor the user asked for and the coverage is under.
async fn stop_machines(net: &Fleet, cancel: &CancellationToken, kept: bool) -> Option<Error> {
    // Interrupted: no waiting for programs to end, the data already written is taken.
    if cancel.is_cancelled() {
        net.stop_all().await;
    }
    if kept {
        return None;
    }
    let coverage = net.finish_coverage().await;
    net.stop_all().await;
    let report = coverage?;
    let floor = report.fail_under.filter(|&f| report.below_floor(f))?;
    Some(Error::CoverageFloor {
        percent: report.line_percent(),
        floor,
    })
}

/// Logs how the test ended; a failure goes to the log file only (the caller prints
/// the error).
fn log_verdict(log: &crate::log::Log, name: &str, result: &Result<(), Error>, took: f64) {
    match result {
        Ok(()) => log.info(&format!("test `{name}` passed in {took:.1} s")),
        // The caller prints the error; the log file keeps it too.
        Err(e) => log.file_only(&format!("test `{name}` failed after {took:.1} s: {e}")),
    }
}

/// Writes the run's `report.html` (the error a step of its timeline first) and logs
/// its path; a failure to write it is logged, and changes nothing else.
fn write_report(
    log: &crate::log::Log,
    name: &str,
    error: Option<&Error>,
    at: Option<&Place>,
    seconds: f64,
) {
    if let Some(e) = error {
        let message = e.to_string();
        let first = message.lines().next().unwrap_or("").to_owned();
        log.mark(None, "error", &first, Err(message), None);
    }
    let chain = error.map(|e| crate::error::printed(e));
    let excerpt = at.map(Place::excerpt);
    let outline = report::Outline {
        name,
        passed: error.is_none(),
        verdict: match error {
            None => "passed",
            Some(Error::TestTimeout { .. }) => "timed out",
            Some(Error::Interrupted) => "interrupted",
            Some(e) if !e.is_test_failure() => "could not run",
            Some(_) => "failed",
        },
        seconds,
        error: chain.as_deref(),
        excerpt: excerpt.as_deref(),
    };
    match report::write(log.dir(), &outline) {
        Ok(path) => log.info(&format!("report: {}", path.display())),
        Err(e) => log.info(&format!("no report: {e}")),
    }
}

/// Where in its script a script error happened.
fn place(e: &Error) -> Option<Place> {
    match e {
        Error::Script {
            file, line, column, ..
        } if *line > 0 => Some(Place {
            file: file.clone(),
            line: *line,
            column: *column,
        }),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_failing_line_is_shown_with_the_lines_before_it_and_a_caret() {
        let source = "let a = 1;\nlet b = 2;\n\tlet c = 3;\nm.succeed(\"false\");\nlet d = 4;\n";
        let at = |line, column| Place {
            file: "t.rhai".into(),
            line,
            column,
        };
        assert_eq!(
            at(4, 3).excerpt_of(source),
            " --> t.rhai:4:3\n  |\n2 | let b = 2;\n3 | \tlet c = 3;\n\
             4 | m.succeed(\"false\");\n  |   ^\n"
        );
        assert_eq!(
            at(1, 1).excerpt_of(source),
            " --> t.rhai:1:1\n  |\n1 | let a = 1;\n  | ^\n"
        );
        assert_eq!(
            at(3, 2).excerpt_of(source),
            " --> t.rhai:3:2\n  |\n1 | let a = 1;\n2 | let b = 2;\n3 | \tlet c = 3;\n  | \t^\n"
        );
        assert_eq!(at(9, 1).excerpt_of(source), "");
        assert_eq!(at(0, 1).excerpt_of(source), "");
    }
}

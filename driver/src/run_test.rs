//! A whole test run: the spec's script on its own thread against a [`Fleet`], bounded
//! by the spec's timeout and Ctrl-C, with a JUnit report at the end; and [`retry`], the
//! script's `retry` for Rust tests.

use std::path::PathBuf;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::error::Error;
use crate::fleet::{Fleet, FleetOptions};
use crate::junit::{junit_xml, Subtest, Subtests};
use crate::script::{self, World};
use crate::spec::Spec;

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
    // Machines that could not be made: no report, as no test ran.
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

/// The run itself; `Err` only when the machines could not be made at all.
async fn run_script(
    spec: &Spec,
    options: FleetOptions,
    cancel: CancellationToken,
    keep_failed: bool,
) -> Result<ScriptRun, Failed> {
    let script = spec.script.clone().ok_or_else(|| Error::Spec {
        file: spec.path.clone(),
        line: 1,
        column: 1,
        message: "no `script` to run: add script = \"test.rhai\"".into(),
    })?;
    let net = Fleet::new(spec, options)?;
    let log = net.log().clone();
    let subtests = Subtests::default();
    let thread_subtests = subtests.clone();
    let world = World::of(&net);
    let handle = tokio::runtime::Handle::current();
    let script_cancel = cancel.child_token();
    let (done_tx, done_rx) = tokio::sync::oneshot::channel();
    let thread_cancel = script_cancel.clone();
    let thread_log = log.clone();
    let thread = std::thread::Builder::new()
        .name("flotilla-script".into())
        .spawn(move || {
            let ran = script::run(
                &script,
                &world,
                &thread_log,
                handle,
                thread_cancel,
                thread_subtests,
            );
            let _ = done_tx.send(ran);
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
    let (result, stopped) = finished.unwrap_or_else(|_| {
        let lost = Error::Internal("the script thread ended without a result".into());
        (Err(lost), None)
    });
    let _ = thread.join();
    // What a prompt goes on from: a script that ran and failed, not interrupted.
    let kept = match (&result, stopped) {
        (Err(cause), Some(script)) if keep_failed && !cancel.is_cancelled() => {
            Some((script, place(cause)))
        }
        _ => None,
    };
    // Interrupted: no waiting for programs to end, the data already written is taken.
    if cancel.is_cancelled() {
        net.stop_all().await;
    }
    let coverage = match kept {
        Some(_) => None,
        None => {
            let coverage = net.finish_coverage().await;
            net.stop_all().await;
            coverage
        }
    };
    let mut result = match result {
        Err(_) if timed_out => Err(Error::TestTimeout(spec.timeout)),
        Err(_) if cancel.is_cancelled() => Err(Error::Interrupted),
        other => other,
    };
    // The report is evidence; only a floor the user asked for turns it into a verdict.
    if let (Ok(()), Some(report)) = (&result, &coverage) {
        if let Some(floor) = report.fail_under.filter(|&f| report.below_floor(f)) {
            result = Err(Error::CoverageFloor {
                percent: report.line_percent(),
                floor,
            });
        }
    }
    let took = started.elapsed().as_secs_f64();
    let list = subtests.lock().map(|l| l.clone()).unwrap_or_default();
    match &result {
        Ok(()) => log.info(&format!("test `{}` passed in {took:.1} s", spec.name)),
        // The caller prints the error; the log file keeps it too.
        Err(e) => log.file_only(&format!(
            "test `{}` failed after {took:.1} s: {e}",
            spec.name
        )),
    }
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

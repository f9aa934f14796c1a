//! A whole test run: the spec's script on its own thread against a [`Fleet`], bounded
//! by the spec's timeout and Ctrl-C, with a JUnit report at the end; and [`retry`], the
//! script's `retry` for Rust tests.

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
    mut options: FleetOptions,
    cancel: CancellationToken,
) -> Result<(), Error> {
    let junit = options.junit.take();
    // Machines that could not be made: no report, as no test ran.
    let run = run_script(spec, options, cancel).await?;
    if let Some(path) = junit {
        let xml = junit_xml(
            &spec.name,
            &run.subtests,
            run.seconds,
            run.result.as_ref().err(),
        );
        std::fs::write(&path, xml).map_err(|source| Error::Io {
            what: format!("writing the JUnit report {}", path.display()),
            source,
        })?;
    }
    run.result
}

/// What one run of a test left: its result, its finished subtests and how long its
/// script ran (0 when the machines could not be made).
#[derive(Debug)]
pub(crate) struct TestRun {
    pub result: Result<(), Error>,
    pub subtests: Vec<Subtest>,
    pub seconds: f64,
}

/// [`run_test`] without the JUnit report: the run's result and subtests, for a caller
/// that reports them (the suite). `options.junit` is ignored.
pub(crate) async fn run_attempt(
    spec: &Spec,
    options: FleetOptions,
    cancel: CancellationToken,
) -> TestRun {
    match run_script(spec, options, cancel).await {
        Ok(run) => run,
        Err(e) => TestRun {
            result: Err(e),
            subtests: Vec::new(),
            seconds: 0.0,
        },
    }
}

/// The run itself; `Err` only when the machines could not be made at all.
async fn run_script(
    spec: &Spec,
    options: FleetOptions,
    cancel: CancellationToken,
) -> Result<TestRun, Error> {
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
    // Interrupted: no waiting for programs to end, the data already written is taken.
    if cancel.is_cancelled() {
        net.stop_all().await;
    }
    let coverage = net.finish_coverage().await;
    net.stop_all().await;
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
    Ok(TestRun {
        result,
        subtests: list,
        seconds: took,
    })
}

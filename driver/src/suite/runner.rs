//! Running a suite: tests start in order as the [`Budget`] allows, each on its own
//! task with its own log folder, with retries; `fail_fast` and Ctrl-C stop them.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::budget::{Budget, Cost};
use super::discover::SuiteTest;
use super::progress::Progress;
use super::verdicts::{Attempt, SuiteReport, TestReport, Verdict};
use crate::error::printed;
use crate::fleet::FleetOptions;
use crate::run::run_attempt;
use crate::spec::Spec;

/// How a suite runs.
#[derive(Debug, Clone)]
pub struct SuiteOptions {
    /// The suite's log folder: each test logs to `<out>/<its folder>`, a retry to
    /// `<out>/<its folder>/attempt-<N>`.
    pub out: PathBuf,
    pub budget: Budget,
    /// Run a failed test again, up to this many times.
    pub retries: u32,
    /// After the first test that does not pass, start no other and stop those running.
    pub fail_fast: bool,
    /// Every test's fleet options (coverage, snapshots, time limits); the log folder,
    /// the terminal and the JUnit file are the suite's.
    pub fleet: FleetOptions,
}

/// A running test's news for the progress view.
enum Event {
    Started {
        index: usize,
        attempt: u32,
        log_dir: PathBuf,
    },
    Retrying {
        index: usize,
        attempt: u32,
        error: String,
    },
}

/// Runs `tests` (those whose spec could not be read are reported as errors at once).
/// `cancel` (Ctrl-C) stops every running test and starts no other; the report has every
/// test, those never started as cancelled.
pub async fn run_suite(
    tests: &[SuiteTest],
    options: &SuiteOptions,
    progress: &mut Progress,
    cancel: CancellationToken,
) -> SuiteReport {
    let started = Instant::now();
    let (mut reports, mut queue) = queue_tests(tests, progress);
    // Fail-fast cancels this one; Ctrl-C cancels it through `cancel`.
    let stop = cancel.child_token();
    let mut stopping = options.fail_fast && reports.iter().flatten().next().is_some();
    if stopping {
        stop.cancel();
    }
    let (events_tx, mut events) = mpsc::unbounded_channel();
    let mut running = Running {
        costs: Vec::new(),
        tasks: tokio::task::JoinSet::new(),
        task_of: Vec::new(),
        stop: stop.clone(),
        events: events_tx,
    };
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    loop {
        if !stopping {
            running.start_what_fits(&mut queue, tests, options);
        }
        if running.tasks.is_empty() {
            break;
        }
        tokio::select! {
            Some(done) = running.tasks.join_next_with_id() => {
                let Some((index, report)) = running.ended(done, tests) else { continue };
                if options.fail_fast && !report.verdict.passed() && !stopping {
                    stopping = true;
                    stop.cancel();
                }
                progress.finished(index, &report);
                reports[index] = Some(report);
            }
            Some(event) = events.recv() => show_event(progress, tests, event),
            _ = tick.tick() => progress.tick(),
            () = cancel.cancelled(), if !stopping => stopping = true,
        }
    }
    progress.clear();
    SuiteReport {
        tests: every_report(reports, tests),
        seconds: started.elapsed().as_secs_f64(),
    }
}

/// A test waiting to start: its index in the suite, its spec and what it costs.
type Queued = (usize, Arc<Spec>, Cost);

/// The queue of the tests whose spec was read, in order, and the suite's reports so
/// far: those of the tests whose spec could not be read, errors shown at once.
fn queue_tests(
    tests: &[SuiteTest],
    progress: &mut Progress,
) -> (Vec<Option<TestReport>>, VecDeque<Queued>) {
    let mut reports: Vec<Option<TestReport>> = tests.iter().map(|_| None).collect();
    let mut queue: VecDeque<Queued> = VecDeque::new();
    for (index, test) in tests.iter().enumerate() {
        match &test.spec {
            Ok(spec) => queue.push_back((index, Arc::new(spec.clone()), Cost::of(spec))),
            Err(e) => {
                let report = error_report(test, printed(e));
                progress.finished(index, &report);
                reports[index] = Some(report);
            }
        }
    }
    (reports, queue)
}

/// The report of a test that could not run, with `error`.
fn error_report(test: &SuiteTest, error: String) -> TestReport {
    TestReport {
        id: test.id.clone(),
        name: test.name().to_owned(),
        verdict: Verdict::Error,
        attempts: Vec::new(),
        error: Some(error),
    }
}

/// The tests under way: what each costs, and the tasks that run them.
struct Running {
    costs: Vec<(usize, Cost)>,
    tasks: tokio::task::JoinSet<(usize, TestReport)>,
    /// Which test each task runs, for a task that panicked.
    task_of: Vec<(tokio::task::Id, usize)>,
    /// Cancelled by fail-fast and Ctrl-C; each test gets a child of it.
    stop: CancellationToken,
    events: mpsc::UnboundedSender<Event>,
}

impl Running {
    /// Starts what fits, in order: a test that does not fit waits, and those after it.
    fn start_what_fits(
        &mut self,
        queue: &mut VecDeque<Queued>,
        tests: &[SuiteTest],
        options: &SuiteOptions,
    ) {
        while let Some((_, _, cost)) = queue.front() {
            let costs: Vec<Cost> = self.costs.iter().map(|r| r.1).collect();
            if !options.budget.admits(&costs, *cost) {
                break;
            }
            let Some((index, spec, cost)) = queue.pop_front() else {
                break;
            };
            self.costs.push((index, cost));
            let test = &tests[index];
            let job = Job {
                index,
                id: test.id.clone(),
                spec,
                dir: options.out.join(&test.folder),
                retries: options.retries,
                fleet: options.fleet.clone(),
                cancel: self.stop.child_token(),
                events: self.events.clone(),
            };
            let handle = self.tasks.spawn(job.run());
            self.task_of.push((handle.id(), index));
        }
    }

    /// A task that ended: its test, no longer running, and its report; a task that
    /// panicked (a bug) shows its test as an error. `None` for a task of no known test.
    fn ended(
        &mut self,
        done: Result<(tokio::task::Id, (usize, TestReport)), tokio::task::JoinError>,
        tests: &[SuiteTest],
    ) -> Option<(usize, TestReport)> {
        let (index, report) = match done {
            Ok((_, r)) => r,
            Err(e) => {
                let index = self
                    .task_of
                    .iter()
                    .find(|(id, _)| *id == e.id())
                    .map_or(usize::MAX, |t| t.1);
                let test = tests.get(index)?;
                let error = format!("error: the test's task failed: {e}");
                (index, error_report(test, error))
            }
        };
        self.costs.retain(|(i, _)| *i != index);
        Some((index, report))
    }
}

/// Shows a running test's news.
fn show_event(progress: &mut Progress, tests: &[SuiteTest], event: Event) {
    match event {
        Event::Started {
            index,
            attempt,
            log_dir,
        } => progress.started(index, &tests[index].id, attempt, &log_dir),
        Event::Retrying {
            index,
            attempt,
            error,
        } => progress.retrying(&tests[index].id, attempt, &error),
    }
}

/// Every test's report, in order: a test without one was cancelled.
fn every_report(reports: Vec<Option<TestReport>>, tests: &[SuiteTest]) -> Vec<TestReport> {
    reports
        .into_iter()
        .zip(tests)
        .map(|(report, test)| {
            report.unwrap_or_else(|| TestReport {
                id: test.id.clone(),
                name: test.name().to_owned(),
                verdict: Verdict::Cancelled,
                attempts: Vec::new(),
                error: None,
            })
        })
        .collect()
}

/// One test on its task: its attempts, until one passes or none is left.
struct Job {
    index: usize,
    id: String,
    spec: Arc<Spec>,
    dir: PathBuf,
    retries: u32,
    fleet: FleetOptions,
    cancel: CancellationToken,
    events: mpsc::UnboundedSender<Event>,
}

impl Job {
    async fn run(self) -> (usize, TestReport) {
        let mut attempts = Vec::new();
        let mut verdict = Verdict::Failed;
        for attempt in 1..=self.retries + 1 {
            let log_dir = attempt_dir(&self.dir, attempt);
            let _ = self.events.send(Event::Started {
                index: self.index,
                attempt,
                log_dir: log_dir.clone(),
            });
            let mut options = self.fleet.clone();
            options.log_dir = log_dir.clone();
            options.terminal = false;
            options.junit = None;
            let began = Instant::now();
            let run = run_attempt(&self.spec, options, self.cancel.clone()).await;
            let error = run.result.as_ref().err();
            attempts.push(Attempt {
                log_dir,
                seconds: began.elapsed().as_secs_f64(),
                subtests: run.subtests,
                error: error.map(|e| printed(e)),
            });
            match error {
                None => {
                    verdict = if attempt == 1 {
                        Verdict::Passed
                    } else {
                        Verdict::Flaky
                    };
                    break;
                }
                Some(_) if self.cancel.is_cancelled() => {
                    verdict = Verdict::Cancelled;
                    break;
                }
                // Could not run: another attempt would not either.
                Some(e) if !e.is_test_failure() => {
                    verdict = Verdict::Error;
                    break;
                }
                Some(e) if attempt <= self.retries => {
                    let _ = self.events.send(Event::Retrying {
                        index: self.index,
                        attempt,
                        error: printed(e),
                    });
                }
                Some(_) => verdict = Verdict::Failed,
            }
        }
        let name = self.spec.name.clone();
        (
            self.index,
            TestReport {
                id: self.id,
                name,
                verdict,
                attempts,
                error: None,
            },
        )
    }
}

/// Attempt 1 logs to the test's folder, a retry N to `attempt-N` inside it.
fn attempt_dir(dir: &Path, attempt: u32) -> PathBuf {
    if attempt == 1 {
        dir.to_path_buf()
    } else {
        dir.join(format!("attempt-{attempt}"))
    }
}

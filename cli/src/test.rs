//! `flotilla test`: its arguments, and the run of one spec's test; several specs make
//! a suite (`suite.rs`), `--debug` steps into a failure (`debug.rs`).

use std::path::PathBuf;
use std::process::ExitCode;

use flotilla_driver::{run_test, FleetOptions, Spec};

use crate::repl::Interrupts;
use crate::{cannot_run, debug, exit_for, out_dir, suite, with_runtime, StateArgs, EXIT_ERROR};

#[derive(Debug, clap::Args)]
pub(crate) struct TestArgs {
    /// Spec files, folders holding `flotilla.toml`, or folders to search for them.
    #[arg(required = true, value_name = "SPEC")]
    spec: Vec<PathBuf>,
    /// Log folder (report.html, driver.log, events.jsonl, <machine>/console.log,
    /// <machine>/qemu.log); default flotilla-out/<test name>. Emptied at the start.
    /// For a suite: the folder of the tests' folders and index.html, default
    /// flotilla-out.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Only print the result and errors; the log folder still gets everything.
    #[arg(short, long)]
    quiet: bool,
    /// Write a JUnit XML report here (a test case per subtest; for a suite, a test
    /// suite per spec with a test case per subtest and one for the whole test).
    #[arg(long, value_name = "FILE")]
    junit: Option<PathBuf>,
    #[command(flatten)]
    suite: suite::SuiteArgs,
    /// Collect coverage data from every machine's instrumented programs (gcov,
    /// LLVM) and report it: <out>/coverage/index.html, a tracefile per machine,
    /// combined.info, and a table at the end.
    #[arg(long)]
    coverage: bool,
    /// With --coverage: fail a passing test whose combined line coverage is under
    /// PERCENT.
    #[arg(long, value_name = "PERCENT", value_parser = percent)]
    coverage_fail_under: Option<f64>,
    /// If the script fails (an error, the timeout, a polling condition), keep the
    /// machines up: print the error and the failing line, how to reach the machines
    /// (`flotilla shell`), and open `flotilla run`'s prompt with the script's
    /// variables; Ctrl-D stops them. Without a terminal on stdin, wait for SIGTERM
    /// instead of a prompt. The exit status stays the test's.
    #[arg(long)]
    debug: bool,
    /// Instead of the spec's script, serve one Python client that connects to the
    /// Unix socket SOCKET (made here): a program using the `flotilla` Python package's
    /// `connect(SOCKET)`, or its pytest plugin, which starts `flotilla test --attach`
    /// itself. The client's verdict is the test's; the log folder and report are as
    /// for a script.
    #[arg(long, value_name = "SOCKET", conflicts_with = "debug")]
    attach: Option<PathBuf>,
    #[command(flatten)]
    state: StateArgs,
}

/// `flotilla test`: a suite when the arguments make one, else one spec's test.
pub(crate) fn main(args: TestArgs) -> ExitCode {
    if suite::is_suite(&args.spec, &args.suite) {
        run_suite(args)
    } else {
        with_runtime(|interrupts| run_one(args, interrupts))
    }
}

/// Runs the suite (`--debug` has no place in one).
fn run_suite(args: TestArgs) -> ExitCode {
    let TestArgs {
        spec: paths,
        out,
        quiet,
        junit,
        suite,
        coverage,
        coverage_fail_under,
        debug,
        attach,
        state,
    } = args;
    if attach.is_some() {
        eprintln!("error: --attach serves one test: name a single spec");
        return ExitCode::from(EXIT_ERROR);
    }
    if debug {
        eprintln!(
            "error: --debug steps into one test: name a single spec, without --retries, --partition or --list"
        );
        return ExitCode::from(EXIT_ERROR);
    }
    with_runtime(|interrupts| {
        let mut fleet = FleetOptions::new(".");
        fleet.coverage = coverage;
        fleet.coverage_fail_under = coverage_fail_under;
        fleet.snapshot = !state.no_snapshot;
        fleet.keep_state = state.keep_state;
        suite::main(paths, out, quiet, junit, suite, fleet, interrupts.all)
    })
}

/// Runs the test of the one spec, and says whether it passed and where its logs are.
async fn run_one(args: TestArgs, interrupts: Interrupts) -> ExitCode {
    let TestArgs {
        spec: paths,
        out,
        quiet,
        junit,
        suite: _,
        coverage,
        coverage_fail_under,
        debug,
        attach,
        state,
    } = args;
    let spec = match Spec::load(&paths[0]) {
        Ok(s) => s,
        Err(e) => return cannot_run(&e),
    };
    let python = spec
        .script
        .as_ref()
        .is_some_and(|s| s.extension().is_some_and(|e| e == "py"));
    if debug && python {
        eprintln!(
            "error: --debug does not step into Python scripts yet (it opens a Rhai prompt); \
             run without --debug, and reach the machines with `flotilla run` beside it"
        );
        return ExitCode::from(EXIT_ERROR);
    }
    let mut options = FleetOptions::new(out_dir(out, &spec));
    options.terminal = !quiet;
    options.junit = junit;
    options.keep_state = state.keep_state;
    options.coverage = coverage;
    options.coverage_fail_under = coverage_fail_under;
    options.snapshot = !state.no_snapshot;
    options.attach = attach;
    let log_dir = options.log_dir.clone();
    let result = if debug {
        debug::run_test(&spec, options, &interrupts).await
    } else {
        run_test(&spec, options, interrupts.all.clone()).await
    };
    // Quiet runs print no table: the report's path at least.
    let coverage_report = log_dir.join("coverage/index.html");
    if quiet && coverage_report.is_file() {
        eprintln!("coverage report: {}", coverage_report.display());
    }
    match result {
        Ok(()) => {
            eprintln!("PASSED: {} (logs in {})", spec.name, log_dir.display());
            ExitCode::SUCCESS
        }
        Err(e) => {
            let code = exit_for(&e);
            eprintln!("FAILED: {} (logs in {})", spec.name, log_dir.display());
            code
        }
    }
}

/// A percentage from 0 to 100 (`--coverage-fail-under`).
fn percent(text: &str) -> Result<f64, String> {
    match text.trim_end_matches('%').parse::<f64>() {
        Ok(p) if (0.0..=100.0).contains(&p) => Ok(p),
        _ => Err(format!("`{text}` is not a percentage from 0 to 100")),
    }
}

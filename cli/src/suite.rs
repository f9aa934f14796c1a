//! `flotilla test` with several specs: the suite's flags, and the run (the driver's
//! `suite` module does the work).

use std::path::PathBuf;
use std::process::ExitCode;

use flotilla_driver::suite::{self, Budget, Partition, Progress, SuiteOptions, Verdict};
use flotilla_driver::{Error, FleetOptions};
use tokio_util::sync::CancellationToken;

use crate::{cannot_run, EXIT_ERROR, EXIT_FAILED};

/// The flags that only a suite uses.
#[derive(Debug, clap::Args)]
pub(crate) struct SuiteArgs {
    /// Run at most N tests at once, instead of as many as the host's cores allow.
    #[arg(short, long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    jobs: Option<u32>,
    /// The guest memory (MiB, with QEMU's overhead) that running tests may take
    /// together; default 3/4 of the host's available memory.
    #[arg(long, value_name = "MiB", value_parser = clap::value_parser!(u64).range(1..))]
    max_memory: Option<u64>,
    /// Run a failed test again, up to N times; one that then passes is FLAKY, and
    /// every attempt's log is kept (<test folder>/attempt-<N>).
    #[arg(long, value_name = "N", default_value_t = 0)]
    retries: u32,
    /// After the first test that does not pass, start no other and stop those running
    /// (reported as cancelled, their logs kept).
    #[arg(long)]
    fail_fast: bool,
    /// Run only shard K of N (1 <= K <= N): the tests whose path hashes to it, the
    /// same shard whatever else the suite holds. For CI machines sharing a suite.
    #[arg(long, value_name = "K/N")]
    partition: Option<Partition>,
    /// Print the tests (after --partition), one per line, and run nothing.
    #[arg(long)]
    list: bool,
    /// With --list: `json` gives each test's machines, memory and CPUs.
    #[arg(
        long,
        value_name = "text|json",
        default_value = "text",
        requires = "list"
    )]
    format: ListFormat,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum ListFormat {
    Text,
    Json,
}

/// Whether these arguments make a suite rather than today's single test: several
/// paths, a folder to search, or a flag that only a suite has.
pub(crate) fn is_suite(paths: &[PathBuf], args: &SuiteArgs) -> bool {
    paths.len() > 1
        || !paths.iter().all(|p| suite::is_spec(p))
        || args.list
        || args.partition.is_some()
        || args.retries > 0
}

/// Runs (or lists) the suite; its exit status: 0 all passed (flaky ones too), 2 a test
/// could not run, else 1 a test failed or was cancelled (130 after Ctrl-C, by the
/// caller).
pub(crate) async fn main(
    paths: Vec<PathBuf>,
    out: Option<PathBuf>,
    quiet: bool,
    junit: Option<PathBuf>,
    args: SuiteArgs,
    fleet: FleetOptions,
    cancel: CancellationToken,
) -> ExitCode {
    let mut tests = match suite::discover(&paths) {
        Ok(t) => t,
        Err(e) => return cannot_run(&e),
    };
    if tests.is_empty() {
        eprintln!(
            "error: no flotilla.toml under {}",
            paths
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        );
        return ExitCode::from(EXIT_ERROR);
    }
    let found = tests.len();
    if let Some(partition) = args.partition {
        tests.retain(|t| partition.contains(&t.id));
    }
    if args.list {
        match args.format {
            ListFormat::Text => print!("{}", suite::list_text(&tests)),
            ListFormat::Json => print!("{}", suite::list_json(&tests)),
        }
        return ExitCode::SUCCESS;
    }
    if fleet.keep_state.is_some() && tests.len() > 1 {
        return cannot_run(&Error::Io {
            what: "--keep-state with several tests (their machines would share disks)".into(),
            source: std::io::Error::from(std::io::ErrorKind::InvalidInput),
        });
    }
    let budget = Budget::with(args.jobs.map(|j| j as usize), args.max_memory);
    if !quiet {
        let share = args
            .partition
            .map(|p| format!(" (partition {p} of {found})"))
            .unwrap_or_default();
        eprintln!(
            "flotilla {}: {} test(s){share}; running at once within {budget}",
            env!("CARGO_PKG_VERSION"),
            tests.len()
        );
    }
    let options = SuiteOptions {
        out: out.unwrap_or_else(|| PathBuf::from("flotilla-out")),
        budget,
        retries: args.retries,
        fail_fast: args.fail_fast,
        fleet,
    };
    let mut progress = Progress::stderr(tests.len(), quiet);
    let report = suite::run_suite(&tests, &options, &mut progress, cancel).await;
    eprint!("\n{}", report.summary());
    match suite::write_index(&options.out, &report) {
        Ok(path) if !quiet => eprintln!("report: {}", path.display()),
        Ok(_) => {}
        Err(e) => eprintln!("no report: {e}"),
    }
    if let Some(path) = junit {
        if let Err(e) = std::fs::write(&path, suite::suite_junit_xml(&report)) {
            eprintln!("error: writing the JUnit report {}: {e}", path.display());
            return ExitCode::from(EXIT_ERROR);
        }
    }
    if report.count(Verdict::Error) > 0 {
        ExitCode::from(EXIT_ERROR)
    } else if report.tests.iter().all(|t| t.verdict.passed()) {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_FAILED)
    }
}

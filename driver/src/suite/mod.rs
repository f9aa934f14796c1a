//! Many tests at once: a suite. [`discover`] finds the specs under some paths,
//! [`Partition`] keeps a CI machine's share, [`run_suite`] runs them concurrently under
//! a [`Budget`] of guest memory and CPUs, with retries and fail-fast, showing
//! [`Progress`]; the [`SuiteReport`] gives the summary and [`suite_junit_xml`] the
//! JUnit report.
//!
//! ```no_run
//! # async fn demo() -> Result<(), flotilla_driver::Error> {
//! use flotilla_driver::suite::{discover, run_suite, Budget, Progress, SuiteOptions};
//! use flotilla_driver::FleetOptions;
//!
//! let tests = discover(&["examples".into()])?;
//! let options = SuiteOptions {
//!     out: "flotilla-out".into(),
//!     budget: Budget::automatic(),
//!     retries: 1,
//!     fail_fast: false,
//!     fleet: FleetOptions::new("flotilla-out"),
//! };
//! let mut progress = Progress::stderr(tests.len(), false);
//! let report = run_suite(&tests, &options, &mut progress, Default::default()).await;
//! eprint!("{}", report.summary());
//! # Ok(()) }
//! ```

mod budget;
mod discover;
mod index_page;
mod junit;
mod list;
mod partition;
mod progress;
mod runner;
mod verdicts;

pub use budget::{Budget, Cost, QEMU_OVERHEAD_MIB, VCPUS_PER_CORE};
pub use discover::{discover, is_spec, SuiteTest};
pub use junit::suite_junit_xml;
pub use list::{list_json, list_text};
pub use partition::Partition;
pub use progress::Progress;
pub use runner::{run_suite, SuiteOptions};
pub use verdicts::{Attempt, SuiteReport, TestReport, Verdict};

/// Writes the suite's `index.html` into its log root (`--out`), linking each test's
/// `report.html`.
pub use index_page::write_index;

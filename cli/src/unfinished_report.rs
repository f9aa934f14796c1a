//! `flotilla report LOG_DIR`: report.html for a run that did not finish.

use std::path::Path;
use std::process::ExitCode;

use crate::{exit_for, EXIT_ERROR};

/// `flotilla report LOG_DIR`.
pub(crate) fn main(dir: &Path) -> ExitCode {
    let page = dir.join("report.html");
    if page.is_file() {
        println!("{} (the run's own)", page.display());
        return ExitCode::SUCCESS;
    }
    if !dir.join("driver.log").is_file() && !dir.join("events.jsonl").is_file() {
        eprintln!(
            "error: {} is not a run's log folder: no driver.log or events.jsonl",
            dir.display()
        );
        return ExitCode::from(EXIT_ERROR);
    }
    match flotilla_driver::write_unfinished_report(dir) {
        Ok(path) => {
            println!("{}", path.display());
            ExitCode::SUCCESS
        }
        Err(e) => exit_for(&e.into()),
    }
}

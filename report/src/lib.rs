//! `report.html`: the evidence of a test run on one self-contained page (no network,
//! inline CSS, script and screenshots, relative links to the big files): the failure
//! at the top with the failing script line and the console of the machine concerned,
//! a timeline with a lane per machine (boots, restores, commands, waits, subtests,
//! failed polling conditions; the failing step marked), and each machine's console
//! and QEMU lines with their times, filterable. (A suite's `index.html`, which links
//! these pages, is the driver's suite's: `flotilla-driver`'s `suite/index_page.rs`.)
//!
//! This crate needs no VM and no driver: it reads a finished (or killed) run's log
//! folder, which the driver writes to the formats it defines here (`events.jsonl`,
//! [`RESTORED_MARK`]); `flotilla report DIR` draws a page with it alone.
//!
//! # Where things are
//!
//! - `lib.rs`: these docs, [`write`], [`write_unfinished`] and [`Error`].
//! - `steps.rs`: `events.jsonl`, a run's steps a line each as they happen: written by
//!   the driver ([`steps::Recorder`]), read here.
//! - `collect.rs`: reading the log folder (`events.jsonl`, `driver.log`, the machines'
//!   folders) and [`RESTORED_MARK`], the console's line after a restored state's boot.
//! - `page.rs` with `page.css` and `page.js`: the page.
//! - `tests.rs`: a 16-machine, 50,000-line run's page loaded in Chromium.

mod collect;
mod page;
pub mod steps;
#[cfg(test)]
mod tests;

use std::path::{Path, PathBuf};

pub use collect::{FILE, RESTORED_MARK};
pub use page::Outline;

/// Writes `dir/report.html` for the run whose log folder is `dir`; its path. What
/// cannot be read in the folder is a note on the page; only the write can fail.
pub fn write(dir: &Path, outline: &Outline) -> Result<PathBuf, Error> {
    write_collected(dir, outline, &collect::collect(dir))
}

/// Writes `dir/report.html` for a run whose driver died before it could write it (a
/// driver killed with SIGKILL): the verdict `did not finish`, the timeline and logs as
/// far as `events.jsonl` and the logs go, the test's name from `driver.log`. Its path.
pub fn write_unfinished(dir: &Path) -> Result<PathBuf, Error> {
    let log = std::fs::read_to_string(dir.join("driver.log")).unwrap_or_default();
    let name = log
        .lines()
        .find_map(|l| {
            let (_, rest) = l.split_once(": test `")?;
            Some(rest.split_once('`')?.0.to_owned())
        })
        .or_else(|| Some(dir.file_name()?.to_string_lossy().into_owned()))
        .unwrap_or_else(|| "test".to_owned());
    let collected = collect::collect(dir);
    let outline = Outline {
        name: &name,
        passed: false,
        verdict: "did not finish",
        seconds: collected.end,
        error: Some(
            "the run did not finish: its driver ended without writing this page (killed?); \
             the page was drawn afterwards from the log folder",
        ),
        excerpt: None,
    };
    write_collected(dir, &outline, &collected)
}

fn write_collected(
    dir: &Path,
    outline: &Outline,
    collected: &collect::Collected,
) -> Result<PathBuf, Error> {
    let html = page::render(outline, collected);
    let path = dir.join(FILE);
    std::fs::write(&path, html).map_err(|source| Error {
        what: format!("writing the report {}", path.display()),
        source,
    })?;
    Ok(path)
}

/// The page could not be written: what was being written, and why.
#[derive(Debug, thiserror::Error)]
#[error("{what}")]
pub struct Error {
    pub what: String,
    #[source]
    pub source: std::io::Error,
}

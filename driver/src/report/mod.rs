//! `report.html`: the evidence of a test run on one self-contained page (no network,
//! inline CSS, script and screenshots, relative links to the big files): the failure
//! at the top with the failing script line and the console of the machine concerned,
//! a timeline with a lane per machine (boots, restores, commands, waits, subtests,
//! failed polling conditions; the failing step marked), and each machine's console
//! and QEMU lines with their times, filterable. (A suite's `index.html`, which links
//! these pages, is the suite's: `suite/index_page.rs`.)
//!
//! `collect.rs` reads the log folder (`events.jsonl`, `driver.log`, the machines'
//! folders), `page.rs` (with `page.css` and `page.js`) makes the page; `tests.rs` loads
//! a long run's page in Chromium.

mod collect;
mod page;
#[cfg(test)]
mod tests;

use std::path::{Path, PathBuf};

use crate::error::Error;

pub(crate) use collect::FILE;
pub(crate) use page::Outline;

/// Writes `dir/report.html` for the run whose log folder is `dir`; its path. What
/// cannot be read in the folder is a note on the page; only the write can fail.
pub(crate) fn write(dir: &Path, outline: &Outline) -> Result<PathBuf, Error> {
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
    std::fs::write(&path, html).map_err(|source| Error::Io {
        what: format!("writing the report {}", path.display()),
        source,
    })?;
    Ok(path)
}

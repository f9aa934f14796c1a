//! lcov's genhtml run on `combined.info` into `genhtml/`, with `--show-details`: its
//! per-test detail names the machines (the tracefile's test names). A second view of
//! the same data for those used to it; when genhtml is missing or fails, the report
//! says so and has its own pages.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::tools;

/// Runs genhtml; the path of its `index.html`, or why there is none.
pub fn run(combined: &Path, out: &Path) -> Result<PathBuf, String> {
    let genhtml = tools::find("genhtml")
        .ok_or("genhtml is not on the host (Debian: package lcov): only the report's own pages")?;
    let dir = out.join("genhtml");
    tools::run(
        Command::new(genhtml)
            .args([
                "--quiet",
                "--show-details",
                "--function-coverage",
                "--legend",
                "--ignore-errors",
                "source",
                "--title",
                "flotilla coverage",
                "--output-directory",
            ])
            .arg(&dir)
            .arg(combined),
    )
    .map_err(|e| format!("genhtml's report: {e}"))?;
    Ok(dir.join("index.html"))
}

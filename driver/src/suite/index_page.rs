//! A suite's `index.html`: each test with its result and time, linking the report of
//! each of its attempts.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use super::verdicts::SuiteReport;
use crate::error::Error;
use flotilla_host::markup::escape;

/// The index's name in the suite's log root.
const FILE: &str = "index.html";

/// Writes `out/index.html` for `suite`, linking each attempt's `report.html`; its path.
pub fn write_index(out: &Path, suite: &SuiteReport) -> Result<PathBuf, Error> {
    let path = out.join(FILE);
    std::fs::create_dir_all(out)
        .and_then(|()| std::fs::write(&path, index_page(out, suite)))
        .map_err(|source| Error::Io {
            what: format!("writing the suite's index {}", path.display()),
            source,
        })?;
    Ok(path)
}

fn index_page(out: &Path, suite: &SuiteReport) -> String {
    let esc = escape;
    let mut page = format!(
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <title>flotilla suite</title>\n<style>\nbody {{ font: 14px/1.4 system-ui, sans-serif; \
         margin: 1em 2em; }}\ntable {{ border-collapse: collapse; }}\ntd, th {{ border: 1px solid \
         #ddd; padding: 2px 8px; text-align: left; }}\n.passed {{ color: #2a7d2a; }}\n\
         .failed {{ color: #b3261e; font-weight: bold; }}\n</style>\n</head>\n<body>\n\
         <h1>Suite: {} test(s) in {:.1} s</h1>\n<table>\n<tr><th>test</th><th>result</th>\
         <th>time</th><th>retries</th><th>reports</th></tr>\n",
        suite.tests.len(),
        suite.seconds
    );
    for test in &suite.tests {
        let class = if test.verdict.passed() {
            "passed"
        } else {
            "failed"
        };
        let _ = write!(
            page,
            "<tr class=\"test\"><td>{}</td><td class=\"{class}\">{}</td><td>{:.1} s</td><td>{}</td><td>",
            esc(&test.id),
            test.verdict.label(),
            test.seconds(),
            test.retries(),
        );
        for (n, attempt) in test.attempts.iter().enumerate() {
            let report = attempt.log_dir.join(flotilla_report::FILE);
            let href = report.strip_prefix(out).unwrap_or(&report);
            let verdict = if attempt.error.is_some() {
                "failed"
            } else {
                "passed"
            };
            let _ = write!(
                page,
                "<a href=\"{}\">attempt {} ({verdict}, {:.1} s)</a> ",
                esc(&href.to_string_lossy()),
                n + 1,
                attempt.seconds
            );
        }
        if let Some(error) = test.final_error() {
            let first = error.lines().next().unwrap_or("");
            let _ = write!(page, "<br><code>{}</code>", esc(first));
        }
        page.push_str("</td></tr>\n");
    }
    page.push_str("</table>\n</body>\n</html>\n");
    page
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::suite::{Attempt, TestReport, Verdict};

    #[test]
    fn the_index_links_each_attempt_relative_to_the_root() {
        let out = Path::new("flotilla-out");
        let attempt = |dir: &str, error: Option<&str>| Attempt {
            log_dir: out.join(dir),
            seconds: 2.0,
            subtests: Vec::new(),
            error: error.map(str::to_owned),
        };
        let suite = SuiteReport {
            tests: vec![TestReport {
                id: "examples/<b>".into(),
                name: "b".into(),
                verdict: Verdict::Flaky,
                attempts: vec![
                    attempt("examples-b", Some("error: boom")),
                    attempt("examples-b/attempt-2", None),
                ],
                error: None,
            }],
            seconds: 4.0,
        };
        let page = index_page(out, &suite);
        assert!(page.contains("<td>examples/&lt;b&gt;</td><td class=\"passed\">FLAKY</td>"));
        assert!(page.contains("<a href=\"examples-b/report.html\">attempt 1 (failed, 2.0 s)</a>"));
        assert!(page.contains("<a href=\"examples-b/attempt-2/report.html\">attempt 2 (passed"));
    }
}

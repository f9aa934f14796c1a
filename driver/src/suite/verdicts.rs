//! What a suite run found: a verdict per test with its attempts, the summary table and
//! the failures' errors.

use std::fmt::Write as _;
use std::path::PathBuf;

use crate::junit::Subtest;

/// How a test ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Verdict {
    Passed,
    /// Failed, then passed on a retry.
    Flaky,
    Failed,
    /// Could not run: a bad spec or script, missing set-up.
    Error,
    /// Stopped (Ctrl-C, `--fail-fast`) or never started.
    Cancelled,
}

impl Verdict {
    pub fn label(self) -> &'static str {
        match self {
            Verdict::Passed => "PASSED",
            Verdict::Flaky => "FLAKY",
            Verdict::Failed => "FAILED",
            Verdict::Error => "ERROR",
            Verdict::Cancelled => "CANCELLED",
        }
    }

    /// Whether the suite counts it as passed.
    pub fn passed(self) -> bool {
        matches!(self, Verdict::Passed | Verdict::Flaky)
    }
}

/// One run of a test.
#[derive(Debug, Clone)]
pub struct Attempt {
    pub log_dir: PathBuf,
    /// Wall time, from making the machines to their end.
    pub seconds: f64,
    /// The subtests it finished.
    pub subtests: Vec<Subtest>,
    /// Its error with the chain of causes (`error: ...` and `caused by: ...` lines).
    pub error: Option<String>,
}

/// One test of the suite, finished.
#[derive(Debug, Clone)]
pub struct TestReport {
    pub id: String,
    pub name: String,
    pub verdict: Verdict,
    /// Every run, the first first; none when the test never started.
    pub attempts: Vec<Attempt>,
    /// Why it did not pass, when it did not start at all (a spec that cannot be read).
    pub error: Option<String>,
}

impl TestReport {
    /// All attempts' time.
    pub fn seconds(&self) -> f64 {
        self.attempts.iter().map(|a| a.seconds).sum()
    }

    pub fn retries(&self) -> usize {
        self.attempts.len().saturating_sub(1)
    }

    /// The last attempt's log folder.
    pub fn log_dir(&self) -> Option<&PathBuf> {
        self.attempts.last().map(|a| &a.log_dir)
    }

    /// The error that decided the verdict (the last attempt's, or why it never ran).
    pub fn final_error(&self) -> Option<&str> {
        self.error
            .as_deref()
            .or_else(|| self.attempts.last().and_then(|a| a.error.as_deref()))
    }
}

/// A whole suite run.
#[derive(Debug, Clone)]
pub struct SuiteReport {
    /// In the suite's order (by id).
    pub tests: Vec<TestReport>,
    /// Wall time of the whole run.
    pub seconds: f64,
}

impl SuiteReport {
    pub fn count(&self, verdict: Verdict) -> usize {
        self.tests.iter().filter(|t| t.verdict == verdict).count()
    }

    /// The summary: a table (test, result, time, retries, log folder), the errors of
    /// the tests that did not pass, and the totals.
    pub fn summary(&self) -> String {
        let mut out = String::new();
        let width = self
            .tests
            .iter()
            .map(|t| t.id.len())
            .max()
            .unwrap_or(4)
            .max(4);
        let _ = writeln!(
            out,
            "{:width$}  {:9}  {:>8}  {:>7}  log folder",
            "test", "result", "time", "retries"
        );
        for t in &self.tests {
            let time = if t.attempts.is_empty() {
                "-".to_owned()
            } else {
                format!("{:.1} s", t.seconds())
            };
            let log = t
                .log_dir()
                .map_or_else(|| "-".to_owned(), |d| d.display().to_string());
            let _ = writeln!(
                out,
                "{:width$}  {:9}  {time:>8}  {:>7}  {log}",
                t.id,
                t.verdict.label(),
                t.retries()
            );
        }
        let failed: Vec<&TestReport> = self
            .tests
            .iter()
            .filter(|t| !t.verdict.passed() && t.final_error().is_some())
            .collect();
        if !failed.is_empty() {
            out.push_str("\nfailures:\n");
            for t in failed {
                let logs = t
                    .log_dir()
                    .map(|d| format!(", logs in {}", d.display()))
                    .unwrap_or_default();
                let _ = writeln!(out, "\n{} ({}{logs}):", t.id, t.verdict.label());
                for line in t.final_error().unwrap_or("").lines() {
                    let _ = writeln!(out, "  {line}");
                }
            }
            out.push('\n');
        }
        let sum: f64 = self.tests.iter().map(TestReport::seconds).sum();
        let mut counts = Vec::new();
        for v in [
            Verdict::Passed,
            Verdict::Flaky,
            Verdict::Failed,
            Verdict::Error,
            Verdict::Cancelled,
        ] {
            let n = self.count(v);
            if n > 0 {
                let word = match v {
                    Verdict::Error => "could not run".to_owned(),
                    v => v.label().to_lowercase(),
                };
                counts.push(format!("{n} {word}"));
            }
        }
        let _ = writeln!(
            out,
            "{} test(s): {} in {:.1} s (the tests' own times add up to {sum:.1} s)",
            self.tests.len(),
            if counts.is_empty() {
                "none".to_owned()
            } else {
                counts.join(", ")
            },
            self.seconds
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn report(id: &str, verdict: Verdict, errors: &[Option<&str>]) -> TestReport {
        TestReport {
            id: id.to_owned(),
            name: id.rsplit('/').next().unwrap().to_owned(),
            verdict,
            attempts: errors
                .iter()
                .enumerate()
                .map(|(i, e)| Attempt {
                    log_dir: PathBuf::from(format!(
                        "out/{}/attempt-{}",
                        id.replace('/', "-"),
                        i + 1
                    )),
                    seconds: 2.0,
                    subtests: Vec::new(),
                    error: e.map(str::to_owned),
                })
                .collect(),
            error: None,
        }
    }

    #[test]
    fn the_summary_has_a_row_per_test_and_the_errors_again() {
        let suite = SuiteReport {
            tests: vec![
                report("examples/hello", Verdict::Passed, &[None]),
                report("t/flaky", Verdict::Flaky, &[Some("error: first try"), None]),
                report(
                    "t/broken",
                    Verdict::Failed,
                    &[Some("error: boom\n  caused by: why")],
                ),
                report("t/late", Verdict::Cancelled, &[]),
            ],
            seconds: 5.0,
        };
        let s = suite.summary();
        let lines: Vec<&str> = s.lines().collect();
        assert_eq!(
            lines[0],
            "test            result         time  retries  log folder"
        );
        assert_eq!(
            lines[2],
            "t/flaky         FLAKY         4.0 s        1  out/t-flaky/attempt-2"
        );
        assert_eq!(lines[4], "t/late          CANCELLED         -        0  -");
        assert!(
            s.contains("\nt/broken (FAILED, logs in out/t-broken/attempt-1):\n  error: boom\n    caused by: why\n"),
            "{s}"
        );
        assert!(!s.contains("first try"), "{s}");
        assert!(
            s.ends_with("4 test(s): 1 passed, 1 flaky, 1 failed, 1 cancelled in 5.0 s (the tests' own times add up to 8.0 s)\n"),
            "{s}"
        );
    }
}

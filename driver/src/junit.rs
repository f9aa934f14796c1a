//! Subtests, the named and timed sections of a run, and the JUnit XML report that
//! lists them.

use std::sync::Arc;
use std::time::Duration;

use crate::error::Error;
use flotilla_host::markup::escape;

/// One finished subtest: its path (`outer / inner`), how long it took, and why it
/// failed, if it did.
#[derive(Debug, Clone)]
pub struct Subtest {
    pub name: String,
    pub duration: Duration,
    pub failure: Option<String>,
}

/// Subtests recorded by a script run, in the order they finished.
pub type Subtests = Arc<std::sync::Mutex<Vec<Subtest>>>;

/// A JUnit XML report: one test case per subtest, or one for the whole test when it
/// has none; an error outside every subtest is a test case of its own.
pub fn junit_xml(name: &str, subtests: &[Subtest], seconds: f64, error: Option<&Error>) -> String {
    let esc = escape;
    let mut cases: Vec<(String, f64, Option<String>)> = subtests
        .iter()
        .map(|s| (s.name.clone(), s.duration.as_secs_f64(), s.failure.clone()))
        .collect();
    let failed_inside = subtests.iter().any(|s| s.failure.is_some());
    match error {
        Some(e) if !failed_inside => cases.push((name.to_owned(), seconds, Some(e.to_string()))),
        None if cases.is_empty() => cases.push((name.to_owned(), seconds, None)),
        _ => {}
    }
    let failures = cases.iter().filter(|c| c.2.is_some()).count();
    let mut xml = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<testsuites>\n  <testsuite name=\"{}\" tests=\"{}\" failures=\"{failures}\" time=\"{seconds:.3}\">\n",
        esc(name),
        cases.len()
    );
    for (case, time, failure) in cases {
        xml.push_str(&format!(
            "    <testcase classname=\"{}\" name=\"{}\" time=\"{time:.3}\"",
            esc(name),
            esc(&case)
        ));
        match failure {
            Some(f) => xml.push_str(&format!(
                ">\n      <failure message=\"{}\">{}</failure>\n    </testcase>\n",
                esc(f.lines().next().unwrap_or("")),
                esc(&f)
            )),
            None => xml.push_str("/>\n"),
        }
    }
    xml.push_str("  </testsuite>\n</testsuites>\n");
    xml
}

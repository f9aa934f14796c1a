//! Subtests, the named and timed sections of a run, and the JUnit XML report that
//! lists them.

use std::sync::Arc;
use std::time::Duration;

use crate::error::Error;
use crate::log::Log;
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

/// The names of the subtests running now, outermost first.
pub(crate) type SubtestStack = Arc<std::sync::Mutex<Vec<String>>>;

/// A subtest under way: begun by [`begin_subtest`], ended by [`OpenSubtest::end`].
pub(crate) struct OpenSubtest {
    log: Log,
    name: String,
    path: String,
    depth: usize,
    started: std::time::Instant,
    step: crate::log::Activity,
    stack: SubtestStack,
    list: Subtests,
}

/// Begins subtest `name` inside those on `stack`: `subtest: NAME` in the log (indented
/// when nested) and a step of the timeline; [`OpenSubtest::end`] adds it to `list`.
pub(crate) fn begin_subtest(
    log: &Log,
    stack: &SubtestStack,
    list: &Subtests,
    name: &str,
) -> OpenSubtest {
    let (path, depth) = match stack.lock() {
        Ok(mut st) => {
            st.push(name.to_owned());
            (st.join(" / "), st.len() - 1)
        }
        Err(_) => (name.to_owned(), 0),
    };
    log.info(&format!("{}subtest: {name}", "  ".repeat(depth)));
    OpenSubtest {
        log: log.clone(),
        name: name.to_owned(),
        step: log.step(None, "subtest", &path),
        path,
        depth,
        started: std::time::Instant::now(),
        stack: stack.clone(),
        list: list.clone(),
    }
}

impl OpenSubtest {
    /// Ends the subtest with its verdict: `subtest: NAME ok (1.23 s)` or `FAILED`.
    pub(crate) fn end(self, failure: Option<String>) {
        let duration = self.started.elapsed();
        if let Ok(mut st) = self.stack.lock() {
            if let Some(i) = st.iter().rposition(|n| *n == self.name) {
                st.truncate(i);
            }
        }
        self.step.finish(failure.clone().map_or(Ok(None), Err));
        let verdict = if failure.is_some() { "FAILED" } else { "ok" };
        self.log.info(&format!(
            "{}subtest: {} {verdict} ({:.2} s)",
            "  ".repeat(self.depth),
            self.name,
            duration.as_secs_f64()
        ));
        if let Ok(mut list) = self.list.lock() {
            list.push(Subtest {
                name: self.path,
                duration,
                failure,
            });
        }
    }
}

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

//! The suite's JUnit XML report: a `testsuite` per spec, with a `testcase` per subtest
//! and one for the whole test, under a `testsuites` root with the totals (the form
//! GitHub's and GitLab's test reports read).

use std::fmt::Write as _;

use super::verdicts::{SuiteReport, TestReport, Verdict};
use flotilla_host::markup::escape;

/// One test case: name, seconds, and what went wrong (element, message, body).
struct Case {
    name: String,
    seconds: f64,
    outcome: Option<(&'static str, String, String)>,
    /// Extra elements (flaky attempts), already XML.
    extra: String,
    out: Option<String>,
}

/// The report of `suite` as JUnit XML.
pub fn suite_junit_xml(suite: &SuiteReport) -> String {
    let suites: Vec<(&TestReport, Vec<Case>)> = suite.tests.iter().map(|t| (t, cases(t))).collect();
    let count = |element: &str| {
        suites
            .iter()
            .flat_map(|(_, cases)| cases)
            .filter(|c| c.outcome.as_ref().is_some_and(|o| o.0 == element))
            .count()
    };
    let total: usize = suites.iter().map(|(_, c)| c.len()).sum();
    let mut xml = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<testsuites name=\"flotilla\" tests=\"{total}\" failures=\"{}\" errors=\"{}\" skipped=\"{}\" time=\"{:.3}\">\n",
        count("failure"),
        count("error"),
        count("skipped"),
        suite.seconds
    );
    for (test, cases) in &suites {
        let of = |element: &str| {
            cases
                .iter()
                .filter(|c| c.outcome.as_ref().is_some_and(|o| o.0 == element))
                .count()
        };
        let _ = writeln!(
            xml,
            "  <testsuite name=\"{}\" tests=\"{}\" failures=\"{}\" errors=\"{}\" skipped=\"{}\" time=\"{:.3}\">",
            escape(&test.id),
            cases.len(),
            of("failure"),
            of("error"),
            of("skipped"),
            test.seconds()
        );
        for case in cases {
            let _ = write!(
                xml,
                "    <testcase classname=\"{}\" name=\"{}\" time=\"{:.3}\"",
                escape(&test.id),
                escape(&case.name),
                case.seconds
            );
            if case.outcome.is_none() && case.extra.is_empty() && case.out.is_none() {
                xml.push_str("/>\n");
                continue;
            }
            xml.push_str(">\n");
            match &case.outcome {
                Some(("skipped", message, _)) => {
                    let _ = writeln!(xml, "      <skipped message=\"{}\"/>", escape(message));
                }
                Some((element, message, body)) => {
                    let _ = writeln!(
                        xml,
                        "      <{element} message=\"{}\">{}</{element}>",
                        escape(message),
                        escape(body)
                    );
                }
                None => {}
            }
            xml.push_str(&case.extra);
            if let Some(out) = &case.out {
                let _ = writeln!(xml, "      <system-out>{}</system-out>", escape(out));
            }
            xml.push_str("    </testcase>\n");
        }
        xml.push_str("  </testsuite>\n");
    }
    xml.push_str("</testsuites>\n");
    xml
}

/// The test cases of one test: the last attempt's subtests, then the whole test.
fn cases(test: &TestReport) -> Vec<Case> {
    let mut cases: Vec<Case> = test
        .attempts
        .last()
        .map(|a| a.subtests.as_slice())
        .unwrap_or_default()
        .iter()
        .map(|s| Case {
            name: s.name.clone(),
            seconds: s.duration.as_secs_f64(),
            outcome: s.failure.as_ref().map(|f| {
                let first = f.lines().next().unwrap_or("").to_owned();
                ("failure", first, f.clone())
            }),
            extra: String::new(),
            out: None,
        })
        .collect();
    let error = test.final_error().unwrap_or("").to_owned();
    let first = error.lines().next().unwrap_or("").to_owned();
    let outcome = match test.verdict {
        Verdict::Passed | Verdict::Flaky => None,
        Verdict::Failed => Some(("failure", first, error)),
        Verdict::Error => Some(("error", first, error)),
        Verdict::Cancelled => Some((
            "skipped",
            if test.attempts.is_empty() {
                "cancelled before it started".to_owned()
            } else {
                "cancelled".to_owned()
            },
            String::new(),
        )),
    };
    // A flaky test's failed attempts, as surefire and nextest write them.
    let mut extra = String::new();
    if test.verdict == Verdict::Flaky {
        for a in test.attempts.iter().filter(|a| a.error.is_some()) {
            let e = a.error.as_deref().unwrap_or("");
            let _ = writeln!(
                extra,
                "      <flakyFailure message=\"{}\">{}</flakyFailure>",
                escape(e.lines().next().unwrap_or("")),
                escape(e)
            );
        }
    }
    let mut out: Vec<String> = test
        .attempts
        .iter()
        .enumerate()
        .map(|(i, a)| {
            format!(
                "attempt {}: {} in {:.1} s, logs in {}",
                i + 1,
                if a.error.is_some() {
                    "failed"
                } else {
                    "passed"
                },
                a.seconds,
                a.log_dir.display()
            )
        })
        .collect();
    if test.verdict == Verdict::Flaky {
        out.push(format!("FLAKY: passed on attempt {}", test.attempts.len()));
    }
    cases.push(Case {
        name: test.name.clone(),
        seconds: test.seconds(),
        outcome,
        extra,
        out: (!out.is_empty()).then(|| out.join("\n")),
    });
    cases
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;
    use std::time::Duration;

    use super::*;
    use crate::junit::Subtest;
    use crate::suite::verdicts::Attempt;

    /// An element's name and attributes.
    type Element = (String, Vec<(String, String)>);

    /// A small XML 1.0 well-formedness check: one root, tags nested and closed,
    /// attributes quoted and unique, entities known, no forbidden characters. Returns
    /// every element as (name, attributes) in document order.
    fn parse(xml: &str) -> Result<Vec<Element>, String> {
        let body = xml
            .strip_prefix("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n")
            .ok_or("no XML declaration")?;
        let mut elements = Vec::new();
        let mut stack: Vec<String> = Vec::new();
        let mut rest = body;
        let mut roots = 0;
        let check_text = |t: &str| -> Result<(), String> {
            if let Some(c) = t
                .chars()
                .find(|&c| c < ' ' && !matches!(c, '\t' | '\n' | '\r'))
            {
                return Err(format!("forbidden character {:?}", c));
            }
            let mut amp = t;
            while let Some(i) = amp.find('&') {
                amp = &amp[i..];
                let end = amp.find(';').ok_or("an unterminated entity")?;
                if !["&amp;", "&lt;", "&gt;", "&quot;", "&apos;"].contains(&&amp[..=end]) {
                    return Err(format!("unknown entity {}", &amp[..=end]));
                }
                amp = &amp[end + 1..];
            }
            if t.contains('<') {
                return Err("a raw <".into());
            }
            Ok(())
        };
        while !rest.is_empty() {
            let Some(open) = rest.find('<') else {
                check_text(rest)?;
                if !rest.trim().is_empty() {
                    return Err("text after the root".into());
                }
                break;
            };
            check_text(&rest[..open])?;
            if stack.is_empty() && !rest[..open].trim().is_empty() {
                return Err("text outside the root".into());
            }
            let close = rest[open..].find('>').ok_or("an unclosed tag")? + open;
            let tag = &rest[open + 1..close];
            rest = &rest[close + 1..];
            if let Some(name) = tag.strip_prefix('/') {
                if stack.pop().as_deref() != Some(name) {
                    return Err(format!("</{name}> closes nothing open"));
                }
                continue;
            }
            let selfclosing = tag.ends_with('/');
            let tag = tag.trim_end_matches('/');
            let (name, mut attrs) = tag.split_once(' ').unwrap_or((tag, ""));
            if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
                return Err(format!("bad element name {name:?}"));
            }
            let mut parsed: Vec<(String, String)> = Vec::new();
            loop {
                attrs = attrs.trim_start();
                if attrs.is_empty() {
                    break;
                }
                let (key, after) = attrs.split_once("=\"").ok_or("an unquoted attribute")?;
                let end = after.find('"').ok_or("an unterminated attribute")?;
                check_text(&after[..end])?;
                if parsed.iter().any(|(k, _)| k == key) {
                    return Err(format!("attribute {key} twice"));
                }
                parsed.push((key.to_owned(), after[..end].to_owned()));
                attrs = &after[end + 1..];
            }
            if stack.is_empty() {
                roots += 1;
            }
            elements.push((name.to_owned(), parsed));
            if !selfclosing {
                stack.push(name.to_owned());
            }
        }
        if !stack.is_empty() || roots != 1 {
            return Err(format!("open at the end: {stack:?}, {roots} roots"));
        }
        Ok(elements)
    }

    fn attempt(error: Option<&str>, subtests: Vec<Subtest>) -> Attempt {
        Attempt {
            log_dir: PathBuf::from("out/x"),
            seconds: 1.5,
            subtests,
            error: error.map(str::to_owned),
        }
    }

    #[test]
    fn the_report_is_well_formed_xml_with_totals() {
        let sub = |name: &str, failure: Option<&str>| Subtest {
            name: name.to_owned(),
            duration: Duration::from_millis(250),
            failure: failure.map(str::to_owned),
        };
        let test = |id: &str, verdict, attempts| TestReport {
            id: id.to_owned(),
            name: format!("{id}-name"),
            verdict,
            attempts,
            error: None,
        };
        let suite = SuiteReport {
            tests: vec![
                test(
                    "a/pass",
                    Verdict::Passed,
                    vec![attempt(
                        None,
                        vec![sub("boot", None), sub("ping <all> & \"more\"", None)],
                    )],
                ),
                test(
                    "a/fail",
                    Verdict::Failed,
                    vec![attempt(
                        Some("error: m # \x1b[1mbold\x1b[0m\n  caused by: x"),
                        vec![sub("step", Some("error: step failed"))],
                    )],
                ),
                test(
                    "a/flaky",
                    Verdict::Flaky,
                    vec![attempt(Some("error: once"), vec![]), attempt(None, vec![])],
                ),
                TestReport {
                    error: Some("error: bad spec".into()),
                    ..test("a/bad", Verdict::Error, vec![])
                },
                test("a/late", Verdict::Cancelled, vec![]),
            ],
            seconds: 9.0,
        };
        let xml = suite_junit_xml(&suite);
        let elements = parse(&xml).unwrap_or_else(|e| panic!("{e}:\n{xml}"));
        let attr = |i: usize, key: &str| -> String {
            elements[i]
                .1
                .iter()
                .find(|(k, _)| k == key)
                .map(|(_, v)| v.clone())
                .unwrap_or_else(|| panic!("{key} of {:?}", elements[i]))
        };
        assert_eq!(elements[0].0, "testsuites");
        // 3 + 2 + 1 + 1 + 1 cases: 2 failures (the subtest and its test), 1 error, 1
        // skipped.
        assert_eq!(attr(0, "tests"), "8");
        assert_eq!(attr(0, "failures"), "2");
        assert_eq!(attr(0, "errors"), "1");
        assert_eq!(attr(0, "skipped"), "1");
        assert_eq!(attr(0, "time"), "9.000");
        let suites: Vec<usize> = (0..elements.len())
            .filter(|&i| elements[i].0 == "testsuite")
            .collect();
        assert_eq!(suites.len(), 5);
        assert_eq!(attr(suites[0], "name"), "a/pass");
        assert_eq!(attr(suites[0], "tests"), "3");
        assert_eq!(attr(suites[1], "failures"), "2");
        let cases: Vec<String> = elements
            .iter()
            .filter(|e| e.0 == "testcase")
            .map(|e| e.1.iter().find(|(k, _)| k == "name").unwrap().1.clone())
            .collect();
        assert_eq!(
            cases,
            [
                "boot",
                "ping &lt;all&gt; &amp; &quot;more&quot;",
                "a/pass-name",
                "step",
                "a/fail-name",
                "a/flaky-name",
                "a/bad-name",
                "a/late-name"
            ]
        );
        assert!(
            xml.contains("<flakyFailure message=\"error: once\">"),
            "{xml}"
        );
        assert!(xml.contains("FLAKY: passed on attempt 2"), "{xml}");
        assert!(xml.contains("<error message=\"error: bad spec\">"), "{xml}");
        assert!(xml.contains("\\u{1b}[1mbold"), "{xml}");
        // The checker itself refuses broken XML.
        for bad in [
            "<a><b></a></b>",
            "<a x=\"1\" x=\"2\"/>",
            "<a>&nbsp;</a>",
            "<a>\x1b</a>",
            "<a/><b/>",
        ] {
            let doc = format!("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n{bad}");
            assert!(parse(&doc).is_err(), "{bad}");
        }
    }
}

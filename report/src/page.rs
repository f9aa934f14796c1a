//! The page of one run: one self-contained HTML file. What does not change as one
//! reads (the verdict, the failure, screenshots, links) is markup; the timeline and
//! the logs are drawn by `page.js` from JSON in the page, so that a long log costs
//! only the rows in sight.

use std::fmt::Write as _;

use super::collect::{console_tail, Collected};
use flotilla_host::markup::escape;

const STYLE: &str = include_str!("page.css");
const SCRIPT: &str = include_str!("page.js");

/// What the run's caller knows: its name and verdict, and how it failed.
#[derive(Debug)]
pub struct Outline<'a> {
    pub name: &'a str,
    pub passed: bool,
    /// `passed`, `failed`, `timed out`, `interrupted`, `could not run`.
    pub verdict: &'a str,
    pub seconds: f64,
    /// The error with its causes.
    pub error: Option<&'a str>,
    /// The failing script line with the lines before it.
    pub excerpt: Option<&'a str>,
}

/// The page for `outline` over what the log folder held.
pub(crate) fn render(outline: &Outline, c: &Collected) -> String {
    let esc = escape;
    let concerned = concerned_machine(outline, c);
    let mut page = String::with_capacity(4096);
    let _ = write!(
        page,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <title>{name}: {verdict}</title>\n<style>\n{STYLE}</style>\n</head>\n<body>\n\
         <h1>{name} <span class=\"verdict {class}\">{verdict}</span></h1>\n\
         <p>{seconds:.1} s, {machines} machine(s).",
        name = esc(outline.name),
        verdict = esc(outline.verdict),
        class = if outline.passed { "passed" } else { "failed" },
        seconds = outline.seconds,
        machines = c.machines.len(),
    );
    for file in &c.files {
        let _ = write!(page, " <a href=\"{0}\">{0}</a>", esc(file));
    }
    page.push_str("</p>\n");
    if let Some(error) = outline.error {
        let _ = write!(
            page,
            "<section id=\"failure\">\n<h2>Failure</h2>\n<pre class=\"error\">{}</pre>\n",
            esc(error)
        );
        if let Some(excerpt) = outline.excerpt.filter(|e| !e.is_empty()) {
            let _ = writeln!(page, "<pre class=\"excerpt\">{}</pre>", esc(excerpt));
        }
        if let Some(m) = &concerned {
            let tail = console_tail(c, m);
            let _ = write!(
                page,
                "<h3>Console of {m}, last {} line(s)</h3>\n<pre class=\"tail\">{}</pre>\n",
                tail.len(),
                esc(&tail.join("\n")),
                m = esc(m),
            );
        }
        page.push_str("</section>\n");
    }
    if !c.notes.is_empty() {
        page.push_str("<ul class=\"notes\">\n");
        for note in &c.notes {
            let _ = writeln!(page, "<li>{}</li>", esc(note));
        }
        page.push_str("</ul>\n");
    }
    page.push_str(
        "<h2>Timeline</h2>\n<div id=\"timeline\"></div>\n\
         <ul id=\"failed-steps\"></ul>\n\
         <details id=\"steps\"><summary>Every step</summary></details>\n<h2>Machines</h2>\n",
    );
    for m in &c.machines {
        // The machine concerned open; all of them when few and none is.
        let few = concerned.is_none() && c.machines.len() <= 4;
        let open = if few || concerned.as_deref() == Some(&*m.name) {
            " open"
        } else {
            ""
        };
        let _ = write!(
            page,
            "<details class=\"machine\" id=\"m-{name}\"{open}>\n<summary>{name}</summary>\n<p>",
            name = esc(&m.name),
        );
        for file in &m.files {
            let _ = write!(page, " <a href=\"{0}\">{0}</a>", esc(file));
        }
        page.push_str("</p>\n<div class=\"shots\">");
        for (name, uri) in &m.screenshots {
            let _ = write!(
                page,
                "<figure><img src=\"{uri}\" alt=\"{name}\"><figcaption>{name}</figcaption></figure>",
                uri = esc(uri),
                name = esc(name),
            );
        }
        page.push_str("</div>\n<div class=\"logview\"></div>\n</details>\n");
    }
    let data = serde_json::json!({
        "end": c.end,
        "steps": c.steps,
        "machines": c.machines,
    });
    let _ = write!(
        page,
        "<script type=\"application/json\" id=\"data\">{}</script>\n<script>\n{SCRIPT}</script>\n\
         </body>\n</html>\n",
        script_safe(&data.to_string())
    );
    page
}

/// JSON that cannot end the `<script>` element holding it: `<`, `>` and `&` (which
/// JSON has only inside strings) as `\u` escapes.
fn script_safe(json: &str) -> String {
    json.replace('<', "\\u003c")
        .replace('>', "\\u003e")
        .replace('&', "\\u0026")
}

/// The machine a failure is about: the failing step's, else the first named in the
/// error.
fn concerned_machine(outline: &Outline, c: &Collected) -> Option<String> {
    let error = outline.error?;
    if let Some(m) = c
        .steps
        .iter()
        .find(|s| s.failing)
        .and_then(|s| s.machine.clone())
    {
        return Some(m);
    }
    c.machines
        .iter()
        .find(|m| error.contains(&format!("machine `{}`", m.name)))
        .map(|m| m.name.clone())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collect::{Line, MachineLogs};

    #[test]
    fn log_text_cannot_become_markup_or_end_the_script() {
        let hostile = "</script><script>alert(1)</script><b>&";
        let c = Collected {
            machines: vec![MachineLogs {
                name: "vm".into(),
                console: vec![Line(Some(1.0), hostile.into())],
                ..MachineLogs::default()
            }],
            notes: vec![hostile.into()],
            end: 1.0,
            ..Collected::default()
        };
        let outline = Outline {
            name: "t<i>",
            passed: false,
            verdict: "failed",
            seconds: 1.0,
            error: Some("machine `vm`: </pre><script>alert(2)</script>"),
            excerpt: Some("1 | <x>"),
        };
        let page = render(&outline, &c);
        // The only script elements are the page's own two.
        assert_eq!(page.matches("<script").count(), 2, "{page}");
        assert_eq!(page.matches("</script>").count(), 2);
        assert!(page.contains("&lt;/script&gt;&lt;script&gt;alert(1)"));
        assert!(page.contains("\\u003c/script\\u003e\\u003cscript\\u003ealert(1)"));
        assert!(!page.contains("<i>") && !page.contains("<b>"));
        // The machine concerned is named in the error: its console tail is quoted.
        assert!(page.contains("<h3>Console of vm, last 1 line(s)</h3>"));
        assert!(page.contains("<details class=\"machine\" id=\"m-vm\" open>"));
    }
}

//! The HTML report: `index.html` (per source file line and function coverage,
//! combined and per machine; machines, notes, problems; links to the tracefiles and
//! genhtml's report) and one page per source file under `files/`, whose line view has
//! a count column per machine and colors each line: run by every machine, by some
//! only, by none.
//!
//! Self-contained: CSS inline, no JavaScript, nothing fetched; every text is
//! HTML-escaped (source lines, paths, machine names, messages).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use super::summary::{percent, Cell, FileRow, Summary};
use super::tracefile::{Counts, Tracefile};
use flotilla_host::markup::escape as esc;

/// Everything the pages show.
#[derive(Debug)]
pub struct Input<'a> {
    pub summary: &'a Summary,
    /// The contributing machines' data, in the order of `summary.machines`.
    pub machines: &'a [(String, Tracefile)],
    pub not_contributed: &'a [(String, String)],
    pub notes: &'a [(String, String)],
    pub messages: &'a [String],
    /// Links to other files of the report: (text, path relative to `out`).
    pub links: &'a [(String, String)],
}

const STYLE: &str = "
body { font-family: sans-serif; margin: 1.5em; color: #222; }
table { border-collapse: collapse; }
th, td { padding: 0.15em 0.6em; text-align: left; border-bottom: 1px solid #ddd; }
th { background: #eee; }
td.num, th.num { text-align: right; font-family: monospace; white-space: pre; }
.hi { background: #c8f0c8; } .mid { background: #f8eab0; } .lo { background: #f6c4c4; }
table.src td { border: none; padding: 0 0.5em; font-family: monospace; white-space: pre; }
tr.all td { background: #c8f0c8; } tr.some td { background: #f8eab0; }
tr.none td { background: #f6c4c4; }
td.zero { color: #b00; }
.legend span { padding: 0.1em 0.6em; margin-right: 0.5em; }
ul.msg li { font-family: monospace; }
";

fn head(title: &str) -> String {
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <title>{}</title><style>{STYLE}</style></head><body>\n",
        esc(title)
    )
}

fn class(c: Counts) -> &'static str {
    match c.percent() {
        None => "",
        Some(p) if p >= 90.0 => "hi",
        Some(p) if p >= 50.0 => "mid",
        Some(_) => "lo",
    }
}

fn cell(c: Option<Counts>) -> String {
    match c {
        Some(c) => format!("<td class=\"num {}\">{}</td>", class(c), esc(&percent(c))),
        None => "<td class=\"num\">-</td>".into(),
    }
}

/// The page of each file, by index into `summary.files`: `files/<n>-<name>.html`.
fn page_name(n: usize, short: &str) -> String {
    let name: String = short
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let name: String = name
        .chars()
        .rev()
        .take(80)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    format!("files/{n}-{name}.html")
}

/// Writes `index.html` and the file pages into `out`; the index's path.
pub fn write(out: &Path, input: &Input) -> Result<PathBuf, String> {
    let files_dir = out.join("files");
    std::fs::create_dir_all(&files_dir)
        .map_err(|e| format!("cannot make {}: {e}", files_dir.display()))?;
    let index = out.join("index.html");
    std::fs::write(&index, index_page(input))
        .map_err(|e| format!("cannot write {}: {e}", index.display()))?;
    for (n, row) in input.summary.files.iter().enumerate() {
        let path = out.join(page_name(n, &row.short));
        std::fs::write(&path, file_page(input, n))
            .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    }
    Ok(index)
}

fn index_page(input: &Input) -> String {
    let s = input.summary;
    let mut h = head("Coverage");
    h.push_str("<h1>Coverage of all machines</h1>\n");
    if !s.files.is_empty() {
        let _ = writeln!(
            h,
            "<p>Sources in <code>{}</code>.</p>",
            esc(&s.prefix.to_string_lossy())
        );
    }
    machines_section(input, &mut h);
    if s.files.is_empty() {
        h.push_str("<p>No machine gave coverage data.</p>\n");
    } else {
        h.push_str("<table>\n<tr><th rowspan=\"2\">file</th><th colspan=\"2\">combined</th>");
        for m in &s.machines {
            let _ = write!(h, "<th colspan=\"2\">{}</th>", esc(m));
        }
        h.push_str("</tr>\n<tr>");
        for _ in 0..=s.machines.len() {
            h.push_str("<th class=\"num\">lines</th><th class=\"num\">functions</th>");
        }
        h.push_str("</tr>\n");
        let row = |h: &mut String, name: String, combined: Cell, machines: &[Option<Cell>]| {
            let _ = write!(h, "<tr><td>{name}</td>");
            h.push_str(&cell(Some(combined.lines)));
            h.push_str(&cell(Some(combined.functions)));
            for m in machines {
                h.push_str(&cell(m.map(|c| c.lines)));
                h.push_str(&cell(m.map(|c| c.functions)));
            }
            h.push_str("</tr>\n");
        };
        for (n, f) in s.files.iter().enumerate() {
            let link = format!(
                "<a href=\"{}\">{}</a>",
                esc(&page_name(n, &f.short)),
                esc(&f.short)
            );
            row(&mut h, link, f.combined, &f.machines);
        }
        let totals: Vec<Option<Cell>> = s.machine_totals.iter().copied().map(Some).collect();
        row(&mut h, "<b>total</b>".into(), s.total, &totals);
        h.push_str("</table>\n<p>A machine's numbers count the files it has data of; a dash: none of its programs contains the file.</p>\n");
    }
    if !input.links.is_empty() {
        h.push_str("<h2>Files</h2>\n<ul>\n");
        for (text, href) in input.links {
            let _ = writeln!(h, "<li><a href=\"{}\">{}</a></li>", esc(href), esc(text));
        }
        h.push_str("</ul>\n");
    }
    if !input.messages.is_empty() {
        h.push_str("<h2>Problems</h2>\n<ul class=\"msg\">\n");
        for m in input.messages {
            let _ = writeln!(h, "<li>{}</li>", esc(m));
        }
        h.push_str("</ul>\n");
    }
    h.push_str("</body></html>\n");
    h
}

fn machines_section(input: &Input, h: &mut String) {
    h.push_str("<ul>\n");
    if !input.summary.machines.is_empty() {
        let names: Vec<String> = input.summary.machines.iter().map(|m| esc(m)).collect();
        let _ = writeln!(h, "<li>Contributed: {}</li>", names.join(", "));
    }
    for (m, why) in input.not_contributed {
        let _ = writeln!(h, "<li>No data from {}: {}</li>", esc(m), esc(why));
    }
    for (m, note) in input.notes {
        let _ = writeln!(h, "<li>Note: {}: {}</li>", esc(m), esc(note));
    }
    h.push_str("</ul>\n");
}

fn file_page(input: &Input, n: usize) -> String {
    let row = &input.summary.files[n];
    let mut h = head(&row.short);
    file_totals(&mut h, input, row);
    // Each machine's counts for this file.
    let counts: Vec<Option<&BTreeMap<u32, u64>>> = input
        .machines
        .iter()
        .map(|(_, t)| t.files.get(&row.path).map(|f| &f.lines))
        .collect();
    let source = file_source(&mut h, &row.path);
    let lines: Vec<&str> = source
        .as_deref()
        .map(|t| t.lines().collect())
        .unwrap_or_default();
    if source.is_some() {
        note_lines_past_end(&mut h, &counts, lines.len());
    }
    h.push_str("<table class=\"src\">\n<tr><th class=\"num\">line</th>");
    for m in &input.summary.machines {
        let _ = write!(h, "<th class=\"num\">{}</th>", esc(m));
    }
    h.push_str("<th>source</th></tr>\n");
    // Every line of the source, and the instrumented lines past its end (or all of
    // them when there is no source).
    let mut instrumented: Vec<u32> = counts
        .iter()
        .flatten()
        .flat_map(|l| l.keys().copied())
        .collect();
    instrumented.sort_unstable();
    instrumented.dedup();
    let numbers = (1..=lines.len() as u32).chain(
        instrumented
            .into_iter()
            .filter(|&n| n as usize > lines.len()),
    );
    for number in numbers {
        let text = lines
            .get((number as usize).saturating_sub(1))
            .copied()
            .unwrap_or("");
        source_row(&mut h, number, &counts, text);
    }
    h.push_str("</table>\n</body></html>\n");
    h
}

/// A file page's title and its table of totals (combined, then per machine), notes
/// and legend.
fn file_totals(h: &mut String, input: &Input, row: &FileRow) {
    let s = input.summary;
    let _ = writeln!(
        h,
        "<p><a href=\"../index.html\">all files</a></p>\n<h1>{}</h1>",
        esc(&row.path.to_string_lossy())
    );
    h.push_str(
        "<table>\n<tr><th></th><th class=\"num\">lines</th><th class=\"num\">functions</th></tr>\n",
    );
    let _ = writeln!(
        h,
        "<tr><td>combined</td>{}{}</tr>",
        cell(Some(row.combined.lines)),
        cell(Some(row.combined.functions))
    );
    for (m, c) in s.machines.iter().zip(&row.machines) {
        let _ = writeln!(
            h,
            "<tr><td>{}</td>{}{}</tr>",
            esc(m),
            cell(c.map(|c| c.lines)),
            cell(c.map(|c| c.functions))
        );
    }
    h.push_str("</table>\n");
    for (m, note) in input.notes {
        let _ = writeln!(h, "<p>Note: {}: {}</p>", esc(m), esc(note));
    }
    h.push_str(
        "<p class=\"legend\">Each count column is how often a machine ran the line. \
         <span style=\"background:#c8f0c8\">run by every machine</span>\
         <span style=\"background:#f8eab0\">run by some machines only</span>\
         <span style=\"background:#f6c4c4\">not run</span>\
         <span>not instrumented (no count)</span></p>\n",
    );
}

/// The file's source as the host has it (`None`, said on the page, when it cannot be
/// read).
fn file_source(h: &mut String, path: &Path) -> Option<String> {
    match std::fs::read(path) {
        Ok(bytes) => Some(String::from_utf8_lossy(&bytes).into_owned()),
        Err(e) => {
            let _ = writeln!(
                h,
                "<p><b>The source file is not readable on the host ({}): only the instrumented lines are listed.</b></p>",
                esc(&e.to_string())
            );
            None
        }
    }
}

/// Says on the page when the data names lines past the end of the source (`length`
/// lines): the file changed since the build.
fn note_lines_past_end(h: &mut String, counts: &[Option<&BTreeMap<u32, u64>>], length: usize) {
    let last_data_line = counts
        .iter()
        .flatten()
        .filter_map(|l| l.keys().next_back().copied())
        .max()
        .unwrap_or(0);
    if (last_data_line as usize) > length {
        let _ = writeln!(
            h,
            "<p><b>The data names line {last_data_line}, the source has {length} lines: it changed since the build.</b></p>",
        );
    }
}

/// One source line with each machine's count, coloured by who ran it.
fn source_row(h: &mut String, number: u32, counts: &[Option<&BTreeMap<u32, u64>>], text: &str) {
    let per: Vec<Option<u64>> = counts
        .iter()
        .map(|l| l.and_then(|l| l.get(&number).copied()))
        .collect();
    let instrumented = per.iter().any(Option::is_some);
    let ran = per.iter().filter(|c| c.is_some_and(|c| c > 0)).count();
    let class = if !instrumented {
        ""
    } else if ran == per.len() {
        " class=\"all\""
    } else if ran > 0 {
        " class=\"some\""
    } else {
        " class=\"none\""
    };
    let _ = write!(h, "<tr{class}><td class=\"num\">{number}</td>");
    for c in &per {
        match c {
            Some(0) => h.push_str("<td class=\"num zero\">0</td>"),
            Some(c) => {
                let _ = write!(h, "<td class=\"num\">{c}</td>");
            }
            None => h.push_str("<td class=\"num\"></td>"),
        }
    }
    let _ = writeln!(h, "<td>{}</td></tr>", esc(text));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_names() {
        assert_eq!(page_name(3, "src/a b.c"), "files/3-src_a_b.c.html");
    }
}

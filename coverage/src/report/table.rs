//! The terminal's table at the end of a test: per source file line and function
//! coverage, combined and per machine, a total, which machines contributed and which
//! did not (and why), notes and problems, and where the report is. Kept within
//! [`WIDTH`] columns for two or three machines (long file names are cut at the front).

use std::fmt::Write as _;
use std::path::Path;

use super::summary::{percent, Cell, Summary};

/// The width the table aims at.
pub const WIDTH: usize = 100;

/// At most this many problems are listed; the HTML report has them all.
const MAX_MESSAGES: usize = 8;

/// What the table shows besides the numbers.
#[derive(Debug)]
pub struct Extras<'a> {
    pub not_contributed: &'a [(String, String)],
    pub notes: &'a [(String, String)],
    pub messages: &'a [String],
    /// The HTML report, or where the report's files are when there is none.
    pub report: &'a Path,
}

pub fn render(summary: &Summary, extras: &Extras) -> String {
    let mut s = String::new();
    if summary.files.is_empty() {
        s.push_str("coverage: no data from any machine\n");
    } else {
        let _ = writeln!(
            s,
            "coverage per source file in {} (combined, then per machine; `-`: no data)",
            summary.prefix.display()
        );
        render_numbers(summary, &mut s);
    }
    if !summary.machines.is_empty() {
        let _ = writeln!(s, "contributed: {}", summary.machines.join(", "));
    }
    for (machine, why) in extras.not_contributed {
        let _ = writeln!(s, "no data from {machine}: {why}");
    }
    for (machine, note) in extras.notes {
        let _ = writeln!(s, "note: {machine}: {note}");
    }
    // Not again what the lines above say.
    let said: Vec<String> = extras
        .not_contributed
        .iter()
        .map(|(m, why)| format!("machine {m}: {why}"))
        .collect();
    let messages: Vec<&String> = extras
        .messages
        .iter()
        .filter(|m| !said.contains(m))
        .collect();
    for m in messages.iter().take(MAX_MESSAGES) {
        let _ = writeln!(s, "problem: {m}");
    }
    if messages.len() > MAX_MESSAGES {
        let _ = writeln!(
            s,
            "... and {} more problems (all of them are in the report)",
            messages.len() - MAX_MESSAGES
        );
    }
    let _ = writeln!(s, "report: {}", extras.report.display());
    s
}

fn render_numbers(summary: &Summary, s: &mut String) {
    // Rows: (file, kind, cells), two per file (lines, functions).
    let mut rows: Vec<(String, &str, Vec<String>)> = Vec::new();
    let mut add = |name: &str, combined: Cell, machines: &[Option<Cell>]| {
        let cells = |pick: fn(&Cell) -> super::tracefile::Counts| {
            std::iter::once(percent(pick(&combined)))
                .chain(
                    machines
                        .iter()
                        .map(|c| c.map_or("-".into(), |c| percent(pick(&c)))),
                )
                .collect::<Vec<_>>()
        };
        rows.push((name.to_owned(), "lines", cells(|c| c.lines)));
        rows.push((String::new(), "funcs", cells(|c| c.functions)));
    };
    for f in &summary.files {
        add(&f.short, f.combined, &f.machines);
    }
    let totals: Vec<Option<Cell>> = summary.machine_totals.iter().copied().map(Some).collect();
    add("total", summary.total, &totals);
    let header: Vec<&str> = std::iter::once("combined")
        .chain(summary.machines.iter().map(String::as_str))
        .collect();
    let widths: Vec<usize> = (0..header.len())
        .map(|i| {
            rows.iter()
                .map(|r| r.2[i].chars().count())
                .chain([header[i].chars().count()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let rest: usize = 2 + 5 + widths.iter().map(|w| w + 2).sum::<usize>();
    let longest = rows.iter().map(|r| r.0.chars().count()).max().unwrap_or(4);
    let file_width = longest.min(WIDTH.saturating_sub(rest).max(16)).max(4);
    let mut line = format!("{:file_width$}  {:5}", "file", "");
    for (h, w) in header.iter().zip(&widths) {
        let _ = write!(line, "  {h:w$}");
    }
    let _ = writeln!(s, "{}", line.trim_end());
    for (name, kind, cells) in &rows {
        let mut line = format!("{:file_width$}  {kind:5}", cut_front(name, file_width));
        for (c, w) in cells.iter().zip(&widths) {
            let _ = write!(line, "  {c:w$}");
        }
        let _ = writeln!(s, "{}", line.trim_end());
    }
}

/// `name`, cut at the front to `width` characters (`…` marking the cut).
fn cut_front(name: &str, width: usize) -> String {
    let n = name.chars().count();
    if n <= width {
        return name.to_owned();
    }
    let keep: String = name.chars().skip(n - width + 1).collect();
    format!("…{keep}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cut_front_keeps_the_end() {
        assert_eq!(cut_front("src/very/long/name.c", 10), "…ng/name.c");
        assert_eq!(cut_front("a.c", 10), "a.c");
    }
}

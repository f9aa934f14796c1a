//! The manual's measured figures say where they come from (no VM boots here).
//!
//! The manual is the book in `docs/src/` (a chapter per file) and the README. In the
//! sections whose figures are measurements ([`MEASURED`]), every paragraph
//! with a time or a ratio (`2.32 s`, `121 ms`, `276 µs`, `0.20x`) names the command
//! that printed it (`cargo bench ...`, `cargo test ...`, `scripts/...`, `flotilla
//! ...`) and the file that keeps that run's raw output, `benches/results/<date>-<name>.txt`,
//! which must exist. A table belongs to the paragraph before it. Anywhere in the
//! book or the README, a results file named must exist. Figures of how Flotilla is configured
//! (limits, defaults) are in other sections, or carry no decimals; a paragraph of a
//! measured section that has such a figure only says `(a setting, not a measurement)`.

use std::path::{Path, PathBuf};

/// The sections (their `# `, `## ` or `### ` titles, in the book's chapters) whose
/// figures are measured; each must be found.
const MEASURED: &[&str] = &[
    "Speed",
    "Snapshots",
    "How fast arm64 machines are",
    "Debian machines on arm64",
    "Debian machines from the spec",
    "How fast trixie machines are",
    "A Debian image: `flotilla image debian`",
    // Sections whose measured figures already named their command and a kept run.
    "Failures, logs and evidence",
    "Networks",
    "A worked example",
    "A fresh Debian host: `scripts/fresh-root`",
];

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the tests crate lives in the workspace")
        .to_path_buf()
}

/// A Markdown file's paragraphs as (section title, text), a table joined to the
/// paragraph before it.
fn paragraphs(markdown: &str) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    let mut section = String::new();
    let mut current = String::new();
    let mut in_code = false;
    let flush = |section: &str, current: &mut String, out: &mut Vec<(String, String)>| {
        if current.trim().is_empty() {
            current.clear();
            return;
        }
        let is_table = current.trim_start().starts_with('|');
        match out.last_mut() {
            Some((s, text)) if is_table && s == section => {
                text.push('\n');
                text.push_str(current);
            }
            _ => out.push((section.to_owned(), current.clone())),
        }
        current.clear();
    };
    for line in markdown.lines() {
        if line.starts_with("```") {
            in_code = !in_code;
            continue;
        }
        if in_code {
            continue;
        }
        if let Some(title) = ["# ", "## ", "### "]
            .iter()
            .find_map(|prefix| line.strip_prefix(prefix))
        {
            flush(&section, &mut current, &mut out);
            section = title.trim().to_owned();
            continue;
        }
        if line.trim().is_empty() {
            flush(&section, &mut current, &mut out);
        } else {
            current.push_str(line);
            current.push('\n');
        }
    }
    flush(&section, &mut current, &mut out);
    out
}

/// Whether `text` has a measured-looking figure: a number with a time unit or an `x`
/// ratio.
fn has_figure(text: &str) -> bool {
    let words: Vec<&str> = text.split_whitespace().collect();
    words.iter().enumerate().any(|(i, w)| {
        let w = w.trim_start_matches(['(', '`', '*']);
        let number: String = w
            .chars()
            .take_while(|c| c.is_ascii_digit() || *c == '.' || *c == '-')
            .collect();
        if number.is_empty() || !number.chars().next().is_some_and(|c| c.is_ascii_digit()) {
            return false;
        }
        let rest = &w[number.len()..];
        let ratio = rest.starts_with('x') && number.contains('.');
        let unit = words
            .get(i + 1)
            .map(|u| u.trim_end_matches([',', ';', ':', ')', '.', '`', '*']))
            .is_some_and(|u| matches!(u, "s" | "ms" | "µs"));
        ratio || (rest.is_empty() && unit)
    })
}

/// The `benches/results/...` files a paragraph names.
fn results_files(text: &str) -> Vec<String> {
    text.match_indices("benches/results/")
        .map(|(i, _)| {
            text[i..]
                .chars()
                .take_while(|c| !c.is_whitespace() && !matches!(c, '`' | ')' | ',' | ';' | ']'))
                .collect::<String>()
                .trim_end_matches('.')
                .to_owned()
        })
        .filter(|f| {
            f.ends_with(".txt")
                && f["benches/results/".len()..].starts_with(|c: char| c.is_ascii_digit())
        })
        .collect()
}

fn names_a_command(text: &str) -> bool {
    ["cargo bench", "cargo test", "scripts/", "flotilla "]
        .iter()
        .any(|c| text.contains(c))
}

#[test]
fn every_measured_figure_names_its_command_and_a_kept_run() {
    let root = workspace();
    let mut problems = Vec::new();
    let mut measured_seen = Vec::new();
    for (file, markdown) in flotilla_tests::manual(&root) {
        for (section, text) in paragraphs(&markdown) {
            for named in results_files(&text) {
                if !root.join(&named).is_file() {
                    problems.push(format!(
                        "{file} [{section}] names {named}, which does not exist"
                    ));
                }
            }
            if !MEASURED.contains(&section.as_str()) {
                continue;
            }
            measured_seen.push(section.clone());
            if !has_figure(&text) || text.contains("(a setting, not a measurement)") {
                continue;
            }
            let first = text.lines().next().unwrap_or_default();
            if !names_a_command(&text) {
                problems.push(format!(
                    "{file} [{section}] a figure with no command: {first}"
                ));
            }
            if results_files(&text).is_empty() {
                problems.push(format!(
                    "{file} [{section}] a figure with no benches/results file: {first}"
                ));
            }
        }
    }
    for section in MEASURED {
        if !measured_seen.iter().any(|s| s == section) {
            problems.push(format!("no section titled {section} in the manual"));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn figures_are_recognized() {
    assert!(has_figure("ready in 2.32 s restored"));
    assert!(has_figure("(0.20x) against"));
    assert!(has_figure("drawn in 121 ms."));
    assert!(!has_figure("the 8 most recently used states"));
    assert!(!has_figure("a sparse file of 256 MiB"));
    assert_eq!(
        results_files("(results in `benches/results/2026-12-07-boot.txt`)."),
        vec!["benches/results/2026-12-07-boot.txt"]
    );
}

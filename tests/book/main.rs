//! Every spec (TOML) and script (Rhai) sample of the manual parses (no VM boots here).
//!
//! The manual is the README and the book's chapters in `docs/src/`. A sample is a fenced
//! code block whose info string starts with `toml` or `rhai`:
//!
//! - a spec is written as `flotilla.toml` in a folder of its own, with an empty file
//!   for each relative path it names (`script`, an `image`, a disk's `base`, a local
//!   `.deb` package, `files`, `coverage.llvm_binaries`), and parsed by
//!   [`Spec::parse`], as `flotilla test` parses a spec;
//! - a script is checked as the driver checks one before a run: every variable it names
//!   is defined or a machine (those of the spec sample before it in the same file, if
//!   any), and it compiles; then every function or method it calls is one of the
//!   script reference's calls (the table of `docs/src/script-reference.md`), one it
//!   defines, or a Rhai built-in of [`RHAI_BUILTINS`].
//!
//! A sample that cannot stand alone is marked `fragment` in its info string
//! (```` ```toml,fragment ````) and is only counted; an unmarked sample that does not
//! parse fails the test, which names its file and line.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use flotilla_driver::Spec;

/// Rhai's own functions and methods that samples may call (the standard packages'
/// names; the driver registers its calls on top of these).
const RHAI_BUILTINS: &[&str] = &[
    "abs",
    "call",
    "chars",
    "contains",
    "curry",
    "ends_with",
    "filter",
    "for_each",
    "get",
    "index_of",
    "is_def_fn",
    "is_def_var",
    "is_empty",
    "join",
    "keys",
    "len",
    "map",
    "parse_float",
    "parse_int",
    "pop",
    "push",
    "reduce",
    "remove",
    "replace",
    "reverse",
    "shift",
    "sort",
    "split",
    "starts_with",
    "sub_string",
    "timestamp",
    "to_float",
    "to_int",
    "to_lower",
    "to_string",
    "to_upper",
    "trim",
    "type_of",
    "values",
    "debug",
    "print",
];

/// Words a `(` may follow that are not calls.
const KEYWORDS: &[&str] = &[
    "if", "else", "while", "loop", "for", "in", "do", "until", "switch", "return", "throw", "try",
    "catch", "fn", "let", "const", "Fn", "import", "export", "private",
];

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the tests crate lives in the workspace")
        .to_path_buf()
}

/// A fenced code block of a Markdown file.
#[derive(Debug, Clone)]
struct Sample {
    /// Where it is: the file and the line of its opening fence.
    place: String,
    /// The info string's first word (`toml`, `rhai`, `sh`, ...).
    lang: String,
    /// Marked `fragment`: not checked.
    fragment: bool,
    text: String,
}

/// The fenced code blocks of `markdown` (the file `file`).
fn samples(file: &str, markdown: &str) -> Vec<Sample> {
    let mut out = Vec::new();
    let mut open: Option<(usize, String, usize, String)> = None; // line, info, indent, text
    for (n, line) in markdown.lines().enumerate() {
        let trimmed = line.trim_start();
        let indent = line.len() - trimmed.len();
        match &mut open {
            None => {
                if let Some(info) = trimmed.strip_prefix("```") {
                    open = Some((n + 1, info.trim().to_owned(), indent, String::new()));
                }
            }
            Some((start, info, fence_indent, text)) => {
                if trimmed.trim_end() == "```" {
                    let mut words = info.split([',', ' ']).filter(|w| !w.is_empty());
                    let lang = words.next().unwrap_or_default().to_owned();
                    let fragment = words.any(|w| w == "fragment");
                    out.push(Sample {
                        place: format!("{file}:{start}"),
                        lang,
                        fragment,
                        text: std::mem::take(text),
                    });
                    open = None;
                } else {
                    let cut = indent.min(*fence_indent);
                    text.push_str(&line[cut..]);
                    text.push('\n');
                }
            }
        }
    }
    assert!(open.is_none(), "{file}: a code block is never closed");
    out
}

/// The relative paths a spec names, which must exist for it to parse.
fn named_files(spec: &toml::Value) -> Vec<String> {
    let mut files = Vec::new();
    let strings = |v: Option<&toml::Value>| -> Vec<String> {
        match v {
            Some(toml::Value::String(s)) => vec![s.clone()],
            Some(toml::Value::Array(a)) => a
                .iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect(),
            Some(toml::Value::Table(t)) => t
                .values()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect(),
            _ => Vec::new(),
        }
    };
    files.extend(strings(spec.get("script")));
    if let Some(coverage) = spec.get("coverage") {
        files.extend(strings(coverage.get("llvm_binaries")));
    }
    if let Some(toml::Value::Table(machines)) = spec.get("machines") {
        for machine in machines.values() {
            files.extend(strings(machine.get("image")));
            files.extend(strings(machine.get("files")));
            files.extend(
                strings(machine.get("packages"))
                    .into_iter()
                    .filter(|p| p.ends_with(".deb")),
            );
            if let Some(toml::Value::Array(disks)) = machine.get("disks") {
                for disk in disks {
                    files.extend(strings(disk.get("base")));
                }
            }
        }
    }
    files.retain(|f| Path::new(f).is_relative());
    files
}

/// Parses a spec sample as `flotilla test` would in its own folder; its machines' names.
fn check_spec(text: &str) -> Result<Vec<String>, String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let folder = dir.path().join("sample");
    std::fs::create_dir(&folder).map_err(|e| e.to_string())?;
    if let Ok(value) = toml::from_str::<toml::Value>(text) {
        for file in named_files(&value) {
            let path = folder.join(file);
            std::fs::create_dir_all(path.parent().expect("a parent")).map_err(|e| e.to_string())?;
            std::fs::write(&path, "").map_err(|e| e.to_string())?;
        }
    }
    let path = folder.join("flotilla.toml");
    std::fs::write(&path, text).map_err(|e| e.to_string())?;
    // Errors name the sample's own line and column, not the temporary folder.
    let spec = Spec::parse(&path, text)
        .map_err(|e| e.to_string().replace(&format!("{}/", folder.display()), ""))?;
    Ok(spec.machines.keys().cloned().collect())
}

/// The calls of the script reference's table, between its markers: every name written
/// as `name(` in its first column.
fn script_api(chapter: &str) -> BTreeSet<String> {
    let begin = chapter
        .find("<!-- script-api:")
        .expect("the script reference's table");
    let end = chapter[begin..]
        .find("<!-- script-api end -->")
        .expect("its end")
        + begin;
    let mut names = BTreeSet::new();
    for row in chapter[begin..end].lines().filter(|l| l.starts_with("| `")) {
        // Its code without the backticks, which `calls` would take for a string.
        let first = row[1..]
            .split(" | ")
            .next()
            .unwrap_or_default()
            .replace(['`', '\\'], " ");
        for (name, _) in calls(&first).0 {
            names.insert(name);
        }
    }
    names
}

/// The names a Rhai text calls (with their lines), and the functions it defines
/// (`fn name`). Strings and comments are skipped; a name is called when `(` follows it.
fn calls(source: &str) -> (Vec<(String, usize)>, BTreeSet<String>) {
    let chars: Vec<char> = source.chars().collect();
    let mut called = Vec::new();
    let mut defined = BTreeSet::new();
    let mut previous_word = String::new();
    let (mut i, mut line) = (0, 1);
    while i < chars.len() {
        let c = chars[i];
        match c {
            '\n' => {
                line += 1;
                i += 1;
            }
            '/' if chars.get(i + 1) == Some(&'/') => {
                while i < chars.len() && chars[i] != '\n' {
                    i += 1;
                }
            }
            '/' if chars.get(i + 1) == Some(&'*') => {
                i += 2;
                while i + 1 < chars.len() && !(chars[i] == '*' && chars[i + 1] == '/') {
                    line += usize::from(chars[i] == '\n');
                    i += 1;
                }
                i += 2;
            }
            '"' | '`' | '\'' => {
                i += 1;
                while i < chars.len() && chars[i] != c {
                    line += usize::from(chars[i] == '\n');
                    i += if chars[i] == '\\' { 2 } else { 1 };
                }
                i += 1;
                previous_word.clear();
            }
            c if c.is_alphabetic() || c == '_' => {
                let start = i;
                while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
                    i += 1;
                }
                let word: String = chars[start..i].iter().collect();
                let mut j = i;
                while j < chars.len() && chars[j] == ' ' {
                    j += 1;
                }
                if previous_word == "fn" {
                    defined.insert(word.clone());
                } else if chars.get(j) == Some(&'(') && !KEYWORDS.contains(&word.as_str()) {
                    called.push((word.clone(), line));
                }
                previous_word = word;
            }
            c => {
                if !c.is_whitespace() {
                    previous_word.clear();
                }
                i += 1;
            }
        }
    }
    (called, defined)
}

/// Checks a script sample as the driver checks a script before a run, then its calls.
fn check_script(text: &str, machines: &[String], api: &BTreeSet<String>) -> Result<(), String> {
    let at = |e: &rhai::ParseError| {
        let p = e.position();
        format!(
            "line {}, column {}: {}",
            p.line().unwrap_or(0),
            p.position().unwrap_or(0),
            e.0
        )
    };
    // Every variable defined or a machine (driver/src/script/names.rs).
    let mut strict = rhai::Engine::new_raw();
    strict.set_strict_variables(true);
    strict.set_max_expr_depths(64, 64);
    let mut scope = rhai::Scope::new();
    for name in machines {
        scope.push_constant(name.as_str(), ());
    }
    strict
        .compile_with_scope(&scope, text)
        .map_err(|e| format!("{} (machines: {machines:?})", at(&e)))?;
    // The compile of a run (driver/src/script/engine.rs).
    let mut engine = rhai::Engine::new();
    engine.set_max_expr_depths(64, 64);
    engine.compile(text).map_err(|e| at(&e))?;
    let (called, defined) = calls(text);
    for (name, line) in called {
        if !api.contains(&name)
            && !defined.contains(&name)
            && !RHAI_BUILTINS.contains(&name.as_str())
        {
            return Err(format!(
                "line {line}: `{name}` is neither a call of docs/src/script-reference.md, \
                 a function the sample defines, nor a Rhai built-in this test knows"
            ));
        }
    }
    Ok(())
}

/// Counts of what [`check_all`] saw, per kind.
#[derive(Debug, Default, PartialEq)]
struct Counts {
    specs: usize,
    scripts: usize,
    spec_fragments: usize,
    script_fragments: usize,
}

/// Checks every sample of `files`; the counts, and a line per sample that failed.
fn check_all(files: &[(String, String)], api: &BTreeSet<String>) -> (Counts, Vec<String>) {
    let mut counts = Counts::default();
    let mut problems = Vec::new();
    for (file, markdown) in files {
        // The machines of the last spec sample of this file, for the scripts after it.
        let mut machines: Vec<String> = Vec::new();
        for sample in samples(file, markdown) {
            match (sample.lang.as_str(), sample.fragment) {
                ("toml", true) => counts.spec_fragments += 1,
                ("rhai", true) => counts.script_fragments += 1,
                ("toml", false) => {
                    counts.specs += 1;
                    match check_spec(&sample.text) {
                        Ok(names) => machines = names,
                        Err(e) => problems.push(format!("{}: spec sample: {e}", sample.place)),
                    }
                }
                ("rhai", false) => {
                    counts.scripts += 1;
                    if let Err(e) = check_script(&sample.text, &machines, api) {
                        problems.push(format!("{}: script sample: {e}", sample.place));
                    }
                }
                _ => {}
            }
        }
    }
    (counts, problems)
}

fn the_api(root: &Path) -> BTreeSet<String> {
    let chapter = std::fs::read_to_string(root.join("docs/src/script-reference.md"))
        .expect("docs/src/script-reference.md");
    script_api(&chapter)
}

#[test]
fn every_spec_and_script_sample_parses() {
    let root = workspace();
    let api = the_api(&root);
    let (counts, problems) = check_all(&flotilla_tests::manual(&root), &api);
    let summary = format!(
        "checked {} spec (TOML) samples and {} script (Rhai) samples; \
         fragments not checked: {} spec, {} script",
        counts.specs, counts.scripts, counts.spec_fragments, counts.script_fragments
    );
    println!("{summary}");
    assert!(problems.is_empty(), "{summary}\n{}", problems.join("\n"));
    // The fences are found (a broken reader would check nothing), and fragments are few.
    assert!(counts.specs >= 5, "{summary}");
    assert!(counts.scripts >= 1, "{summary}");
    assert!(
        counts.spec_fragments + counts.script_fragments <= 5,
        "fragments should be few: {summary}"
    );
}

/// The Rust sample of the chapter on `cargo test` is a real e2e test, word for word.
#[test]
fn the_rust_sample_is_an_e2e_test() {
    let root = workspace();
    let chapter = "docs/src/driver-from-cargo-test.md";
    let markdown = std::fs::read_to_string(root.join(chapter)).expect("the chapter");
    let rust: Vec<Sample> = samples(chapter, &markdown)
        .into_iter()
        .filter(|s| s.lang == "rust")
        .collect();
    assert_eq!(rust.len(), 1, "{chapter} has one Rust sample");
    let test = std::fs::read_to_string(root.join("tests/e2e/book_sample.rs")).expect("the test");
    assert!(
        test.contains(&rust[0].text),
        "{} is not tests/e2e/book_sample.rs's code; copy it over",
        rust[0].place
    );
}

#[test]
fn the_api_is_read_from_the_script_reference() {
    let api = the_api(&workspace());
    for name in [
        "succeed",
        "wait_for_unit",
        "start_all",
        "subtest",
        "http_get",
    ] {
        assert!(api.contains(name), "{name}: {api:?}");
    }
}

#[test]
fn a_broken_sample_fails_and_a_fragment_is_only_counted() {
    let api = the_api(&workspace());
    let markdown = "\
```toml
[machines.server]
memory = 256
```

```rhai
server.succeed(\"true\");
fn twice(m) { m.succeed(\"true\"); m.succeed(\"true\") }
twice(server);
let n = \"a,b\".split(\",\").len();
```

```toml
[machines.server]
memroy = 256
```

```toml
[machines.server]
[[machines.server.disks]]
size = \"64M\"
base = \"data.qcow2\"
```

```rhai
ghost.succeed(\"true\");
```

```rhai
server.succeed(\"true\"
```

```rhai
server.succed(\"true\");
```

```toml,fragment
memory = 512
```

```rhai,fragment
page.len()
```

```sh
not checked
```
";
    let (counts, problems) = check_all(&[("t.md".to_owned(), markdown.to_owned())], &api);
    assert_eq!(
        counts,
        Counts {
            specs: 3,
            scripts: 4,
            spec_fragments: 1,
            script_fragments: 1
        }
    );
    let expected = [
        ("t.md:13: spec sample", "memroy"),
        ("t.md:18: spec sample", "exactly one of `size`"),
        ("t.md:25: script sample", "ghost"),
        ("t.md:29: script sample", "line "),
        ("t.md:33: script sample", "`succed`"),
    ];
    assert_eq!(problems.len(), expected.len(), "{problems:#?}");
    for ((place, word), problem) in expected.iter().zip(&problems) {
        assert!(
            problem.starts_with(place) && problem.contains(word),
            "{problem}"
        );
    }
}

#[test]
fn calls_skip_strings_comments_and_keywords() {
    let (called, defined) = calls(
        "// a(\nlet x = `b(${y})`; /* c(\n */ if (d) { e(1) }\nfn f(z) { z.g() }\nh (\"i(\")",
    );
    let names: Vec<(&str, usize)> = called.iter().map(|(n, l)| (n.as_str(), *l)).collect();
    assert_eq!(names, [("e", 3), ("g", 4), ("h", 5)]);
    assert_eq!(defined, BTreeSet::from(["f".to_owned()]));
}

#[test]
fn every_chapter_is_in_the_summary_and_in_the_readmes_map() {
    let root = workspace();
    let summary = std::fs::read_to_string(root.join("docs/src/SUMMARY.md")).expect("SUMMARY.md");
    let readme = std::fs::read_to_string(root.join("README.md")).expect("README.md");
    let mut chapters = 0;
    for (file, _) in flotilla_tests::manual(&root).into_iter().skip(1) {
        let name = file.strip_prefix("docs/src/").expect("a chapter");
        if name == "SUMMARY.md" {
            continue;
        }
        chapters += 1;
        assert!(
            summary.contains(&format!("]({name})")),
            "docs/src/SUMMARY.md does not list {name}"
        );
        if name != "introduction.md" {
            assert!(
                readme.contains(&format!("](docs/src/{name})")),
                "the README's map of the manual does not link {name}"
            );
        }
    }
    assert!(chapters >= 10, "{chapters} chapters");
}

#[test]
fn the_hosts_chapter_lists_the_tested_qemu_versions() {
    let chapter = std::fs::read_to_string(workspace().join("docs/src/hosts.md")).expect("hosts.md");
    let table = chapter
        .split("<!-- tested-qemu -->")
        .nth(1)
        .and_then(|rest| rest.split("<!-- /tested-qemu -->").next())
        .expect("the tested-qemu table between its markers");
    let rows: Vec<(String, String)> = table
        .lines()
        .filter(|l| l.starts_with('|') && !l.starts_with("| QEMU") && !l.starts_with("|--"))
        .map(|l| {
            let cells: Vec<&str> = l.trim_matches('|').split('|').map(str::trim).collect();
            (cells[0].to_owned(), cells[1].to_owned())
        })
        .collect();
    let tested: Vec<(String, String)> = flotilla_driver::TESTED_QEMU
        .iter()
        .map(|(v, from)| ((*v).to_owned(), (*from).to_owned()))
        .collect();
    assert_eq!(rows, tested, "docs/src/hosts.md's table and TESTED_QEMU");
}

//! lcov tracefiles: the coverage of source files as a value, lcov's text format read
//! (what `llvm-cov export -format=lcov` writes) and written (`<machine>.info`,
//! `combined.info`), and merging (counts summed).
//!
//! Only lines (`DA`) and functions (`FN`, `FNDA`) are kept: the report shows nothing
//! else, and branch records would only have to be kept consistent.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// The coverage of source files: one test's (a machine's), or merged.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Tracefile {
    /// By the source file's absolute host path.
    pub files: BTreeMap<PathBuf, FileCoverage>,
}

/// One source file's lines and functions.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct FileCoverage {
    /// Execution count by line number (1-based), instrumented lines only.
    pub lines: BTreeMap<u32, u64>,
    /// By the function's (mangled) name.
    pub functions: BTreeMap<String, Function>,
}

/// A function: where it starts and how often it was entered.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Function {
    pub line: u32,
    pub count: u64,
}

/// Hit and found: lines (or functions) run at least once, and all of them.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub struct Counts {
    pub hit: usize,
    pub found: usize,
}

impl Counts {
    /// The percentage, `None` when nothing is instrumented.
    pub fn percent(self) -> Option<f64> {
        (self.found > 0).then(|| 100.0 * self.hit as f64 / self.found as f64)
    }

    pub fn add(self, other: Counts) -> Counts {
        Counts {
            hit: self.hit + other.hit,
            found: self.found + other.found,
        }
    }
}

impl FileCoverage {
    pub fn line_counts(&self) -> Counts {
        Counts {
            hit: self.lines.values().filter(|&&c| c > 0).count(),
            found: self.lines.len(),
        }
    }

    pub fn function_counts(&self) -> Counts {
        Counts {
            hit: self.functions.values().filter(|f| f.count > 0).count(),
            found: self.functions.len(),
        }
    }

    /// Adds `other`'s counts to these.
    pub fn merge(&mut self, other: &FileCoverage) {
        for (&line, &count) in &other.lines {
            let c = self.lines.entry(line).or_default();
            *c = c.saturating_add(count);
        }
        for (name, f) in &other.functions {
            let mine = self.functions.entry(name.clone()).or_default();
            if mine.line == 0 {
                mine.line = f.line;
            }
            mine.count = mine.count.saturating_add(f.count);
        }
    }
}

impl Tracefile {
    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }

    /// Adds `other`'s counts to these.
    pub fn merge(&mut self, other: &Tracefile) {
        for (path, file) in &other.files {
            self.files.entry(path.clone()).or_default().merge(file);
        }
    }

    /// Line counts over all files.
    pub fn line_counts(&self) -> Counts {
        self.files
            .values()
            .fold(Counts::default(), |a, f| a.add(f.line_counts()))
    }

    /// Function counts over all files.
    pub fn function_counts(&self) -> Counts {
        self.files
            .values()
            .fold(Counts::default(), |a, f| a.add(f.function_counts()))
    }

    /// The lcov text of this tracefile, as test `test_name` (`TN:`).
    pub fn write(&self, test_name: &str) -> String {
        let mut s = String::new();
        for (path, file) in &self.files {
            let _ = writeln!(s, "TN:{test_name}");
            let _ = writeln!(s, "SF:{}", path.display());
            let mut functions: Vec<_> = file.functions.iter().collect();
            functions.sort_by_key(|(name, f)| (f.line, name.as_str()));
            for (name, f) in &functions {
                let _ = writeln!(s, "FN:{},{name}", f.line);
            }
            for (name, f) in &functions {
                let _ = writeln!(s, "FNDA:{},{name}", f.count);
            }
            let fc = file.function_counts();
            let _ = writeln!(s, "FNF:{}", fc.found);
            let _ = writeln!(s, "FNH:{}", fc.hit);
            for (line, count) in &file.lines {
                let _ = writeln!(s, "DA:{line},{count}");
            }
            let lc = file.line_counts();
            let _ = writeln!(s, "LF:{}", lc.found);
            let _ = writeln!(s, "LH:{}", lc.hit);
            s.push_str("end_of_record\n");
        }
        s
    }

    /// Reads lcov text: the tracefile of each test name (`TN:`; none is `""`), in the
    /// order they first appear, sections of the same test merged. Records the report
    /// does not use (branches, checksums, summaries) are skipped.
    pub fn parse(text: &str) -> Result<Vec<(String, Tracefile)>, String> {
        let mut tests: Vec<(String, Tracefile)> = Vec::new();
        let mut test = String::new();
        let mut current: Option<(PathBuf, FileCoverage)> = None;
        for (n, line) in text.lines().enumerate() {
            let n = n + 1;
            let bad = |what: &str| format!("line {n}: {what}: `{line}`");
            let line = line.trim_end();
            let (key, value) = line.split_once(':').unwrap_or((line, ""));
            match key {
                "TN" => test = value.to_owned(),
                "SF" => {
                    if current.is_some() {
                        return Err(bad("`SF` before the previous file's `end_of_record`"));
                    }
                    current = Some((PathBuf::from(value), FileCoverage::default()));
                }
                "end_of_record" => {
                    let (path, file) = current
                        .take()
                        .ok_or_else(|| bad("`end_of_record` without `SF`"))?;
                    let index = match tests.iter().position(|(t, _)| *t == test) {
                        Some(i) => i,
                        None => {
                            tests.push((test.clone(), Tracefile::default()));
                            tests.len() - 1
                        }
                    };
                    tests[index].1.files.entry(path).or_default().merge(&file);
                }
                "DA" | "FN" | "FNDA" => {
                    let (_, file) = current
                        .as_mut()
                        .ok_or_else(|| bad(&format!("`{key}` outside a file's record")))?;
                    let (first, rest) = value
                        .split_once(',')
                        .ok_or_else(|| bad("expected two fields"))?;
                    match key {
                        "DA" => {
                            let number: u32 =
                                first.parse().map_err(|_| bad("not a line number"))?;
                            let count = parse_count(rest.split(',').next().unwrap_or(""))
                                .ok_or_else(|| bad("not a count"))?;
                            let c = file.lines.entry(number).or_default();
                            *c = c.saturating_add(count);
                        }
                        "FN" => {
                            let number: u32 =
                                first.parse().map_err(|_| bad("not a line number"))?;
                            file.functions.entry(rest.to_owned()).or_default().line = number;
                        }
                        _ => {
                            let count = parse_count(first).ok_or_else(|| bad("not a count"))?;
                            let f = file.functions.entry(rest.to_owned()).or_default();
                            f.count = f.count.saturating_add(count);
                        }
                    }
                }
                _ => {}
            }
        }
        if let Some((path, _)) = current {
            return Err(format!(
                "the record of {} has no `end_of_record` (the text was cut short)",
                path.display()
            ));
        }
        Ok(tests)
    }
}

/// A count as lcov writes it; negative counts (older llvm-cov's wrapped counters)
/// are read as 0, counts beyond `u64` as `u64::MAX`.
fn parse_count(s: &str) -> Option<u64> {
    let s = s.trim();
    if let Ok(c) = s.parse::<u64>() {
        return Some(c);
    }
    if s.starts_with('-') && s[1..].bytes().all(|b| b.is_ascii_digit()) && s.len() > 1 {
        return Some(0);
    }
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
        return Some(u64::MAX);
    }
    // Some tools write large counts as floats (`1.2e+10`).
    s.parse::<f64>()
        .ok()
        .filter(|f| f.is_finite())
        .map(|f| f.max(0.0) as u64)
}

/// `path` with `.` and `..` resolved by name (no file system look-up: the path may not
/// exist on the host).
pub fn normalize(path: &Path) -> PathBuf {
    use std::path::Component;
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                if !out.pop() {
                    out.push("..");
                }
            }
            other => out.push(other.as_os_str()),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_then_parse_gives_the_same_tracefile() {
        let mut t = Tracefile::default();
        let f = t.files.entry(PathBuf::from("/src/a.c")).or_default();
        f.lines.insert(3, 2);
        f.lines.insert(4, 0);
        f.functions
            .insert("main".into(), Function { line: 3, count: 2 });
        f.functions
            .insert("other".into(), Function { line: 9, count: 0 });
        let text = t.write("server");
        assert!(text.starts_with("TN:server\nSF:/src/a.c\nFN:3,main\nFN:9,other\n"));
        assert!(text.contains("LF:2\nLH:1\nend_of_record\n"));
        let parsed = Tracefile::parse(&text).unwrap();
        assert_eq!(parsed, vec![("server".to_owned(), t)]);
    }

    #[test]
    fn sections_of_one_test_merge_and_tests_stay_apart() {
        let text = "TN:a\nSF:/x.c\nDA:1,1\nDA:2,0\nend_of_record\n\
                    TN:b\nSF:/x.c\nDA:2,5\nBRDA:2,0,0,1\nend_of_record\n\
                    TN:a\nSF:/x.c\nDA:1,2,abcdef\nFNDA:3,f\nFN:1,f\nend_of_record\n";
        let parsed = Tracefile::parse(text).unwrap();
        assert_eq!(parsed.len(), 2);
        let a = &parsed[0].1.files[Path::new("/x.c")];
        assert_eq!(a.lines[&1], 3);
        assert_eq!(a.functions["f"], Function { line: 1, count: 3 });
        let mut all = parsed[0].1.clone();
        all.merge(&parsed[1].1);
        assert_eq!(all.line_counts(), Counts { hit: 2, found: 2 });
    }

    #[test]
    fn bad_text_says_where() {
        let err = Tracefile::parse("SF:/x.c\nDA:one,1\n").unwrap_err();
        assert_eq!(err, "line 2: not a line number: `DA:one,1`");
        let err = Tracefile::parse("SF:/x.c\nDA:1,1\n").unwrap_err();
        assert!(err.contains("/x.c has no `end_of_record`"), "{err}");
        assert_eq!(parse_count("-1"), Some(0));
        assert_eq!(parse_count("99999999999999999999999"), Some(u64::MAX));
    }

    #[test]
    fn normalize_resolves_dots_by_name() {
        assert_eq!(
            normalize(Path::new("/w/build/../src/./a.c")),
            Path::new("/w/src/a.c")
        );
    }
}

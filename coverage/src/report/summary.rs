//! The numbers both the terminal table and the HTML index show: per source file (and
//! in total) line and function coverage, combined and per machine, and the files'
//! paths shortened by their common folder.

use std::path::{Path, PathBuf};

use super::tracefile::{Counts, FileCoverage, Tracefile};

/// Line and function counts of one file (or of all), for one machine or combined.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub struct Cell {
    pub lines: Counts,
    pub functions: Counts,
}

impl Cell {
    fn of(file: &FileCoverage) -> Cell {
        Cell {
            lines: file.line_counts(),
            functions: file.function_counts(),
        }
    }

    fn add(self, other: Cell) -> Cell {
        Cell {
            lines: self.lines.add(other.lines),
            functions: self.functions.add(other.functions),
        }
    }
}

/// One source file's row.
#[derive(Debug, Clone)]
pub struct FileRow {
    pub path: PathBuf,
    /// The path below [`Summary::prefix`].
    pub short: String,
    pub combined: Cell,
    /// In the order of [`Summary::machines`]; `None`: the machine has no data of the
    /// file (none of its programs contains it).
    pub machines: Vec<Option<Cell>>,
}

/// The report's numbers.
#[derive(Debug, Clone, Default)]
pub struct Summary {
    /// The machines that contributed data, in the run's order.
    pub machines: Vec<String>,
    /// The folder all source files are in (shown once, not on every row).
    pub prefix: PathBuf,
    pub files: Vec<FileRow>,
    pub total: Cell,
    /// Each machine's total over the files it has data of.
    pub machine_totals: Vec<Cell>,
}

impl Summary {
    /// The summary of each machine's tracefile and their merge.
    pub fn new(machines: &[(String, Tracefile)], combined: &Tracefile) -> Summary {
        let prefix = common_folder(combined.files.keys().map(PathBuf::as_path));
        let files: Vec<FileRow> = combined
            .files
            .iter()
            .map(|(path, file)| FileRow {
                path: path.clone(),
                short: short_name(path, &prefix),
                combined: Cell::of(file),
                machines: machines
                    .iter()
                    .map(|(_, t)| t.files.get(path).map(Cell::of))
                    .collect(),
            })
            .collect();
        let total = files.iter().fold(Cell::default(), |a, f| a.add(f.combined));
        let machine_totals = (0..machines.len())
            .map(|i| {
                files
                    .iter()
                    .filter_map(|f| f.machines[i])
                    .fold(Cell::default(), Cell::add)
            })
            .collect();
        Summary {
            machines: machines.iter().map(|(n, _)| n.clone()).collect(),
            prefix,
            files,
            total,
            machine_totals,
        }
    }
}

/// `80.0% 40/50`, or `-` when nothing is instrumented.
pub fn percent(c: Counts) -> String {
    match c.percent() {
        Some(p) => format!("{} {}/{}", percent_only(p), c.hit, c.found),
        None => "-".into(),
    }
}

/// `80.0%`; never rounds up to 100.0% or down to 0.0% (a line left or a line run
/// shows).
fn percent_only(p: f64) -> String {
    let p = if p < 100.0 { p.min(99.9) } else { p };
    let p = if p > 0.0 { p.max(0.1) } else { p };
    format!("{p:.1}%")
}

/// The deepest folder that holds every path (`/` when there is none deeper).
fn common_folder<'a>(paths: impl Iterator<Item = &'a Path>) -> PathBuf {
    let mut prefix: Option<PathBuf> = None;
    for path in paths {
        let dir = path.parent().unwrap_or(Path::new("/"));
        prefix = Some(match prefix {
            None => dir.to_path_buf(),
            Some(p) => p
                .components()
                .zip(dir.components())
                .take_while(|(a, b)| a == b)
                .map(|(a, _)| a)
                .collect(),
        });
    }
    prefix.unwrap_or_default()
}

fn short_name(path: &Path, prefix: &Path) -> String {
    path.strip_prefix(prefix)
        .ok()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(path)
        .to_string_lossy()
        .into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn common_folder_and_short_names() {
        let paths = [Path::new("/w/src/a.c"), Path::new("/w/include/b.h")];
        let prefix = common_folder(paths.into_iter());
        assert_eq!(prefix, Path::new("/w"));
        assert_eq!(short_name(paths[1], &prefix), "include/b.h");
        assert_eq!(
            common_folder([Path::new("/w/a.c")].into_iter()),
            Path::new("/w")
        );
        assert_eq!(percent_only(99.99), "99.9%");
        assert_eq!(percent_only(0.01), "0.1%");
        assert_eq!(percent(Counts { hit: 40, found: 50 }), "80.0% 40/50");
    }
}

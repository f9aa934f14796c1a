//! The coverage report of all machines: [`build`] turns each machine's data folder
//! into tracefiles, an HTML report and the terminal's table ([`Report::table`]).
//!
//! # What it writes (into `out`, the run's `<log dir>/coverage/`)
//!
//! - `<machine>.info`: the machine's lcov tracefile, test name (`TN:`) the machine's
//!   name (a machine called `combined` gets `machine-combined.info`);
//! - `combined.info`: every machine's section, each under its own test name, as
//!   `lcov -a` keeps them: lcov and genhtml sum them, and genhtml's
//!   `--show-details` shows each machine's counts;
//! - `index.html` and `files/`: our own pages (see `html.rs`): the line view has a
//!   count column per machine, which lcov 1.16's genhtml does not;
//! - `genhtml/`: genhtml's report of `combined.info`, when genhtml is on the host.
//!
//! The report is evidence, not the verdict: [`build`] never fails and never panics;
//! every problem (data of a build tree that is gone, a rebuilt or other-version
//! `.gcno`, a tool missing or failing, links in the data) is a message naming the
//! machine and the file. Only a floor the user asks for
//! ([`Report::below_floor`] of [`Report::fail_under`]) turns into a failure, and that is the caller's call.
//!
//! # Tools, and why
//!
//! - GCC (`gcc --coverage`): `gcov --json-format --stdout` (gcc ≥ 9; `gcov-12` with
//!   the host's gcc 12), one `.gcda`/`.gcno` pair at a time (`gcov.rs`). gcov is the
//!   reader that ships with the compiler that wrote the data, so it always knows the
//!   format; its JSON is parsed with serde, so no text scraping. lcov's geninfo
//!   would run the same gcov underneath, adding a Perl layer whose errors are harder
//!   to tie to one file; gcovr and grcov need Python or a further package.
//! - LLVM (clang, Rust): `llvm-profdata merge` and `llvm-cov export -format=lcov`
//!   (`llvm.rs`), the only readers of `.profraw`, of the newest version that reads
//!   the data.
//! - HTML: our own pages (`html.rs`), plus lcov's genhtml (`genhtml.rs`) as a
//!   familiar second view.
//!
//! # Files
//!
//! `guest_files.rs` (reading the untrusted data folder), `tools.rs` (running tools),
//! `tracefile.rs` (the lcov format), `gcov.rs`, `llvm.rs`, `summary.rs` (the
//! numbers), `table.rs`, `html.rs`, `genhtml.rs`. Only this file uses more than the
//! tracefile and the summary of the others.

mod gcov;
mod genhtml;
mod guest_files;
mod html;
mod llvm;
mod summary;
mod table;
mod tools;
mod tracefile;

use std::path::{Path, PathBuf};

pub use summary::Summary;
pub use tracefile::Tracefile;

/// One machine's coverage data, as the run left it.
#[derive(Debug, Clone)]
pub struct MachineData {
    pub name: String,
    /// The machine's data folder (`gcov/`, `llvm/` inside).
    pub data: PathBuf,
    /// Shown with the machine's numbers, e.g. "crashed at 12.3 s: only what was
    /// written before".
    pub note: Option<String>,
}

/// How the report is made.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// The instrumented binaries (and shared libraries) of LLVM programs: their
    /// coverage maps are what `.profraw` data is read against.
    pub llvm_binaries: Vec<PathBuf>,
    /// `--coverage-fail-under`: the combined line coverage, in percent, below which
    /// the test fails ([`Report::below_floor`]).
    pub fail_under: Option<f64>,
    /// Notes about the run as a whole, (subject, text), shown with the machines'
    /// notes: e.g. ("guest kernel", whether it had coverage data).
    pub notes: Vec<(String, String)>,
}

/// The report: where its files are, and what went wrong making it.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// The report's folder.
    pub out: PathBuf,
    /// Our HTML report's `index.html`, if it could be written.
    pub html: Option<PathBuf>,
    /// genhtml's `index.html`, if genhtml ran.
    pub genhtml: Option<PathBuf>,
    /// `combined.info`, if any machine had data.
    pub combined: Option<PathBuf>,
    /// Each contributing machine's tracefile: (machine, `<machine>.info`).
    pub tracefiles: Vec<(String, PathBuf)>,
    /// Problems, each a sentence naming the machine and the file.
    pub messages: Vec<String>,
    /// The machines whose data is in the report, in the run's order.
    pub contributed: Vec<String>,
    /// The machines whose data is not, and why.
    pub not_contributed: Vec<(String, String)>,
    /// The machines' notes ([`MachineData::note`]).
    pub notes: Vec<(String, String)>,
    /// The numbers.
    pub summary: Summary,
    /// [`Options::fail_under`].
    pub fail_under: Option<f64>,
}

impl Report {
    /// The terminal's table: per source file line and function coverage, combined and
    /// per machine, which machines contributed and which did not (and why), notes,
    /// the first problems, and the report's path. Ends with a newline.
    pub fn table(&self) -> String {
        let report = self.html.as_deref().unwrap_or(&self.out);
        table::render(
            &self.summary,
            &table::Extras {
                not_contributed: &self.not_contributed,
                notes: &self.notes,
                messages: &self.messages,
                report,
            },
        )
    }

    /// The combined line coverage in percent; `None` when there is no data.
    pub fn line_percent(&self) -> Option<f64> {
        self.summary.total.lines.percent()
    }

    /// Whether the combined line coverage is below `floor` percent; no data is.
    pub fn below_floor(&self, floor: f64) -> bool {
        self.line_percent().map_or(true, |p| p < floor)
    }
}

/// The file name of a machine's tracefile.
fn info_name(machine: &str) -> String {
    let name: String = machine
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if name.is_empty() || name == "combined" {
        format!("machine-{name}.info")
    } else {
        format!("{name}.info")
    }
}

/// Makes the report of `machines` in `out` (made if missing). Never fails: what goes
/// wrong is in [`Report::messages`].
pub fn build(out: &Path, machines: &[MachineData], options: &Options) -> Report {
    let mut report = Report {
        out: out.to_path_buf(),
        html: None,
        genhtml: None,
        combined: None,
        tracefiles: Vec::new(),
        messages: Vec::new(),
        contributed: Vec::new(),
        not_contributed: Vec::new(),
        notes: options.notes.clone(),
        summary: Summary::default(),
        fail_under: options.fail_under,
    };
    if let Err(e) = std::fs::create_dir_all(out) {
        report.messages.push(format!(
            "cannot make the report's folder {}: {e}",
            out.display()
        ));
        return report;
    }
    let work = out.join(".work");
    let _ = std::fs::remove_dir_all(&work);
    let mut data: Vec<(String, Tracefile)> = Vec::new();
    for (i, m) in machines.iter().enumerate() {
        if let Some(tracefile) = capture_machine(&mut report, m, &work.join(i.to_string()), options)
        {
            data.push((m.name.clone(), tracefile));
        }
    }
    let _ = std::fs::remove_dir_all(&work);
    let mut combined = Tracefile::default();
    for (_, t) in &data {
        combined.merge(t);
    }
    report.summary = Summary::new(&data, &combined);
    let links = write_combined(&mut report, &data);
    write_page(&mut report, &data, &links);
    report
}

/// One machine's data read into a tracefile and written as `<machine>.info`; `None`
/// (and why, in the report) when it has none.
fn capture_machine(
    report: &mut Report,
    m: &MachineData,
    machine_work: &Path,
    options: &Options,
) -> Option<Tracefile> {
    let out = report.out.clone();
    if let Some(note) = &m.note {
        report.notes.push((m.name.clone(), note.clone()));
    }
    // Messages name the data by its path in the report's folder when it is there.
    let shown = m.data.strip_prefix(&out).unwrap_or(&m.data).to_path_buf();
    let gcc = gcov::capture(
        &m.name,
        &m.data.join("gcov"),
        &shown.join("gcov"),
        &machine_work.join("gcov"),
    );
    let llvm = llvm::capture(
        &m.name,
        &m.data.join("llvm"),
        &shown.join("llvm"),
        &machine_work.join("llvm"),
        &options.llvm_binaries,
    );
    report.messages.extend(gcc.messages);
    report.messages.extend(llvm.messages);
    let mut tracefile = gcc.tracefile;
    tracefile.merge(&llvm.tracefile);
    if tracefile.is_empty() {
        let files = gcc.found + gcc.skipped + llvm.found + llvm.skipped;
        let why = if !m.data.exists() {
            format!("no coverage data folder ({})", m.data.display())
        } else if files == 0 {
            "no coverage data: no instrumented program exited".to_owned()
        } else {
            format!("none of its {files} data files could be read (see the problems)")
        };
        report.messages.push(format!("machine {}: {why}", m.name));
        report.not_contributed.push((m.name.clone(), why));
        return None;
    }
    let path = out.join(info_name(&m.name));
    match std::fs::write(&path, tracefile.write(&m.name)) {
        Ok(()) => report.tracefiles.push((m.name.clone(), path)),
        Err(e) => report
            .messages
            .push(format!("cannot write {}: {e}", path.display())),
    }
    report.contributed.push(m.name.clone());
    Some(tracefile)
}

/// `combined.info` (every machine a test) and genhtml's report over it; the links the
/// page shows to them and to each machine's tracefile.
fn write_combined(report: &mut Report, data: &[(String, Tracefile)]) -> Vec<(String, String)> {
    let mut links = Vec::new();
    if !data.is_empty() {
        let path = report.out.join("combined.info");
        let text: String = data.iter().map(|(name, t)| t.write(name)).collect();
        match std::fs::write(&path, text) {
            Ok(()) => {
                match genhtml::run(&path, &report.out) {
                    Ok(index) => {
                        links.push((
                            "genhtml's report (per-machine detail as test names)".to_owned(),
                            "genhtml/index.html".to_owned(),
                        ));
                        report.genhtml = Some(index);
                    }
                    Err(e) => report.messages.push(e),
                }
                links.push((
                    "combined.info (all machines, one test each)".to_owned(),
                    "combined.info".to_owned(),
                ));
                report.combined = Some(path);
            }
            Err(e) => report
                .messages
                .push(format!("cannot write {}: {e}", path.display())),
        }
    }
    for (name, path) in &report.tracefiles {
        let file = path
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        links.push((format!("{file} (machine {name})"), file));
    }
    links
}

/// Our HTML pages (counts per machine per line) with `links`.
fn write_page(report: &mut Report, data: &[(String, Tracefile)], links: &[(String, String)]) {
    let input = html::Input {
        summary: &report.summary,
        machines: data,
        not_contributed: &report.not_contributed,
        notes: &report.notes,
        messages: &report.messages,
        links,
    };
    match html::write(&report.out, &input) {
        Ok(index) => report.html = Some(index),
        Err(e) => report.messages.push(format!("the HTML report: {e}")),
    }
}

#[cfg(test)]
mod tests;

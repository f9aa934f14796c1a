//! LLVM's data (clang's `-fprofile-instr-generate -fcoverage-mapping`, Rust's
//! `-C instrument-coverage`): a machine's `.profraw` files merged with
//! `llvm-profdata merge`, then read against the instrumented binaries with
//! `llvm-cov export -format=lcov` (the binaries' coverage maps name the sources).
//!
//! The raw profile format changes with LLVM versions, and the program may come from
//! a newer LLVM than the host's default tools (rustc bundles its own): the tools are
//! tried newest first (`llvm-profdata-NN` in `PATH` and `/usr/lib/llvm-NN/bin`, then
//! plain `llvm-profdata`), and the first whose merge reads the data is used, with the
//! `llvm-cov` of the same version. Rust's standard library and crates.io sources
//! (`/rustc/…`, `…/.cargo/registry/…`) are left out.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::guest_files;
use super::tools;
use super::tracefile::Tracefile;

/// Versions of the `llvm-profdata-NN` tried, newest first.
const VERSIONS: std::ops::RangeInclusive<u32> = 10..=30;

/// Sources not reported: Rust's standard library, crates.io dependencies.
const IGNORED: &str = r"^/rustc/|/\.cargo/registry/|/\.cargo/git/";

/// What one machine's LLVM data gave.
#[derive(Debug, Default)]
pub struct Capture {
    pub tracefile: Tracefile,
    /// `.profraw` files found.
    pub found: usize,
    /// The `llvm-profdata` that read them.
    pub tool: Option<PathBuf>,
    /// Files skipped (links, special files).
    pub skipped: usize,
    /// Problems, each a sentence naming the machine (and the file, when it is one).
    pub messages: Vec<String>,
}

/// Reads the `.profraw` files under `root` (`data/<machine>/llvm`; missing is no
/// data) with `binaries`, working in `work`. `shown_as` names `root` in messages.
pub fn capture(
    machine: &str,
    root: &Path,
    shown_as: &Path,
    work: &Path,
    binaries: &[PathBuf],
) -> Capture {
    let mut capture = Capture::default();
    let listing = guest_files::list(root, ".profraw", shown_as);
    capture.messages = listing.messages_of(machine);
    capture.found = listing.files.len();
    capture.skipped = listing.skipped.len();
    if listing.files.is_empty() {
        return capture;
    }
    let say = |what: String| format!("machine {machine}: {what}");
    if binaries.is_empty() {
        capture.messages.push(say(format!(
            "{} .profraw files in {}, but no instrumented binaries were named to read them with: the LLVM data is not in the report",
            listing.files.len(),
            shown_as.display()
        )));
        return capture;
    }
    let binaries: Vec<&PathBuf> = binaries
        .iter()
        .filter(|b| {
            let ok = b.is_file();
            if !ok {
                capture.messages.push(say(format!(
                    "the instrumented binary {} is not on the host: left out",
                    b.display()
                )));
            }
            ok
        })
        .collect();
    if binaries.is_empty() {
        return capture;
    }
    let mut staged = Vec::new();
    for (i, raw) in listing.files.iter().enumerate() {
        let to = work.join(format!("{i}.profraw"));
        match guest_files::copy(raw, &to) {
            Ok(()) => staged.push(to),
            Err(e) => capture.messages.push(say(format!(
                "{}: cannot be copied out: {e}",
                shown_as
                    .join(raw.strip_prefix(root).unwrap_or(raw))
                    .display()
            ))),
        }
    }
    if staged.is_empty() {
        return capture;
    }
    let profdata = work.join("merged.profdata");
    let candidates = profdata_tools();
    if candidates.is_empty() {
        capture.messages.push(say(format!(
            "the host has no llvm-profdata (Debian: package llvm, or llvm-NN for the program's LLVM): {} .profraw files not read",
            staged.len()
        )));
        return capture;
    }
    let mut failures = Vec::new();
    for (tool, cov) in candidates {
        let merged = tools::run(
            Command::new(&tool)
                .args(["merge", "-sparse", "--failure-mode=all", "-o"])
                .arg(&profdata)
                .args(&staged),
        );
        match merged {
            Ok(out) => {
                // Some files unreadable (cut short by a crash): the others are merged.
                if let Some(t) = tools::tail(&out.stderr) {
                    capture.messages.push(say(format!(
                        "{} read only part of the data: {t}",
                        name(&tool)
                    )));
                }
                capture.tool = Some(tool);
                export(machine, &cov, &profdata, &binaries, &mut capture);
                return capture;
            }
            Err(e) => failures.push(e),
        }
    }
    capture.messages.push(say(format!(
        "no llvm-profdata on the host reads the data in {} ({}); {}",
        shown_as.display(),
        "a program from a newer LLVM needs newer tools",
        failures.join("; ")
    )));
    capture
}

/// `llvm-cov export` of the merged profile into the capture's tracefile.
fn export(machine: &str, cov: &Path, profdata: &Path, binaries: &[&PathBuf], c: &mut Capture) {
    let mut command = Command::new(cov);
    command
        .args(["export", "-format=lcov", "-skip-functions=false"])
        .arg(format!("-ignore-filename-regex={IGNORED}"))
        .arg(format!("-instr-profile={}", profdata.display()));
    for (i, b) in binaries.iter().enumerate() {
        if i > 0 {
            command.arg("-object");
        }
        command.arg(b);
    }
    let out = match tools::run(&mut command) {
        Ok(out) => out,
        Err(e) => {
            c.messages.push(format!("machine {machine}: {e}"));
            return;
        }
    };
    // Warnings such as "functions have mismatched data": rebuilt since the run.
    if let Some(t) = tools::tail(&out.stderr) {
        c.messages
            .push(format!("machine {machine}: {}: {t}", name(cov)));
    }
    match Tracefile::parse(&String::from_utf8_lossy(&out.stdout)) {
        Ok(tests) => {
            for (_, t) in tests {
                c.tracefile.merge(&t);
            }
        }
        Err(e) => c.messages.push(format!(
            "machine {machine}: {}'s output is not an lcov tracefile: {e}",
            name(cov)
        )),
    }
}

fn name(tool: &Path) -> String {
    tool.file_name()
        .unwrap_or(tool.as_os_str())
        .to_string_lossy()
        .into_owned()
}

/// The host's (llvm-profdata, llvm-cov) pairs, newest first, each once.
fn profdata_tools() -> Vec<(PathBuf, PathBuf)> {
    let mut found: Vec<(PathBuf, PathBuf)> = Vec::new();
    let mut seen = Vec::new();
    let mut add = |profdata: Option<PathBuf>, cov: Option<PathBuf>| {
        let (Some(p), Some(c)) = (profdata, cov) else {
            return;
        };
        let real = std::fs::canonicalize(&p).unwrap_or_else(|_| p.clone());
        if !seen.contains(&real) {
            seen.push(real);
            found.push((p, c));
        }
    };
    for v in VERSIONS.rev() {
        add(
            tools::find(&format!("llvm-profdata-{v}")),
            tools::find(&format!("llvm-cov-{v}")),
        );
        let dir = PathBuf::from(format!("/usr/lib/llvm-{v}/bin"));
        let existing = |p: PathBuf| p.is_file().then_some(p);
        add(
            existing(dir.join("llvm-profdata")),
            existing(dir.join("llvm-cov")),
        );
    }
    add(tools::find("llvm-profdata"), tools::find("llvm-cov"));
    found
}

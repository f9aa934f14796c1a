//! GCC's data: each `.gcda` a machine wrote paired with the host's `.gcno`, checked,
//! and read with `gcov --json-format --stdout` into a [`Tracefile`].
//!
//! The guest's gcov runtime writes with `GCOV_PREFIX=<data>/gcov` and
//! `GCOV_PREFIX_STRIP=0`, so `data/<machine>/gcov/w/build/p.gcda` is the data of the
//! object compiled in the host's `/w/build`, whose notes are `/w/build/p.gcno`. Both
//! files start with the same 12-byte header (magic, gcc version, stamp of the
//! compilation): a different version or stamp is data that does not belong to the
//! notes the host has now, and is skipped with a message rather than read wrong.
//!
//! gcov reads a copy of the pair in the report's own work folder (the `.gcda` copied
//! without following links, see `guest_files.rs`); it is the gcov of the data's gcc
//! major version (`gcov-12`) when the host has it, else `gcov`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde::Deserialize;

use super::guest_files;
use super::tools;
use super::tracefile::{normalize, Tracefile};

const GCDA_MAGIC: u32 = u32::from_be_bytes(*b"gcda");
const GCNO_MAGIC: u32 = u32::from_be_bytes(*b"gcno");

/// What one machine's GCC data gave.
#[derive(Debug, Default)]
pub struct Capture {
    pub tracefile: Tracefile,
    /// `.gcda` files found, and read.
    pub found: usize,
    pub read: usize,
    /// Files skipped (links, special files).
    pub skipped: usize,
    /// Problems, each a sentence naming the machine and the file.
    pub messages: Vec<String>,
}

/// The 12 bytes every `.gcda` and `.gcno` starts with.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Header {
    magic: u32,
    version: u32,
    stamp: u32,
}

impl Header {
    /// Reads a header in either byte order (files are written in the target's).
    fn read(mut file: impl std::io::Read) -> Option<Header> {
        let mut b = [0u8; 12];
        file.read_exact(&mut b).ok()?;
        let word = |i: usize, le: bool| {
            let w = [b[i], b[i + 1], b[i + 2], b[i + 3]];
            if le {
                u32::from_le_bytes(w)
            } else {
                u32::from_be_bytes(w)
            }
        };
        let le = matches!(word(0, true), GCDA_MAGIC | GCNO_MAGIC);
        Some(Header {
            magic: word(0, le),
            version: word(4, le),
            stamp: word(8, le),
        })
    }
}

/// gcc's version as gcov encodes it (`B22*` is 12.2), else the four characters.
fn gcc_version(version: u32) -> String {
    let [a, b, c, _] = version.to_be_bytes();
    if a.is_ascii_uppercase() && b.is_ascii_digit() && c.is_ascii_digit() {
        let major = u32::from(a - b'A') * 10 + u32::from(b - b'0');
        format!("{major}.{}", c - b'0')
    } else {
        format!("{:?}", String::from_utf8_lossy(&version.to_be_bytes()))
    }
}

/// gcc's major version from the encoded version, for `gcov-NN`.
fn gcc_major(version: u32) -> Option<u32> {
    let [a, b, ..] = version.to_be_bytes();
    (a.is_ascii_uppercase() && b.is_ascii_digit())
        .then(|| u32::from(a - b'A') * 10 + u32::from(b - b'0'))
}

/// Reads the `.gcda` files under `root` (`data/<machine>/gcov`; missing is no data),
/// working in `work` (the report's own folder). `shown_as` names `root` in messages.
pub fn capture(machine: &str, root: &Path, shown_as: &Path, work: &Path) -> Capture {
    let mut capture = Capture::default();
    let listing = guest_files::list(root, ".gcda", shown_as);
    capture.messages = listing.messages_of(machine);
    capture.found = listing.files.len();
    capture.skipped = listing.skipped.len();
    let mut gcov_tools: BTreeMap<Option<u32>, Option<PathBuf>> = BTreeMap::new();
    for (i, gcda) in listing.files.iter().enumerate() {
        let Ok(rel) = gcda.strip_prefix(root) else {
            continue;
        };
        // The object's host path: the data's path below the prefix.
        let host_gcda = Path::new("/").join(rel);
        let host_gcno = host_gcda.with_extension("gcno");
        let say = |what: String| format!("machine {machine}: {}: {what}", host_gcda.display());
        let data_header = match guest_files::open(gcda).map(Header::read) {
            Err(e) => {
                capture.messages.push(say(format!("cannot be read: {e}")));
                continue;
            }
            Ok(Some(h)) if h.magic == GCDA_MAGIC => h,
            Ok(_) => {
                capture.messages.push(say(
                    "not a .gcda file (cut short, or not written by gcov): skipped".into(),
                ));
                continue;
            }
        };
        let notes_header = match std::fs::File::open(&host_gcno) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                capture.messages.push(say(format!(
                    "the host has no {} (the build tree is gone or moved since the run): skipped",
                    host_gcno.display()
                )));
                continue;
            }
            Err(e) => {
                capture.messages.push(say(format!(
                    "the host's {} cannot be read: {e}: skipped",
                    host_gcno.display()
                )));
                continue;
            }
            Ok(f) => match Header::read(f) {
                Some(h) if h.magic == GCNO_MAGIC => h,
                _ => {
                    capture.messages.push(say(format!(
                        "the host's {} is not a .gcno file: skipped",
                        host_gcno.display()
                    )));
                    continue;
                }
            },
        };
        if notes_header.version != data_header.version {
            capture.messages.push(say(format!(
                "written by a different gcc version (the data by gcc {}, the host's {} by gcc {}): skipped",
                gcc_version(data_header.version),
                host_gcno.display(),
                gcc_version(notes_header.version)
            )));
            continue;
        }
        if notes_header.stamp != data_header.stamp {
            capture.messages.push(say(format!(
                "the host's {} was rebuilt since the run (its stamp differs from the data's): skipped",
                host_gcno.display()
            )));
            continue;
        }
        let major = gcc_major(data_header.version);
        let gcov = gcov_tools
            .entry(major)
            .or_insert_with(|| {
                major
                    .and_then(|m| tools::find(&format!("gcov-{m}")))
                    .or_else(|| tools::find("gcov"))
            })
            .clone();
        let Some(gcov) = gcov else {
            capture.messages.push(format!(
                "machine {machine}: the host has no gcov{} (it comes with gcc): {} .gcda files not read",
                major.map(|m| format!(" (nor gcov-{m})")).unwrap_or_default(),
                listing.files.len() - i
            ));
            break;
        };
        match read_pair(gcda, &host_gcno, &gcov, &work.join(i.to_string())) {
            Ok(t) => {
                capture.read += 1;
                capture.tracefile.merge(&t);
            }
            Err(e) => capture.messages.push(say(e)),
        }
    }
    capture
}

#[derive(Deserialize)]
struct GcovJson {
    #[serde(default)]
    current_working_directory: Option<PathBuf>,
    #[serde(default)]
    files: Vec<GcovFile>,
}

#[derive(Deserialize)]
struct GcovFile {
    file: PathBuf,
    #[serde(default)]
    lines: Vec<GcovLine>,
    #[serde(default)]
    functions: Vec<GcovFunction>,
}

#[derive(Deserialize)]
struct GcovLine {
    line_number: u32,
    count: u64,
}

#[derive(Deserialize)]
struct GcovFunction {
    name: String,
    start_line: u32,
    execution_count: u64,
}

/// Copies the pair into `dir` and reads it with `gcov`.
fn read_pair(gcda: &Path, gcno: &Path, gcov: &Path, dir: &Path) -> Result<Tracefile, String> {
    let stem = gcno.file_stem().unwrap_or_default();
    let staged = dir.join(stem).with_extension("gcda");
    guest_files::copy(gcda, &staged).map_err(|e| format!("cannot be copied out: {e}"))?;
    std::fs::copy(gcno, staged.with_extension("gcno"))
        .map_err(|e| format!("cannot copy the host's {}: {e}", gcno.display()))?;
    let out = tools::run(
        Command::new(gcov)
            .args(["--json-format", "--stdout"])
            .arg(&staged)
            .current_dir(dir),
    )?;
    let mut tracefile = Tracefile::default();
    let mut documents = 0;
    for doc in serde_json::Deserializer::from_slice(&out.stdout).into_iter::<GcovJson>() {
        let doc = doc.map_err(|e| {
            format!(
                "{}'s output is not the JSON it should be: {e}",
                gcov.display()
            )
        })?;
        documents += 1;
        let cwd = doc.current_working_directory.unwrap_or_default();
        for file in doc.files {
            let path = normalize(&cwd.join(&file.file));
            let coverage = tracefile.files.entry(path).or_default();
            for line in file.lines {
                let c = coverage.lines.entry(line.line_number).or_default();
                *c = c.saturating_add(line.count);
            }
            for f in file.functions {
                let entry = coverage.functions.entry(f.name).or_default();
                entry.line = f.start_line;
                entry.count = entry.count.saturating_add(f.execution_count);
            }
        }
    }
    if tracefile.is_empty() {
        let why = tools::tail(&out.stderr)
            .map(|t| format!(": {t}"))
            .unwrap_or_default();
        return Err(if documents == 0 {
            format!("{} printed nothing{why}", gcov.display())
        } else {
            format!("{} found no source lines in it{why}", gcov.display())
        });
    }
    Ok(tracefile)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_and_versions() {
        let bytes = *b"adcg*22B\x01\x02\x03\x04";
        let h = Header::read(&bytes[..]).unwrap();
        assert_eq!(h.magic, GCDA_MAGIC);
        assert_eq!(gcc_version(h.version), "12.2");
        assert_eq!(gcc_major(h.version), Some(12));
        assert_eq!(h.stamp, 0x0403_0201);
        let be = *b"gcnoB33*\x04\x03\x02\x01";
        let h = Header::read(&be[..]).unwrap();
        assert_eq!(
            (h.magic, gcc_version(h.version)),
            (GCNO_MAGIC, "13.3".into())
        );
        assert_eq!(h.stamp, 0x0403_0201);
        assert_eq!(Header::read(&b"short"[..]), None);
    }
}

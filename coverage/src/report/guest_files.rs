//! Reading a machine's data folder, which the guest wrote and so is not trusted:
//! only regular files are listed and read, symbolic links are never followed (not
//! even to folders), nothing is written into it. Files are copied out (opened with
//! `O_NOFOLLOW`, checked to be regular on the open file) before any tool reads them.

use std::fs::File;
use std::io;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};

/// Folders deeper than this are not entered (a guest could nest folders without end).
const MAX_DEPTH: usize = 64;
/// At most this many files are listed from one folder tree.
const MAX_FILES: usize = 100_000;

/// The regular files under a folder, and what was skipped.
#[derive(Debug, Default)]
pub struct Listing {
    /// Sorted.
    pub files: Vec<PathBuf>,
    /// Messages: symbolic links, special files, unreadable folders.
    pub skipped: Vec<String>,
}

impl Listing {
    /// The skipped files' messages, each naming `machine`.
    pub fn messages_of(&self, machine: &str) -> Vec<String> {
        self.skipped
            .iter()
            .map(|skipped| format!("machine {machine}: {skipped}"))
            .collect()
    }
}

/// The regular files under `root` whose name ends with `extension` (with the dot),
/// recursively. `root` missing is an empty listing. Symbolic links and other special
/// files are skipped with a message (named by their path below `shown_as`); files
/// with other extensions are ignored silently (`lost+found`, stray files).
pub fn list(root: &Path, extension: &str, shown_as: &Path) -> Listing {
    let mut listing = Listing::default();
    let show = |p: &Path| shown_as.join(p.strip_prefix(root).unwrap_or(p));
    match std::fs::symlink_metadata(root) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => return listing,
        Err(e) => {
            listing
                .skipped
                .push(format!("{}: cannot be read: {e}", shown_as.display()));
            return listing;
        }
        Ok(m) if m.file_type().is_symlink() => {
            listing.skipped.push(format!(
                "{} is a symbolic link: skipped (links in the guest's data are never followed)",
                shown_as.display()
            ));
            return listing;
        }
        Ok(m) if !m.is_dir() => {
            listing
                .skipped
                .push(format!("{} is not a folder: skipped", shown_as.display()));
            return listing;
        }
        Ok(_) => {}
    }
    let mut stack = vec![(root.to_path_buf(), 0usize)];
    while let Some((dir, depth)) = stack.pop() {
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) => {
                listing
                    .skipped
                    .push(format!("{}: cannot be read: {e}", show(&dir).display()));
                continue;
            }
        };
        for entry in entries.flatten() {
            let path = entry.path();
            // `DirEntry::file_type` does not follow links.
            let Ok(kind) = entry.file_type() else {
                continue;
            };
            let name = entry.file_name();
            if kind.is_symlink() {
                listing.skipped.push(format!(
                    "{} is a symbolic link: skipped (links in the guest's data are never followed)",
                    show(&path).display()
                ));
                continue;
            }
            if kind.is_dir() {
                if name == "lost+found" && depth == 0 {
                    continue;
                }
                if depth + 1 >= MAX_DEPTH {
                    listing.skipped.push(format!(
                        "{}: folders nested deeper than {MAX_DEPTH}: skipped",
                        show(&path).display()
                    ));
                } else {
                    stack.push((path, depth + 1));
                }
                continue;
            }
            if !name.to_string_lossy().ends_with(extension) {
                continue;
            }
            if !kind.is_file() {
                listing.skipped.push(format!(
                    "{} is not a regular file: skipped",
                    show(&path).display()
                ));
            } else if listing.files.len() >= MAX_FILES {
                listing.skipped.push(format!(
                    "{}: more than {MAX_FILES} files: the rest is skipped",
                    shown_as.display()
                ));
                listing.files.sort();
                listing.skipped.sort();
                return listing;
            } else {
                listing.files.push(path);
            }
        }
    }
    listing.files.sort();
    listing.skipped.sort();
    listing
}

/// Opens a file of the guest's data for reading: never through a symbolic link
/// (`O_NOFOLLOW`), only a regular file (checked on the open file, so it cannot be
/// swapped in between), without blocking on a FIFO.
pub fn open(path: &Path) -> io::Result<File> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)?;
    if !file.metadata()?.is_file() {
        return Err(io::Error::other("not a regular file"));
    }
    Ok(file)
}

/// Copies a file of the guest's data to `to` (a new file of the report's own; its
/// folder is made).
pub fn copy(from: &Path, to: &Path) -> io::Result<()> {
    let mut src = open(from)?;
    if let Some(dir) = to.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut dst = File::create(to)?;
    io::copy(&mut src, &mut dst)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_regular_files_and_skips_links() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("gcov");
        std::fs::create_dir_all(root.join("w/build")).unwrap();
        std::fs::create_dir_all(root.join("lost+found")).unwrap();
        std::fs::write(root.join("w/build/a.gcda"), b"x").unwrap();
        std::fs::write(root.join("w/build/notes.txt"), b"x").unwrap();
        std::fs::write(root.join("lost+found/b.gcda"), b"x").unwrap();
        std::os::unix::fs::symlink("/etc/passwd", root.join("w/build/c.gcda")).unwrap();
        std::os::unix::fs::symlink("/etc", root.join("w/etc")).unwrap();
        let listing = list(&root, ".gcda", Path::new("data/m/gcov"));
        assert_eq!(listing.files, vec![root.join("w/build/a.gcda")]);
        assert_eq!(
            listing.skipped,
            vec![
                "data/m/gcov/w/build/c.gcda is a symbolic link: skipped (links in the guest's data are never followed)",
                "data/m/gcov/w/etc is a symbolic link: skipped (links in the guest's data are never followed)",
            ]
        );
        assert!(open(&root.join("w/build/c.gcda")).is_err());
        let listing = list(&tmp.path().join("none"), ".gcda", Path::new("x"));
        assert!(listing.files.is_empty() && listing.skipped.is_empty());
    }
}

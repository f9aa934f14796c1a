//! Finding a suite's tests: each path is a spec file, a folder holding `flotilla.toml`,
//! or a folder searched recursively for `flotilla.toml` files.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Component, Path, PathBuf};

use crate::error::Error;
use crate::spec::{Spec, SPEC_FILE_NAME};

/// Folders a search does not enter: build output, logs, and hidden folders (`.git`).
const SKIPPED: [&str; 2] = ["target", "flotilla-out"];

/// One test of a suite: where its spec is, and the spec (or why it cannot be read).
#[derive(Debug)]
pub struct SuiteTest {
    /// The spec's path as given, without `./` and relative to the current folder when
    /// under it: `examples/hello` for `examples/hello/flotilla.toml`, the file's path
    /// for another name (`examples/coverage/rust.toml`). It names the test everywhere,
    /// and [`Partition`](super::Partition) hashes it.
    pub id: String,
    /// The spec file.
    pub path: PathBuf,
    /// The test's log folder's name in the suite's out folder: the id with `-` for `/`,
    /// unique in the suite.
    pub folder: String,
    pub spec: Result<Spec, Error>,
}

impl SuiteTest {
    /// The spec's name, or the id when it could not be read.
    pub fn name(&self) -> &str {
        self.spec.as_ref().map_or(&self.id, |s| &s.name)
    }
}

/// Whether `path` names one spec (a file, or a folder holding `flotilla.toml`) rather
/// than a folder to search.
pub fn is_spec(path: &Path) -> bool {
    !path.is_dir() || path.join(SPEC_FILE_NAME).is_file()
}

/// The tests under `paths`, sorted by id, each once. A path that does not exist is an
/// error; a spec that cannot be read is a test whose `spec` is the error.
pub fn discover(paths: &[PathBuf]) -> Result<Vec<SuiteTest>, Error> {
    let mut files = BTreeSet::new();
    for path in paths {
        if !path.exists() {
            return Err(Error::Io {
                what: format!("looking for specs in {}", path.display()),
                source: std::io::Error::from(std::io::ErrorKind::NotFound),
            });
        }
        if is_spec(path) {
            let file = if path.is_dir() {
                path.join(SPEC_FILE_NAME)
            } else {
                path.clone()
            };
            files.insert(normalize(&file));
        } else {
            search(path, &mut files)?;
        }
    }
    let mut tests: Vec<SuiteTest> = files
        .into_iter()
        .map(|path| SuiteTest {
            id: id_of(&path),
            spec: Spec::load(&path),
            folder: String::new(),
            path,
        })
        .collect();
    tests.sort_by(|a, b| a.id.cmp(&b.id));
    tests.dedup_by(|a, b| a.id == b.id);
    name_folders(&mut tests);
    Ok(tests)
}

/// Adds the `flotilla.toml` files under `dir` to `files`.
fn search(dir: &Path, files: &mut BTreeSet<PathBuf>) -> Result<(), Error> {
    let entries = std::fs::read_dir(dir).map_err(|source| Error::Io {
        what: format!("looking for specs in {}", dir.display()),
        source,
    })?;
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        // Links are not followed: a link to a parent would never end.
        let Ok(kind) = entry.file_type() else {
            continue;
        };
        if kind.is_dir() {
            if !name.starts_with('.') && !SKIPPED.contains(&name.as_str()) {
                search(&entry.path(), files)?;
            }
        } else if name == SPEC_FILE_NAME {
            files.insert(normalize(&entry.path()));
        }
    }
    Ok(())
}

/// `path` without `.` components, relative to the current folder when under it: the
/// same spec has the same id wherever the checkout is.
fn normalize(path: &Path) -> PathBuf {
    let path = match std::env::current_dir() {
        Ok(cwd) if path.is_absolute() => path.strip_prefix(&cwd).unwrap_or(path),
        _ => path,
    };
    path.components()
        .filter(|c| !matches!(c, Component::CurDir))
        .collect()
}

/// The id of the spec file `path` (see [`SuiteTest::id`]).
fn id_of(path: &Path) -> String {
    let shown = if path.file_name().is_some_and(|n| n == SPEC_FILE_NAME) {
        path.parent().unwrap_or(path)
    } else {
        path
    };
    match shown.to_string_lossy().into_owned() {
        s if s.is_empty() => ".".to_owned(),
        s => s,
    }
}

/// Gives each test its log folder's name: the id, `/` as `-`, `..` as `up`, without
/// `.toml`; names that two ids share get a suffix from a hash of each id.
fn name_folders(tests: &mut [SuiteTest]) {
    let slug = |id: &str| -> String {
        let id = id.strip_suffix(".toml").unwrap_or(id);
        let parts: Vec<String> = id
            .split('/')
            .filter(|p| !p.is_empty() && *p != ".")
            .map(|p| {
                if p == ".." {
                    "up".to_owned()
                } else {
                    p.to_owned()
                }
            })
            .collect();
        match parts.join("-") {
            s if s.is_empty() => "test".to_owned(),
            s => s,
        }
    };
    let mut count: BTreeMap<String, usize> = BTreeMap::new();
    for t in tests.iter() {
        *count.entry(slug(&t.id)).or_default() += 1;
    }
    for t in tests.iter_mut() {
        let s = slug(&t.id);
        t.folder = if count[&s] > 1 {
            format!("{s}-{:08x}", super::partition::stable_hash(&t.id) as u32)
        } else {
            s
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(dir: &Path, rel: &str, name: &str) {
        let path = dir.join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(
            path,
            format!("name = \"{name}\"\n[machines.m]\nmemory = 128\n"),
        )
        .unwrap();
    }

    #[test]
    fn folders_are_searched_and_specs_named_once() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        spec(d, "a/flotilla.toml", "same");
        spec(d, "a/b/flotilla.toml", "same");
        spec(d, "a-b/flotilla.toml", "other");
        spec(d, "c/extra.toml", "extra");
        spec(d, "target/flotilla.toml", "built");
        spec(d, ".hidden/flotilla.toml", "hidden");
        spec(d, "bad/flotilla.toml", "bad");
        std::fs::write(d.join("bad/flotilla.toml"), "machines = 3").unwrap();
        let root = d.join("tree");
        std::fs::create_dir(&root).unwrap();
        for sub in ["a", "a-b", "bad", "target", ".hidden"] {
            std::fs::rename(d.join(sub), root.join(sub)).unwrap();
        }
        let found = discover(&[
            root.clone(),
            d.join("c/extra.toml"),
            root.join("a"), // a spec folder, also found by the search: once
        ])
        .unwrap();
        let ids: Vec<String> = found
            .iter()
            .map(|t| {
                t.id.strip_prefix(&d.to_string_lossy().into_owned())
                    .unwrap()
                    .to_owned()
            })
            .collect();
        assert_eq!(
            ids,
            [
                "/c/extra.toml",
                "/tree/a",
                "/tree/a-b",
                "/tree/a/b",
                "/tree/bad"
            ]
        );
        // Unique folder names, also for `a-b` against `a/b`; a stable suffix for those.
        let folders: BTreeSet<&str> = found.iter().map(|t| t.folder.as_str()).collect();
        assert_eq!(folders.len(), found.len());
        assert!(found[0].folder.ends_with("c-extra"), "{}", found[0].folder);
        assert!(found[1].folder.ends_with("tree-a"), "{}", found[1].folder);
        assert!(found[2].folder.contains("tree-a-b-"), "{}", found[2].folder);
        assert!(found[3].folder.contains("tree-a-b-"), "{}", found[3].folder);
        assert_eq!(found[1].name(), "same");
        assert_eq!(found[3].name(), "same");
        assert!(found[4].spec.is_err());
        assert!(discover(&[d.join("missing")]).is_err());
    }

    #[test]
    fn ids_are_relative_and_without_dots() {
        assert_eq!(
            id_of(&normalize(Path::new("./examples/hello/flotilla.toml"))),
            "examples/hello"
        );
        assert_eq!(
            id_of(&normalize(Path::new("examples/coverage/rust.toml"))),
            "examples/coverage/rust.toml"
        );
        let cwd = std::env::current_dir().unwrap();
        assert_eq!(id_of(&normalize(&cwd.join("x/flotilla.toml"))), "x");
        assert_eq!(id_of(&normalize(Path::new("flotilla.toml"))), ".");
    }
}

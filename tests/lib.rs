//! What the workspace's test binaries share: the manual's files. The end-to-end tests
//! live in `e2e/`, the layout checks in `layout/`, the book's in `book/` and
//! `book_figures/`.

use std::path::Path;

/// The README and every chapter of the book, as (path in the workspace, text).
pub fn manual(root: &Path) -> Vec<(String, String)> {
    let mut files = vec!["README.md".to_owned()];
    let mut chapters: Vec<String> = std::fs::read_dir(root.join("docs/src"))
        .expect("docs/src")
        .map(|e| {
            e.expect("an entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .filter(|name| name.ends_with(".md"))
        .map(|name| format!("docs/src/{name}"))
        .collect();
    chapters.sort();
    files.extend(chapters);
    files
        .into_iter()
        .map(|f| {
            let text = std::fs::read_to_string(root.join(&f)).expect(&f);
            (f, text)
        })
        .collect()
}

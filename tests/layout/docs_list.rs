//! A crate's "Where things are" list (in its `lib.rs` docs) against its `src/` folder.

use std::path::Path;

/// What is wrong with `krate`'s list: each file of `src/` it does not name (a file in
/// a folder is named in that folder's entry, `- `folder/`...`), and a count that
/// differs when it names files that are not there.
pub fn unlisted(krate: &Path) -> Vec<String> {
    let name = krate
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let src = krate.join("src");
    let lib = std::fs::read_to_string(src.join("lib.rs")).unwrap_or_default();
    let docs: String = lib
        .lines()
        .take_while(|l| l.starts_with("//!") || l.is_empty())
        .filter(|l| l.starts_with("//!"))
        .collect::<Vec<_>>()
        .join("\n");
    let Some(start) = docs.find("# Where things are") else {
        return vec![format!(
            "{name}: src/lib.rs has no \"Where things are\" section"
        )];
    };
    let section = &docs[start..];
    let mut wrong = Vec::new();
    let files = files_under(&src);
    for (folder, file) in &files {
        let listed = match folder {
            None => section.contains(&format!("`{file}`")),
            Some(folder) => match section.find(&format!("- `{folder}/`")) {
                None => false,
                Some(at) => {
                    let entry = &section[at..];
                    let end = entry[2..].find("\n//! - ").map_or(entry.len(), |n| n + 2);
                    entry[..end].contains(&format!("`{file}`"))
                }
            },
        };
        if !listed {
            let path = folder
                .as_ref()
                .map_or(file.clone(), |f| format!("{f}/{file}"));
            wrong.push(format!("{name}: {path} is not listed"));
        }
    }
    let named: usize = [".rs`", ".css`", ".js`"]
        .iter()
        .map(|ext| section.matches(ext).count())
        .sum();
    if named != files.len() {
        wrong.push(format!(
            "{name}: the list names {named} files, src/ has {}",
            files.len()
        ));
    }
    wrong
}

/// (top folder, path inside it) of every file under `src`, folders of folders too.
fn files_under(src: &Path) -> Vec<(Option<String>, String)> {
    let mut files = Vec::new();
    let mut stack = vec![src.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            let Ok(rel) = path.strip_prefix(src) else {
                continue;
            };
            let rel = rel.to_string_lossy().into_owned();
            match rel.split_once('/') {
                Some((top, inner)) => files.push((Some(top.to_owned()), inner.to_owned())),
                None => files.push((None, rel)),
            }
        }
    }
    files
}

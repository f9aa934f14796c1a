//! The workspace's layering rules, checked on its sources (no VM boots here):
//!
//! - crates: a lower crate never depends on an upper one, in any dependency table
//!   (normal, dev, build); crates of one layer depend on each other only for tests;
//! - files: inside every crate target (library, binary, each test, bench and example),
//!   no two files import each other, directly or around a circle, and no two module
//!   folders (or a folder and a file beside it) do either;
//! - docs: a crate whose docs have a "Where things are" section (the driver and the
//!   floors it builds on) names every file of its `src/` there, and only those;
//! - CI: `.ci/run` runs the README's whole-suite command, with `--no-fail-fast` (one
//!   failing test binary must never hide the others).
//!
//! A file imports another when one of its paths (`use crate::a::b`, `super::X`,
//! `self::m::f()`, re-exports and paths inside macros included) resolves to a module
//! that the other file holds. Paths are followed through `use` re-exports to the module
//! that defines the item; a `mod x;` declaration alone is not an import, and intra-doc
//! links are not either.

mod docs_list;
mod modules;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use modules::Crate;

/// The workspace's crates by folder, with their layer (lower first).
const LAYERS: &[(&str, &str, u8)] = &[
    ("qmp", "flotilla-qmp", 0),
    ("vmnet", "flotilla-vmnet", 0),
    ("guest-agent", "flotilla-agent", 0),
    ("host", "flotilla-host", 0),
    ("coverage", "flotilla-coverage", 1),
    ("report", "flotilla-report", 1),
    ("image", "flotilla-image", 2),
    ("driver", "flotilla-driver", 3),
    ("cli", "flotilla", 4),
    ("tests", "flotilla-tests", 5),
];

/// The crates whose docs list their files ("Where things are").
const LISTED: &[&str] = &["host", "coverage", "report", "image", "driver"];

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the tests crate lives in the workspace")
        .to_path_buf()
}

#[test]
fn lower_crates_never_depend_on_upper_ones() {
    let layer: BTreeMap<&str, u8> = LAYERS.iter().map(|(_, p, l)| (*p, *l)).collect();
    let mut wrong = Vec::new();
    for (folder, package, level) in LAYERS {
        let path = workspace().join(folder).join("Cargo.toml");
        let text = std::fs::read_to_string(&path).expect("reading a crate manifest");
        let manifest: toml::Table = text.parse().expect("a crate manifest is TOML");
        for (table, for_tests) in [
            ("dependencies", false),
            ("build-dependencies", false),
            ("dev-dependencies", true),
        ] {
            let Some(deps) = manifest.get(table).and_then(|t| t.as_table()) else {
                continue;
            };
            for dep in deps.keys() {
                let Some(&dep_level) = layer.get(dep.as_str()) else {
                    continue;
                };
                if dep_level > *level || (dep_level == *level && !for_tests) {
                    wrong.push(format!("{package} [{table}] {dep}"));
                }
            }
        }
    }
    assert!(wrong.is_empty(), "upward dependencies: {wrong:#?}");
}

#[test]
fn the_readmes_crate_table_is_the_layers() {
    let readme = std::fs::read_to_string(workspace().join("README.md")).expect("README.md");
    let section = &readme[readme.find("## Workspace").expect("a Workspace section")..];
    let rows: Vec<(String, String)> = section
        .lines()
        .filter_map(|l| {
            let cells: Vec<&str> = l.split('|').map(str::trim).collect();
            let folder = cells.get(1)?.strip_prefix('`')?.strip_suffix('`')?;
            let package = cells.get(2)?.strip_prefix('`')?.strip_suffix('`')?;
            Some((folder.to_owned(), package.to_owned()))
        })
        .collect();
    let layers: Vec<(String, String)> = LAYERS
        .iter()
        .map(|(f, p, _)| (f.to_string(), p.to_string()))
        .collect();
    assert_eq!(rows, layers, "README's Workspace table, lowest floor first");
}

#[test]
fn every_listed_crate_names_each_of_its_files() {
    let mut wrong = Vec::new();
    for folder in LISTED {
        wrong.extend(docs_list::unlisted(&workspace().join(folder)));
    }
    assert!(
        wrong.is_empty(),
        "crate docs out of step with src/:\n  {}",
        wrong.join("\n  ")
    );
}

#[test]
fn no_two_files_import_each_other() {
    let mut cycles = Vec::new();
    let mut targets = 0;
    for (folder, _, _) in LAYERS {
        for root in modules::crate_roots(&workspace().join(folder)) {
            let krate = Crate::load(&root, &workspace()).unwrap_or_else(|e| panic!("{e}"));
            targets += 1;
            for cycle in krate.file_cycles() {
                cycles.push(cycle.join("\n    -> "));
            }
        }
    }
    assert!(targets >= 6, "found only {targets} crate targets");
    assert!(
        cycles.is_empty(),
        "files that import each other:\n  {}",
        cycles.join("\n  ")
    );
}

#[test]
fn no_two_folders_import_each_other() {
    let mut cycles = Vec::new();
    for (folder, _, _) in LAYERS {
        for root in modules::crate_roots(&workspace().join(folder)) {
            let krate = Crate::load(&root, &workspace()).unwrap_or_else(|e| panic!("{e}"));
            for cycle in krate.folder_cycles() {
                cycles.push(cycle.join("\n    -> "));
            }
        }
    }
    assert!(
        cycles.is_empty(),
        "module folders (and the files beside them) that import each other:\n  {}",
        cycles.join("\n  ")
    );
}

#[test]
fn the_checker_sees_cycles() {
    let dir = tempfile::tempdir().expect("a temporary folder");
    let write = |name: &str, text: &str| {
        let path = dir.path().join(name);
        std::fs::create_dir_all(path.parent().expect("a parent")).expect("a folder");
        std::fs::write(path, text).expect("writing a source file");
    };
    write(
        "lib.rs",
        "mod a;\nmod b;\nmod c;\nmod d;\nmod f;\nmod g;\npub use d::Thing;\n//! [`crate::c::X`]\n",
    );
    write("a.rs", "use crate::b::{self, f};\npub fn g() {}\n");
    write(
        "b.rs",
        "pub fn f() { let _ = format!(\"{}\", super::a::g()); }\n",
    );
    write("c.rs", "/// [`crate::a`]\npub struct X(crate::Thing);\n");
    write("d/mod.rs", "mod e;\npub use self::e::Thing;\n");
    write(
        "d/e.rs",
        "pub struct Thing;\n#[cfg(test)]\nmod tests { use super::*; }\n",
    );
    // A path inside an attribute is an import too.
    write(
        "f.rs",
        "#[derive(Debug)]\n#[error(\"{}\", crate::g::NAME)]\npub struct E;\n",
    );
    write(
        "g.rs",
        "pub const NAME: &str = \"g\";\npub fn e() -> crate::f::E { crate::f::E }\n",
    );
    let krate = Crate::load(&dir.path().join("lib.rs"), dir.path()).expect("loading");
    let cycles = krate.file_cycles();
    assert_eq!(cycles.len(), 2, "{cycles:?}");
    assert!(
        cycles
            .iter()
            .flatten()
            .any(|e| e.starts_with("f.rs -> g.rs (crate::g::NAME)")),
        "{cycles:?}"
    );
    let cycles: Vec<_> = cycles
        .into_iter()
        .filter(|c| c.iter().any(|e| e.starts_with("a.rs")))
        .collect();
    assert!(
        cycles[0].iter().any(|e| e.starts_with("a.rs -> b.rs")),
        "{cycles:?}"
    );
    assert!(
        cycles[0].iter().any(|e| e.starts_with("b.rs -> a.rs")),
        "{cycles:?}"
    );
    // c.rs names Thing through the crate root's re-export: the edge goes to d/e.rs.
    assert!(krate.imports("c.rs").iter().any(|f| f.ends_with("d/e.rs")));
    assert!(!krate.imports("c.rs").iter().any(|f| f.ends_with("a.rs")));
    // No folder imports a file that imports the folder back, so far.
    let folders = krate.folder_cycles();
    assert!(
        folders.iter().all(|c| c.iter().all(|e| !e.contains("d/"))),
        "{folders:?}"
    );

    // d/mod.rs uses c.rs, which uses d/e.rs: no two files import each other, but the
    // folder d/ and c.rs do.
    write(
        "d/mod.rs",
        "mod e;\npub use self::e::Thing;\npub use crate::c::X;\n",
    );
    let krate = Crate::load(&dir.path().join("lib.rs"), dir.path()).expect("loading");
    assert_eq!(krate.file_cycles().len(), 2, "{:?}", krate.file_cycles());
    let folders = krate.folder_cycles();
    assert!(
        folders
            .iter()
            .flatten()
            .any(|e| e.starts_with("d/ -> c.rs (d/mod.rs uses crate::c::X)")),
        "{folders:?}"
    );
}

#[test]
fn ci_runs_the_readmes_whole_suite_command_without_failing_fast() {
    let root = workspace();
    let read = |p: &str| std::fs::read_to_string(root.join(p)).expect(p);
    let command = "cargo test --workspace --no-fail-fast";
    let readme = read("README.md");
    assert!(
        readme.contains(&format!("./scripts/setup && {command}\n")),
        "the README's quick start runs `{command}`"
    );
    let ci = read(".ci/run");
    let ci_tests: Vec<&str> = ci
        .lines()
        .filter(|l| l.trim_start().starts_with("cargo test"))
        .collect();
    assert_eq!(ci_tests, [command], ".ci/run runs the README's command");
}

/// `scripts/setup` sets up every architecture of the table: its name in the lists of
/// guest architectures and Rust targets, and its QEMU package (a new row of
/// `flotilla_host::arch::ARCHES` that setup does not know fails here, not on a fresh
/// machine).
#[test]
fn setup_knows_every_architecture() {
    let setup = std::fs::read_to_string(workspace().join("scripts/setup")).unwrap();
    let list = |name: &str| -> Vec<String> {
        let line = setup
            .lines()
            .find(|l| l.starts_with(&format!("{name}=(")))
            .unwrap_or_else(|| panic!("scripts/setup has no {name}=(...)"));
        line[name.len() + 2..]
            .trim_end_matches(')')
            .split_whitespace()
            .map(str::to_owned)
            .collect()
    };
    let arches = list("guest_arches");
    let targets = list("rust_targets");
    let qemu = list("qemu_packages");
    for arch in &flotilla_driver::arch::ARCHES {
        assert!(arches.iter().any(|a| a == arch.debian), "{}", arch.debian);
        assert!(
            targets.iter().any(|t| t == arch.rust_target),
            "{}",
            arch.rust_target
        );
        assert!(
            qemu.iter().any(|q| q == arch.qemu_package),
            "{}",
            arch.qemu_package
        );
    }
    assert_eq!(arches.len(), flotilla_driver::arch::ARCHES.len());
}

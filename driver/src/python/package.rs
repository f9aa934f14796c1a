//! The `flotilla` Python package (`driver/python/flotilla/`), carried inside the binary
//! and written into each run that runs a Python script: no pip needed.

use std::path::{Path, PathBuf};

use crate::error::Error;

/// The package's files: name and text.
pub(crate) const FILES: &[(&str, &str)] = &[
    (
        "__init__.py",
        include_str!("../../python/flotilla/__init__.py"),
    ),
    (
        "conditions.py",
        include_str!("../../python/flotilla/conditions.py"),
    ),
    ("driver.py", include_str!("../../python/flotilla/driver.py")),
    (
        "machine.py",
        include_str!("../../python/flotilla/machine.py"),
    ),
    (
        "pytest_plugin.py",
        include_str!("../../python/flotilla/pytest_plugin.py"),
    ),
    ("run.py", include_str!("../../python/flotilla/run.py")),
    ("wire.py", include_str!("../../python/flotilla/wire.py")),
];

/// Writes the package into `<dir>/flotilla/`; returns `dir`, for `PYTHONPATH`.
pub(super) fn write(dir: &Path) -> Result<PathBuf, Error> {
    let package = dir.join("flotilla");
    let io = |what: String| move |source| Error::Io { what, source };
    std::fs::create_dir_all(&package).map_err(io(format!("making {}", package.display())))?;
    for (name, text) in FILES {
        let path = package.join(name);
        std::fs::write(&path, text).map_err(io(format!("writing {}", path.display())))?;
    }
    Ok(dir.to_path_buf())
}

#[cfg(test)]
mod tests {
    use super::FILES;

    fn file(name: &str) -> &'static str {
        FILES.iter().find(|(n, _)| *n == name).unwrap().1
    }

    /// The book's table of names.
    fn table() -> &'static str {
        let book = include_str!("../../../docs/src/python-scripts.md");
        let start = book.find("<!-- python-names:").expect("the table's marker");
        let end = book
            .find("<!-- python-names end -->")
            .expect("the table's end marker");
        &book[start..end]
    }

    /// The public methods of `machine.py`'s `Machine`, and the script's globals
    /// (`driver.py`'s `globals()`).
    fn names() -> (Vec<&'static str>, Vec<&'static str>) {
        let methods = file("machine.py")
            .lines()
            .filter_map(|l| l.strip_prefix("    def "))
            .filter_map(|l| l.split('(').next())
            .filter(|n| !n.starts_with('_'))
            .collect();
        let globals_fn = file("driver.py").split("def globals(self)").nth(1).unwrap();
        let dict = &globals_fn[..globals_fn.find('}').unwrap()];
        let globals = dict
            .lines()
            .filter_map(|l| l.trim().strip_prefix('"'))
            .filter_map(|l| l.split('"').next())
            .collect();
        (methods, globals)
    }

    #[test]
    fn the_books_table_names_every_name_of_the_package() {
        let table = table();
        let (methods, globals) = names();
        assert!(methods.len() > 50, "{methods:?}");
        for m in methods {
            assert!(
                table.contains(&format!("`m.{m}("))
                    || table.contains(&format!(", m.{m}("))
                    || table.contains(&format!("`m.{m}`")),
                "Machine.{m} is not in docs/src/python-scripts.md's table"
            );
        }
        for g in globals {
            assert!(
                table.contains(&format!("`{g}("))
                    || table.contains(&format!("`{g}`"))
                    || table.contains(&format!("`@{g}("))
                    || table.contains(&format!("`with {g}(")),
                "the global `{g}` is not in docs/src/python-scripts.md's table"
            );
        }
    }

    /// NixOS's driver's names (nixos/lib/test-driver): each has a row, as same,
    /// differs or absent.
    #[test]
    fn the_books_table_has_every_name_of_nixos_driver() {
        const NIXOS: &[&str] = &[
            "start",
            "shutdown",
            "crash",
            "reboot",
            "wait_for_shutdown",
            "succeed",
            "fail",
            "execute",
            "wait_until_succeeds",
            "wait_until_fails",
            "wait_for_unit",
            "require_unit_state",
            "get_unit_info",
            "get_unit_property",
            "systemctl",
            "start_job",
            "stop_job",
            "wait_for_file",
            "wait_for_open_port",
            "wait_for_open_unix_socket",
            "wait_for_closed_port",
            "wait_for_console_text",
            "send_console",
            "get_screen_text",
            "get_screen_text_variants",
            "wait_for_text",
            "screenshot",
            "send_key",
            "send_chars",
            "send_monitor_command",
            "wait_for_qmp_event",
            "copy_from_host",
            "copy_from_vm",
            "block",
            "unblock",
            "forward_port",
            "get_tty_text",
            "wait_until_tty_matches",
            "dump_tty_contents",
            "sleep",
            "wait_for_x",
            "wait_for_window",
            "start_all",
            "join_all",
            "subtest",
            "retry",
            "polling_condition",
            "serial_stdout_on",
            "serial_stdout_off",
            "machines",
            "vlans",
            "t",
        ];
        let table = table();
        for name in NIXOS {
            let rows: Vec<&str> = table
                .lines()
                .filter(|row| !row.contains(" | Flotilla's"))
                .filter(|row| {
                    let first = row.split(" | ").next().unwrap_or("");
                    [".", "`", "@", "with "].iter().any(|before| {
                        first.contains(&format!("{before}{name}("))
                            || first.contains(&format!("{before}{name}`"))
                    })
                })
                .collect();
            assert_eq!(rows.len(), 1, "NixOS's `{name}` needs one row: {rows:?}");
            let verdict = rows[0].split(" | ").nth(1).unwrap_or("");
            assert!(
                ["same", "differs", "absent"]
                    .iter()
                    .any(|v| verdict.starts_with(v)),
                "`{name}`: {verdict}"
            );
        }
    }

    /// Every file of the package's folder is carried, and nothing else.
    #[test]
    fn every_file_of_the_package_is_carried() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("python/flotilla");
        let mut on_disk: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".py"))
            .collect();
        on_disk.sort();
        let carried: Vec<String> = FILES.iter().map(|(n, _)| n.to_string()).collect();
        assert_eq!(carried, on_disk);
    }
}

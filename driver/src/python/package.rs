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
        let carried: Vec<String> = super::FILES.iter().map(|(n, _)| n.to_string()).collect();
        assert_eq!(carried, on_disk);
    }
}

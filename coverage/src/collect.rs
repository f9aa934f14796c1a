//! Reading a machine's coverage disk on the host, after QEMU has stopped: `debugfs`
//! (e2fsprogs) copies its files out without mounting it, so no root and no loop
//! device are needed.

use std::path::Path;
use std::process::Command;

/// Copies every file of the ext2 file system in `disk` into `dest` (made if needed);
/// returns how many regular files came out. Symbolic links the guest made are
/// removed: the data is the guest's, and nothing on the host follows it.
pub fn extract(disk: &Path, dest: &Path) -> Result<usize, String> {
    let debugfs = flotilla_host::programs::which_system_tool("debugfs")
        .ok_or("debugfs not found: install e2fsprogs")?;
    std::fs::create_dir_all(dest).map_err(|e| format!("creating {}: {e}", dest.display()))?;
    let dest_abs = std::path::absolute(dest).unwrap_or(dest.to_path_buf());
    // debugfs's request language splits on spaces; a path with one is quoted.
    let request = format!("rdump / \"{}\"", dest_abs.display());
    let out = Command::new(&debugfs)
        .arg("-R")
        .arg(&request)
        .arg(disk)
        .output()
        .map_err(|e| format!("running {}: {e}", debugfs.display()))?;
    // debugfs exits 0 whatever happened; its complaints come after its banner.
    let complaints: Vec<_> = String::from_utf8_lossy(&out.stderr)
        .lines()
        .filter(|l| !l.starts_with("debugfs ") && !l.trim().is_empty())
        .map(str::to_owned)
        .collect();
    if !out.status.success() || !complaints.is_empty() {
        return Err(format!(
            "debugfs could not read {}: {}",
            disk.display(),
            complaints.join("; ")
        ));
    }
    let _ = std::fs::remove_dir(dest.join("lost+found"));
    Ok(clean(dest))
}

/// Removes symbolic links under `dir`; counts the regular files.
fn clean(dir: &Path) -> usize {
    let mut files = 0;
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        match std::fs::symlink_metadata(&path) {
            Ok(m) if m.file_type().is_symlink() => {
                let _ = std::fs::remove_file(&path);
            }
            Ok(m) if m.is_dir() => files += clean(&path),
            Ok(m) if m.is_file() => files += 1,
            _ => {}
        }
    }
    files
}

#[cfg(test)]
mod tests {
    /// A file system made the way machines get theirs, with a file and a link in it.
    #[test]
    fn extracts_files_and_drops_links() {
        let dir = tempfile::tempdir().unwrap();
        let tree = dir.path().join("tree");
        std::fs::create_dir_all(tree.join("gcov/work/a")).unwrap();
        std::fs::write(tree.join("gcov/work/a/x.gcda"), b"data").unwrap();
        std::os::unix::fs::symlink("/etc/passwd", tree.join("gcov/evil")).unwrap();
        let disk = dir.path().join("disk.ext2");
        let mke2fs =
            flotilla_host::programs::which_system_tool("mke2fs").expect("mke2fs (e2fsprogs)");
        let ok = std::process::Command::new(mke2fs)
            .args(["-q", "-F", "-t", "ext2", "-d"])
            .arg(&tree)
            .arg(&disk)
            .arg("8M")
            .status()
            .unwrap();
        assert!(ok.success());
        let out = dir.path().join("out dir");
        assert_eq!(super::extract(&disk, &out), Ok(1));
        assert_eq!(
            std::fs::read(out.join("gcov/work/a/x.gcda")).unwrap(),
            b"data"
        );
        assert!(std::fs::symlink_metadata(out.join("gcov/evil")).is_err());
        let missing = super::extract(&dir.path().join("nothing"), &out).unwrap_err();
        assert!(missing.contains("debugfs could not read"), "{missing}");
    }
}

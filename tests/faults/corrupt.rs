//! Snapshot faults: one file of a saved state (its device state `.qemu`, its RAM `.ram`,
//! or a saved disk) truncated, or one of its bits flipped, before a run restores it.

use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;

/// Corrupts a seeded file of a state in `snapshots`; what was done.
pub fn corrupt(snapshots: &Path, truncate: bool, seed: u64) -> Result<String, String> {
    let mut files: Vec<_> = std::fs::read_dir(snapshots)
        .map_err(|e| format!("reading {}: {e}", snapshots.display()))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            !name.starts_with('.')
                && (name.ends_with(".qemu") || name.ends_with(".ram") || name.ends_with(".qcow2"))
        })
        .collect();
    files.sort();
    if files.is_empty() {
        return Err("no saved state to corrupt".into());
    }
    let path = &files[(seed % files.len() as u64) as usize];
    let len = std::fs::metadata(path).map_err(|e| e.to_string())?.len();
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(|e| format!("opening {}: {e}", path.display()))?;
    let point = (seed >> 8) % len.max(1);
    if truncate {
        f.set_len(point).map_err(|e| e.to_string())?;
        return Ok(format!(
            "truncated {} from {len} to {point} bytes",
            path.display()
        ));
    }
    let bit = (seed >> 3) % 8;
    let mut byte = [0u8];
    f.seek(SeekFrom::Start(point)).map_err(|e| e.to_string())?;
    f.read_exact(&mut byte).map_err(|e| e.to_string())?;
    byte[0] ^= 1 << bit;
    f.seek(SeekFrom::Start(point)).map_err(|e| e.to_string())?;
    f.write_all(&byte).map_err(|e| e.to_string())?;
    Ok(format!(
        "flipped bit {bit} of byte {point} of {} ({len} bytes)",
        path.display()
    ))
}

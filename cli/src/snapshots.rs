//! `flotilla snapshots [--clear]`: the saved machine states.

use std::process::ExitCode;

use crate::EXIT_FAILED;

/// `flotilla snapshots [--clear]`.
pub(crate) fn main(clear: bool) -> ExitCode {
    use flotilla_driver::snapshot_store;
    let mib = |bytes: u64| bytes as f64 / f64::from(1 << 20);
    if clear {
        return match snapshot_store::clear() {
            Ok((count, bytes)) => {
                println!("removed {count} saved state(s), {:.0} MiB", mib(bytes));
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: clearing the saved states: {e}");
                ExitCode::from(EXIT_FAILED)
            }
        };
    }
    let saved = snapshot_store::list();
    if saved.is_empty() {
        println!("no saved states");
        return ExitCode::SUCCESS;
    }
    let now = std::time::SystemTime::now();
    for s in &saved {
        let age = now.duration_since(s.used).unwrap_or_default().as_secs();
        println!(
            "{:5.0} MiB on disk, {:4.0} apparent  used {:>6} ago  saved by `{}` with QEMU {}  {}",
            mib(s.bytes),
            mib(s.apparent_bytes),
            human_age(age),
            s.machine.as_deref().unwrap_or("?"),
            s.qemu.as_deref().unwrap_or("?"),
            s.file.display()
        );
    }
    let total: u64 = saved.iter().map(|s| s.bytes).sum();
    println!(
        "{} saved state(s), {:.0} MiB on disk",
        saved.len(),
        mib(total)
    );
    ExitCode::SUCCESS
}

/// `90` -> `1m`, `7200` -> `2h`.
fn human_age(secs: u64) -> String {
    match secs {
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m", s / 60),
        s if s < 86400 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86400),
    }
}

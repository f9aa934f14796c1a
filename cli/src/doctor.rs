//! `flotilla doctor`: what the host has and lacks.

use std::process::ExitCode;

use crate::EXIT_FAILED;

/// Prints each check of the host, by group; exit status 1 if something required is
/// missing.
pub(crate) fn main() -> ExitCode {
    let mut missing = 0;
    let mut group = None;
    for check in flotilla_driver::doctor::checks() {
        if group != Some(check.group) {
            println!("{}:", check.group);
            group = Some(check.group);
        }
        let mark = if check.ok { "ok  " } else { "MISSING" };
        println!("{mark:8}{:12}{}", check.name, check.detail);
        if let Some(hint) = check.hint {
            println!("{:20}hint: {hint}", "");
        }
        missing += usize::from(!check.ok);
    }
    if missing > 0 {
        println!("{missing} requirement(s) missing");
        ExitCode::from(EXIT_FAILED)
    } else {
        println!("all requirements are met");
        ExitCode::SUCCESS
    }
}

//! `flotilla-agent install --root DIR`.

use std::process::ExitCode;

pub fn main(_args: &[&str]) -> ExitCode {
    eprintln!("flotilla-agent: install is not implemented yet");
    ExitCode::FAILURE
}

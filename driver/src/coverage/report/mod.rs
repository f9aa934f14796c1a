//! The coverage report (placeholder until the report lands).

use std::path::{Path, PathBuf};

/// What one machine left for the report.
#[derive(Debug, Clone)]
pub struct MachineData {
    pub name: String,
    pub data: PathBuf,
    pub note: Option<String>,
}

/// How the report is made.
#[derive(Debug, Clone, Default)]
pub struct Options {
    pub llvm_binaries: Vec<PathBuf>,
    pub fail_under: Option<f64>,
}

/// The report.
#[derive(Debug, Clone, Default)]
pub struct Report {
    pub out: PathBuf,
    pub html: Option<PathBuf>,
    pub combined: Option<PathBuf>,
    pub messages: Vec<String>,
    pub contributed: Vec<String>,
    pub not_contributed: Vec<(String, String)>,
}

impl Report {
    pub fn table(&self) -> String {
        String::new()
    }
    pub fn line_percent(&self) -> Option<f64> {
        None
    }
}

pub fn build(out: &Path, _machines: &[MachineData], _options: &Options) -> Report {
    Report {
        out: out.to_path_buf(),
        ..Report::default()
    }
}

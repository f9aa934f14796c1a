//! [`Error`], what can go wrong while an image or kernel is found or made.

use std::fmt::Write as _;

/// Everything that can go wrong while finding a kernel or making an image. The driver
/// carries it whole (its message and causes unchanged) and places an
/// [`Error::UnknownPackage`] at the spec line that names the package.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The host lacks something; `hint` says how to get it.
    #[error("{what}\nhint: {hint}")]
    Setup { what: String, hint: String },
    #[error("building the image: {0}")]
    Image(String),
    /// A Debian package that the mirror does not have.
    #[error("building the image: Debian {suite} has no package `{package}` (mirror {mirror})")]
    UnknownPackage {
        package: String,
        /// The Debian release the image is built from.
        suite: String,
        mirror: String,
    },
    /// A host tool (debootstrap, mke2fs, ...) failed; quotes the end of its output.
    #[error("building the image: {what} {status}{}", quote_output(output))]
    Tool {
        what: String,
        status: String,
        output: Vec<String>,
    },
    #[error("{what}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
}

/// A tool's last lines of output, quoted under its error.
fn quote_output(output: &[String]) -> String {
    if output.is_empty() {
        return " (and printed nothing)".into();
    }
    let mut out = String::from("; its output ends with:");
    for line in output {
        let _ = write!(out, "\n  | {line}");
    }
    out
}

//! The text of guest command lines and of their output: quoting for `/bin/sh`, the
//! listening-port test, the tail of a command's output that an error quotes.

use std::fmt::Write as _;

/// A shell test that succeeds while something listens on TCP `port`, from
/// /proc/net/tcp{,6} (state 0A is LISTEN); needs only awk.
pub(super) fn listening(port: u16) -> String {
    format!(
        "awk 'FNR > 1 && $4 == \"0A\" {{ print $2 }}' /proc/net/tcp /proc/net/tcp6 2>/dev/null | grep -qi ':{port:04X}$'"
    )
}

/// Single-quotes a string for `/bin/sh`.
pub(super) fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// The last ten lines of each of stdout and stderr, labelled, for an error.
pub(super) fn tail_text(stdout: &str, stderr: &str) -> String {
    let mut out = String::new();
    for (label, text) in [("stdout", stdout), ("stderr", stderr)] {
        let lines: Vec<&str> = text.lines().collect();
        if lines.is_empty() {
            continue;
        }
        let skip = lines.len().saturating_sub(10);
        let _ = writeln!(out, "{label}:");
        for l in &lines[skip..] {
            let _ = writeln!(out, "  {l}");
        }
    }
    out
}

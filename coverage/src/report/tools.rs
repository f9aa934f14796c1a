//! Running the host's coverage tools (gcov, llvm-profdata, llvm-cov, genhtml): found in
//! `PATH`, bounded by a timeout (they read data a guest wrote), and when one fails,
//! an error that quotes the tail of its stderr.

use std::io::Read as _;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// No tool run of the report takes longer than this.
pub const TIMEOUT: Duration = Duration::from_secs(120);

/// How many lines of a failed tool's stderr an error quotes.
const TAIL_LINES: usize = 4;

/// What a tool printed, when it exited with status 0.
#[derive(Debug)]
pub struct Output {
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

/// `program` in `PATH`.
pub fn find(program: &str) -> Option<PathBuf> {
    flotilla_host::programs::which(program)
}

/// Runs `command` (stdin closed) and waits at most [`TIMEOUT`]. An error is a sentence
/// naming the program: it did not start, was killed, or failed (with its stderr's
/// last lines).
pub fn run(command: &mut Command) -> Result<Output, String> {
    let program = std::path::Path::new(command.get_program())
        .file_name()
        .unwrap_or(command.get_program())
        .to_string_lossy()
        .into_owned();
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("{program} did not start: {e}"))?;
    let reader = |pipe: Option<Box<dyn std::io::Read + Send>>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            if let Some(mut p) = pipe {
                let _ = p.read_to_end(&mut buf);
            }
            buf
        })
    };
    let stdout = reader(child.stdout.take().map(|p| Box::new(p) as _));
    let stderr = reader(child.stderr.take().map(|p| Box::new(p) as _));
    let deadline = Instant::now() + TIMEOUT;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Ok(status),
            Ok(None) if Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                break Err(format!(
                    "{program} did not finish in {} s: killed",
                    TIMEOUT.as_secs()
                ));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(5)),
            Err(e) => break Err(format!("{program}: cannot wait for it: {e}")),
        }
    };
    let stdout = stdout.join().unwrap_or_default();
    let stderr = stderr.join().unwrap_or_default();
    let status = status?;
    if status.success() {
        return Ok(Output { stdout, stderr });
    }
    let how = flotilla_host::process::describe_status(status);
    match tail(&stderr) {
        Some(t) => Err(format!("{program} failed ({how}): {t}")),
        None => Err(format!(
            "{program} failed ({how}) and printed nothing on stderr"
        )),
    }
}

/// The last non-empty lines of a tool's output, joined with " / ", or `None`.
pub fn tail(text: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(text);
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    let start = lines.len().saturating_sub(TAIL_LINES);
    (!lines.is_empty()).then(|| lines[start..].join(" / "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failure_quotes_stderr_and_the_status() {
        let err =
            run(Command::new("sh").args(["-c", "echo one >&2; echo two >&2; exit 3"])).unwrap_err();
        assert!(err.starts_with("sh failed ("), "{err}");
        assert!(err.ends_with("): one / two"), "{err}");
        let err = run(&mut Command::new("/nonexistent/tool")).unwrap_err();
        assert!(err.starts_with("tool did not start: "), "{err}");
        let ok = run(Command::new("sh").args(["-c", "echo out"])).unwrap();
        assert_eq!(ok.stdout, b"out\n");
    }
}

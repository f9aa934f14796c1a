//! The serial console and QEMU's stderr: the readers that log every line, and the
//! last lines kept in memory ([`Console`]) for waits and error reports.

use std::collections::VecDeque;
use std::path::Path;
use std::sync::{Arc, Mutex};

use flotilla_agent::proto;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWriteExt, BufReader};
use tokio::sync::watch;

use crate::error::Error;
use crate::log::Log;
use flotilla_report::RESTORED_MARK;

/// How many console lines an error quotes.
pub(super) const TAIL_LINES: usize = 20;
/// How many console lines are kept in memory.
pub(super) const KEEP_LINES: usize = 500;
/// Text that means the guest kernel panicked.
pub(super) const PANIC_MARKER: &str = "Kernel panic - not syncing";

/// What the console said about the guest's life.
#[derive(Debug, Default)]
pub(super) struct ConsoleState {
    /// The readiness line's boot time, once seen.
    pub(super) ready: Option<u64>,
    /// The first panic line, once seen.
    pub(super) panic: Option<String>,
    /// QEMU closed its stdout (it exited).
    pub(super) eof: bool,
}

/// The last [`KEEP_LINES`] lines of a stream, and how many have arrived.
#[derive(Debug)]
pub(super) struct Console {
    lines: Mutex<VecDeque<String>>,
    /// How many lines have arrived; wakes `wait_for_console_text`.
    pub(super) count: watch::Sender<u64>,
    /// The stream has ended: every line its writer wrote is here.
    pub(super) ended: watch::Sender<bool>,
}

impl Default for Console {
    fn default() -> Self {
        Console {
            lines: Mutex::default(),
            count: watch::Sender::new(0),
            ended: watch::Sender::new(false),
        }
    }
}

impl Console {
    pub(super) fn push(&self, line: String) {
        if let Ok(mut lines) = self.lines.lock() {
            if lines.len() == KEEP_LINES {
                lines.pop_front();
            }
            lines.push_back(line);
        }
        self.count.send_modify(|c| *c += 1);
    }

    /// The first kept line (of the last few hundred) that matches.
    pub(super) fn find(&self, re: &regex::Regex) -> Option<String> {
        let lines = self.lines.lock().ok()?;
        lines.iter().find(|l| re.is_match(l)).cloned()
    }

    pub(super) fn tail(&self, n: usize) -> Vec<String> {
        self.lines
            .lock()
            .map(|l| l.iter().skip(l.len().saturating_sub(n)).cloned().collect())
            .unwrap_or_default()
    }
}

/// Starts the console reader: QEMU's stdout is the serial console. Every line goes to
/// `console.log` in `log_dir`, to the run's log and to `console`; the agent's readiness
/// line, a panic, and the end of the console go to `state`.
pub(super) async fn spawn_console_reader(
    stdout: impl AsyncRead + Unpin + Send + 'static,
    log_dir: &Path,
    log: Log,
    name: String,
    console: Arc<Console>,
    state_tx: watch::Sender<ConsoleState>,
    preface: &[String],
) -> Result<(), Error> {
    let console_log = log_dir.join("console.log");
    let failed = |source| Error::Io {
        what: format!("writing {}", console_log.display()),
        source,
    };
    let mut console_file = tokio::fs::File::create(&console_log)
        .await
        .map_err(failed)?;
    if !preface.is_empty() {
        let mut text = String::new();
        for line in preface {
            text.push_str(line);
            text.push('\n');
            console.push(line.clone());
        }
        text.push_str(RESTORED_MARK);
        text.push('\n');
        console_file
            .write_all(text.as_bytes())
            .await
            .map_err(failed)?;
    }
    tokio::spawn(async move {
        let mut reader = BufReader::new(stdout);
        let mut buf = Vec::new();
        loop {
            buf.clear();
            match reader.read_until(b'\n', &mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
            let _ = console_file.write_all(&buf).await;
            let text = String::from_utf8_lossy(&buf);
            let line = text.trim_end_matches(['\n', '\r']).replace('\r', "");
            log.console(&name, &line);
            if let Some(rest) = after_terminal_controls(&line).strip_prefix(proto::READY_PREFIX) {
                let boot_ms = rest
                    .split_whitespace()
                    .find_map(|kv| kv.strip_prefix("boot_ms="))
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0);
                state_tx.send_modify(|s| s.ready = Some(boot_ms));
            } else if line.contains(PANIC_MARKER) {
                let l = line.clone();
                state_tx.send_modify(|s| {
                    s.panic.get_or_insert(l);
                });
            }
            console.push(line);
        }
        let _ = console_file.flush().await;
        state_tx.send_modify(|s| s.eof = true);
    });
    Ok(())
}

/// Starts the reader of QEMU's own messages: every line goes to `qemu.log` in
/// `log_dir`, to the run's log and to `tail`.
pub(super) fn spawn_stderr_reader(
    stderr: impl AsyncRead + Unpin + Send + 'static,
    log_dir: &Path,
    log: Log,
    name: String,
    tail: Arc<Console>,
) {
    let path = log_dir.join("qemu.log");
    tokio::spawn(async move {
        let mut file = tokio::fs::File::create(&path).await.ok();
        let mut lines = BufReader::new(stderr).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            if let Some(f) = file.as_mut() {
                let _ = f.write_all(format!("{line}\n").as_bytes()).await;
            }
            log.machine(&name, &format!("qemu: {line}"));
            tail.push(line);
        }
        tail.ended.send_replace(true);
    });
}

/// Cuts command output into log lines in linear time; a line longer than
/// [`LineLog::MAX`] bytes is logged cut, with the number of bytes left out.
#[derive(Default)]
pub(super) struct LineLog {
    buf: Vec<u8>,
    dropped: usize,
}

impl LineLog {
    const MAX: usize = 2000;

    pub(super) fn push(&mut self, mut chunk: &[u8], mut emit: impl FnMut(&str)) {
        while let Some(nl) = chunk.iter().position(|b| *b == b'\n') {
            self.take(&chunk[..nl]);
            self.flush(&mut emit);
            chunk = &chunk[nl + 1..];
        }
        self.take(chunk);
    }

    fn take(&mut self, bytes: &[u8]) {
        let room = Self::MAX.saturating_sub(self.buf.len());
        let n = room.min(bytes.len());
        self.buf.extend_from_slice(&bytes[..n]);
        self.dropped += bytes.len() - n;
    }

    fn flush(&mut self, emit: &mut impl FnMut(&str)) {
        let text = String::from_utf8_lossy(&self.buf);
        if self.dropped > 0 {
            emit(&format!("{text}... ({} more bytes)", self.dropped));
        } else {
            emit(&text);
        }
        self.buf.clear();
        self.dropped = 0;
    }

    pub(super) fn finish(&mut self, mut emit: impl FnMut(&str)) {
        if !self.buf.is_empty() || self.dropped > 0 {
            self.flush(&mut emit);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::LineLog;

    #[test]
    fn line_log_splits_and_cuts() {
        let mut out = Vec::new();
        let mut l = LineLog::default();
        l.push(b"one\ntw", |s| out.push(s.to_owned()));
        l.push(b"o\nthree", |s| out.push(s.to_owned()));
        l.finish(|s| out.push(s.to_owned()));
        assert_eq!(out, ["one", "two", "three"]);
        let mut out = Vec::new();
        let mut l = LineLog::default();
        l.push(&vec![b'x'; LineLog::MAX + 5], |s| out.push(s.to_owned()));
        l.push(b"yy\n", |s| out.push(s.to_owned()));
        assert_eq!(out.len(), 1);
        assert!(
            out[0].ends_with("... (7 more bytes)"),
            "{}",
            &out[0][LineLog::MAX - 5..]
        );
    }
}

/// `line` after the terminal control sequences it starts with: systemd 257 (Debian
/// trixie) resets the console at boot with `ESC [ ! p`, `ESC ] 104 BEL`, `ESC [ ? 7 h`
/// and no newline, so the agent's readiness line follows them on the same line.
fn after_terminal_controls(line: &str) -> &str {
    let mut rest = line;
    while let Some(seq) = rest.strip_prefix('\x1b') {
        let end = if let Some(csi) = seq.strip_prefix('[') {
            // Parameters and intermediates, then one final byte (0x40-0x7e).
            csi.find(|c: char| ('@'..='~').contains(&c))
                .map(|i| 1 + i + 1)
        } else if let Some(osc) = seq.strip_prefix(']') {
            // Ended by BEL or by ESC \.
            osc.find('\x07')
                .map(|i| 1 + i + 1)
                .or_else(|| osc.find("\x1b\\").map(|i| 1 + i + 2))
        } else {
            seq.chars().next().map(char::len_utf8)
        };
        match end {
            Some(end) => rest = &seq[end..],
            None => return rest,
        }
    }
    rest
}

#[cfg(test)]
mod terminal_controls {
    use super::after_terminal_controls;

    #[test]
    fn leading_controls_are_skipped() {
        assert_eq!(
            after_terminal_controls("\x1b[!p\x1b]104\x07\x1b[?7hFLOTILLA-AGENT-READY proto=1"),
            "FLOTILLA-AGENT-READY proto=1"
        );
        assert_eq!(after_terminal_controls("\x1b]0;title\x1b\\x"), "x");
        assert_eq!(after_terminal_controls("plain \x1b[0m"), "plain \x1b[0m");
        assert_eq!(after_terminal_controls("\x1b[12"), "\x1b[12");
        assert_eq!(after_terminal_controls(""), "");
    }
}

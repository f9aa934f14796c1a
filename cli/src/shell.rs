//! `flotilla shell`: a shell (or a command) in a machine of a live `flotilla run`,
//! through the run's control socket.

use std::io::{IsTerminal, Read, Write};
use std::process::ExitCode;
use std::time::Duration;

use flotilla_driver::control::{self, ExitStatus, Session, SessionRequest, WindowSize};
use flotilla_driver::{Error, ExecEvent};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::terminal;

/// Exit status when `flotilla shell` itself fails (no run, unknown machine, lost
/// connection), as ssh does: every other status is the remote command's.
pub const EXIT_SHELL_ERROR: u8 = 255;

/// What `flotilla shell` was asked for.
#[derive(Debug)]
pub struct Options {
    pub machine: String,
    pub run: Option<String>,
    /// Force (`Some(true)`) or refuse (`Some(false)`) a terminal; by default there is
    /// one when stdin is a terminal.
    pub tty: Option<bool>,
    /// A command instead of a login shell.
    pub command: Vec<String>,
}

pub async fn main(options: Options, cancel: CancellationToken) -> ExitCode {
    match run(options, cancel).await {
        Ok(code) => code,
        Err(e) => {
            crate::print_chain(&e);
            ExitCode::from(EXIT_SHELL_ERROR)
        }
    }
}

async fn run(options: Options, cancel: CancellationToken) -> Result<ExitCode, Error> {
    let socket = control::find_run(options.run.as_deref())?;
    let local_tty = std::io::stdin().is_terminal();
    let pty = options.tty.unwrap_or(local_tty).then(|| {
        flotilla_driver::terminal::window_size(0).unwrap_or(WindowSize { rows: 24, cols: 80 })
    });
    let command = (!options.command.is_empty()).then(|| options.command.join(" "));
    let request = SessionRequest::shell(&options.machine, command.as_deref(), pty);
    let mut session = Session::open(&socket, &request).await?;
    // Raw mode only when we have a terminal and the guest gives one; restored on drop,
    // before any error is printed.
    let raw = match (pty, local_tty) {
        (Some(_), true) => Some(terminal::Saved::raw(0).map_err(|source| Error::Io {
            what: "putting the terminal in raw mode".into(),
            source,
        })?),
        _ => None,
    };
    let result = relay(&mut session, pty.is_some(), raw.is_some(), cancel).await;
    drop(raw);
    let status = result?;
    Ok(match (status.code, status.signal) {
        (Some(code), _) => ExitCode::from(code as u8),
        (None, Some(signal)) => ExitCode::from(128u8.wrapping_add(signal as u8)),
        _ => ExitCode::from(EXIT_SHELL_ERROR),
    })
}

/// Relays stdin to the session and its output to stdout/stderr until it exits.
async fn relay(
    session: &mut Session,
    pty: bool,
    resizable: bool,
    cancel: CancellationToken,
) -> Result<ExitStatus, Error> {
    let mut input = stdin_reader();
    let mut input_open = true;
    let mut winch = resizable
        .then(|| tokio::signal::unix::signal(tokio::signal::unix::SignalKind::window_change()))
        .transpose()
        .map_err(|source| Error::Io {
            what: "watching the terminal's size".into(),
            source,
        })?;
    // After piped input ends on a terminal: ^D again every second until the command
    // exits. A ^D that arrives while the guest's terminal is still in canonical mode
    // (say, before busybox ash's line editor takes it raw at the next prompt) is lost.
    let mut eof_again = tokio::time::interval(Duration::from_secs(1));
    eof_again.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut stdout = std::io::stdout();
    let mut stderr = std::io::stderr();
    let write_err = |source| Error::Io {
        what: "writing the output".into(),
        source,
    };
    loop {
        tokio::select! {
            event = session.next() => match event? {
                ExecEvent::Stdout(bytes) => {
                    stdout.write_all(&bytes).and_then(|()| stdout.flush()).map_err(write_err)?;
                }
                ExecEvent::Stderr(bytes) => {
                    stderr.write_all(&bytes).and_then(|()| stderr.flush()).map_err(write_err)?;
                }
                ExecEvent::Exit(status) => return Ok(status),
            },
            chunk = input.recv(), if input_open => match chunk {
                Some(bytes) => session.write_stdin(&bytes).await?,
                None => {
                    input_open = false;
                    if pty {
                        // A terminal has no end of input but its EOF character.
                        session.write_stdin(b"\x04").await?;
                        eof_again.reset();
                    } else {
                        session.close_stdin().await?;
                    }
                }
            },
            _ = async { winch.as_mut()?.recv().await }, if winch.is_some() => {
                if let Some(size) = flotilla_driver::terminal::window_size(0) {
                    session.resize(size).await?;
                }
            }
            _ = eof_again.tick(), if pty && !input_open => session.write_stdin(b"\x04").await?,
            _ = cancel.cancelled() => return Err(Error::Interrupted),
        }
    }
}

/// Chunks of stdin, read on a thread of their own (a blocking read cannot be
/// cancelled; the thread ends with the process). The channel closes at end of input.
fn stdin_reader() -> mpsc::Receiver<Vec<u8>> {
    let (tx, rx) = mpsc::channel(16);
    let spawned = std::thread::Builder::new()
        .name("stdin".into())
        .spawn(move || {
            let mut buf = vec![0u8; 16 * 1024];
            let mut stdin = std::io::stdin();
            loop {
                match stdin.read(&mut buf) {
                    Ok(0) => return,
                    Ok(n) => {
                        if tx.blocking_send(buf[..n].to_vec()).is_err() {
                            return;
                        }
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(e) => {
                        eprintln!("flotilla: reading stdin: {e}");
                        return;
                    }
                }
            }
        });
    if let Err(e) = spawned {
        // The channel closes at once: the command sees the end of its input.
        eprintln!("flotilla: cannot start the stdin thread: {e}");
    }
    rx
}

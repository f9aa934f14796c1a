//! The prompt of `flotilla run`: script statements with the test scripts' API, read with
//! line editing and history from a terminal, or plainly from any other stdin. A
//! statement may span lines: while a block, string or parenthesis is open, reading goes
//! on (at a terminal, Enter starts a new line of the same entry).
//!
//! While the terminal prompt waits, the run's log is printed above it rather than into
//! the line being typed ([`Log::divert`] to rustyline's external printer).

use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};

use flotilla_driver::repl::{Completeness, Repl};
use flotilla_driver::{Diverted, Log};
use rustyline::completion::Completer;
use rustyline::error::ReadlineError;
use rustyline::highlight::Highlighter;
use rustyline::hint::Hinter;
use rustyline::history::DefaultHistory;
use rustyline::validate::{ValidationContext, ValidationResult, Validator};
use rustyline::{Editor, ExternalPrinter, Helper};
use tokio_util::sync::CancellationToken;

/// Where Ctrl-C goes: the statement being evaluated at a terminal prompt, if there is
/// one; otherwise the whole run.
#[derive(Debug, Clone, Default)]
pub struct Interrupts {
    pub all: CancellationToken,
    line: Arc<Mutex<Option<CancellationToken>>>,
    /// A signal from now on ends the run as planned (a debug session).
    stop_expected: Arc<AtomicBool>,
}

impl Interrupts {
    /// Handles a SIGINT; true if it only cancelled the current statement.
    pub fn interrupt_line(&self) -> bool {
        match self.line.lock().ok().and_then(|l| l.clone()) {
            Some(line) => {
                line.cancel();
                true
            }
            None => false,
        }
    }

    /// From now on a signal ends the run as planned: the exit status stays the
    /// command's, not 130.
    pub fn expect_stop(&self) {
        self.stop_expected.store(true, Ordering::SeqCst);
    }

    /// Whether a signal now ends the run as planned ([`Interrupts::expect_stop`]).
    pub fn stop_expected(&self) -> bool {
        self.stop_expected.load(Ordering::SeqCst)
    }

    fn set_line(&self, line: Option<CancellationToken>) {
        if let Ok(mut slot) = self.line.lock() {
            *slot = line;
        }
    }
}

/// Whether the prompt reads a terminal (line editing, history, Ctrl-C cancels a
/// statement).
pub fn interactive() -> bool {
    std::io::stdin().is_terminal()
}

/// A statement's value as text (`None` for `()`), or its error.
type Outcome = Result<Option<String>, String>;

/// Reads and evaluates statements until end of input or until `interrupts.all` is
/// cancelled; `log` is the run's, printed above the terminal prompt while it waits.
/// Blocking: run it on a thread of its own.
pub fn run(mut repl: Repl, log: &Log, interrupts: &Interrupts) {
    if interactive() {
        read_terminal(&mut repl, log, interrupts);
    } else {
        read_stdin(&mut repl, interrupts);
    }
}

/// Evaluates `statement`; `None` if it is blank or the run is stopping. At a terminal,
/// Ctrl-C cancels it.
fn evaluate(
    repl: &mut Repl,
    statement: &str,
    interrupts: &Interrupts,
    interactive: bool,
) -> Option<Outcome> {
    let statement = statement.trim();
    if statement.is_empty() || interrupts.all.is_cancelled() {
        return None;
    }
    let token = interrupts.all.child_token();
    if interactive {
        interrupts.set_line(Some(token.clone()));
    }
    let result = repl.eval(statement, token);
    interrupts.set_line(None);
    Some(result)
}

fn show(outcome: Option<Outcome>) {
    match outcome {
        Some(Ok(Some(text))) if text.ends_with('\n') => print!("{text}"),
        Some(Ok(Some(text))) => println!("{text}"),
        Some(Err(message)) => eprintln!("error: {message}"),
        Some(Ok(None)) | None => {}
    }
}

/// Piped stdin: lines are gathered until they make a whole statement, which is then
/// evaluated; an unfinished one at the end of input is an error.
fn read_stdin(repl: &mut Repl, interrupts: &Interrupts) {
    let mut statement = String::new();
    // Where `statement` starts, counting from 1.
    let mut first = 0;
    for (number, line) in std::io::stdin().lock().lines().enumerate() {
        let line = match line {
            Ok(line) => line,
            Err(e) => {
                eprintln!("error: reading stdin: {e}");
                return;
            }
        };
        if statement.is_empty() {
            first = number + 1;
        } else {
            statement.push('\n');
        }
        statement.push_str(&line);
        if repl.is_complete(&statement) {
            let whole = std::mem::take(&mut statement);
            show(evaluate(repl, &whole, interrupts, false));
        }
        if interrupts.all.is_cancelled() {
            return;
        }
    }
    if let Some(start) = statement.lines().next() {
        eprintln!(
            "error: the input ended inside the unfinished statement from line {first}: `{}`",
            start.trim()
        );
    }
}

/// The prompt at a terminal.
const PROMPT: &str = "flotilla> ";

/// A terminal: line editing, history, statements over several lines, Ctrl-C cancels
/// the statement being typed or run, and the log goes above the prompt while it waits.
fn read_terminal(repl: &mut Repl, log: &Log, interrupts: &Interrupts) {
    let config = rustyline::Config::builder()
        .auto_add_history(true)
        .history_ignore_space(true)
        .build();
    let mut editor: Editor<Statements, DefaultHistory> = match Editor::with_config(config) {
        Ok(e) => e,
        Err(e) => {
            eprintln!("error: starting the line editor: {e}");
            return;
        }
    };
    editor.set_helper(Some(Statements(repl.completeness())));
    // None when stdout is not the terminal: the log then goes straight to stderr.
    let printer = editor.create_external_printer().ok().and_then(print_above);
    let divert = || -> Option<Diverted> {
        let printer = printer.clone()?;
        Some(log.divert(move |line| {
            let _ = printer.send(format!("{line}\n"));
        }))
    };
    let mut history = history_file();
    if let Some(path) = &history {
        if let Some(dir) = path.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        match editor.load_history(path) {
            Ok(()) => {}
            Err(ReadlineError::Io(e)) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => eprintln!("warning: reading the history {}: {e}", path.display()),
        }
    }
    let mut diverted = divert();
    loop {
        match editor.readline(PROMPT) {
            Ok(statement) => {
                // Saved entry by entry (a statement of several lines is one entry): a run
                // stopped by a signal keeps its history too.
                if let Some(path) = &history {
                    if let Err(e) = editor.append_history(path) {
                        eprintln!("warning: saving the history {}: {e}", path.display());
                        history = None;
                    }
                }
                // The statement's own log goes to the terminal as in a test, with the
                // status line; it is cleared again before the outcome is shown.
                drop(diverted.take());
                let outcome = evaluate(repl, &statement, interrupts, true);
                diverted = divert();
                show(outcome);
            }
            // Ctrl-C at the prompt drops the statement being typed, all its lines, as
            // shells do.
            Err(ReadlineError::Interrupted) => {}
            Err(ReadlineError::Eof) => break,
            Err(e) => {
                eprintln!("error: reading the prompt: {e}");
                break;
            }
        }
        if interrupts.all.is_cancelled() {
            break;
        }
    }
}

/// Prints lines through rustyline's `printer` on a thread of its own, which draws them
/// above the prompt while it waits (and writes them plainly otherwise); returns where
/// to send them. The thread keeps the log from waiting on the prompt.
fn print_above(mut printer: impl ExternalPrinter + Send + 'static) -> Option<mpsc::Sender<String>> {
    let (tx, rx) = mpsc::channel::<String>();
    std::thread::Builder::new()
        .name("flotilla-printer".into())
        .spawn(move || {
            for line in rx {
                if printer.print(line.clone()).is_err() {
                    let _ = std::io::stderr().write_all(line.as_bytes());
                }
            }
        })
        .ok()?;
    Some(tx)
}

/// The line editor's helper: Enter on an unfinished statement starts a new line of it.
#[derive(Debug)]
struct Statements(Completeness);

impl Validator for Statements {
    fn validate(&self, ctx: &mut ValidationContext<'_>) -> rustyline::Result<ValidationResult> {
        Ok(if self.0.is_complete(ctx.input()) {
            ValidationResult::Valid(None)
        } else {
            ValidationResult::Incomplete
        })
    }
}

impl Completer for Statements {
    type Candidate = String;
}

impl Hinter for Statements {
    type Hint = String;
}

impl Highlighter for Statements {}

impl Helper for Statements {}

/// `$XDG_STATE_HOME/flotilla/history`, else `~/.local/state/flotilla/history`.
fn history_file() -> Option<PathBuf> {
    let state = std::env::var_os("XDG_STATE_HOME")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/state")))?;
    Some(state.join("flotilla").join("history"))
}

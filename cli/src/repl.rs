//! The prompt of `flotilla run`: script lines with the test scripts' API, read with
//! line editing and history from a terminal, or plainly from any other stdin.

use std::io::{BufRead, IsTerminal};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use flotilla_driver::repl::Repl;
use rustyline::error::ReadlineError;
use tokio_util::sync::CancellationToken;

/// Where Ctrl-C goes: the script line being evaluated at a terminal prompt, if there is
/// one; otherwise the whole run.
#[derive(Debug, Clone, Default)]
pub struct Interrupts {
    pub all: CancellationToken,
    line: Arc<Mutex<Option<CancellationToken>>>,
}

impl Interrupts {
    /// Handles a SIGINT; true if it only cancelled the current line.
    pub fn interrupt_line(&self) -> bool {
        match self.line.lock().ok().and_then(|l| l.clone()) {
            Some(line) => {
                line.cancel();
                true
            }
            None => false,
        }
    }

    fn set_line(&self, line: Option<CancellationToken>) {
        if let Ok(mut slot) = self.line.lock() {
            *slot = line;
        }
    }
}

/// Whether the prompt reads a terminal (line editing, history, Ctrl-C cancels a line).
pub fn interactive() -> bool {
    std::io::stdin().is_terminal()
}

/// Reads and evaluates lines until end of input or until `interrupts.all` is cancelled.
/// Blocking: run it on a thread of its own.
pub fn run(mut repl: Repl, interrupts: Interrupts) {
    let mut eval = |line: &str, interactive: bool| {
        let line = line.trim();
        if line.is_empty() || interrupts.all.is_cancelled() {
            return;
        }
        let token = interrupts.all.child_token();
        if interactive {
            interrupts.set_line(Some(token.clone()));
        }
        let result = repl.eval(line, token);
        interrupts.set_line(None);
        match result {
            Ok(Some(text)) if text.ends_with('\n') => print!("{text}"),
            Ok(Some(text)) => println!("{text}"),
            Ok(None) => {}
            Err(message) => eprintln!("error: {message}"),
        }
    };
    if !interactive() {
        for line in std::io::stdin().lock().lines() {
            match line {
                Ok(line) => eval(&line, false),
                Err(e) => {
                    eprintln!("error: reading stdin: {e}");
                    return;
                }
            }
            if interrupts.all.is_cancelled() {
                return;
            }
        }
        return;
    }
    let config = rustyline::Config::builder()
        .auto_add_history(true)
        .history_ignore_space(true)
        .build();
    let mut editor = match rustyline::DefaultEditor::with_config(config) {
        Ok(e) => e,
        Err(e) => {
            eprintln!("error: starting the line editor: {e}");
            return;
        }
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
    loop {
        match editor.readline("flotilla> ") {
            Ok(line) => {
                // Saved line by line: a run stopped by a signal keeps its history too.
                if let Some(path) = &history {
                    if let Err(e) = editor.append_history(path) {
                        eprintln!("warning: saving the history {}: {e}", path.display());
                        history = None;
                    }
                }
                eval(&line, true);
            }
            // Ctrl-C at the prompt drops the line, as shells do.
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

/// `$XDG_STATE_HOME/flotilla/history`, else `~/.local/state/flotilla/history`.
fn history_file() -> Option<PathBuf> {
    let state = std::env::var_os("XDG_STATE_HOME")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/state")))?;
    Some(state.join("flotilla").join("history"))
}

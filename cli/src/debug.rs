//! `flotilla test --debug`: a failed test's machines stay up; the error and the
//! script's failing line are printed, then how to reach the machines, and at a
//! terminal the prompt of `flotilla run` goes on from the script's state (its
//! variables included) until Ctrl-D. Without a terminal on stdin nothing is read:
//! the machines wait for `flotilla shell` until SIGTERM.

use std::fmt::Write as _;

use flotilla_driver::control::ControlSocket;
use flotilla_driver::debug_test::{debug_test, Place, Session};
use flotilla_driver::{Error, FleetOptions, Spec};

use crate::repl::{self, Interrupts};
use crate::terminal;

/// Lines of the script shown before the failing one.
const CONTEXT: usize = 2;

/// Runs the test; if its script fails, steps into the failure until Ctrl-D or a
/// signal, then stops everything. The test's verdict, as [`flotilla_driver::run_test`]'s.
pub async fn run_test(
    spec: &Spec,
    options: FleetOptions,
    interrupts: &Interrupts,
) -> Result<(), Error> {
    let failure = match debug_test(spec, options, interrupts.all.clone()).await {
        Ok(()) => return Ok(()),
        Err(f) => f,
    };
    let Some(mut session) = failure.session else {
        return Err(failure.error);
    };
    crate::print_chain(&failure.error);
    if let Some(at) = session.at() {
        eprint!("{}", excerpt_of(at));
    }
    step_in(&mut session, spec, interrupts).await;
    session.end().await;
    Err(failure.error)
}

/// Serves the machines (`flotilla shell`) and, at a terminal, the prompt; returns at
/// Ctrl-D or a signal.
async fn step_in(session: &mut Session, spec: &Spec, interrupts: &Interrupts) {
    // Ending this session with a signal is the plan, not an interruption of the test.
    interrupts.expect_stop();
    let cancel = interrupts.all.clone();
    let control = match ControlSocket::bind(&spec.name) {
        Ok(c) => c,
        Err(e) => {
            crate::print_chain(&e);
            return;
        }
    };
    let net = session.fleet();
    crate::print_access(net, &control);
    let interactive = repl::interactive();
    // Whatever the prompt does to the terminal is undone on the way out.
    let _terminal = interactive.then(|| terminal::Saved::new(0).ok()).flatten();
    let (done_tx, done_rx) = tokio::sync::oneshot::channel::<()>();
    let prompt = session.take_repl().filter(|_| interactive);
    let reading = prompt.is_some();
    match prompt {
        Some(prompt) => {
            eprintln!(
                "Debugging the failed test: type script statements (the script's variables \
                 are kept); Ctrl-C cancels one, Ctrl-D stops the machines."
            );
            let interrupts = interrupts.clone();
            let log = session.fleet().log().clone();
            let spawned = std::thread::Builder::new()
                .name("flotilla-repl".into())
                .spawn(move || {
                    repl::run(prompt, &log, &interrupts);
                    let _ = done_tx.send(());
                });
            if let Err(e) = spawned {
                eprintln!("error: starting the prompt's thread: {e}");
                return;
            }
        }
        None => eprintln!(
            "The failed test's machines stay up for `flotilla shell` (stdin is not a \
             terminal: no prompt); send SIGTERM to stop them: kill {}",
            std::process::id()
        ),
    }
    let net = session.fleet();
    tokio::select! {
        () = control.serve(net.machines().clone(), net.log().clone()) => {}
        _ = cancel.cancelled() => {}
        _ = done_rx, if reading => {}
    }
    // The prompt's thread stops at its next line (a line it is running was cancelled).
    cancel.cancel();
    drop(control);
    eprintln!("stopping");
}

/// The failing line with the lines before it and a caret under its column, as
/// compilers show one; empty if the file cannot be read.
fn excerpt_of(at: &Place) -> String {
    let source = std::fs::read_to_string(&at.file).unwrap_or_default();
    excerpt(&source, at)
}

fn excerpt(source: &str, at: &Place) -> String {
    let Some(failing) = source.lines().nth(at.line.wrapping_sub(1)) else {
        return String::new();
    };
    let first = at.line.saturating_sub(CONTEXT).max(1);
    let width = at.line.to_string().len();
    let mut out = format!(
        "{:width$}--> {}:{}:{}\n{:width$} |\n",
        "",
        at.file.display(),
        at.line,
        at.column,
        ""
    );
    for (number, line) in source
        .lines()
        .enumerate()
        .skip(first - 1)
        .take(at.line - first)
    {
        let _ = writeln!(out, "{:>width$} | {line}", number + 1);
    }
    let _ = writeln!(out, "{:>width$} | {failing}", at.line);
    // Tabs stay tabs, so that the caret lines up however the terminal shows them.
    let pad: String = failing
        .chars()
        .take(at.column.saturating_sub(1))
        .map(|c| if c == '\t' { '\t' } else { ' ' })
        .collect();
    let _ = writeln!(out, "{:width$} | {pad}^", "");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_failing_line_is_shown_with_the_lines_before_it_and_a_caret() {
        let source = "let a = 1;\nlet b = 2;\n\tlet c = 3;\nm.succeed(\"false\");\nlet d = 4;\n";
        let at = |line, column| Place {
            file: "t.rhai".into(),
            line,
            column,
        };
        assert_eq!(
            excerpt(source, &at(4, 3)),
            " --> t.rhai:4:3\n  |\n2 | let b = 2;\n3 | \tlet c = 3;\n\
             4 | m.succeed(\"false\");\n  |   ^\n"
        );
        assert_eq!(
            excerpt(source, &at(1, 1)),
            " --> t.rhai:1:1\n  |\n1 | let a = 1;\n  | ^\n"
        );
        assert_eq!(
            excerpt(source, &at(3, 2)),
            " --> t.rhai:3:2\n  |\n1 | let a = 1;\n2 | let b = 2;\n3 | \tlet c = 3;\n  | \t^\n"
        );
        assert_eq!(excerpt(source, &at(9, 1)), "");
        assert_eq!(excerpt(source, &at(0, 1)), "");
    }
}

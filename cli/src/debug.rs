//! `flotilla test --debug`: a failed test's machines stay up; the error and the
//! script's failing line are printed, then how to reach the machines, and at a
//! terminal the prompt of `flotilla run` goes on from the script's state (its
//! variables included) until Ctrl-D. Without a terminal on stdin nothing is read:
//! the machines wait for `flotilla shell` until SIGTERM.

use flotilla_driver::control::ControlSocket;
use flotilla_driver::debug::{debug_test, Session};
use flotilla_driver::{Error, FleetOptions, Spec};

use crate::repl::{self, Interrupts};
use crate::terminal;

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
        eprint!("{}", at.excerpt());
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
    crate::run::print_access(net, &control);
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

//! `flotilla run`: the spec's machines up, how to reach them, and the prompt (`repl.rs`)
//! and control socket until end of input or a signal.

use std::path::PathBuf;
use std::process::ExitCode;

use flotilla_driver::control::ControlSocket;
use flotilla_driver::{Error, Fleet, FleetOptions, Spec};

use crate::repl::{self, Interrupts};
use crate::{cannot_run, exit_for, out_dir, terminal, StateArgs};

/// `flotilla run`: boot, say how to reach the machines, serve the control socket and
/// the prompt until end of input or a signal, then stop everything.
pub(crate) async fn main(
    spec: PathBuf,
    out: Option<PathBuf>,
    state: StateArgs,
    no_repl: bool,
    interrupts: Interrupts,
) -> ExitCode {
    let cancel = interrupts.all.clone();
    let spec = match Spec::load(&spec) {
        Ok(s) => s,
        Err(e) => return cannot_run(&e),
    };
    let mut options = FleetOptions::new(out_dir(out, &spec));
    options.keep_state = state.keep_state;
    options.snapshot = !state.no_snapshot;
    let net = match Fleet::new(&spec, options) {
        Ok(n) => n,
        Err(e) => return exit_for(&e),
    };
    let control = match ControlSocket::bind(&spec.name) {
        Ok(c) => c,
        Err(e) => return exit_for(&e),
    };
    let started = tokio::select! {
        r = net.start_all() => r,
        _ = cancel.cancelled() => Err(Error::Interrupted),
    };
    if let Err(e) = started {
        net.stop_all().await;
        return exit_for(&e);
    }
    print_access(&net, &control);
    let interactive = !no_repl && repl::interactive();
    // Whatever the prompt does to the terminal is undone on the way out.
    let _terminal = interactive.then(|| terminal::Saved::new(0).ok()).flatten();
    let (done_tx, done_rx) = tokio::sync::oneshot::channel::<()>();
    if no_repl {
        eprintln!("Press Ctrl-C to stop the machines.");
    } else {
        if interactive {
            eprintln!("Type script statements (`{}.succeed(\"uname -a\")`); Ctrl-C cancels one, Ctrl-D stops the machines.", first_machine(&net));
        } else {
            eprintln!("Reading script statements from stdin; its end stops the machines.");
        }
        let repl = flotilla_driver::repl::Repl::new(&net, &spec, tokio::runtime::Handle::current());
        let interrupts = interrupts.clone();
        let log = net.log().clone();
        let spawned = std::thread::Builder::new()
            .name("flotilla-repl".into())
            .spawn(move || {
                repl::run(repl, &log, &interrupts);
                let _ = done_tx.send(());
            });
        if let Err(source) = spawned {
            net.stop_all().await;
            return exit_for(&Error::Io {
                what: "starting the prompt's thread".into(),
                source,
            });
        }
    }
    tokio::select! {
        () = control.serve(net.machines().clone(), net.log().clone()) => {}
        _ = cancel.cancelled() => {}
        _ = done_rx, if !no_repl => {}
    }
    // The sessions ended with `serve`; the prompt's thread stops at its next line (a
    // line it is running was cancelled with `cancel`).
    cancel.cancel();
    drop(control);
    eprintln!("stopping");
    // A spec with `[coverage] enabled = true`: the session's coverage, as a test's.
    net.finish_coverage().await;
    net.stop_all().await;
    ExitCode::SUCCESS
}

fn first_machine(net: &Fleet) -> &str {
    net.machines()
        .keys()
        .next()
        .map_or("machine", String::as_str)
}

/// Says how to reach each machine: `flotilla shell` and the forwarded ports.
pub(crate) fn print_access(net: &Fleet, control: &ControlSocket) {
    eprintln!(
        "all {} machine(s) are up; logs in {}",
        net.machines().len(),
        net.log().dir().display()
    );
    // `--run` only when `flotilla shell` could not tell this run from another.
    let alone = flotilla_driver::control::find_run(None).is_ok_and(|p| p == control.path());
    let run = if alone {
        String::new()
    } else {
        format!(" --run {}", control.name())
    };
    let width = net.machines().keys().map(String::len).max().unwrap_or(0);
    for (name, machine) in net.machines() {
        let mut line = format!("  {name:width$}  flotilla shell{run} {name}");
        for (host, guest) in machine.forwards() {
            line.push_str(&format!("  127.0.0.1:{host} -> guest:{guest}"));
        }
        eprintln!("{line}");
    }
    eprintln!("control socket: {}", control.path().display());
}

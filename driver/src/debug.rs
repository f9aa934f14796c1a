//! A failed test to step into: [`debug_test`] runs a test as [`run_test`] does, but a
//! script that fails leaves its machines up, with a [`Session`] that goes on from
//! where the script stopped (`flotilla test --debug`).
//!
//! The session's [`Repl`] has the script's engine, its functions (`fn`) and the
//! variables of its top level (`let`, `const`) with the values they had when the error
//! was thrown. Variables of inner blocks and closures (a `subtest`'s body, a loop's)
//! are gone, as they would be after the block; the polling conditions the script set
//! are no longer checked (one that failed would fail every statement), and the prompt
//! may set new ones.
//!
//! [`run_test`]: crate::run_test

use tokio_util::sync::CancellationToken;

use crate::error::Error;
use crate::fleet::{Fleet, FleetOptions};
use crate::run::{run, Failed};
use crate::script::repl::Repl;
use crate::spec::Spec;

pub use crate::run::Place;

/// A test that did not pass under [`debug_test`]: the verdict, and the machines still
/// up when the script ran and failed.
#[derive(Debug)]
pub struct Failure {
    pub error: Error,
    /// None when nothing is left to step into: the test could not start its script
    /// (spec, syntax, set-up), or was interrupted.
    pub session: Option<Session>,
}

/// A failed test's machines, still up, and a prompt's session that goes on from the
/// script's state. [`Session::end`] stops them (dropped instead, their processes are
/// killed by their guards once the last handle to them goes).
#[derive(Debug)]
pub struct Session {
    fleet: Fleet,
    repl: Option<Repl>,
    at: Option<Place>,
}

impl Session {
    /// The machines.
    pub fn fleet(&self) -> &Fleet {
        &self.fleet
    }

    /// The session over the machines with the script's variables (once: a prompt
    /// takes it to its own thread).
    pub fn take_repl(&mut self) -> Option<Repl> {
        self.repl.take()
    }

    /// Where the script failed, when the error had a place in it (also for a test that
    /// timed out: where the script was then).
    pub fn at(&self) -> Option<&Place> {
        self.at.as_ref()
    }

    /// Ends the session: coverage (with the spec's or the options' coverage), then
    /// every machine and switch stopped.
    pub async fn end(self) {
        self.fleet
            .log()
            .info("debug session ended: stopping the machines");
        self.fleet.finish_coverage().await;
        self.fleet.stop_all().await;
    }
}

/// Runs the spec's script as [`run_test`](crate::run_test) does; a script that ran and
/// failed (an error, the spec's timeout, a polling condition; not `cancel`) leaves its
/// machines up in the [`Failure`]'s [`Session`]. A test that passes, or cannot run,
/// stops them as `run_test` does.
pub async fn debug_test(
    spec: &Spec,
    options: FleetOptions,
    cancel: CancellationToken,
) -> Result<(), Failure> {
    let Err(Failed { error, kept }) = run(spec, options, cancel, true).await else {
        return Ok(());
    };
    let session = kept.map(|kept| {
        let log = kept.fleet.log();
        let dropped = kept.fleet.conditions.clear();
        log.info(&format!(
            "debug session started: the machines stay up after the failure{}",
            match dropped {
                0 => String::new(),
                n => format!("; the script's {n} polling condition(s) are no longer checked"),
            }
        ));
        Session {
            repl: Some(Repl::resume(kept.script)),
            at: kept.at,
            fleet: kept.fleet,
        }
    });
    Err(Failure { error, session })
}

//! The script engine: assembled from the machine and global APIs, and a script run on it.

use std::path::Path;
use std::sync::Arc;

use rhai::{Dynamic, Engine, Scope, AST};
use tokio::runtime::Handle;
use tokio_util::sync::CancellationToken;

use super::context::Ctx;
use super::errors::{innermost, located, strip_position};
use super::names::check_names;
use super::{global_api, machine_api};
use crate::error::Error;
use crate::junit::Subtests;
use crate::log::Log;
use crate::world::World;

/// Runs the script at `path` against `machines`. Blocking: call it from a thread that
/// is not a runtime worker; `handle` runs the machine calls.
///
/// Also returns where the script stopped, if it ran at all (not when it could not be
/// read or compiled): its engine, top-level variables and functions, for a prompt to
/// go on from ([`Repl::resume`](super::repl::Repl)).
pub(crate) fn run(
    path: &Path,
    world: &World,
    log: &Log,
    handle: Handle,
    cancel: CancellationToken,
    subtests: Subtests,
) -> (Result<(), Error>, Option<Stopped>) {
    let source = match std::fs::read_to_string(path) {
        Ok(s) => s,
        Err(source) => {
            let what = format!("reading script {}", path.display());
            return (Err(Error::Io { what, source }), None);
        }
    };
    let script = engine(path, world, log, handle, cancel.clone(), subtests);
    compile_and_run(script, path, &source, &cancel)
}

/// A script that ran, as it was when it ended: its engine (polling conditions and all),
/// the variables of its top level, and its functions.
pub(crate) struct Stopped {
    pub script: ScriptEngine,
    pub scope: Scope<'static>,
    pub functions: AST,
}

impl std::fmt::Debug for Stopped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stopped")
            .field("variables", &self.scope.len())
            .finish_non_exhaustive()
    }
}

/// An engine with the whole script API registered, and the context its functions share.
pub(crate) struct ScriptEngine {
    pub engine: Arc<Engine>,
    ctx: Arc<Ctx>,
    /// The machines' names: the variables a script may name without defining them.
    machines: Vec<String>,
}

impl std::fmt::Debug for ScriptEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScriptEngine").finish_non_exhaustive()
    }
}

impl ScriptEngine {
    /// What stops the engine's calls from now on (a REPL sets one per line).
    pub fn set_cancel(&self, cancel: CancellationToken) {
        if let Ok(mut c) = self.ctx.cancel.write() {
            *c = cancel;
        }
    }

    /// The script whose functions polling conditions may call.
    pub fn set_ast(&self, ast: &rhai::AST) {
        if let Ok(mut a) = self.ctx.ast.write() {
            *a = ast.clone();
        }
    }
}

/// An engine with the whole script API registered; `path`'s folder is where relative
/// host paths start, and `cancel` stops whatever the engine runs (until
/// [`ScriptEngine::set_cancel`]).
pub(crate) fn engine(
    path: &Path,
    world: &World,
    log: &Log,
    handle: Handle,
    cancel: CancellationToken,
    subtests: Subtests,
) -> ScriptEngine {
    let ctx = Ctx::new(handle, cancel);
    let mut engine = Engine::new();
    engine.set_max_call_levels(64);
    engine.set_max_expr_depths(64, 64);

    let l = log.clone();
    engine.on_print(move |text| l.info(text));
    let l = log.clone();
    engine.on_debug(move |text, _src, pos| l.info(&format!("debug at {pos}: {text}")));
    let c = ctx.clone();
    engine.on_progress(move |_| {
        c.cancel()
            .is_cancelled()
            .then(|| Dynamic::from("cancelled"))
    });
    machine_api::register(&mut engine, &ctx, &world.machines, path, log);
    global_api::register(&mut engine, &ctx, world, log, subtests);

    let engine = Arc::new(engine);
    let _ = ctx.engine.set(Arc::downgrade(&engine));
    ScriptEngine {
        engine,
        ctx,
        machines: world.machines.keys().cloned().collect(),
    }
}

fn compile_and_run(
    script: ScriptEngine,
    path: &Path,
    source: &str,
    cancel: &CancellationToken,
) -> (Result<(), Error>, Option<Stopped>) {
    if let Err(e) = check_names(path, source, script.machines.iter().map(String::as_str)) {
        return (Err(e), None);
    }
    let engine = script.engine.clone();
    let ast = match engine.compile(source) {
        Ok(ast) => ast,
        Err(e) => {
            let pos = e.position();
            let error = Error::ScriptSyntax {
                file: path.to_path_buf(),
                line: pos.line().unwrap_or(0),
                column: pos.position().unwrap_or(0),
                message: strip_position(e.0.to_string()),
            };
            return (Err(error), None);
        }
    };
    script.set_ast(&ast);
    // The top level's variables outlive an error (Rhai rewinds only inner blocks).
    let mut scope = Scope::new();
    let result = match engine.run_ast_with_scope(&mut scope, &ast) {
        Ok(()) => Ok(()),
        Err(e) if cancel.is_cancelled() => {
            let (pos, _) = innermost(&e);
            Err(located(path, pos, "cancelled".into()))
        }
        Err(e) => {
            let (pos, message) = innermost(&e);
            Err(located(path, pos, message))
        }
    };
    let stopped = Stopped {
        script,
        scope,
        functions: ast.clone_functions_only(),
    };
    (result, Some(stopped))
}

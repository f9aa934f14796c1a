//! Script lines evaluated one after another against a running [`Network`], with the
//! test scripts' API (`flotilla run`'s prompt).
//!
//! Variables and functions persist from one evaluation to the next; each evaluation has
//! its own cancellation token, so Ctrl-C can stop one line without stopping the rest.
//!
//! ```no_run
//! # async fn demo(net: &flotilla_driver::Network, spec: &flotilla_driver::Spec) {
//! use flotilla_driver::repl::Repl;
//! use tokio_util::sync::CancellationToken;
//!
//! let mut repl = Repl::new(net, spec, tokio::runtime::Handle::current());
//! std::thread::spawn(move || {
//!     repl.eval("let k = machine.succeed(\"uname -r\");", CancellationToken::new())?;
//!     let shown = repl.eval("k", CancellationToken::new())?;
//!     assert!(shown.unwrap_or_default().contains("cloud"));
//!     Ok::<_, String>(())
//! });
//! # }
//! ```

use rhai::{Dynamic, Scope, AST};
use tokio::runtime::Handle;
use tokio_util::sync::CancellationToken;

use crate::script::{self, innermost, strip_position};
use crate::{Network, Spec};

/// A script session over a network's machines.
#[derive(Debug)]
pub struct Repl {
    scope: Scope<'static>,
    /// The functions defined so far.
    functions: AST,
    /// One engine for the session: polling conditions set on one line hold on later.
    script: script::ScriptEngine,
}

impl Repl {
    /// A session over `net`'s machines; `handle` runs their calls.
    pub fn new(net: &Network, spec: &Spec, handle: Handle) -> Repl {
        // Relative host paths (`copy_to`) start in the spec's folder.
        let script = script::engine(
            &spec.path,
            &net.world(),
            net.log(),
            handle,
            CancellationToken::new(),
            script::Subtests::default(),
        );
        Repl {
            scope: Scope::new(),
            functions: AST::empty(),
            script,
        }
    }

    /// Evaluates `source` (one or more statements); returns its value as text (`None`
    /// for `()`), or the error as a line of text. Blocking: call it from a thread that
    /// is not a runtime worker. `cancel` stops it.
    pub fn eval(
        &mut self,
        source: &str,
        cancel: CancellationToken,
    ) -> Result<Option<String>, String> {
        self.script.set_cancel(cancel.clone());
        let engine = &self.script.engine;
        let ast = engine
            .compile_with_scope(&self.scope, source)
            .map_err(|e| {
                let at = e.position().position().unwrap_or(0);
                format!(
                    "syntax error at column {at}: {}",
                    strip_position(e.0.to_string())
                )
            })?;
        let ast = self.functions.merge(&ast);
        let result = engine.eval_ast_with_scope::<Dynamic>(&mut self.scope, &ast);
        self.functions = ast.clone_functions_only();
        self.script.set_ast(&self.functions);
        match result {
            Ok(value) if value.is_unit() => Ok(None),
            Ok(value) if value.is_string() => Ok(Some(value.into_string().unwrap_or_default())),
            Ok(value) => Ok(Some(value.to_string())),
            Err(_) if cancel.is_cancelled() => Err("cancelled".into()),
            Err(e) => Err(innermost(&e).1),
        }
    }
}

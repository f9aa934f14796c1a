//! Script statements evaluated one after another against a running [`Fleet`], with
//! the test scripts' API (`flotilla run`'s prompt).
//!
//! Variables and functions persist from one evaluation to the next; each evaluation has
//! its own cancellation token, so Ctrl-C can stop one statement without stopping the
//! rest. A statement may span lines: [`Repl::is_complete`] tells a whole program from
//! the beginning of one (an open block, string or parenthesis), so a prompt knows when
//! to read on.
//!
//! ```no_run
//! # async fn demo(net: &flotilla_driver::Fleet, spec: &flotilla_driver::Spec) {
//! use flotilla_driver::repl::Repl;
//! use tokio_util::sync::CancellationToken;
//!
//! let mut repl = Repl::new(net, spec, tokio::runtime::Handle::current());
//! std::thread::spawn(move || {
//!     assert!(!repl.is_complete("for m in [machine] {"));
//!     repl.eval("let k = machine.succeed(\"uname -r\");", CancellationToken::new())?;
//!     let shown = repl.eval("k", CancellationToken::new())?;
//!     assert!(shown.unwrap_or_default().contains("cloud"));
//!     Ok::<_, String>(())
//! });
//! # }
//! ```

use std::sync::Arc;

use rhai::{Dynamic, Engine, LexError, ParseErrorType, Position, Scope, AST};
use tokio::runtime::Handle;
use tokio_util::sync::CancellationToken;

use super::engine::{engine, ScriptEngine, Stopped};
use super::errors::{innermost, strip_position};
use crate::fleet::Fleet;
use crate::junit::Subtests;
use crate::spec::Spec;
use crate::world::World;

/// A script session over a network's machines.
#[derive(Debug)]
pub struct Repl {
    scope: Scope<'static>,
    /// The functions defined so far.
    functions: AST,
    /// One engine for the session: polling conditions set on one line hold on later.
    script: ScriptEngine,
}

impl Repl {
    /// A session over `net`'s machines; `handle` runs their calls.
    pub fn new(net: &Fleet, spec: &Spec, handle: Handle) -> Repl {
        // Relative host paths (`copy_to`) start in the spec's folder.
        let script = engine(
            &spec.path,
            &World::of(net),
            net.log(),
            handle,
            CancellationToken::new(),
            Subtests::default(),
        );
        Repl {
            scope: Scope::new(),
            functions: AST::empty(),
            script,
        }
    }

    /// A session that goes on where a test script stopped: with its engine, the
    /// variables of its top level as they were then, and its functions.
    pub(crate) fn resume(stopped: Stopped) -> Repl {
        Repl {
            scope: stopped.scope,
            functions: stopped.functions,
            script: stopped.script,
        }
    }

    /// Whether `source` is a whole program, rather than the beginning of one that more
    /// lines could finish: an unterminated block, string or parenthesis, an operator
    /// waiting for its operand. A program with a real syntax error is complete
    /// ([`Repl::eval`] reports the error).
    pub fn is_complete(&self, source: &str) -> bool {
        is_complete(&self.script.engine, source)
    }

    /// [`Repl::is_complete`] for another owner, such as a line editor's helper.
    pub fn completeness(&self) -> Completeness {
        Completeness {
            engine: self.script.engine.clone(),
        }
    }

    /// Evaluates `source` (one or more statements, on one or more lines); returns its
    /// value as text (`None` for `()`), or the error as a line of text. Blocking: call
    /// it from a thread that is not a runtime worker. `cancel` stops it.
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
                let pos = e.position();
                let column = pos.position().unwrap_or(0);
                let at = match pos.line() {
                    Some(line) if source.contains('\n') => format!("line {line}, column {column}"),
                    _ => format!("column {column}"),
                };
                format!("syntax error at {at}: {}", strip_position(e.0.to_string()))
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

/// Tells whole programs from unfinished ones with a [`Repl`]'s engine (see
/// [`Repl::is_complete`]); cheap to clone, and usable from any thread.
#[derive(Clone)]
pub struct Completeness {
    engine: Arc<Engine>,
}

impl std::fmt::Debug for Completeness {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Completeness").finish_non_exhaustive()
    }
}

impl Completeness {
    /// Whether `source` is a whole program (see [`Repl::is_complete`]).
    pub fn is_complete(&self, source: &str) -> bool {
        is_complete(&self.engine, source)
    }
}

/// Whether `source` parses, or fails for a reason that more lines cannot mend: the
/// parser did not run out of input, and no open string could be closed on a later line.
fn is_complete(engine: &Engine, source: &str) -> bool {
    let Err(error) = engine.compile(source) else {
        return true;
    };
    match *error.0 {
        ParseErrorType::UnexpectedEOF => false,
        ParseErrorType::BadInput(LexError::UnterminatedString) => {
            !closable(engine, source, error.1)
        }
        _ => !past_the_end(error.1, source),
    }
}

/// Whether the string left open at `open` ends if a later line closes it: a back-tick
/// string, or a quoted one whose line ends with `\` (quoted strings and characters
/// cannot hold a bare newline).
fn closable(engine: &Engine, source: &str, open: Position) -> bool {
    ["`", "\""]
        .iter()
        .any(|quote| match engine.compile(format!("{source}\n{quote}")) {
            Err(e) => {
                !(*e.0 == ParseErrorType::BadInput(LexError::UnterminatedString) && e.1 == open)
            }
            Ok(_) => true,
        })
}

/// Whether `pos` (Rhai's 1-based line and column, in characters) is beyond the last
/// non-blank character of `source`: the parser wanted more.
fn past_the_end(pos: Position, source: &str) -> bool {
    let (Some(line), Some(column)) = (pos.line(), pos.position()) else {
        return false;
    };
    let text = source.trim_end();
    let last_line = text.matches('\n').count() + 1;
    let last_column = text.rsplit('\n').next().map_or(0, |l| l.chars().count());
    (line, column) > (last_line, last_column)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unfinished_programs_are_incomplete() {
        let engine = Engine::new();
        for source in [
            "if x {",
            "for i in [1, 2, 3] {\n    vm.succeed(\"echo \" + i);",
            "for i in [1, 2, 3] {\n",
            "if x {\r\n",
            "if x",
            "if x {} else",
            "fn f(a) {",
            "vm.succeed(\"true\",",
            "foo(1, 2",
            "let a = [1,",
            "let m = #{ a: 1,",
            "let x = 1 +",
            "let x = (1 + 2",
            "let",
            "switch x {",
            "do {} while",
            "let s = `two\nlines",
            "let s = `a ${x}",
            "let s = \"joined \\",
            "let s = \"é\"; if x { // still open",
        ] {
            assert!(!is_complete(&engine, source), "{source:?}");
        }
    }

    #[test]
    fn whole_programs_and_real_errors_are_complete() {
        let engine = Engine::new();
        for source in [
            "",
            "  \n",
            "// a comment",
            "vm.succeed(\"true\")",
            "let x = 6 * 7;",
            "for i in [1, 2, 3] {\n    vm.succeed(\"echo \" + i);\n}",
            "if x {\n} else {\n}\n",
            "let s = `two\nlines`;",
            "let s = \"joined \\\nhere\";",
            // Syntax errors before the end: reported at once.
            "let broken = ;",
            "x }",
            "foo(1,) bar(",
            "let a = 1 let b",
            "f(1 2",
            "x @",
            "let x = 1\nlet y = 2",
            "if x {\n  y }\n}",
            // A quoted string cannot hold a newline: no later line closes it.
            "let s = \"open",
            "let c = 'a",
        ] {
            assert!(is_complete(&engine, source), "{source:?}");
        }
    }

    #[test]
    fn position_is_compared_in_characters_after_trailing_blanks() {
        let at = |line, column| Position::new(line, column);
        assert!(past_the_end(at(1, 7), "if x {"));
        assert!(!past_the_end(at(1, 6), "if x {"));
        assert!(past_the_end(at(3, 1), "if x {\n\n"));
        assert!(past_the_end(at(1, 6), "é = {  "));
        assert!(!past_the_end(at(1, 5), "é = {"));
        assert!(past_the_end(at(2, 12), "for x in y {\n  print(x);"));
        assert!(!past_the_end(at(2, 11), "for x in y {\n  print(x);"));
        assert!(!past_the_end(Position::NONE, "if x {"));
    }
}

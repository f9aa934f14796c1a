//! The check, before anything runs, that every variable a script names exists: a
//! machine of the spec, or something the script defines (`let`, `const`, a parameter,
//! a loop variable). A misspelt machine is refused with its place and the machines
//! that do exist, before any machine boots.

use std::path::Path;

use rhai::{Engine, ParseErrorType, Scope};

use crate::error::Error;

/// `Ok` when `source` names only defined variables, or when it does not parse (the
/// real compile reports that); else the first undefined name as a script error.
pub(super) fn check_names<'a>(
    path: &Path,
    source: &str,
    machines: impl IntoIterator<Item = &'a str> + Clone,
) -> Result<(), Error> {
    let mut engine = Engine::new_raw();
    engine.set_strict_variables(true);
    engine.set_max_expr_depths(64, 64);
    let mut scope = Scope::new();
    for name in machines.clone() {
        scope.push_constant(name, ());
    }
    let Err(e) = engine.compile_with_scope(&scope, source) else {
        return Ok(());
    };
    let ParseErrorType::VariableUndefined(name) = &*e.0 else {
        return Ok(());
    };
    let pos = e.position();
    Err(Error::ScriptUndefined {
        file: path.to_path_buf(),
        line: pos.line().unwrap_or(0),
        column: pos.position().unwrap_or(0),
        name: name.clone(),
        machines: machines.into_iter().map(str::to_owned).collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(source: &str) -> Result<(), String> {
        check_names(Path::new("t.rhai"), source, ["client", "server"]).map_err(|e| e.to_string())
    }

    #[test]
    fn machines_and_defined_names_pass() {
        for ok in [
            "server.succeed(\"true\");",
            "let x = 1; x + 1",
            "const Y = 2; fn f(a) { a + 1 } f(Y)",
            "fn g() { server.succeed(\"true\") } g()",
            "for m in [server, client] { m.succeed(\"true\"); }",
            "let c = |n| n + 1; c.call(1)",
            "try { throw 1 } catch (err) { print(err) }",
            "let s = `${client.name}`;",
            // Syntax errors are the real compile's to report.
            "let = ;",
        ] {
            assert_eq!(check(ok), Ok(()), "{ok}");
        }
    }

    #[test]
    fn an_unknown_machine_is_refused_with_its_place_and_the_machines() {
        let e = check("server.succeed(\"true\");\n  ghost.succeed(\"true\");").unwrap_err();
        assert!(e.starts_with("t.rhai:2:3: `ghost` is not defined"), "{e}");
        assert!(e.contains("the machines are `client`, `server`"), "{e}");
        let e = check("fn f() { servr.succeed(\"x\") }").unwrap_err();
        assert!(e.starts_with("t.rhai:1:10: `servr`"), "{e}");
        let e = check("print(x); let x = 1;").unwrap_err();
        assert!(e.contains("`x` is not defined"), "{e}");
    }
}

#[cfg(test)]
mod examples {
    use std::path::Path;

    /// The check refuses nothing the shipped examples do.
    #[test]
    fn every_example_script_names_only_defined_variables() {
        let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
        let mut seen = 0;
        for entry in std::fs::read_dir(&examples).expect("examples/") {
            let spec = crate::spec::Spec::load(&entry.expect("an entry").path()).expect("a spec");
            let script = spec.script.as_ref().expect("a script");
            let source = std::fs::read_to_string(script).expect("the script");
            super::check_names(script, &source, spec.machines.keys().map(String::as_str))
                .unwrap_or_else(|e| panic!("{e}"));
            seen += 1;
        }
        assert!(seen >= 3, "{seen} examples");
    }
}

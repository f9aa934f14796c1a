//! Names: of a test, of a machine (a script variable and, through [`hostname`], the
//! guest's host name), and the words test scripts reserve.

/// A machine's host name: its name with `-` for `_` (the rule lives in vmnet, which
/// writes every guest's `/etc/hosts`).
pub use flotilla_vmnet::hostname;

/// Names a machine may not take: Rhai keywords and the script's global functions.
pub const RESERVED: &[&str] = &[
    "let",
    "const",
    "if",
    "else",
    "switch",
    "do",
    "while",
    "until",
    "loop",
    "for",
    "in",
    "continue",
    "break",
    "return",
    "throw",
    "try",
    "catch",
    "fn",
    "private",
    "import",
    "export",
    "as",
    "true",
    "false",
    "this",
    "global",
    "print",
    "debug",
    "log",
    "eval",
    "start_all",
    "type_of",
    "call",
    "curry",
    "is_def_var",
    "is_def_fn",
    "is_shared",
    "new",
    "use",
    "with",
    "module",
    "package",
    "var",
    "static",
    "shared",
    "sync",
    "async",
    "await",
    "yield",
    "default",
    "void",
    "null",
    "nil",
    "spawn",
    "thread",
    "go",
    "exit",
    "match",
    "case",
    "public",
    "protected",
    "super",
    "goto",
];

/// A test's name: 1-64 letters, digits, `-`, `_` or `.`.
pub(super) fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty()
        || name.len() > 64
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
    {
        return Err(format!(
            "`{name}` must be 1-64 characters of letters, digits, `-`, `_` or `.`"
        ));
    }
    Ok(())
}

/// Machine names are script identifiers and host names: `[a-z][a-z0-9_]*`, at most 32
/// characters, none of the script's [`RESERVED`] words ([`hostname`] turns `_` into `-`).
pub fn check_machine_name(name: &str) -> Result<(), String> {
    let mut chars = name.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_lowercase());
    if !first_ok
        || name.len() > 32
        || !chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
    {
        return Err(
            "a machine name must start with a lowercase letter and use only \
             lowercase letters, digits and `_` (at most 32 characters)"
                .into(),
        );
    }
    if RESERVED.contains(&name) {
        return Err(format!("`{name}` is reserved in test scripts"));
    }
    Ok(())
}

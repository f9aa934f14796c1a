//! Script errors: a driver error as a script exception (with its causes), and a
//! script's failure as an [`Error`] at the file, line and column of its innermost call.

use std::path::Path;

use rhai::{Dynamic, EvalAltResult, Position};

use crate::error::Error;

pub(super) fn error_to_rhai(e: &Error) -> Box<EvalAltResult> {
    EvalAltResult::ErrorRuntime(Dynamic::from(crate::error::chain_inline(e)), Position::NONE).into()
}

/// The deepest error in a chain of function calls and the position nearest to it.
pub(super) fn innermost(e: &EvalAltResult) -> (Position, String) {
    let mut pos = e.position();
    let mut cur = e;
    loop {
        match cur {
            EvalAltResult::ErrorInFunctionCall(_, _, inner, p)
            | EvalAltResult::ErrorInModule(_, inner, p) => {
                if !p.is_none() {
                    pos = *p;
                }
                if !inner.position().is_none() {
                    pos = inner.position();
                }
                cur = inner;
            }
            EvalAltResult::ErrorRuntime(value, p) => {
                if !p.is_none() {
                    pos = *p;
                }
                let message = value
                    .clone()
                    .into_string()
                    .unwrap_or_else(|_| value.to_string());
                return (pos, message);
            }
            EvalAltResult::ErrorTerminated(_, p) => {
                return (if p.is_none() { pos } else { *p }, "cancelled".into());
            }
            other => {
                if !other.position().is_none() {
                    pos = other.position();
                }
                return (pos, strip_position(other.to_string()));
            }
        }
    }
}

/// Rhai appends " (line L, position C)"; we print the location first instead.
pub(super) fn strip_position(text: String) -> String {
    match text.rfind(" (line ") {
        Some(i) if text.ends_with(')') => text[..i].to_owned(),
        _ => text,
    }
}

pub(super) fn located(path: &Path, pos: Position, message: String) -> Error {
    Error::Script {
        file: path.to_path_buf(),
        line: pos.line().unwrap_or(0),
        column: pos.position().unwrap_or(0),
        message,
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn script_errors_carry_their_causes_once() {
        use crate::error::Error;
        let qmp = Error::Qmp {
            machine: "a".into(),
            source: flotilla_qmp::Error::Qmp {
                command: "send-key".into(),
                class: "GenericError".into(),
                desc: "Parameter 'data' does not accept value 'nokey'".into(),
            },
        };
        assert_eq!(
            crate::error::chain_inline(&qmp),
            "machine `a`: qmp: `send-key` failed: GenericError: \
             Parameter 'data' does not accept value 'nokey'"
        );
        let io = Error::Io {
            what: "reading /gone".into(),
            source: std::io::Error::from(std::io::ErrorKind::NotFound),
        };
        assert_eq!(
            crate::error::chain_inline(&io),
            "reading /gone: entity not found"
        );
        // A text that already quotes its cause keeps it once.
        let spec = Error::Network("machine `a` is not on VLAN 9".into());
        assert_eq!(
            crate::error::chain_inline(&spec),
            "network: machine `a` is not on VLAN 9"
        );
    }
}

//! [`Error`], the driver's one error type, which errors are test failures, and the one
//! rendering of an error with its causes ([`chain`], [`printed`], [`chain_inline`]).

use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::Duration;

use crate::agent_client::GuestError;

/// Everything that can go wrong in the driver.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A spec file is wrong; names the file, line and column.
    #[error("{}:{line}:{column}: {message}", file.display())]
    Spec {
        file: PathBuf,
        line: usize,
        column: usize,
        message: String,
    },
    /// A test script failed or is wrong; names the file, line and column.
    #[error("{}:{line}:{column}: {message}", file.display())]
    Script {
        file: PathBuf,
        line: usize,
        column: usize,
        message: String,
    },
    /// A test script does not compile; names the file, line and column.
    #[error("{}:{line}:{column}: syntax error: {message}", file.display())]
    ScriptSyntax {
        file: PathBuf,
        line: usize,
        column: usize,
        message: String,
    },
    /// A test script names a variable that is neither a machine of the spec nor defined
    /// by the script; checked before anything runs.
    #[error(
        "{}:{line}:{column}: `{name}` is not defined: it is not a machine of the spec (the machines are {}) nor a variable the script defines before this line",
        file.display(),
        machines.iter().map(|m| format!("`{m}`")).collect::<Vec<_>>().join(", ")
    )]
    ScriptUndefined {
        file: PathBuf,
        line: usize,
        column: usize,
        name: String,
        machines: Vec<String>,
    },
    /// The host lacks something; `hint` says how to get it.
    #[error("{what}\nhint: {hint}")]
    Setup { what: String, hint: String },
    /// An image or kernel could not be found or made (its message and causes as they
    /// are; a missing Debian package is placed in the spec as an [`Error::Spec`]).
    #[error(transparent)]
    Image(#[from] flotilla_image::Error),
    /// A machine's disk could not be made (qemu-img failed, or the state dir is wrong).
    #[error("machine `{machine}`: disk `{disk}`: {problem}")]
    Disk {
        machine: String,
        disk: String,
        problem: String,
    },
    #[error("{what}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("http_get {url}: {message}")]
    Http { url: String, message: String },
    #[error("network: {0}")]
    Network(String),
    #[error("network")]
    Vmnet(#[source] flotilla_vmnet::Error),
    #[error("no machine named `{name}` in the spec")]
    NoSuchMachine { name: String },
    /// A forwarded host port is taken (by another process, or another forward): found
    /// before the machine started, or when QEMU (at start, or `forward` at run time)
    /// could not listen on it. `evidence` is what QEMU said, if it said anything.
    #[error(
        "machine `{machine}`: forwarding 127.0.0.1:{port} to guest port {guest}: host port {port} is already in use{}\nhint: stop what listens on 127.0.0.1:{port}, or forward another host port (0 or none picks a free one)",
        evidence.as_deref().map(|e| format!("; {e}")).unwrap_or_default()
    )]
    PortBusy {
        machine: String,
        port: u16,
        guest: u16,
        evidence: Option<String>,
    },
    #[error("network: there is no VLAN {vlan}")]
    NoSuchVlan { vlan: u8 },
    /// A machine did not reach readiness.
    #[error("machine `{machine}`: {problem}{}", quote(console))]
    Boot {
        machine: String,
        problem: String,
        console: Vec<String>,
    },
    /// QEMU exited or the guest died while a call waited on it.
    #[error("machine `{machine}`: {problem}{}", quote(console))]
    MachineDied {
        machine: String,
        problem: String,
        console: Vec<String>,
    },
    /// A helper process of the network (a VLAN's `vde_switch`, a machine's link
    /// switch or `wirefilter`, a VLAN capture's or a cable's `vde_plug`) exited while
    /// the test ran, unasked: the network is no longer the one the test set up, so the
    /// call that was waiting (`during`, what it was doing) and every later one fail.
    /// `helper` names it (`vlan 1: vde_switch`, `machine `a` vlan 1: wirefilter`),
    /// `status` says how it ended.
    #[error(
        "{helper} {status} while the test ran{}",
        during.as_deref().map(|d| format!(" ({d})")).unwrap_or_default()
    )]
    HelperDied {
        helper: String,
        vlan: u8,
        machine: Option<String>,
        status: String,
        during: Option<String>,
    },
    #[error("machine `{machine}`: qmp")]
    Qmp {
        machine: String,
        #[source]
        source: flotilla_qmp::Error,
    },
    #[error("machine `{machine}`: agent: {doing}")]
    Agent {
        machine: String,
        doing: String,
        #[source]
        source: GuestError,
    },
    /// `succeed` saw a failure or `fail` saw a success.
    #[error("machine `{machine}`: command `{command}` was expected to {expected} but ended with {status}{}", indent(output))]
    CommandFailed {
        machine: String,
        command: String,
        expected: String,
        status: String,
        output: String,
    },
    #[error("machine `{machine}`: {what} did not finish within {} s (timeout)", after.as_secs_f64())]
    Timeout {
        machine: String,
        what: String,
        after: Duration,
    },
    /// `shutdown` had to stop QEMU itself: the guest did not power off within `limit`
    /// (`source` says why it could not even be asked, when it could not).
    #[error(
        "machine `{machine}`: shutdown: the guest did not power off within {} s{}; qemu was stopped",
        limit.as_secs_f64(),
        if source.is_some() { " (it could not be asked to)" } else { "" }
    )]
    PowerOff {
        machine: String,
        limit: Duration,
        #[source]
        source: Option<Box<Error>>,
    },
    /// The test's own limit (`timeout`) fired; `running` is what was under way then
    /// (`machine: what (N s)`, the longest first).
    #[error(
        "the test did not finish within its timeout of {} s{}",
        .limit.as_secs(),
        running_now(.running)
    )]
    TestTimeout {
        limit: Duration,
        running: Vec<String>,
    },
    /// The test passed, but its combined line coverage is under the floor the user
    /// asked for (`--coverage-fail-under`, `[coverage] fail_under`).
    #[error(
        "coverage: {} is under the floor of {floor:.1}% (--coverage-fail-under)",
        match percent { Some(p) => format!("{p:.1}% of lines"), None => "no line data".into() }
    )]
    CoverageFloor { percent: Option<f64>, floor: f64 },
    /// A run refused or ended a control-socket session; its words.
    #[error("{0}")]
    Run(String),
    #[error("interrupted")]
    Interrupted,
    /// A polling condition failed between two steps of the test.
    #[error("polling condition `{name}` failed: {message}")]
    Condition { name: String, message: String },
    /// `wait_for_text` saw no match on the screen within its limit; quotes the last
    /// text it read (`screen`), and how it read it (`via`: `agent`, `OCR (3x)`; `None`
    /// when no read finished).
    #[error(
        "machine `{machine}`: waiting for text matching `{pattern}` on the screen did not finish within {} s (timeout){}",
        after.as_secs_f64(),
        shown(via.as_deref(), screen)
    )]
    ScreenTimeout {
        machine: String,
        pattern: String,
        after: Duration,
        via: Option<String>,
        screen: String,
    },
    /// Reading a screen's text by OCR failed (the screendump, its picture, tesseract).
    #[error("machine `{machine}`: reading the screen by OCR: {problem}")]
    Ocr { machine: String, problem: String },
    /// A call got an argument it cannot use (names the machine and the call).
    #[error("{0}")]
    Usage(String),
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<flotilla_report::Error> for Error {
    fn from(e: flotilla_report::Error) -> Error {
        Error::Io {
            what: e.what,
            source: e.source,
        }
    }
}

impl Error {
    /// Whether the error means the test ran and failed (rather than could not run).
    pub fn is_test_failure(&self) -> bool {
        !matches!(
            self,
            Error::Spec { .. }
                | Error::ScriptSyntax { .. }
                | Error::ScriptUndefined { .. }
                | Error::Setup { .. }
                | Error::Image(_)
                | Error::Disk { .. }
                | Error::PortBusy { .. }
        )
    }
}

/// An error and its causes, one per line: the error, then `  caused by: CAUSE` for each
/// cause. The one rendering of a chain: the binary prints it after `error: `
/// ([`printed`]), `flotilla shell` gets it from a run, a suite keeps it per test.
pub fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        text.push_str("\n  caused by: ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// [`chain`] as the binary prints it: `error: ...`, then a `  caused by: ...` line per
/// cause.
pub fn printed(e: &dyn std::error::Error) -> String {
    format!("error: {}", chain(e))
}

/// An error and its causes on one line, each said once (a script's exception: its
/// error is one line, and `machine `a`: qmp` alone would not say what went wrong):
/// `machine `a`: qmp` and `qmp: `send-key` failed` give
/// `machine `a`: qmp: `send-key` failed`.
pub fn chain_inline(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            let last = text.rsplit(": ").next().unwrap_or_default().to_owned();
            let rest = cause_text
                .strip_prefix(&format!("{last}: "))
                .unwrap_or(&cause_text);
            text.push_str(": ");
            text.push_str(rest);
        }
        source = cause.source();
    }
    text
}

/// `; still running: a; b` for what was under way, or nothing.
fn running_now(running: &[String]) -> String {
    if running.is_empty() {
        String::new()
    } else {
        format!("; still running: {}", running.join("; "))
    }
}

fn quote(console: &[String]) -> String {
    if console.is_empty() {
        return "\n(the console printed nothing)".into();
    }
    let mut out = String::from("\nlast console lines:");
    for line in console {
        let _ = write!(out, "\n  | {line}");
    }
    out
}

fn shown(via: Option<&str>, screen: &str) -> String {
    let Some(via) = via else {
        return "; no read of the screen finished in time".into();
    };
    if screen.is_empty() {
        return format!("; the screen (read by {via}) shows nothing");
    }
    let mut out = format!("; the screen (read by {via}) shows:");
    for line in screen.lines() {
        let _ = write!(out, "\n  | {line}");
    }
    out
}

fn indent(output: &str) -> String {
    if output.is_empty() {
        return String::new();
    }
    let mut out = String::new();
    for line in output.lines() {
        let _ = write!(out, "\n  {line}");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::Error;

    #[test]
    fn a_screen_timeout_quotes_the_last_read() {
        let e = |via: Option<&str>, screen: &str| {
            Error::ScreenTimeout {
                machine: "m".into(),
                pattern: "ok$".into(),
                after: std::time::Duration::from_secs(3),
                via: via.map(str::to_owned),
                screen: screen.into(),
            }
            .to_string()
        };
        let head = "machine `m`: waiting for text matching `ok$` on the screen did not finish within 3 s (timeout)";
        assert_eq!(
            e(Some("agent"), "login:\n\nfailed"),
            format!("{head}; the screen (read by agent) shows:\n  | login:\n  | \n  | failed")
        );
        assert_eq!(
            e(Some("agent"), ""),
            format!("{head}; the screen (read by agent) shows nothing")
        );
        assert_eq!(
            e(None, "x"),
            format!("{head}; no read of the screen finished in time")
        );
    }

    #[test]
    fn a_busy_port_names_port_and_machine_and_is_not_a_test_failure() {
        let e = Error::PortBusy {
            machine: "web".into(),
            port: 8080,
            guest: 80,
            evidence: None,
        };
        assert_eq!(
            e.to_string(),
            "machine `web`: forwarding 127.0.0.1:8080 to guest port 80: host port 8080 is already in use\n\
             hint: stop what listens on 127.0.0.1:8080, or forward another host port (0 or none picks a free one)"
        );
        assert!(!e.is_test_failure());
        let e = Error::PortBusy {
            machine: "web".into(),
            port: 8080,
            guest: 80,
            evidence: Some("qemu said: Could not set up host forwarding rule".into()),
        };
        assert!(e.to_string().contains(
            "is already in use; qemu said: Could not set up host forwarding rule\nhint: "
        ));
    }
}

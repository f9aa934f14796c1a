//! Test scripts in Python: a spec's `script = "test.py"` runs with the names and
//! meanings of NixOS's test driver (`machine.succeed(...)`, `with subtest("..."):`).
//!
//! The `flotilla` Python package (`driver/python/flotilla/`, pure Python, carried in
//! the binary: [`package`]) is written into the run; `python3 -m flotilla.run SCRIPT`
//! connects to a socket of the run (`$FLOTILLA_SOCKET`) and runs the script with each
//! machine a global named after it. Each call is a request the run serves with the
//! same [`Machine`](crate::Machine) methods Rhai scripts use, so each is a step on
//! `report.html`'s timeline; subtests go to JUnit.
//!
//! # The protocol
//!
//! JSON, one object per line, over a Unix stream socket; version 1
//! (`server.rs`'s `PROTOCOL`).
//!
//! - The run greets first: `{"protocol": 1, "machines": [{"name": "server", "vlans":
//!   [1]}], "vlans": [1], "out_dir": "/path/to/log/folder"}`.
//! - A request: `{"id": 7, "call": "succeed", "machine": "server", "args": {"command":
//!   "uname -r", "timeout": 30}, "at": {"file": "/abs/test.py", "line": 12}}`;
//!   `machine` is absent for calls of the whole run, `at` (the script's line that made
//!   the call) is optional.
//! - Its answer, in order: `{"id": 7, "value": "6.12.0\n"}` or `{"id": 7, "error":
//!   "machine `server`: command `false` failed with exit status 1"}`. A line that is
//!   not a request is answered with `"id": null` and an error.
//! - `timeout` is in seconds (a number); absent, the call's default; `null`, no limit
//!   but the spec's `timeout`.
//! - The last request is `end`: `{}` (passed), `{"syntax": {"line", "column",
//!   "message"}}` (exit 2, before any machine boots), or `{"error": {"message",
//!   "line", "traceback"}}` (the test fails at that line of the script).
//!
//! Machine calls: `start`, `is_up`, `shutdown`, `crash`, `reboot`,
//! `wait_for_shutdown`, `execute` (`{"status", "stdout", "stderr"}`), `succeed`,
//! `fail`, `wait_until_succeeds`, `wait_until_fails`, `wait_for_unit`,
//! `wait_for_file`, `wait_for_open_port`, `wait_for_closed_port`,
//! `wait_for_console_text`, `get_console_log`, `screenshot`, `get_screen_text`,
//! `get_screen_text_ocr`, `get_screen_text_variants`, `wait_for_text`,
//! `wait_for_text_ocr`, `send_key`, `send_chars`, `send_monitor_command`,
//! `qmp_subscribe`, `qmp_next_event`, `qmp_unsubscribe`, `copy_to`, `copy_from`,
//! `set_link`, `forward`, `forwarded_port`, `ip`, `ipv6`, `impair`, `unimpair`,
//! `capture` (arguments: `machine_calls.rs`). Run calls: `start_all`, `log`,
//! `subtest_begin` (returns a token), `subtest_end`, `partition`, `heal`,
//! `capture_vlan`, `http_get`, `end` (`run_calls.rs`).
//!
//! - `server.rs`: the script's process, the socket, the requests served, the verdict.
//! - `machine_calls.rs`, `run_calls.rs`: the calls, each mapped to the driver.
//! - `args.rs`: a request's arguments, with errors naming the call.
//! - `package.rs`: the Python package carried in the binary.

mod args;
mod machine_calls;
pub(crate) mod package;
mod run_calls;
mod server;

pub(crate) use server::{run, Client};

/// Whether `path` is a Python script (by its extension).
pub(crate) fn is_python(path: &std::path::Path) -> bool {
    path.extension().is_some_and(|e| e == "py")
}

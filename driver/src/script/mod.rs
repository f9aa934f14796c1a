//! Test scripts in Rhai: each machine of the spec is a variable whose methods are the
//! [`Machine`](crate::Machine) API (`server.succeed("uname -r")`).
//!
//! | call | does |
//! | --- | --- |
//! | `…, secs)` | every command, wait, `shutdown` and `reboot` takes an optional last argument, its time limit in whole seconds, 1 or more (defaults: commands 300 s, waits 120 s, power-off 60 s); a timeout error names the call and the limit |
//! | `m.start()` | boots `m` (commands boot it on first use too) |
//! | `m.succeed(cmd)` | runs a shell command that must exit 0; returns its stdout |
//! | `m.fail(cmd)` | runs a shell command that must fail; returns its stdout |
//! | `m.wait_until_succeeds(cmd)`, `m.wait_until_fails(cmd)` | retries `cmd` every 0.5 s until it succeeds / fails |
//! | `m.wait_for_console_text(regex)` | waits for a matching serial console line (earlier lines count); returns it |
//! | `m.get_console_log()` | everything the console printed in this run |
//! | `m.wait_for_file(path)` | waits until `path` exists in the guest |
//! | `m.wait_for_open_port(port)`, `m.wait_for_closed_port(port)` | waits until a TCP port listens / stops listening in the guest |
//! | `m.wait_for_unit(unit)` | waits until a systemd unit is active; fails at once when it failed |
//! | `m.execute(cmd)` | runs a shell command; returns `#{status, stdout, stderr}` (status is `()` when killed by a signal) |
//! | `m.copy_to(local, remote)` | copies a host file or folder (relative to the spec) into the guest, modes kept; returns the bytes |
//! | `m.copy_from(remote, local)` | copies a guest file or folder to the log folder's `local`; returns that path |
//! | `m.shutdown()` | powers the guest off and waits for QEMU to exit; a guest that does not power off within the limit is an error (QEMU is stopped all the same) |
//! | `m.crash()` | stops QEMU at once, like a power cut; the next call boots again |
//! | `m.reboot()` | powers off cleanly and boots again (a disk image keeps its state) |
//! | `m.screenshot(name)` | saves the screen of a machine with `display = true` as `<log>/<machine>/<name>.png`; returns the path |
//! | `m.get_screen_text()` | the text on the screen of a machine with `display = true`: the virtual console's exact text, read by the agent (lines without trailing blanks); by OCR (`tesseract`) when the console is in graphics mode or the guest runs qemu-ga |
//! | `m.get_screen_text_ocr()` | the screen's text by OCR, even off a text console |
//! | `m.wait_for_text(regex)`, `m.wait_for_text_ocr(regex)` | waits until the screen's text matches; returns it; a timeout quotes the screen |
//! | `m.send_key(keys)` | presses a key combination: QEMU key names joined by `-` (`"ctrl-alt-delete"`, `"alt-f2"`, `"ret"`) |
//! | `m.send_chars(text)`, `m.send_chars(text, delay_ms)` | types text on a US keyboard, a key press per character (10 ms apart unless told) |
//! | `m.name` | the machine's name |
//! | `subtest(name, \|\| { ... })` | runs a named, timed section (nestable); a failure inside fails the test and names the subtest |
//! | `retry(\|\| { ... })`, `retry(\|\| { ... }, secs)` | runs the closure until it does not throw, a second apart (120 s, or `secs`), or until a helper of the network died; returns its value |
//! | `start_all()` | boots every machine in parallel |
//! | `polling_condition(name, \|\| { ... })`, `polling_condition(name, secs, \|\| { ... })` | the closure must not throw whenever it is checked: before every command of any machine (also between the tries of `wait_until_*`), at most every `secs`; a failure fails the step, naming the condition |
//! | `log(text)` / `print(text)` | writes a line to the log |
//! | `m.ip(vlan)`, `m.ipv6(vlan)` | the machine's address on a VLAN |
//! | `m.block(vlan)`, `m.unblock(vlan)` | takes the machine's link on a VLAN down / up |
//! | `m.impair(vlan, #{delay_ms, jitter_ms, loss, bandwidth})`, `m.unimpair(vlan)` | degrades the machine's link (loss in percent, bandwidth in bytes/s; vde backend) / restores it |
//! | `m.forward(guest)`, `m.forward(host, guest)` | forwards 127.0.0.1:host (free port if omitted) to a guest port; returns the host port; a host port in use is an error naming it |
//! | `m.forwarded_port(guest)` | the host port of a forward from the spec, or `()` |
//! | `m.capture(vlan)` | writes the NIC's frames to `<log>/<machine>/vlan<N>.pcap` (tcpdump/tshark read it); returns the path |
//! | `partition(vlan, [[a, b], [c]])`, `heal(vlan)` | splits a VLAN into groups that only reach each other (vde backend) / undoes it |
//! | `capture_vlan(vlan)` | writes every frame on a VLAN to `<log>/vlan<N>.pcap` until the end (vde backend); returns the path |
//! | `http_get(url)` | fetches `http://127.0.0.1:port/...` from the host; returns the body (any other host is refused) |
//! | `throw "message"` | fails the test with that message (plain Rhai) |
//!
//! The book's script table (`docs/src/script-reference.md`) is this table; a test keeps
//! the two equal and checks that every function registered in `machine_api/` and
//! `global_api/` is in it.
//!
//! - `engine.rs`: the engine assembled from the two APIs, and a script run on it.
//! - `context.rs`: what the functions share: the [`World`] they act on, the `Machine`
//!   values, and the context that runs their calls (and polling conditions).
//! - `machine_api/`: the methods of `Machine`, a file per topic (`commands.rs`,
//!   `waits.rs`, `files.rs`, `screen.rs`, `network.rs`) under `mod.rs` (the machines
//!   as variables, and the `with_limit!` registration).
//! - `global_api/`: the functions that act on the whole run, a file per topic
//!   (`subtests.rs`, `retry.rs`, `network.rs`, `conditions.rs`) under `mod.rs`
//!   (`start_all`, `log`).
//! - `args.rs`: the checks on arguments (time limits, VLANs, ports, impairments).
//! - `errors.rs`: errors to and from scripts, at the file:line:col of the failing call.
//! - `repl.rs`: statements evaluated one by one (`flotilla run`'s prompt).

mod args;
mod context;
mod engine;
mod errors;
mod global_api;
mod machine_api;
mod names;
pub mod repl;

pub(crate) use engine::{run, Stopped};

#[cfg(test)]
mod tests {
    const SOURCE: &str = include_str!("mod.rs");
    /// Where the functions are registered: every file of `global_api/` and of
    /// `machine_api/`.
    fn api_sources() -> String {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/script");
        let mut files = Vec::new();
        for api in ["global_api", "machine_api"] {
            for entry in std::fs::read_dir(dir.join(api)).unwrap() {
                files.push(entry.unwrap().path());
            }
        }
        files.sort();
        assert!(files.len() > 2, "{files:?}");
        files
            .iter()
            .map(|f| std::fs::read_to_string(f).unwrap())
            .collect()
    }
    /// The book's chapter with the script table.
    const BOOK: &str = include_str!("../../../docs/src/script-reference.md");

    fn table() -> String {
        SOURCE
            .lines()
            .filter_map(|l| l.strip_prefix("//! |"))
            .map(|l| format!("|{l}\n"))
            .collect()
    }

    #[test]
    fn the_books_script_table_is_this_modules_table() {
        let start =
            "<!-- script-api: generated from driver/src/script/mod.rs; a test checks it -->\n";
        let begin = BOOK
            .find(start)
            .expect("the chapter has the script-api marker")
            + start.len();
        let end = BOOK[begin..]
            .find("<!-- script-api end -->")
            .expect("the chapter has the end marker");
        assert_eq!(
            &BOOK[begin..begin + end],
            table(),
            "docs/src/script-reference.md's script table differs from driver/src/script/mod.rs; copy it over"
        );
    }

    #[test]
    fn every_registered_function_is_documented() {
        let table = table();
        let code = api_sources();
        let mut names: Vec<&str> = code
            .split("register_fn(")
            .skip(1)
            .filter_map(|rest| rest.trim_start().strip_prefix('"'))
            .filter_map(|rest| rest.split('"').next())
            .collect();
        // with_limit!(engine, ctx, "name", ...): the first string is the name.
        let limited: Vec<&str> = code
            .split("with_limit!(")
            .skip(1)
            .filter_map(|rest| rest.split('"').nth(1))
            .collect();
        assert_eq!(limited.len(), 12, "{limited:?}");
        names.extend(limited);
        names.extend(["wait_until_succeeds", "wait_until_fails", "name"]);
        for name in names {
            assert!(
                table.contains(&format!("{name}(")) || table.contains(&format!(".{name}`")),
                "`{name}` is registered for scripts but not in the API table"
            );
        }
    }
}

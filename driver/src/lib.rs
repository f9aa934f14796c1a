//! Flotilla's driver: starts QEMU machines from a [`Spec`], waits for the in-guest agent,
//! runs commands in the guests and test scripts against them, and cleans up.
//!
//! The same powers the `flotilla` binary has are here for `cargo test`:
//!
//! ```no_run
//! # async fn demo() -> Result<(), flotilla_driver::Error> {
//! use flotilla_driver::{Fleet, FleetOptions, Spec};
//!
//! let spec = Spec::parse("demo.toml".as_ref(), "[machines.machine]\nmemory = 256\n")?;
//! let fleet = Fleet::new(&spec, FleetOptions::new("flotilla-out/demo"))?;
//! let machine = fleet.machine("machine")?;
//! let kernel = machine.succeed("uname -r").await?;
//! assert!(kernel.contains("cloud"));
//! machine.fail("false").await?;
//! fleet.stop_all().await;
//! # Ok(()) }
//! ```
//!
//! A spec becomes a [`plan::Plan`] of plain values before anything runs: each
//! machine's resources and devices, the images to build, the ports and the VLANs; a
//! [`Fleet`] runs it, and each machine's QEMU command is a value made from it whose
//! snapshot identity leaves out what makes one machine differ from another.
//!
//! A machine with `packages`, `files`, `init` or `release` in the spec boots a Debian
//! image of that content and release (trixie by default, or bookworm) on that
//! release's cloud kernel, which [`Fleet::new`] builds first or takes from the cache
//! ([`debian::image`]).
//!
//! With [`FleetOptions::coverage`] (or the spec's `[coverage]`), every machine's
//! instrumented programs (gcov, LLVM) write their data to a coverage disk of their
//! own, and [`Fleet::finish_coverage`] ends them, reads the disks and makes one report
//! of all machines ([`coverage::report`]); [`run_test`] does it at the end of a test.
//!
//! Machines may have extra disks (blank, or overlays over an image, optionally with
//! injected I/O errors: [`spec::DiskSpec`]); [`FleetOptions::keep_state`] keeps them
//! for the next network.
//! [`repl`] evaluates script statements one by one against a running network (and tells
//! a whole statement from one that continues on the next line), and
//! [`debug::debug_test`] steps into a failed test with one; [`Log::divert`] lets a
//! prompt show the log above the line being typed, and [`control`] serves a run's
//! machines to other processes (`flotilla shell`).
//!
//! [`suite`] runs many specs at once within a budget of the host's memory and CPUs
//! (`flotilla test examples tests/specs`): discovery, partitions for CI machines,
//! retries, fail-fast, a live view, a summary and one JUnit report.
//!
//! Every child process dies with the driver, also when it is killed with SIGKILL; every
//! line of every console and of QEMU's stderr goes to the run's log directory. Every
//! test run ends with `report.html` there: the failure, a timeline of each machine's
//! steps, the logs and screenshots, on one page ([`run_test`]).
//!
//! # What it builds on
//!
//! The floors below it, each a crate of its own: `flotilla-image` (kernels, the
//! default initramfs, Debian images: re-exported as [`image`], [`debian`]),
//! `flotilla-coverage` (coverage data to reports, no VM: [`coverage`]),
//! `flotilla-report` (`report.html` from a log folder, and the folder's formats the
//! driver writes: `events.jsonl`, the restore mark), `flotilla-host` (processes, locks,
//! programs, the cache folder, escaping), and `flotilla-qmp`, `flotilla-vmnet`,
//! `flotilla-agent`.
//!
//! # Where things are
//!
//! A test checks that this list names every file of `src/` (and nothing else).
//!
//! - `lib.rs`: these docs and the re-exports.
//! - `fleet.rs`: [`Fleet`], the machines of a spec: its plan run, the machines made,
//!   booted and stopped together.
//! - `fleet_coverage.rs`: [`Fleet::finish_coverage`], a run's coverage at its end.
//! - `debian_machines.rs`: the Debian images of a plan's machines with `packages`,
//!   `files` or `init`, built (or taken from the cache) before anything boots.
//! - `plan/`: the spec as a plan of plain values, between the spec and the machines
//!   ([`plan`]). `mod.rs` (index), `machines.rs` ([`plan::Plan`]: each machine's
//!   resources and devices, the Debian images to build, the ports, the VLANs; read by
//!   the suite's budget and `--list`), `ports.rs` (the host ports forwarded: checked,
//!   picked), `boot_files.rs` (kernel, initramfs images, firmware, accelerator, and
//!   which each machine boots), `commands.rs` (a machine's QEMU command from the plan
//!   and the run's facts: folders, the vmnet plan, ports), `qemu_command.rs` (the
//!   command as a value: the hardware, in a snapshot's identity, apart from the
//!   instance, left out of it; the argument list of a start, its RAM backing and
//!   incoming state as inputs), `tests.rs` (commands and identities).
//! - `run.rs`: [`run_test`] (a whole test: the script on its own thread, bounded by
//!   the spec's timeout and Ctrl-C; one attempt of a suite's test; or, for
//!   [`debug::debug_test`], a failed script's machines and state kept) and
//!   [`retry`].
//! - `debug.rs`: [`debug::debug_test`], a test whose failure leaves its
//!   machines up with a prompt's session that goes on from the script's state.
//! - `junit.rs`: subtests and the JUnit XML report.
//! - `suite/`: many tests at once ([`suite`]). `mod.rs` (index), `discover.rs` (the
//!   specs under some paths, their ids and log folders), `partition.rs` (`--partition
//!   K/N` by a stable hash of the id), `budget.rs` (guest memory and CPUs: the host's
//!   budget, a test's cost), `runner.rs` (tests started as the budget allows, retries,
//!   fail-fast), `progress.rs` (the live view on a terminal, plain lines elsewhere),
//!   `verdicts.rs` (verdicts, attempts, the summary table), `junit.rs` (the suite's JUnit
//!   report), `index_page.rs` (the suite's `index.html`, linking each test's
//!   `report.html`), `list.rs` (`--list` as text or JSON).
//! - `fabric.rs`: the VLAN fabric: the vmnet plan, the switches, partitions, captures.
//! - `helper_watch.rs`: the deaths of the fabric's helper processes (switches, wire
//!   filters, captures, cables): a watcher each, and the calls a death fails.
//! - `conditions.rs`: polling conditions, checked between the steps of a test.
//! - `run_dir.rs`: the run's private socket directory, and removing those of killed runs.
//! - `host.rs`: host programs: QEMU and its qboot firmware.
//! - `accel.rs`: KVM where it really works, else TCG, and why.
//! - `snapshot_store.rs`: saved machine states in the cache, by identity; their
//!   `.meta` and the lock that makes concurrent saves save once.
//! - `log.rs`: the run log (terminal, `driver.log`, status line) and its steps
//!   ([`Log::step`]: boots, commands, waits, subtests, marks).
//! - `error.rs`: [`Error`], which errors are test failures, and an error with its causes
//!   as text ([`error::chain`]: the one place that renders a chain).
//! - `doctor.rs`: `flotilla doctor`'s checks, grouped by feature.
//! - `control.rs`: `flotilla run`'s control socket (`flotilla shell`).
//! - `terminal.rs`: the terminal's size (status lines, `flotilla shell`'s window).
//! - `http.rs`: a minimal HTTP GET to 127.0.0.1 for scripts.
//! - `ocr.rs`: text off a picture of a screen: the picture's variants, `tesseract`.
//! - `spec/`: the spec. `mod.rs` (index and the format's docs), `types.rs` (the checked
//!   form), `raw.rs` (the serde form, with spans), `parse.rs` (checks, with errors at
//!   file:line:col), `disks.rs` (disk tables), `debian.rs` (a Debian machine's
//!   packages, files and init), `forwards.rs` (each host port forwarded
//!   once), `names.rs` (name rules, reserved words).
//! - `machine/`: one [`Machine`]. `mod.rs` (index), `state.rs` (the type and a running
//!   machine's state), `config.rs` (what it starts with: its command from the plan),
//!   `boot.rs` (boot and readiness), `snapshot.rs` (starting from a saved state:
//!   identity, save, restore, re-identification),
//!   `snapshot_memory.rs` (the file-backed guest RAM of snapshot machines, shared by
//!   restored ones, and its copy into the store), `snapshot_disks.rs` (a snapshot's
//!   disks: saved, restored), `machine_id.rs` (the machine id of a restored machine
//!   with an image), `console.rs` (console
//!   and stderr readers), `events.rs` (the QMP event watcher: paused, panicked, agent
//!   gone), `evidence.rs` (what an error about a dead machine quotes), `agent.rs`
//!   (the connection to its agent, made again after a restart), `guest_net.rs` (the guest's network set-up),
//!   `network.rs` (its NICs from the host: links, impairments, forwards, captures),
//!   `disks.rs`, `commands.rs` (execute, succeed, fail, sessions), `waits.rs`,
//!   `copy.rs` (file copies), `coverage.rs` (its coverage disk and environment, ending
//!   its programs), `screen.rs` and `keys.rs` (screen and keyboard),
//!   `screen_text.rs` (the screen's text: by the agent, or by OCR; waiting for text),
//!   `power.rs` (shutdown, crash, reboot, stop), `command_text.rs` (command lines'
//!   text: `/bin/sh` quoting, output tails).
//! - `agent_client/`: the host's side of the in-guest agents (the agent itself is the
//!   `flotilla-agent` crate). `mod.rs` (index), `codec.rs` (the one
//!   frame codec over `flotilla_agent::proto`), `connection.rs` (an agent connection),
//!   `exec.rs` (commands and sessions), `files.rs` (file transfers), `qga.rs` (the
//!   qemu-ga path), `channel.rs` (which agent a guest runs), `error.rs`.
//! - `world.rs`: what a script acts on (machines, fabric, conditions, the run's
//!   folder), in either language.
//! - `python/`: test scripts in Python, with NixOS's names. `mod.rs` (index and the
//!   protocol), `server.rs` (the script's process, its socket, the requests served,
//!   the verdict), `machine_calls.rs` and `run_calls.rs` (the calls of a machine and
//!   of the run), `args.rs` (a request's arguments), `package.rs` (the `flotilla`
//!   Python package carried in the binary).
//! - `script/`: test scripts in Rhai. `mod.rs` (index and the API table), `engine.rs`
//!   (the engine and a script run), `context.rs` (what the API functions share),
//!   `machine_api/` (the methods of `Machine`: `machine_api/mod.rs`, then a file per
//!   topic: `machine_api/commands.rs`, `machine_api/waits.rs`, `machine_api/files.rs`,
//!   `machine_api/screen.rs`, `machine_api/network.rs`), `global_api/` (the functions
//!   that act on the whole run: `global_api/mod.rs` (`start_all`, `log`), then a file
//!   per topic: `global_api/subtests.rs`, `global_api/retry.rs`,
//!   `global_api/network.rs`, `global_api/conditions.rs`), `args.rs` (argument checks),
//!   `names.rs` (names checked before a run), `errors.rs` (script errors and their
//!   places), `repl.rs` (the prompt's statement reader).

mod accel;
mod conditions;
pub mod control;
pub use flotilla_coverage as coverage;
mod agent_client;
mod debian_machines;
pub mod debug;
pub mod doctor;
pub mod error;
mod fabric;
mod fleet;
mod fleet_coverage;
mod helper_watch;
mod host;
pub mod http;
pub use flotilla_host::arch::{self, Arch};
pub use flotilla_image as image;
mod junit;
mod log;
mod machine;
mod ocr;
pub mod plan;
mod python;
mod run;
mod run_dir;
mod script;
pub mod snapshot_store;
pub mod spec;
pub mod suite;
pub mod terminal;
mod world;

pub use accel::{detect as detect_accel, detect_for as detect_accel_for, Accel, AccelChoice};
pub use agent_client::{AgentError, AgentKind, ExecEvent, ExecSession, GuestError};
pub use error::Error;
pub use fleet::{Fleet, FleetOptions};
pub use flotilla_image::agent_binary;
pub use flotilla_report::write_unfinished as write_unfinished_report;
pub use host::{
    qboot_firmware, qemu_binary, qemu_support, qemu_version_number, QemuSupport, OLDEST_QEMU,
    TESTED_QEMU,
};
pub use image::{debian, vmlinux};
pub use junit::{junit_xml, Subtest};
pub use log::{Diverted, Log};
pub use machine::{CommandResult, Machine, ScreenReader, ScreenText, StartKind};
pub use run::{retry, run_test};
pub use script::repl;
pub use spec::{MachineSpec, Spec};

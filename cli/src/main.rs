//! `flotilla`: start networks of QEMU machines from a spec and run tests against them.

mod agent;
mod debug;
mod repl;
mod shell;
mod suite;
mod terminal;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use flotilla_driver::control::ControlSocket;
use flotilla_driver::{doctor, run_test, Error, Fleet, FleetOptions, Spec};

use crate::repl::Interrupts;

/// Exit status when the test ran and failed.
pub(crate) const EXIT_FAILED: u8 = 1;
/// Exit status when the test could not run: bad spec or script syntax, missing set-up.
pub(crate) const EXIT_ERROR: u8 = 2;
/// Exit status after Ctrl-C.
const EXIT_INTERRUPTED: u8 = 130;

#[derive(Debug, Parser)]
#[command(
    name = "flotilla",
    version,
    about = "Start networks of QEMU virtual machines from a spec and run tests against them",
    after_help = "Exit status of `test`: 0 passed, 1 failed, 2 could not run (bad spec, \
                  script syntax, missing set-up), 130 interrupted. Of `shell`: the remote \
                  command's, 255 when flotilla itself fails.\n\
                  Environment: FLOTILLA_CACHE (kernel and image cache), FLOTILLA_ACCEL=kvm|tcg, \
                  FLOTILLA_DEBIAN_MIRROR (the mirror Debian images are built from), \
                  FLOTILLA_QEMU, FLOTILLA_AGENT, FLOTILLA_BUSYBOX, FLOTILLA_KERNEL_DIR, \
                  RUST_LOG (internal tracing)."
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Boot the spec's machines, run its test script, and stop them; exit 0 if it passed
    /// (several specs: a suite, see below).
    ///
    /// Machines with `packages`, `files` or `init` boot a Debian image of that content,
    /// built first (with a line per step) or taken from the cache.
    ///
    /// Several paths, or a folder without `flotilla.toml` (searched for them), make a
    /// suite: its tests run at once as far as a budget of guest memory and CPUs allows
    /// (from the host's available memory and cores, or --jobs and --max-memory), each
    /// logging to its own folder under --out. A terminal shows every running test with
    /// its state; elsewhere a line tells when a test starts and ends. A summary table
    /// and the failures' errors close the run. Exit status: 2 if a test could not run,
    /// else 1 if one failed.
    Test {
        /// Spec files, folders holding `flotilla.toml`, or folders to search for them.
        #[arg(required = true, value_name = "SPEC")]
        spec: Vec<PathBuf>,
        /// Log folder (report.html, driver.log, events.jsonl, <machine>/console.log,
        /// <machine>/qemu.log); default flotilla-out/<test name>. Emptied at the start.
        /// For a suite: the folder of the tests' folders and index.html, default
        /// flotilla-out.
        #[arg(long)]
        out: Option<PathBuf>,
        /// Only print the result and errors; the log folder still gets everything.
        #[arg(short, long)]
        quiet: bool,
        /// Write a JUnit XML report here (a test case per subtest; for a suite, a test
        /// suite per spec with a test case per subtest and one for the whole test).
        #[arg(long, value_name = "FILE")]
        junit: Option<PathBuf>,
        #[command(flatten)]
        suite: suite::SuiteArgs,
        /// Collect coverage data from every machine's instrumented programs (gcov,
        /// LLVM) and report it: <out>/coverage/index.html, a tracefile per machine,
        /// combined.info, and a table at the end.
        #[arg(long)]
        coverage: bool,
        /// With --coverage: fail a passing test whose combined line coverage is under
        /// PERCENT.
        #[arg(long, value_name = "PERCENT", value_parser = percent)]
        coverage_fail_under: Option<f64>,
        /// If the script fails (an error, the timeout, a polling condition), keep the
        /// machines up: print the error and the failing line, how to reach the machines
        /// (`flotilla shell`), and open `flotilla run`'s prompt with the script's
        /// variables; Ctrl-D stops them. Without a terminal on stdin, wait for SIGTERM
        /// instead of a prompt. The exit status stays the test's.
        #[arg(long)]
        debug: bool,
        #[command(flatten)]
        state: StateArgs,
    },
    /// Boot the spec's machines, print how to reach them, and read script statements
    /// (`server.succeed("uname -a")`) until end of input (Ctrl-D) or SIGTERM.
    ///
    /// Debian machines (`packages`, `files`, `init`) get their image built first, or
    /// from the cache, as with `test`.
    ///
    /// A statement may take several lines: an open block, string or parenthesis reads
    /// on. At a terminal the prompt has line editing and a history file
    /// ($XDG_STATE_HOME/flotilla/history), and prints the log above itself; Ctrl-C
    /// cancels the statement being typed or run. Any other stdin is read a statement at
    /// a time. Meanwhile `flotilla shell <machine>` reaches the machines through a
    /// control socket in $XDG_RUNTIME_DIR/flotilla (else /tmp/flotilla-<uid>).
    Run {
        /// A spec file, or a folder holding `flotilla.toml`.
        spec: PathBuf,
        /// Log folder; default flotilla-out/<test name>.
        #[arg(long)]
        out: Option<PathBuf>,
        #[command(flatten)]
        state: StateArgs,
        /// Do not read stdin: keep the machines up until Ctrl-C or SIGTERM (for a run in
        /// the background).
        #[arg(long)]
        no_repl: bool,
    },
    /// Open a shell (or run COMMAND) in a machine of a live `flotilla run`; exit with
    /// its status (255 when flotilla itself fails).
    ///
    /// With a terminal on stdin the shell gets one too (raw mode here, resized with
    /// the window); otherwise `/bin/sh` reads commands from stdin:
    /// `echo 'hostname; exit 3' | flotilla shell server`.
    Shell {
        /// The machine, as named in the spec.
        machine: String,
        /// Which run: the name `flotilla run` printed, or a control socket's path.
        /// Needed only when several runs are live.
        #[arg(long, value_name = "NAME")]
        run: Option<String>,
        /// Give the command a terminal even if stdin is not one (the end of piped input
        /// is typed as ^D).
        #[arg(short = 't', long, conflicts_with = "no_tty")]
        tty: bool,
        /// Never give the command a terminal.
        #[arg(short = 'T', long)]
        no_tty: bool,
        /// A command line to run instead of a shell.
        #[arg(last = true, value_name = "COMMAND")]
        command: Vec<String>,
    },
    /// Check what the host has and lacks; exit 1 if something required is missing.
    Doctor,
    /// List the saved machine states (machines start from them unless `snapshot =
    /// false` or `--no-snapshot`) with their sizes, most recently used first; `--clear`
    /// removes them all.
    Snapshots {
        /// Remove every saved state (a state a run is saving now is left).
        #[arg(long)]
        clear: bool,
    },
    /// Draw report.html for the log folder of a run that did not finish (its driver was
    /// killed before it could write it), from its events.jsonl and logs, with the verdict
    /// "did not finish"; prints its path. A folder with a report.html keeps it.
    Report {
        /// The run's log folder (what `flotilla test --out` named).
        #[arg(value_name = "LOG_DIR")]
        dir: PathBuf,
    },
    /// Build a disk image for `image = "FILE"` in a spec; prints its path.
    Image {
        #[command(subcommand)]
        kind: ImageKind,
    },
    /// The static in-guest agent this binary carries, for an image of your own.
    Agent {
        #[command(subcommand)]
        action: AgentAction,
    },
}

#[derive(Debug, Subcommand)]
enum AgentAction {
    /// Install the agent into a guest's root tree as a service: the binary as
    /// /usr/local/bin/flotilla-agent, an enabled systemd unit, and an init script for
    /// OpenRC (when the tree has it) or sysvinit. Needs neither root nor a chroot.
    Install {
        /// The root of the guest's file system tree.
        #[arg(long, value_name = "DIR")]
        root: PathBuf,
    },
    /// Write the agent binary (static, x86_64) to a file; prints its path.
    Extract {
        /// The file to write (mode 0755).
        #[arg(short, long, value_name = "FILE")]
        output: PathBuf,
    },
}

#[derive(Debug, clap::Args)]
struct StateArgs {
    /// Keep machine disks (an image's overlay, extra disks) in DIR/<machine>/ and reuse
    /// them in later runs with the same DIR, instead of fresh disks deleted at the end.
    /// Delete the folder to start afresh.
    #[arg(long, value_name = "DIR")]
    keep_state: Option<PathBuf>,
    /// Boot every machine, even those that would start from a saved, booted state
    /// (by default the first run of a machine saves its state once its agent is
    /// ready and later runs restore it; `flotilla snapshots` lists them).
    #[arg(long)]
    no_snapshot: bool,
}

#[derive(Debug, Subcommand)]
enum ImageKind {
    /// A Debian bookworm image (debootstrap minbase, an init system, the agent as its
    /// service). Built in, or taken from, the cache that the spec's Debian machines
    /// use (keyed by content and the mirror's index), then copied to FILE.
    Debian {
        /// The init system: systemd (systemd-sysv), sysvinit (sysvinit-core, sysv-rc),
        /// openrc (Debian's openrc, started by sysvinit) or agent (no service manager:
        /// the agent is PID 1, for machines that only need the userland).
        #[arg(
            long,
            default_value = "systemd",
            value_name = "systemd|sysvinit|openrc|agent"
        )]
        init: flotilla_driver::debian::Init,
        /// Packages to add, comma-separated (on top of iproute2, procps, kmod, udev
        /// and the init's): names, or local .deb files (paths ending in .deb).
        #[arg(long, value_delimiter = ',')]
        packages: Vec<String>,
        /// File system size in MiB; default: the tree plus 512 MiB free.
        #[arg(long)]
        size: Option<u64>,
        /// The qcow2 image to write.
        #[arg(short, long)]
        output: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // What the user reads is the run's log, with its machines named. The libraries'
    // own diagnostics (tracing) are for RUST_LOG=flotilla_driver=debug and the like,
    // in colour only on a terminal that allows it.
    let colour = std::io::IsTerminal::is_terminal(&std::io::stderr())
        && std::env::var_os("NO_COLOR").is_none();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "off".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(colour)
        .init();
    match cli.command {
        Cmd::Doctor => run_doctor(),
        Cmd::Snapshots { clear } => snapshots(clear),
        Cmd::Report { dir } => unfinished_report(&dir),
        Cmd::Agent {
            action: AgentAction::Install { root },
        } => agent::install(&root),
        Cmd::Agent {
            action: AgentAction::Extract { output },
        } => agent::extract(&output),
        Cmd::Image {
            kind:
                ImageKind::Debian {
                    init,
                    packages,
                    size,
                    output,
                },
        } => {
            let options = flotilla_driver::debian::DebianOptions {
                init,
                packages,
                size_mib: size,
                output,
            };
            match flotilla_driver::debian::build(&options, |line| eprintln!("{line}")) {
                Ok(path) => {
                    println!("{}", path.display());
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    print_chain(&e);
                    // Building an image runs no test: any failure means "could not run".
                    ExitCode::from(EXIT_ERROR)
                }
            }
        }
        Cmd::Test {
            spec: paths,
            out,
            quiet,
            junit,
            suite,
            coverage,
            coverage_fail_under,
            debug,
            state,
        } if suite::is_suite(&paths, &suite) => {
            if debug {
                eprintln!(
                    "error: --debug steps into one test: name a single spec, without --retries, --partition or --list"
                );
                return ExitCode::from(EXIT_ERROR);
            }
            with_runtime(|interrupts| {
                let mut fleet = FleetOptions::new(".");
                fleet.coverage = coverage;
                fleet.coverage_fail_under = coverage_fail_under;
                fleet.snapshot = !state.no_snapshot;
                fleet.keep_state = state.keep_state;
                suite::main(paths, out, quiet, junit, suite, fleet, interrupts.all)
            })
        }
        Cmd::Test {
            spec: paths,
            out,
            quiet,
            junit,
            suite: _,
            coverage,
            coverage_fail_under,
            debug,
            state,
        } => with_runtime(|interrupts| async move {
            let spec = match Spec::load(&paths[0]) {
                Ok(s) => s,
                Err(e) => return cannot_run(&e),
            };
            let mut options = FleetOptions::new(out_dir(out, &spec));
            options.terminal = !quiet;
            options.junit = junit;
            options.keep_state = state.keep_state;
            options.coverage = coverage;
            options.coverage_fail_under = coverage_fail_under;
            options.snapshot = !state.no_snapshot;
            let log_dir = options.log_dir.clone();
            let result = if debug {
                debug::run_test(&spec, options, &interrupts).await
            } else {
                run_test(&spec, options, interrupts.all.clone()).await
            };
            // Quiet runs print no table: the report's path at least.
            let coverage_report = log_dir.join("coverage/index.html");
            if quiet && coverage_report.is_file() {
                eprintln!("coverage report: {}", coverage_report.display());
            }
            match result {
                Ok(()) => {
                    eprintln!("PASSED: {} (logs in {})", spec.name, log_dir.display());
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    let code = report(&e);
                    eprintln!("FAILED: {} (logs in {})", spec.name, log_dir.display());
                    code
                }
            }
        }),
        Cmd::Run {
            spec,
            out,
            state,
            no_repl,
        } => with_runtime(|interrupts| run_network(spec, out, state, no_repl, interrupts)),
        Cmd::Shell {
            machine,
            run,
            tty,
            no_tty,
            command,
        } => with_runtime(|interrupts| {
            let options = shell::Options {
                machine,
                run,
                tty: (tty || no_tty).then_some(tty),
                command,
            };
            shell::main(options, interrupts.all)
        }),
    }
}

/// `flotilla run`: boot, say how to reach the machines, serve the control socket and
/// the prompt until end of input or a signal, then stop everything.
async fn run_network(
    spec: PathBuf,
    out: Option<PathBuf>,
    state: StateArgs,
    no_repl: bool,
    interrupts: Interrupts,
) -> ExitCode {
    let cancel = interrupts.all.clone();
    let spec = match Spec::load(&spec) {
        Ok(s) => s,
        Err(e) => return cannot_run(&e),
    };
    let mut options = FleetOptions::new(out_dir(out, &spec));
    options.keep_state = state.keep_state;
    options.snapshot = !state.no_snapshot;
    let net = match Fleet::new(&spec, options) {
        Ok(n) => n,
        Err(e) => return report(&e),
    };
    let control = match ControlSocket::bind(&spec.name) {
        Ok(c) => c,
        Err(e) => return report(&e),
    };
    let started = tokio::select! {
        r = net.start_all() => r,
        _ = cancel.cancelled() => Err(Error::Interrupted),
    };
    if let Err(e) = started {
        net.stop_all().await;
        return report(&e);
    }
    print_access(&net, &control);
    let interactive = !no_repl && repl::interactive();
    // Whatever the prompt does to the terminal is undone on the way out.
    let _terminal = interactive.then(|| terminal::Saved::new(0).ok()).flatten();
    let (done_tx, done_rx) = tokio::sync::oneshot::channel::<()>();
    if no_repl {
        eprintln!("Press Ctrl-C to stop the machines.");
    } else {
        if interactive {
            eprintln!("Type script statements (`{}.succeed(\"uname -a\")`); Ctrl-C cancels one, Ctrl-D stops the machines.", first_machine(&net));
        } else {
            eprintln!("Reading script statements from stdin; its end stops the machines.");
        }
        let repl = flotilla_driver::repl::Repl::new(&net, &spec, tokio::runtime::Handle::current());
        let interrupts = interrupts.clone();
        let log = net.log().clone();
        let spawned = std::thread::Builder::new()
            .name("flotilla-repl".into())
            .spawn(move || {
                repl::run(repl, &log, &interrupts);
                let _ = done_tx.send(());
            });
        if let Err(source) = spawned {
            net.stop_all().await;
            return report(&Error::Io {
                what: "starting the prompt's thread".into(),
                source,
            });
        }
    }
    tokio::select! {
        () = control.serve(net.machines().clone(), net.log().clone()) => {}
        _ = cancel.cancelled() => {}
        _ = done_rx, if !no_repl => {}
    }
    // The sessions ended with `serve`; the prompt's thread stops at its next line (a
    // line it is running was cancelled with `cancel`).
    cancel.cancel();
    drop(control);
    eprintln!("stopping");
    // A spec with `[coverage] enabled = true`: the session's coverage, as a test's.
    net.finish_coverage().await;
    net.stop_all().await;
    ExitCode::SUCCESS
}

fn first_machine(net: &Fleet) -> &str {
    net.machines()
        .keys()
        .next()
        .map_or("machine", String::as_str)
}

/// Says how to reach each machine: `flotilla shell` and the forwarded ports.
fn print_access(net: &Fleet, control: &ControlSocket) {
    eprintln!(
        "all {} machine(s) are up; logs in {}",
        net.machines().len(),
        net.log().dir().display()
    );
    // `--run` only when `flotilla shell` could not tell this run from another.
    let alone = flotilla_driver::control::find_run(None).is_ok_and(|p| p == control.path());
    let run = if alone {
        String::new()
    } else {
        format!(" --run {}", control.name())
    };
    let width = net.machines().keys().map(String::len).max().unwrap_or(0);
    for (name, machine) in net.machines() {
        let mut line = format!("  {name:width$}  flotilla shell{run} {name}");
        for (host, guest) in machine.forwards() {
            line.push_str(&format!("  127.0.0.1:{host} -> guest:{guest}"));
        }
        eprintln!("{line}");
    }
    eprintln!("control socket: {}", control.path().display());
}

fn out_dir(out: Option<PathBuf>, spec: &Spec) -> PathBuf {
    out.unwrap_or_else(|| PathBuf::from("flotilla-out").join(&spec.name))
}

/// Runs `f` on a runtime with a token cancelled by SIGTERM, and by Ctrl-C unless a
/// prompt line is running (then Ctrl-C cancels only that line).
fn with_runtime<F, Fut>(f: F) -> ExitCode
where
    F: FnOnce(Interrupts) -> Fut,
    Fut: std::future::Future<Output = ExitCode>,
{
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: starting the async runtime: {e}");
            return ExitCode::from(EXIT_ERROR);
        }
    };
    runtime.block_on(async {
        let interrupts = Interrupts::default();
        let cancel = interrupts.all.clone();
        let planned = interrupts.clone();
        let i = interrupts.clone();
        tokio::spawn(async move {
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
            loop {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {
                        if i.interrupt_line() {
                            continue;
                        }
                    }
                    _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending().await } } => {}
                }
                break;
            }
            eprintln!("interrupted: stopping machines");
            i.all.cancel();
        });
        let code = f(interrupts).await;
        if cancel.is_cancelled() && code != ExitCode::SUCCESS && !planned.stop_expected() {
            return ExitCode::from(EXIT_INTERRUPTED);
        }
        code
    })
}

/// Prints the error and its chain of causes once; returns the exit status for it.
/// `flotilla report LOG_DIR`.
fn unfinished_report(dir: &Path) -> ExitCode {
    let page = dir.join("report.html");
    if page.is_file() {
        println!("{} (the run's own)", page.display());
        return ExitCode::SUCCESS;
    }
    if !dir.join("driver.log").is_file() && !dir.join("events.jsonl").is_file() {
        eprintln!(
            "error: {} is not a run's log folder: no driver.log or events.jsonl",
            dir.display()
        );
        return ExitCode::from(EXIT_ERROR);
    }
    match flotilla_driver::write_unfinished_report(dir) {
        Ok(path) => {
            println!("{}", path.display());
            ExitCode::SUCCESS
        }
        Err(e) => report(&e.into()),
    }
}

fn report(e: &Error) -> ExitCode {
    print_chain(e);
    match e {
        Error::Interrupted => ExitCode::from(EXIT_INTERRUPTED),
        e if e.is_test_failure() => ExitCode::from(EXIT_FAILED),
        _ => ExitCode::from(EXIT_ERROR),
    }
}

/// Prints an error that kept the machines from starting at all (a spec that cannot be
/// read is one, whatever the reason); returns 2.
pub(crate) fn cannot_run(e: &Error) -> ExitCode {
    print_chain(e);
    ExitCode::from(EXIT_ERROR)
}

/// Prints the error and its chain of causes.
pub(crate) fn print_chain(e: &dyn std::error::Error) {
    eprintln!("{}", flotilla_driver::error::printed(e));
}

/// `flotilla snapshots [--clear]`.
fn snapshots(clear: bool) -> ExitCode {
    use flotilla_driver::snapshot_store;
    let mib = |bytes: u64| bytes as f64 / f64::from(1 << 20);
    if clear {
        return match snapshot_store::clear() {
            Ok((count, bytes)) => {
                println!("removed {count} saved state(s), {:.0} MiB", mib(bytes));
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: clearing the saved states: {e}");
                ExitCode::from(EXIT_FAILED)
            }
        };
    }
    let saved = snapshot_store::list();
    if saved.is_empty() {
        println!("no saved states");
        return ExitCode::SUCCESS;
    }
    let now = std::time::SystemTime::now();
    for s in &saved {
        let age = now.duration_since(s.used).unwrap_or_default().as_secs();
        println!(
            "{:5.0} MiB on disk, {:4.0} apparent  used {:>6} ago  saved by `{}`  {}",
            mib(s.bytes),
            mib(s.apparent_bytes),
            human_age(age),
            s.machine.as_deref().unwrap_or("?"),
            s.file.display()
        );
    }
    let total: u64 = saved.iter().map(|s| s.bytes).sum();
    println!(
        "{} saved state(s), {:.0} MiB on disk",
        saved.len(),
        mib(total)
    );
    ExitCode::SUCCESS
}

/// `90` -> `1m`, `7200` -> `2h`.
fn human_age(secs: u64) -> String {
    match secs {
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m", s / 60),
        s if s < 86400 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86400),
    }
}

fn run_doctor() -> ExitCode {
    let mut missing = 0;
    let mut group = None;
    for check in doctor::checks() {
        if group != Some(check.group) {
            println!("{}:", check.group);
            group = Some(check.group);
        }
        let mark = if check.ok { "ok  " } else { "MISSING" };
        println!("{mark:8}{:12}{}", check.name, check.detail);
        if let Some(hint) = check.hint {
            println!("{:20}hint: {hint}", "");
        }
        missing += usize::from(!check.ok);
    }
    if missing > 0 {
        println!("{missing} requirement(s) missing");
        ExitCode::from(EXIT_FAILED)
    } else {
        println!("all requirements are met");
        ExitCode::SUCCESS
    }
}

/// A percentage from 0 to 100 (`--coverage-fail-under`).
fn percent(text: &str) -> Result<f64, String> {
    match text.trim_end_matches('%').parse::<f64>() {
        Ok(p) if (0.0..=100.0).contains(&p) => Ok(p),
        _ => Err(format!("`{text}` is not a percentage from 0 to 100")),
    }
}

//! `flotilla`: start networks of QEMU machines from a spec and run tests against them.
//!
//! This file holds the command line (its `--help` text) and hands each command to its
//! file: `test.rs` (one spec; `suite.rs` for several, `debug.rs` for `--debug`),
//! `run.rs` (with `repl.rs`, the prompt), `shell.rs`, `doctor.rs`, `snapshots.rs`,
//! `unfinished_report.rs` (`flotilla report`), `image.rs`, `agent.rs`; `terminal.rs`
//! saves and restores the terminal's mode.

mod agent;
mod debug;
mod doctor;
mod image;
mod repl;
mod run;
mod shell;
mod snapshots;
mod suite;
mod terminal;
mod test;
mod unfinished_report;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use flotilla_driver::{Error, Spec};

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
    Test(test::TestArgs),
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
        /// The guest's architecture: x86_64 or aarch64 (or Debian's names, amd64 and
        /// arm64); default: the host's.
        #[arg(long, value_name = "ARCH", value_parser = agent::parse_arch)]
        arch: Option<&'static flotilla_driver::Arch>,
    },
    /// Write the static agent binary for the host's architecture (or --arch's) to a
    /// file; prints its path.
    Extract {
        /// The file to write (mode 0755).
        #[arg(short, long, value_name = "FILE")]
        output: PathBuf,
        /// The guest's architecture: x86_64 or aarch64 (or Debian's names, amd64 and
        /// arm64); default: the host's.
        #[arg(long, value_name = "ARCH", value_parser = agent::parse_arch)]
        arch: Option<&'static flotilla_driver::Arch>,
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
    /// A Debian image (debootstrap minbase of a release, an init system, the agent as its
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
        /// The Debian release: trixie (Debian 13, the default) or bookworm (Debian 12).
        /// Its cloud kernel's modules go into the image.
        #[arg(long, default_value = "trixie", value_name = "trixie|bookworm")]
        release: flotilla_driver::debian::Release,
        /// The architecture: x86_64 or aarch64; default the host's. Another one's
        /// programs run in a short-lived VM of it (or through qemu-user, when the host
        /// has it registered with binfmt_misc).
        #[arg(long, value_name = "x86_64|aarch64", value_parser = parse_arch)]
        arch: Option<&'static flotilla_driver::Arch>,
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

/// `--arch NAME`: an architecture's own name or Debian's.
fn parse_arch(name: &str) -> Result<&'static flotilla_driver::Arch, String> {
    flotilla_driver::Arch::named(name).ok_or_else(|| {
        format!(
            "unknown architecture `{name}`: images can be {}",
            flotilla_driver::Arch::names()
        )
    })
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing();
    match cli.command {
        Cmd::Doctor => doctor::main(),
        Cmd::Snapshots { clear } => snapshots::main(clear),
        Cmd::Report { dir } => unfinished_report::main(&dir),
        Cmd::Agent {
            action: AgentAction::Install { root, arch },
        } => agent::install(&root, arch.unwrap_or(flotilla_driver::Arch::host())),
        Cmd::Agent {
            action: AgentAction::Extract { output, arch },
        } => agent::extract(&output, arch.unwrap_or(flotilla_driver::Arch::host())),
        Cmd::Image {
            kind:
                ImageKind::Debian {
                    init,
                    release,
                    arch,
                    packages,
                    size,
                    output,
                },
        } => image::debian(
            init,
            release,
            arch.unwrap_or_else(flotilla_driver::Arch::host),
            packages,
            size,
            output,
        ),
        Cmd::Test(args) => test::main(args),
        Cmd::Run {
            spec,
            out,
            state,
            no_repl,
        } => with_runtime(|interrupts| run::main(spec, out, state, no_repl, interrupts)),
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

/// What the user reads is the run's log, with its machines named. The libraries' own
/// diagnostics (tracing) are for RUST_LOG=flotilla_driver=debug and the like, in colour
/// only on a terminal that allows it.
fn init_tracing() {
    let colour = std::io::IsTerminal::is_terminal(&std::io::stderr())
        && std::env::var_os("NO_COLOR").is_none();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "off".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(colour)
        .init();
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
fn exit_for(e: &Error) -> ExitCode {
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

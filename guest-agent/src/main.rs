//! `flotilla-agent`: the in-guest agent of Flotilla.
//!
//! Runs as the guest's init (PID 1, e.g. `/init` of an initramfs) or as a service of a
//! full distribution. It opens the virtio-serial port named
//! [`flotilla_agent::proto::PORT_NAME`], prints the readiness line on the serial
//! console and serves the protocol described in [`flotilla_agent::proto`].

mod exec;
mod files;
mod install;
mod net;
mod outbox;
mod pid1;
mod registry;
mod screen;
mod server;
mod sys;
mod threads;

use std::process::ExitCode;

const USAGE: &str = "\
usage: flotilla-agent                     serve the agent port (as PID 1 or as a service)
       flotilla-agent install --root DIR [--binary FILE]
                                          install the agent (this one, or the agent binary
                                          FILE, e.g. another architecture's), a systemd
                                          unit and an init script into DIR
       flotilla-agent --version";

fn main() -> ExitCode {
    let pid1 = sys::getpid() == 1;
    std::panic::set_hook(Box::new(move |info| {
        console!("panic: {}", info.to_string().replace('\n', " "));
        if pid1 {
            // Dying as PID 1 panics the kernel; power off cleanly instead.
            pid1::final_reboot(false);
        }
    }));
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    if !pid1 {
        match args.as_slice() {
            [] | ["serve"] => {}
            ["--version"] | ["-V"] => {
                println!("flotilla-agent {}", env!("CARGO_PKG_VERSION"));
                return ExitCode::SUCCESS;
            }
            ["--help"] | ["-h"] => {
                println!("{USAGE}");
                return ExitCode::SUCCESS;
            }
            ["install", rest @ ..] => return install::main(rest),
            _ => {
                eprintln!("flotilla-agent: unexpected arguments {args:?}\n{USAGE}");
                return ExitCode::from(2);
            }
        }
    }
    // Kernel-passed arguments to init are ignored.
    serve(pid1)
}

fn serve(pid1: bool) -> ExitCode {
    sys::tune_malloc();
    // Pipes must never land on 0/1/2 (the child's dup2 would then be a no-op).
    sys::ensure_std_fds();
    if let Err(e) = sys::setup_signals() {
        console!("setting up signal handling: {e}");
    }
    if pid1 {
        pid1::init();
        // Test hook (documented in README.md, "As PID 1"): the VM test
        // `panic_of_pid1_powers_off` boots with `flotilla.agent_selftest=panic` to check
        // that a panic of PID 1 is printed and powers off. It acts only on that exact
        // word of the kernel command line, which only the host's QEMU command (`-append`)
        // sets at boot: the driver never adds it and nothing in the guest can.
        let cmdline = std::fs::read_to_string("/proc/cmdline").unwrap_or_default();
        if cmdline
            .split_whitespace()
            .any(|w| w == "flotilla.agent_selftest=panic")
        {
            panic!("self-test panic requested on the kernel command line");
        }
    }
    if let Err(e) = threads::spawn("signals", move || signal_loop(pid1)) {
        return fatal(pid1, &format!("cannot start the signal thread: {e}"));
    }
    let port = server::open_port();
    let boot_ms = sys::uptime_ms();
    let shutdown: server::ShutdownFn = if pid1 {
        |reboot| pid1::power_off(reboot)
    } else {
        service_shutdown
    };
    let mut server = match server::Server::start(port, boot_ms, shutdown) {
        Ok(s) => s,
        Err(e) => return fatal(pid1, &format!("cannot start the port writer: {e}")),
    };
    server::announce_ready(boot_ms);
    server.serve()
}

fn fatal(pid1: bool, msg: &str) -> ExitCode {
    console!("fatal: {msg}");
    if pid1 {
        pid1::power_off(false);
    }
    ExitCode::FAILURE
}

/// The only place that reaps children, and the handler of termination signals.
fn signal_loop(pid1: bool) {
    loop {
        let sig = sys::wait_signal();
        match sig {
            libc::SIGCHLD => exec::reaper().reap(),
            libc::SIGTERM | libc::SIGPWR | libc::SIGUSR2 if pid1 => pid1::power_off(false),
            libc::SIGTERM | libc::SIGINT if !pid1 => {
                exec::reaper().kill_all();
                std::process::exit(0);
            }
            _ => {}
        }
    }
}

/// Shutdown request when running as a service: ask the real init to power off, through
/// systemctl only when systemd is PID 1 (`/run/systemd/system`, as `sd_booted` checks):
/// a Debian trixie tree of sysvinit or OpenRC has systemctl too (udev needs systemd's
/// package), and it refuses to work without systemd.
fn service_shutdown(reboot: bool) {
    let verb = if reboot { "reboot" } else { "poweroff" };
    let systemd = std::path::Path::new("/run/systemd/system").is_dir();
    let (systemctl, plain) = (["systemctl", verb], [verb]);
    let mut ways: Vec<&[&str]> = Vec::new();
    if systemd {
        ways.push(&systemctl);
    }
    ways.push(&plain);
    for argv in ways {
        if exec::spawn_detached(argv).is_ok() {
            return;
        }
    }
    console!("no systemctl or {verb} found; calling reboot(2) directly");
    pid1::final_reboot(reboot);
}

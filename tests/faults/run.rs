//! One run of the campaign: `flotilla test` of the three machines as a child process,
//! the fault injected (host faults when the script's cue line is in `driver.log`, plus
//! the seeded delay), and the wait for its end, bounded: a run still going at the bound
//! is a hang, and is killed.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::fault::{Fault, Kind, MACHINES};
use crate::procs;

/// How a run ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum End {
    Exited(i32),
    Signalled(i32),
    /// Still running at the bound (then killed).
    Hung,
}

pub struct Run {
    pub end: End,
    pub secs: f64,
    /// The terminal's output (`--quiet`: the result and the errors).
    pub output: String,
    pub out: PathBuf,
    /// What the campaign did, for the report (the pid it signalled, or why it did not).
    pub injected: Result<String, String>,
}

pub struct Setup<'a> {
    pub flotilla: &'a Path,
    pub spec: &'a Path,
    pub out: &'a Path,
    pub tmp: &'a Path,
    pub env: &'a [(&'static str, PathBuf)],
    pub bound: Duration,
}

/// Runs the test; `host_fault` is injected into it from here, `pre_injected` says what
/// was done before it (or that the script does it).
pub fn run(host_fault: Option<&Fault>, s: &Setup, pre_injected: Result<String, String>) -> Run {
    let _ = std::fs::remove_dir_all(s.out);
    std::fs::create_dir_all(s.out.parent().unwrap()).unwrap();
    let stdout_path = s.out.with_extension("stdout");
    let stdout = std::fs::File::create(&stdout_path).unwrap();
    let stderr = stdout.try_clone().unwrap();
    let start = Instant::now();
    let mut cmd = Command::new(s.flotilla);
    // SAFETY: prctl(2) only, between fork and exec: the run goes with the campaign
    // (SIGTERM: it stops its machines) if the campaign is killed.
    unsafe {
        use std::os::unix::process::CommandExt as _;
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
            Ok(())
        });
    }
    let mut child = cmd
        .arg("test")
        .arg(s.spec)
        .arg("--out")
        .arg(s.out)
        .arg("--quiet")
        .env("TMPDIR", s.tmp)
        .env("NO_COLOR", "1")
        .envs(s.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(stderr)
        .spawn()
        .expect("starting flotilla");
    let pid = child.id() as i32;
    let deadline = start + s.bound;
    let exited = |child: &mut std::process::Child| child.try_wait().ok().flatten();
    let mut status = None;
    let injected = if let Some(fault) = host_fault {
        // The cue: the script's log line, once every machine is up.
        let log = s.out.join("driver.log");
        loop {
            if let Some(st) = exited(&mut child) {
                status = Some(st);
                break Err("the run ended before the script's cue".to_owned());
            }
            if Instant::now() > deadline {
                break Err("no cue before the bound".to_owned());
            }
            if std::fs::read_to_string(&log)
                .map(|t| t.contains("FAULT-CUE"))
                .unwrap_or(false)
            {
                std::thread::sleep(Duration::from_millis(fault.delay_ms));
                break inject(fault, pid, &mut child);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    } else {
        pre_injected
    };
    let end = loop {
        if let Some(st) = status.take().or_else(|| exited(&mut child)) {
            use std::os::unix::process::ExitStatusExt;
            break match (st.code(), st.signal()) {
                (Some(code), _) => End::Exited(code),
                (None, Some(sig)) => End::Signalled(sig),
                _ => End::Exited(-1),
            };
        }
        if Instant::now() > deadline {
            // A hang: the driver and whatever of the run lives go.
            procs::signal(pid, libc::SIGKILL);
            for p in procs::naming(s.tmp) {
                procs::signal(p.pid, libc::SIGKILL);
            }
            let _ = child.wait();
            break End::Hung;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let secs = start.elapsed().as_secs_f64();
    Run {
        end,
        secs,
        output: std::fs::read_to_string(&stdout_path).unwrap_or_default(),
        out: s.out.to_path_buf(),
        injected,
    }
}

/// Sends the host fault to its process; what was done.
fn inject(fault: &Fault, driver: i32, child: &mut std::process::Child) -> Result<String, String> {
    let kids = procs::children(driver);
    let machine = fault.machine.unwrap_or("");
    let target = match fault.kind {
        Kind::KillDriver => {
            procs::signal(driver, libc::SIGKILL);
            return Ok(format!("SIGKILL to the driver, pid {driver}"));
        }
        Kind::KillQemu | Kind::StopQemu => procs::qemu(&kids, machine),
        Kind::KillSwitch => procs::switch(&kids),
        Kind::KillWirefilter => {
            let n = MACHINES.iter().position(|m| *m == machine).unwrap() + 1;
            procs::wirefilter(&kids, n)
        }
        _ => unreachable!("not a host fault"),
    };
    let Some(target) = target.cloned() else {
        return Err(format!(
            "no target process among the driver's {} children",
            kids.len()
        ));
    };
    if fault.kind == Kind::StopQemu {
        procs::signal(target.pid, libc::SIGSTOP);
        let until = Instant::now() + Duration::from_millis(fault.hold_ms);
        while Instant::now() < until && child.try_wait().ok().flatten().is_none() {
            std::thread::sleep(Duration::from_millis(20));
        }
        procs::signal(target.pid, libc::SIGCONT);
        return Ok(format!(
            "SIGSTOP, {} ms, SIGCONT to pid {}: {}",
            fault.hold_ms,
            target.pid,
            target.line()
        ));
    }
    if !procs::signal(target.pid, libc::SIGKILL) {
        return Err(format!("pid {} was gone: {}", target.pid, target.line()));
    }
    Ok(format!("SIGKILL to pid {}: {}", target.pid, target.line()))
}

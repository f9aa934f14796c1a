//! Processes of a run, found in `/proc`: the driver's children (QEMU, the VLAN's
//! switches and wire filters), and anything left of a run (a process whose command line
//! or environment names the run's private `TMPDIR`).

use std::path::Path;

#[derive(Clone, Debug)]
pub struct Proc {
    pub pid: i32,
    pub ppid: i32,
    pub args: Vec<String>,
}

impl Proc {
    pub fn line(&self) -> String {
        self.args.join(" ")
    }

    fn program(&self) -> &str {
        self.args
            .first()
            .map(|a| a.rsplit('/').next().unwrap_or(a))
            .unwrap_or("")
    }
}

fn read(pid: i32) -> Option<Proc> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // pid (comm) state ppid ...: comm may hold spaces and parentheses.
    let rest = &stat[stat.rfind(')')? + 2..];
    let ppid = rest.split(' ').nth(1)?.parse().ok()?;
    let raw = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let args = raw
        .split(|b| *b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    Some(Proc { pid, ppid, args })
}

/// The live processes under this campaign's root directory: a campaign in another
/// root (a chroot or container whose checkout has the same path) names the same
/// folders, and its processes are not this one's to signal.
pub fn all() -> Vec<Proc> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let root = |pid: &str| std::fs::read_link(format!("/proc/{pid}/root")).ok();
    let ours = root("self");
    entries
        .flatten()
        .filter(|e| e.file_name().to_str().is_some_and(|pid| root(pid) == ours))
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .filter_map(read)
        .collect()
}

/// The live children of `parent`.
pub fn children(parent: i32) -> Vec<Proc> {
    all().into_iter().filter(|p| p.ppid == parent).collect()
}

/// The QEMU of machine `name` among `procs`.
pub fn qemu<'a>(procs: &'a [Proc], name: &str) -> Option<&'a Proc> {
    let tag = format!("{name},process=flotilla-{name}");
    procs
        .iter()
        .find(|p| p.program().starts_with("qemu-system") && p.args.contains(&tag))
}

/// VLAN 1's switch.
pub fn switch(procs: &[Proc]) -> Option<&Proc> {
    procs.iter().find(|p| {
        p.program() == "vde_switch" && p.args.iter().any(|a| a.ends_with("/vlan1.switch"))
    })
}

/// The wire filter of machine number `n`'s link on VLAN 1.
pub fn wirefilter(procs: &[Proc], n: usize) -> Option<&Proc> {
    let mgmt = format!("/vlan1-m{n}.filter");
    procs
        .iter()
        .find(|p| p.program() == "wirefilter" && p.args.iter().any(|a| a.ends_with(&mgmt)))
}

/// Processes whose command line or environment names `dir` (the run's TMPDIR: every
/// child of the driver inherits it, and their sockets are in it).
pub fn naming(dir: &Path) -> Vec<Proc> {
    let needle = dir.to_string_lossy().into_owned();
    let me = std::process::id() as i32;
    all()
        .into_iter()
        .filter(|p| p.pid != me)
        .filter(|p| {
            p.args.iter().any(|a| a.contains(&needle))
                || std::fs::read(format!("/proc/{}/environ", p.pid))
                    .map(|env| {
                        env.split(|b| *b == 0)
                            .any(|kv| String::from_utf8_lossy(kv).contains(&needle))
                    })
                    .unwrap_or(false)
        })
        .collect()
}

pub fn signal(pid: i32, sig: i32) -> bool {
    // SAFETY: kill(2) with a pid this campaign's run started.
    unsafe { libc::kill(pid, sig) == 0 }
}

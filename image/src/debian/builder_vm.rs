//! The builder VM: runs the commands of a tree of another architecture (debootstrap's
//! second stage, apt-get and dpkg, update-rc.d, the agent's installer) inside a
//! short-lived VM of that architecture under TCG, so that the host never runs code of
//! the tree's architecture.
//!
//! The tree goes in as an ext4 disk (`mke2fs -d`, `/dev/vda`) and comes back as a tar
//! stream that the tree's own GNU tar writes onto a second, raw disk (`/dev/vdb`),
//! which the host unpacks in its place: no mount, no loop device on the host. The VM
//! boots the architecture's kernel directly, with an initramfs of its static busybox
//! and a `/init` script ([`BUILDER_INIT`]) that loads the disk's modules, mounts the
//! tree, runs the steps chrooted into it, writes it out and powers off. It has no
//! network: what the steps install was downloaded into the tree on the host first.
//! Its console (`quiet`: the script's and the steps' output) goes to the build's log
//! line by line; a failure names the step and quotes the console's last lines.

use std::io::Read as _;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::files::{create_dir, run, tool, tree_size, write_file};
use crate::error::Error;
use crate::kernel::Kernel;

/// A command run in the tree, as root, chrooted into it.
#[derive(Debug, Clone)]
pub(super) struct Step {
    /// What it does, for the log and errors ("apt-get install curl").
    pub what: String,
    /// The program and its arguments.
    pub argv: Vec<String>,
}

impl Step {
    pub(super) fn new(what: &str, argv: &[&str]) -> Step {
        Step {
            what: what.to_owned(),
            argv: argv.iter().map(|a| (*a).to_owned()).collect(),
        }
    }
}

/// Where the steps' script and files wait in the tree (removed before it is written
/// out).
pub(super) const BUILD_DIR: &str = "flotilla-build";

/// The modules the builder VM loads (dependencies are added): its two disks. ext4 is
/// built into Debian's cloud kernels.
const BUILDER_MODULES: &[&str] = &["virtio_pci", "virtio_blk"];

/// How long the VM may take: debootstrap's second stage under TCG on a busy host takes
/// minutes; this only stops a VM that hangs.
const TIMEOUT: Duration = Duration::from_secs(60 * 60);

/// The prefix of the lines the builder's `/init` writes on the console.
const SAY: &str = "flotilla-builder:";

/// The builder VM's `/init`. The steps are `/flotilla-build/steps.sh` in the tree.
pub const BUILDER_INIT: &str = r#"#!/bin/busybox sh
export PATH=/bin:/sbin:/usr/bin:/usr/sbin
busybox mount -t proc proc /proc
busybox mount -t sysfs sysfs /sys
busybox mount -t devtmpfs devtmpfs /dev
say() { echo "flotilla-builder: $*" > /dev/console; }
fail() { say "failed: $*"; busybox sync; busybox poweroff -f; }
while read -r m; do busybox insmod "$m" || fail "cannot load $m"; done < /etc/flotilla/modules
i=0
while [ ! -b /dev/vda ] || [ ! -b /dev/vdb ]; do
    i=$((i + 1)); [ $i -gt 1000 ] && fail "no disks /dev/vda and /dev/vdb after 10 s"
    busybox usleep 10000
done
t=/target
busybox mkdir -p $t
busybox mount -t ext4 -o rw /dev/vda $t || fail "cannot mount the tree (/dev/vda)"
for d in proc sys dev; do busybox mkdir -p $t/$d; done
busybox mount -t proc proc $t/proc
busybox mount -t sysfs sysfs $t/sys
busybox mount -t devtmpfs devtmpfs $t/dev
busybox mkdir -p $t/dev/pts
busybox mount -t devpts devpts $t/dev/pts
export HOME=/root LC_ALL=C.UTF-8 DEBIAN_FRONTEND=noninteractive DEBCONF_NONINTERACTIVE_SEEN=true
busybox chroot $t /bin/sh /flotilla-build/steps.sh < /dev/null > /dev/console 2>&1 ||
    fail "the steps exited with status $?"
# (Some steps, debootstrap's second stage, unmount what they mounted.)
for d in dev/pts dev sys proc; do
    busybox umount $t/$d 2>/dev/null || busybox umount -l $t/$d 2>/dev/null
done
busybox rm -rf $t/flotilla-build
say "writing the tree out"
busybox chroot $t tar --create --numeric-owner --xattrs '--xattrs-include=*' \
    --exclude=./lost+found --file=- --directory=/ . > /dev/vdb ||
    fail "writing the tree out (tar exited with status $?)"
busybox sync
busybox umount $t
say "done"
busybox poweroff -f
"#;

/// The steps' script: each step announced, run, and its failure named.
fn steps_script(steps: &[Step]) -> String {
    let mut script = String::from("#!/bin/sh\n# Written by flotilla's Debian image builder.\n");
    let n = steps.len();
    for (i, step) in steps.iter().enumerate() {
        let what = quote(&step.what);
        let argv: Vec<String> = step.argv.iter().map(|a| quote(a)).collect();
        script.push_str(&format!(
            "echo {SAY}' step {}/{n}: '{what}\n{} || {{ s=$?; echo {SAY}' step {}/{n} failed with status '$s': '{what}; exit $s; }}\n",
            i + 1,
            argv.join(" "),
            i + 1,
        ));
    }
    script.push_str(&format!("echo {SAY}' steps done'\n"));
    script
}

/// `arg` in single quotes for `sh`.
fn quote(arg: &str) -> String {
    format!("'{}'", arg.replace('\'', "'\\''"))
}

/// Runs `steps` in `tree` inside a VM of `kernel`'s architecture, then replaces the
/// tree with what the VM wrote out. `room_mib` is free space the steps need on top of
/// the tree (what apt unpacks). Files the steps need are put into `<tree>/flotilla-build`
/// by the caller beforehand. `log` gets the console's lines.
pub(super) fn run_steps(
    tree: &Path,
    work: &Path,
    kernel: &Kernel,
    steps: &[Step],
    room_mib: u64,
    log: &dyn Fn(&str),
) -> Result<(), Error> {
    let arch = kernel.arch;
    let started = Instant::now();
    let mke2fs = tool("mke2fs", "e2fsprogs")?;
    let qemu = arch
        .env("FLOTILLA_QEMU")
        .map(PathBuf::from)
        .map_or_else(|| tool(arch.qemu, arch.qemu_package), Ok)?;
    write_file(
        &tree.join(BUILD_DIR).join("steps.sh"),
        steps_script(steps).as_bytes(),
        0o755,
    )?;
    let vm = work.join("builder-vm");
    create_dir(&vm)?;
    let (disk, out) = make_disks(tree, &vm, room_mib, &mke2fs)?;
    let initramfs = crate::initramfs::builder_initramfs(kernel, BUILDER_INIT, BUILDER_MODULES)?;
    let console = vm.join("console.log");
    std::fs::File::create(&console).map_err(|source| Error::Io {
        what: format!("creating {}", console.display()),
        source,
    })?;
    let mut cmd = builder_command(&qemu, kernel, &initramfs, &console, [&disk, &out]);
    let child = cmd.spawn().map_err(|source| Error::Io {
        what: format!("starting {}", qemu.display()),
        source,
    })?;
    let mut vm_process = Vm { child };
    let status = watch(&mut vm_process, &console, log)?;
    let text = std::fs::read(&console).unwrap_or_default();
    let text = String::from_utf8_lossy(&text);
    if let Err(e) = outcome(&text, status) {
        let kept = keep_console(&console, arch.debian);
        return Err(match e {
            Error::Tool {
                what,
                status,
                mut output,
            } => {
                output.push(format!("(the whole console: {})", kept.display()));
                Error::Tool {
                    what: format!("the {} builder VM: {what}", arch.debian),
                    status,
                    output,
                }
            }
            other => other,
        });
    }
    replace_tree(tree, &out)?;
    let _ = std::fs::remove_dir_all(&vm);
    log(&format!(
        "debian: {} builder VM done in {:.1} s",
        arch.debian,
        started.elapsed().as_secs_f64()
    ));
    Ok(())
}

/// The VM's two sparse disks in `vm`: the tree as ext4 (with `room_mib` free for the
/// steps) and the raw disk the tree is written out to.
fn make_disks(
    tree: &Path,
    vm: &Path,
    room_mib: u64,
    mke2fs: &Path,
) -> Result<(PathBuf, PathBuf), Error> {
    // Both disks are sparse: only what is written takes room.
    let tree_mib = tree_size(tree)?.div_ceil(1 << 20);
    let size_mib = (tree_mib * 2 + room_mib + 1024).div_ceil(64) * 64;
    let disk = vm.join("tree.ext4");
    let out = vm.join("tree-out.tar");
    for (path, mib) in [(&disk, size_mib), (&out, size_mib)] {
        let file = std::fs::File::create(path).map_err(|source| Error::Io {
            what: format!("creating {}", path.display()),
            source,
        })?;
        file.set_len(mib << 20).map_err(|source| Error::Io {
            what: format!("sizing {}", path.display()),
            source,
        })?;
    }
    run(
        Command::new(mke2fs)
            .args(["-q", "-F", "-t", "ext4", "-E", "root_owner=0:0"])
            .arg("-d")
            .arg(tree)
            .arg(&disk),
        "mke2fs (the builder VM's disk)",
    )?;
    Ok((disk, out))
}

/// QEMU's command for the builder VM of `kernel`'s architecture: the kernel and
/// `initramfs`, the console into the file `console`, the two disks; QEMU dies with
/// this process.
fn builder_command(
    qemu: &Path,
    kernel: &Kernel,
    initramfs: &Path,
    console: &Path,
    disks: [&Path; 2],
) -> Command {
    let arch = kernel.arch;
    let mut cmd = Command::new(qemu);
    cmd.args(["-M", arch.machine, "-accel", "tcg", "-cpu", arch.tcg_cpu])
        .args(["-smp", "2", "-m", "1024"])
        .args(["-nodefaults", "-no-user-config", "-display", "none"])
        .args(["-no-reboot", "-serial"])
        .arg(format!("file:{}", console.display()))
        .arg("-kernel")
        .arg(&kernel.image)
        .arg("-initrd")
        .arg(initramfs)
        .arg("-append")
        .arg(format!("console={} quiet panic=-1", arch.console));
    for (id, path) in [("tree", disks[0]), ("out", disks[1])] {
        cmd.arg("-drive")
            .arg(format!(
                "file={},format=raw,if=none,id={id},cache=unsafe",
                path.display()
            ))
            .args(["-device", &format!("virtio-blk-pci,drive={id}")]);
    }
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    // SAFETY: prctl and getppid are async-signal-safe.
    let parent = std::process::id() as libc::pid_t;
    unsafe {
        cmd.pre_exec(move || {
            // QEMU dies with this process (a killed build leaves no VM behind).
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            if libc::getppid() != parent {
                return Err(std::io::Error::other("the builder exited during spawn"));
            }
            Ok(())
        });
    }
    cmd
}

/// Replaces `tree` with the tar stream the builder VM wrote to `out`.
fn replace_tree(tree: &Path, out: &Path) -> Result<(), Error> {
    // The tree, as the VM left it.
    std::fs::remove_dir_all(tree).map_err(|source| Error::Io {
        what: format!("removing {}", tree.display()),
        source,
    })?;
    create_dir(tree)?;
    run(
        Command::new("tar")
            .args(["--extract", "--numeric-owner", "--same-permissions"])
            .args(["--xattrs", "--xattrs-include=*"])
            .arg("--file")
            .arg(out)
            .arg("--directory")
            .arg(tree),
        "unpacking the tree the builder VM wrote",
    )?;
    Ok(())
}

/// QEMU, killed when dropped (on every error path).
struct Vm {
    child: Child,
}

impl Drop for Vm {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

/// Waits for QEMU to exit (at most [`TIMEOUT`]), passing its console's lines to `log`;
/// returns its exit status, or a description of why it was stopped.
fn watch(vm: &mut Vm, console: &Path, log: &dyn Fn(&str)) -> Result<Result<(), String>, Error> {
    let started = Instant::now();
    let mut file = std::fs::File::open(console).map_err(|source| Error::Io {
        what: format!("reading {}", console.display()),
        source,
    })?;
    let mut pending = Vec::new();
    let forward = |file: &mut std::fs::File, pending: &mut Vec<u8>| {
        let mut buf = Vec::new();
        let _ = file.read_to_end(&mut buf);
        pending.extend_from_slice(&buf);
        while let Some(end) = pending.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = pending.drain(..=end).collect();
            let line = String::from_utf8_lossy(&line);
            // Progress drawn over itself: its last state.
            let line = line.trim_end();
            let line = line.rsplit('\r').next().unwrap_or(line);
            if !line.is_empty() {
                log(&format!("debian: vm: {line}"));
            }
        }
    };
    loop {
        forward(&mut file, &mut pending);
        match vm.child.try_wait() {
            Ok(Some(status)) => {
                forward(&mut file, &mut pending);
                if status.success() {
                    return Ok(Ok(()));
                }
                let mut said = String::new();
                if let Some(mut err) = vm.child.stderr.take() {
                    let _ = err.read_to_string(&mut said);
                }
                return Ok(Err(format!(
                    "QEMU {}: {}",
                    flotilla_host::process::describe_status(status),
                    said.trim()
                )));
            }
            Ok(None) => {}
            Err(source) => {
                return Err(Error::Io {
                    what: "waiting for the builder VM".into(),
                    source,
                })
            }
        }
        if started.elapsed() > TIMEOUT {
            let _ = vm.child.kill();
            let _ = vm.child.wait();
            return Ok(Err(format!(
                "was stopped after {} minutes",
                TIMEOUT.as_secs() / 60
            )));
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// Whether the VM did it all, from its console and QEMU's exit: the error names the
/// step that failed (or the `/init`'s own failure) and quotes the console's end.
fn outcome(console: &str, qemu: Result<(), String>) -> Result<(), Error> {
    let said: Vec<&str> = console
        .lines()
        .filter_map(|l| l.trim().strip_prefix(SAY).map(str::trim))
        .collect();
    if said.last() == Some(&"done") && qemu.is_ok() {
        return Ok(());
    }
    let tail: Vec<String> = {
        let lines: Vec<&str> = console.lines().filter(|l| !l.trim().is_empty()).collect();
        lines[lines.len().saturating_sub(30)..]
            .iter()
            .map(|l| (*l).to_owned())
            .collect()
    };
    let failed_step = said
        .iter()
        .find(|l| l.starts_with("step ") && l.contains(" failed with status "));
    let last_step = said.iter().rev().find(|l| l.starts_with("step "));
    let failure = said.iter().rev().find_map(|l| l.strip_prefix("failed: "));
    let (what, status) = match (failed_step, failure, &qemu) {
        (Some(step), _, _) => {
            let (head, rest) = step
                .split_once(" failed with status ")
                .unwrap_or((step, ""));
            let (code, name) = rest.split_once(": ").unwrap_or((rest, ""));
            (
                format!("{} ({name})", head.trim()),
                format!("failed with status {code}"),
            )
        }
        (None, Some(why), _) => (
            last_step.map_or("its /init".to_owned(), |s| (*s).to_owned()),
            format!("failed: {why}"),
        ),
        (None, None, Err(why)) => (
            last_step.map_or("booting".to_owned(), |s| (*s).to_owned()),
            why.clone(),
        ),
        (None, None, Ok(())) => (
            last_step.map_or("booting".to_owned(), |s| (*s).to_owned()),
            "powered off before it was done".to_owned(),
        ),
    };
    Err(Error::Tool {
        what,
        status,
        output: tail,
    })
}

/// Keeps a failed VM's console beside the cache (the work folder is removed).
fn keep_console(console: &Path, arch: &str) -> PathBuf {
    let kept = flotilla_host::cache::cache_dir()
        .join("debian")
        .join(format!("builder-{arch}-failed.log"));
    match std::fs::copy(console, &kept) {
        Ok(_) => kept,
        Err(_) => console.to_path_buf(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_script_names_each_step_and_quotes_arguments() {
        let script = steps_script(&[
            Step::new(
                "debootstrap's second stage",
                &["/debootstrap/debootstrap", "--second-stage"],
            ),
            Step::new("a step", &["echo", "it's"]),
        ]);
        assert!(
            script.contains(
                "echo flotilla-builder:' step 1/2: ''debootstrap'\\''s second stage'\n\
                 '/debootstrap/debootstrap' '--second-stage' || "
            ),
            "{script}"
        );
        assert!(script.contains("'echo' 'it'\\''s' || "), "{script}");
        assert!(script.ends_with("echo flotilla-builder:' steps done'\n"));
    }

    #[test]
    fn the_outcome_names_the_failed_step() {
        assert!(outcome(
            "x\nflotilla-builder: steps done\nflotilla-builder: done\n",
            Ok(())
        )
        .is_ok());
        let console = "flotilla-builder: step 1/2: second stage\nI: ok\n\
                       flotilla-builder: step 2/2: apt-get install jq\nE: Unable to locate\n\
                       flotilla-builder: step 2/2 failed with status 100: apt-get install jq\n\
                       flotilla-builder: failed: the steps exited with status 100\n";
        let e = outcome(console, Ok(())).unwrap_err().to_string();
        assert!(
            e.contains("step 2/2 (apt-get install jq) failed with status 100"),
            "{e}"
        );
        assert!(e.contains("| E: Unable to locate"), "{e}");
        let e = outcome(
            "flotilla-builder: failed: cannot mount the tree (/dev/vda)\n",
            Ok(()),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("its /init failed: cannot mount the tree"), "{e}");
        let e = outcome(
            "flotilla-builder: step 1/1: second stage\n",
            Err("was stopped after 60 minutes".into()),
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("step 1/1: second stage was stopped after 60 minutes"),
            "{e}"
        );
    }
}

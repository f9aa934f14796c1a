//! Duties of the agent when it runs as the guest's init (PID 1).

use std::ffi::CString;
use std::io;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use crate::{exec, sys};

struct Mount {
    source: &'static str,
    target: &'static str,
    fstype: &'static str,
    flags: libc::c_ulong,
    data: &'static str,
}

const MOUNTS: &[Mount] = &[
    Mount {
        source: "proc",
        target: "/proc",
        fstype: "proc",
        flags: libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
        data: "",
    },
    Mount {
        source: "sysfs",
        target: "/sys",
        fstype: "sysfs",
        flags: libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
        data: "",
    },
    Mount {
        source: "devtmpfs",
        target: "/dev",
        fstype: "devtmpfs",
        flags: libc::MS_NOSUID,
        data: "mode=0755",
    },
    Mount {
        source: "devpts",
        target: "/dev/pts",
        fstype: "devpts",
        flags: libc::MS_NOSUID | libc::MS_NOEXEC,
        data: "gid=5,mode=0620,ptmxmode=0666",
    },
    Mount {
        source: "tmpfs",
        target: "/dev/shm",
        fstype: "tmpfs",
        flags: libc::MS_NOSUID | libc::MS_NODEV,
        data: "mode=1777",
    },
    Mount {
        source: "tmpfs",
        target: "/tmp",
        fstype: "tmpfs",
        flags: libc::MS_NOSUID | libc::MS_NODEV,
        data: "mode=1777",
    },
    Mount {
        source: "tmpfs",
        target: "/run",
        fstype: "tmpfs",
        flags: libc::MS_NOSUID | libc::MS_NODEV,
        data: "mode=0755",
    },
];

/// Everything PID 1 does before serving. Failures are reported and skipped: a
/// half-set-up guest that answers the host is more useful than a dead one.
pub fn init() {
    sys::ensure_std_fds();
    for m in MOUNTS {
        if let Err(e) = mount(m) {
            crate::console!("mounting {} on {}: {e}", m.fstype, m.target);
        }
    }
    // Now that /dev is populated, make sure 0/1/2 point somewhere real.
    sys::ensure_std_fds();
    for (link, target) in [
        ("/dev/fd", "/proc/self/fd"),
        ("/dev/stdin", "/proc/self/fd/0"),
        ("/dev/stdout", "/proc/self/fd/1"),
        ("/dev/stderr", "/proc/self/fd/2"),
        ("/dev/ptmx", "pts/ptmx"),
    ] {
        if std::fs::symlink_metadata(link).is_err() {
            let _ = std::os::unix::fs::symlink(target, link);
        }
    }
    let cmdline = std::fs::read_to_string("/proc/cmdline").unwrap_or_default();
    let params = parse_cmdline(&cmdline);
    if let Some((_, name)) = params.iter().find(|(k, _)| k == "flotilla.hostname") {
        if let Err(e) = set_hostname(name) {
            crate::console!("setting hostname to `{name}`: {e}");
        }
    }
    load_modules("/etc/flotilla/modules", &params);
    if let Err(e) = crate::net::link_up("lo") {
        crate::console!("bringing up lo: {e}");
    }
}

fn mount(m: &Mount) -> io::Result<()> {
    std::fs::create_dir_all(m.target)?;
    let source = sys::cstring(m.source)?;
    let target = sys::cstring(m.target)?;
    let fstype = sys::cstring(m.fstype)?;
    let data = sys::cstring(m.data)?;
    // SAFETY: all pointers are valid C strings.
    let rc = unsafe {
        libc::mount(
            source.as_ptr(),
            target.as_ptr(),
            fstype.as_ptr(),
            m.flags,
            data.as_ptr().cast(),
        )
    };
    match sys::cvt(rc) {
        // Already mounted (e.g. the kernel auto-mounted devtmpfs): fine.
        Err(e) if e.raw_os_error() == Some(libc::EBUSY) => Ok(()),
        other => other.map(drop),
    }
}

/// Split the kernel command line into `(key, value)` pairs, honouring double quotes
/// the way the kernel does. Bare words get an empty value.
pub fn parse_cmdline(cmdline: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut word = String::new();
    let mut in_quotes = false;
    let mut words = Vec::new();
    for c in cmdline.chars() {
        match c {
            '"' => in_quotes = !in_quotes,
            c if c.is_whitespace() && !in_quotes => {
                if !word.is_empty() {
                    words.push(std::mem::take(&mut word));
                }
            }
            c => word.push(c),
        }
    }
    if !word.is_empty() {
        words.push(word);
    }
    for w in words {
        match w.split_once('=') {
            Some((k, v)) => out.push((k.to_string(), v.to_string())),
            None => out.push((w, String::new())),
        }
    }
    out
}

fn set_hostname(name: &str) -> io::Result<()> {
    // SAFETY: pointer and length describe a valid buffer.
    sys::cvt(unsafe { libc::sethostname(name.as_ptr().cast(), name.len()) }).map(drop)
}

/// Module name as the kernel sees it: file stem with `-` turned into `_`.
pub fn module_name(path: &str) -> String {
    let file = path.rsplit('/').next().unwrap_or(path);
    let stem = file.split(".ko").next().unwrap_or(file);
    stem.replace('-', "_")
}

/// Parameters for `module` from `module.param=value` words of the command line.
pub fn module_params(module: &str, params: &[(String, String)]) -> String {
    let mut out = Vec::new();
    for (k, v) in params {
        let Some((m, p)) = k.split_once('.') else {
            continue;
        };
        if m.replace('-', "_") != module || p.is_empty() {
            continue;
        }
        if v.is_empty() {
            out.push(p.to_string());
        } else if v.contains(char::is_whitespace) {
            out.push(format!("{p}=\"{v}\""));
        } else {
            out.push(format!("{p}={v}"));
        }
    }
    out.join(" ")
}

const MODULE_INIT_COMPRESSED_FILE: libc::c_uint = 4;

fn load_modules(list: &str, params: &[(String, String)]) {
    let Ok(text) = std::fs::read_to_string(list) else {
        return;
    };
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if let Err(e) = load_module(line, params) {
            crate::console!("loading module {line}: {e}");
        }
    }
}

fn load_module(path: &str, params: &[(String, String)]) -> io::Result<()> {
    let name = module_name(path);
    let opts = CString::new(module_params(&name, params)).unwrap_or_default();
    let file = std::fs::File::open(path)?;
    let flags = if path.ends_with(".ko") {
        0
    } else {
        MODULE_INIT_COMPRESSED_FILE
    };
    // SAFETY: valid fd and C string; finit_module has no other memory arguments.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_finit_module,
            file.as_raw_fd(),
            opts.as_ptr(),
            flags,
        )
    };
    if rc < 0 {
        let err = io::Error::last_os_error();
        if err.raw_os_error() != Some(libc::EEXIST) {
            return Err(err);
        }
    }
    Ok(())
}

/// Stop everything and power off (or reboot). Never returns.
pub fn power_off(reboot: bool) -> ! {
    crate::console!("{}", if reboot { "rebooting" } else { "powering off" });
    // SAFETY: kill(-1) from PID 1 signals every other process.
    let _ = sys::kill(-1, libc::SIGTERM);
    let _ = sys::kill(-1, libc::SIGCONT);
    let deadline = Instant::now() + Duration::from_secs(2);
    while Instant::now() < deadline {
        exec::reaper().reap();
        if !user_processes_left() {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = sys::kill(-1, libc::SIGKILL);
    exec::reaper().reap();
    final_reboot(reboot)
}

/// Whether any process other than us, kernel threads and zombies exists.
/// (`kill(-1, 0)` cannot tell: it counts kernel threads.)
fn user_processes_left() -> bool {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return false;
    };
    dir.flatten().any(|e| {
        let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
            return false;
        };
        if pid <= 2 {
            return false;
        }
        let stat = std::fs::read_to_string(e.path().join("stat")).unwrap_or_default();
        is_live_user_process(&stat)
    })
}

/// From `/proc/PID/stat`: not a zombie and not a child of kthreadd (PID 2).
pub fn is_live_user_process(stat: &str) -> bool {
    let Some((_, rest)) = stat.rsplit_once(')') else {
        return false;
    };
    let mut fields = rest.split_whitespace();
    let state = fields.next().unwrap_or("Z");
    let ppid = fields.next().unwrap_or("2");
    state != "Z" && state != "X" && ppid != "2" && ppid != "0"
}

/// Sync, remount / read-only and call reboot(2). Never returns.
pub fn final_reboot(reboot: bool) -> ! {
    sys::sync();
    // SAFETY: remounting the root read-only; all pointers are valid or null.
    unsafe {
        libc::mount(
            std::ptr::null(),
            c"/".as_ptr(),
            std::ptr::null(),
            libc::MS_REMOUNT | libc::MS_RDONLY,
            std::ptr::null(),
        );
    }
    sys::sync();
    let cmd = if reboot {
        libc::RB_AUTOBOOT
    } else {
        libc::RB_POWER_OFF
    };
    // SAFETY: reboot(2) with a valid command.
    unsafe { libc::reboot(cmd) };
    let err = io::Error::last_os_error();
    crate::console!("reboot(2) failed: {err}; halting here");
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cmdline_parsing() {
        let p = parse_cmdline(
            "console=ttyS0 quiet flotilla.hostname=test virtio_net.napi_tx=1 \
             foo.bar=\"a b\" virtio-pci.force_legacy\n",
        );
        assert!(p.contains(&("flotilla.hostname".into(), "test".into())));
        assert!(p.contains(&("quiet".into(), String::new())));
        assert!(p.contains(&("foo.bar".into(), "a b".into())));
        assert_eq!(module_params("virtio_net", &p), "napi_tx=1");
        assert_eq!(module_params("foo", &p), "bar=\"a b\"");
        assert_eq!(module_params("virtio_pci", &p), "force_legacy");
        assert_eq!(module_params("virtio_console", &p), "");
    }

    #[test]
    fn proc_stat_classification() {
        assert!(is_live_user_process(
            "123 (sleep) S 1 123 123 0 -1 4194560 ..."
        ));
        assert!(is_live_user_process("124 (a) b) R 123 1 1 0"));
        assert!(!is_live_user_process("125 (sh) Z 1 125 125 0"));
        assert!(!is_live_user_process("20 (kdevtmpfs) S 2 0 0 0"));
        assert!(!is_live_user_process("garbage"));
    }

    #[test]
    fn module_names() {
        assert_eq!(
            module_name("/lib/modules/6.1/kernel/drivers/virtio/virtio_pci.ko"),
            "virtio_pci"
        );
        assert_eq!(module_name("/x/virtio-rng.ko.xz"), "virtio_rng");
    }
}

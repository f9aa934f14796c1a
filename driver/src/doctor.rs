//! `flotilla doctor`: what the host has and lacks, grouped by the features that need it.

use std::fmt;
use std::path::PathBuf;
use std::process::Command;

use flotilla_host::programs::{which, which_system_tool};

/// The features a requirement serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
#[non_exhaustive]
pub enum Group {
    /// Booting machines: `flotilla test`, `flotilla run`, the library.
    Boot,
    /// Disks in a spec, `image = ...` and `flotilla image debian`.
    Disks,
    /// Images whose guest runs QEMU's own agent, and the QGA tests of the qmp crate.
    Qga,
    /// `flotilla test --coverage` and its example.
    Coverage,
    /// The report's tests: `report.html` opened in a real browser.
    Report,
    /// Reading a screen's text by OCR: graphics screens, qemu-ga guests, `_ocr` calls.
    ScreenText,
}

impl fmt::Display for Group {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Group::Boot => "boot (flotilla test, flotilla run)",
            Group::Disks => "disks and images (disks, image = ..., flotilla image debian)",
            Group::Qga => "QGA (agent = \"qga\" images, the qmp crate's QGA tests)",
            Group::Coverage => "coverage (flotilla test --coverage, examples/coverage)",
            Group::Report => "report tests (report.html in headless Chromium)",
            Group::ScreenText => {
                "screen text (OCR) (get_screen_text and wait_for_text on graphics screens and qemu-ga guests, their _ocr forms)"
            }
        })
    }
}

/// One requirement and how the host fares.
#[derive(Debug, Clone)]
pub struct Check {
    pub group: Group,
    pub name: &'static str,
    pub ok: bool,
    /// What was found, or what is wrong.
    pub detail: String,
    /// How to fix it, when not ok.
    pub hint: Option<String>,
}

const SETUP_HINT: &str = "run scripts/setup (as root)";

/// Runs every check, in group order.
pub fn checks() -> Vec<Check> {
    let mut out = vec![
        version_check(
            Group::Boot,
            "qemu",
            crate::host::qemu_binary(flotilla_host::arch::Arch::host()),
            "qemu-system-x86",
        ),
        kernel(),
        busybox(),
        tool_check(Group::Boot, "vde_switch", "vde2"),
        tool_check(Group::Boot, "wirefilter", "vde2"),
        accelerator(),
        version_check(Group::Disks, "qemu-img", "qemu-img".into(), "qemu-utils"),
        tool_check(Group::Disks, "mke2fs", "e2fsprogs"),
        tool_check(Group::Disks, "debootstrap", "debootstrap"),
        tool_check(Group::Disks, "depmod", "kmod"),
        version_check(Group::Qga, "qemu-ga", "qemu-ga".into(), "qemu-guest-agent"),
        tool_check(Group::Coverage, "debugfs", "e2fsprogs"),
        version_check(Group::Coverage, "gcc", "gcc".into(), "gcc"),
        version_check(Group::Coverage, "gcov", "gcov".into(), "gcc"),
        version_check(Group::Coverage, "genhtml", "genhtml".into(), "lcov"),
        static_libc(),
        llvm_tools(),
        version_check(Group::Report, "chromium", "chromium".into(), "chromium"),
        version_check(
            Group::ScreenText,
            "tesseract",
            crate::ocr::TESSERACT.into(),
            "tesseract-ocr",
        ),
        tesseract_english(),
    ];
    out.sort_by_key(|c| c.group);
    out
}

fn ok(group: Group, name: &'static str, detail: String) -> Check {
    Check {
        group,
        name,
        ok: true,
        detail,
        hint: None,
    }
}

fn missing(group: Group, name: &'static str, detail: String, hint: String) -> Check {
    Check {
        group,
        name,
        ok: false,
        detail,
        hint: Some(hint),
    }
}

/// A program, found in PATH as Flotilla starts it, that must run `--version`; the
/// detail is the first line it prints.
fn version_check(group: Group, name: &'static str, program: PathBuf, package: &str) -> Check {
    let resolved = which(&program).unwrap_or(program);
    match Command::new(&resolved).arg("--version").output() {
        Ok(o) if o.status.success() => ok(
            group,
            name,
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .next()
                .unwrap_or("")
                .to_owned(),
        ),
        Ok(o) => missing(
            group,
            name,
            format!("{} --version failed ({})", resolved.display(), o.status),
            format!("{SETUP_HINT}, or apt-get install {package}"),
        ),
        Err(e) => missing(
            group,
            name,
            format!("{} not found: {e}", resolved.display()),
            format!("{SETUP_HINT}, or apt-get install {package}"),
        ),
    }
}

/// A program that must be installed (in PATH or an sbin folder, where the image builder
/// also looks).
fn tool_check(group: Group, name: &'static str, package: &str) -> Check {
    match which_system_tool(name) {
        Some(p) => ok(group, name, p.display().to_string()),
        None => missing(
            group,
            name,
            "not found in PATH or the sbin and bin folders".into(),
            format!("{SETUP_HINT}, or apt-get install {package}"),
        ),
    }
}

/// The static C library, for the coverage example's static build (the default guest
/// has no libc).
fn static_libc() -> Check {
    let path = std::path::Path::new("/usr/lib/x86_64-linux-gnu/libc.a");
    if path.is_file() {
        ok(Group::Coverage, "libc.a", path.display().to_string())
    } else {
        missing(
            Group::Coverage,
            "libc.a",
            format!("{} not found: gcc -static cannot link", path.display()),
            format!("{SETUP_HINT}, or apt-get install libc6-dev"),
        )
    }
}

/// Tesseract's English data, as `tesseract --list-langs` sees it.
fn tesseract_english() -> Check {
    let hint = format!("{SETUP_HINT}, or apt-get install tesseract-ocr-eng");
    match Command::new(crate::ocr::TESSERACT)
        .arg("--list-langs")
        .output()
    {
        Ok(o) => {
            // Tesseract 4 lists them on stderr, 5 on stdout.
            let said = [o.stdout, o.stderr].concat();
            let said = String::from_utf8_lossy(&said);
            match said
                .lines()
                .find(|l| l.starts_with("List of available languages"))
            {
                // `List of available languages in "/usr/share/tesseract-ocr/5/tessdata/" (2):`
                Some(from) if said.lines().any(|l| l.trim() == "eng") => ok(
                    Group::ScreenText,
                    "tessdata",
                    format!(
                        "eng in {}",
                        from.split('"').nth(1).unwrap_or("tesseract's data")
                    ),
                ),
                _ => missing(
                    Group::ScreenText,
                    "tessdata",
                    "tesseract --list-langs has no `eng`".into(),
                    hint,
                ),
            }
        }
        Err(e) => missing(
            Group::ScreenText,
            "tessdata",
            format!("cannot ask tesseract for its languages: {e}"),
            hint,
        ),
    }
}

/// LLVM's coverage tools, for LLVM data (clang, Rust): the newest installed
/// `llvm-profdata-NN` with its `llvm-cov-NN` (the report tries each version, newest
/// first; Rust 1.95's data needs 19 or newer).
fn llvm_tools() -> Check {
    let found = (11..=30).rev().find_map(|v| {
        let profdata = which(format!("llvm-profdata-{v}"))?;
        which(format!("llvm-cov-{v}"))?;
        Some(format!("LLVM {v} ({})", profdata.display()))
    });
    match found {
        Some(detail) => ok(Group::Coverage, "llvm", detail),
        None => missing(
            Group::Coverage,
            "llvm",
            "no llvm-profdata-NN with its llvm-cov-NN in PATH (LLVM data: clang, Rust)".into(),
            format!("{SETUP_HINT}, or apt-get install llvm-19"),
        ),
    }
}

fn kernel() -> Check {
    match flotilla_image::Kernel::locate(flotilla_host::arch::Arch::host()) {
        Ok(k) => ok(
            Group::Boot,
            "kernel",
            format!(
                "{} ({}; boots {})",
                k.version,
                k.image.display(),
                flotilla_image::vmlinux::boot_kernel(&k).note
            ),
        ),
        Err(e) => missing(
            Group::Boot,
            "kernel",
            e.to_string().lines().next().unwrap_or("").to_owned(),
            SETUP_HINT.into(),
        ),
    }
}

fn busybox() -> Check {
    let busybox = flotilla_image::busybox_path(flotilla_host::arch::Arch::host());
    match std::fs::read(&busybox) {
        Ok(bytes) if flotilla_image::is_static_elf(&bytes) => ok(
            Group::Boot,
            "busybox",
            format!("{} (static)", busybox.display()),
        ),
        Ok(_) => missing(
            Group::Boot,
            "busybox",
            format!("{} is not statically linked", busybox.display()),
            "apt-get install busybox-static".into(),
        ),
        Err(e) => missing(
            Group::Boot,
            "busybox",
            format!("{}: {e}", busybox.display()),
            format!("{SETUP_HINT}, or apt-get install busybox-static"),
        ),
    }
}

/// The accelerator that will run, and why; a failure only when KVM is forced
/// (`FLOTILLA_ACCEL=kvm`) and does not work, since machines would then hang.
fn accelerator() -> Check {
    let accel = crate::accel::detect();
    if accel.accel == crate::accel::Accel::Kvm {
        if let Err(why) = crate::accel::kvm_usable() {
            return missing(
                Group::Boot,
                "accelerator",
                format!("{accel}, but KVM does not work here: {why}"),
                "unset FLOTILLA_ACCEL (or set it to tcg) to use software emulation".into(),
            );
        }
    }
    ok(Group::Boot, "accelerator", accel.to_string())
}

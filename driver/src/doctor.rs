//! `flotilla doctor`: what the host has and lacks, grouped by the features that need it.

use std::fmt;
use std::path::PathBuf;
use std::process::Command;

use crate::host::qemu_version_number;
use flotilla_host::arch::{Arch, ARCHES};
use flotilla_host::programs::{which, which_system_tool};
use flotilla_image::debian::Release;

/// The features a requirement serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
#[non_exhaustive]
pub enum Group {
    /// Booting machines: `flotilla test`, `flotilla run`, the library.
    Boot,
    /// Python test scripts (`script = "test.py"`).
    Python,
    /// Machines of an architecture other than the host's (`arch = "aarch64"`): one
    /// group per such row of [`ARCHES`], and coverage of its programs.
    Machines(&'static Arch),
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
            Group::Python => "Python scripts (script = \"test.py\")",
            Group::Machines(arch) => {
                return write!(
                    f,
                    "{} machines (arch = \"{}\", coverage of their programs)",
                    arch.debian, arch.name
                );
            }
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
    let host = Arch::host();
    let mut out = vec![
        qemu_supported(version_check(
            Group::Boot,
            "qemu",
            crate::host::qemu_binary(host),
            host.qemu_package,
        )),
        kernel(Group::Boot, host),
        busybox(Group::Boot, host),
        tool_check(Group::Boot, "vde_switch", "vde2"),
        tool_check(Group::Boot, "wirefilter", "vde2"),
        accelerator(),
        python(),
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
    out.extend(release_kernels(Group::Disks, host));
    for arch in ARCHES.iter().filter(|a| !a.is_host()) {
        out.extend(machines(arch));
        out.extend(release_kernels(Group::Machines(arch), arch));
    }
    // Stable: each group's checks keep the order above.
    out.sort_by_key(|c| c.group);
    out
}

/// What machines of `arch`, not the host's architecture, need: its QEMU at the host
/// QEMU's version (setup installs them as one), its kernel and busybox, and for
/// coverage of its programs the cross compiler, its static C library and the host's
/// gcov of the compiler's version (gcov reads data of its own gcc version, whatever
/// the target).
fn machines(arch: &'static Arch) -> Vec<Check> {
    let group = Group::Machines(arch);
    let gcc = format!("{}-gcc", arch.gnu_triplet);
    // Debian's names: gcc-aarch64-linux-gnu, libc6-dev-arm64-cross.
    let gcc_package = format!("gcc-{}", arch.gnu_triplet.replace('_', "-"));
    vec![
        qemu_matching(arch),
        kernel(group, arch),
        busybox(group, arch),
        version_check(group, "gcc", gcc.clone().into(), &gcc_package),
        cross_gcov(group, &gcc, &gcc_package),
        static_libc_at(
            group,
            &format!("/usr/{}/lib/libc.a", arch.gnu_triplet),
            &format!("libc6-dev-{}-cross", arch.debian),
        ),
    ]
}

/// The host's QEMU check, with what its version is to Flotilla: one of the versions it
/// is tested with, another it should work with, or one older than it supports (a
/// failed check).
fn qemu_supported(check: Check) -> Check {
    use crate::host::{qemu_support, tested_qemu_names, QemuSupport, OLDEST_QEMU};
    let Some(version) = qemu_version_number(&check.detail).map(str::to_owned) else {
        return check;
    };
    let tested = tested_qemu_names();
    match qemu_support(&version) {
        QemuSupport::Tested => Check {
            detail: format!("{}; tested with {tested}", check.detail),
            ..check
        },
        QemuSupport::Untested => Check {
            detail: format!(
                "{}; supported but not tested (tested with {tested})",
                check.detail
            ),
            ..check
        },
        QemuSupport::Unsupported => missing(
            check.group,
            check.name,
            format!(
                "{}: older than {}.{}, the oldest supported (tested with {tested})",
                check.detail, OLDEST_QEMU.0, OLDEST_QEMU.1
            ),
            format!("{SETUP_HINT}: it installs the QEMU of the host's Debian release"),
        ),
    }
}

/// `arch`'s QEMU, which must be of the host QEMU's version (when that one runs).
fn qemu_matching(arch: &'static Arch) -> Check {
    let group = Group::Machines(arch);
    let check = version_check(
        group,
        "qemu",
        crate::host::qemu_binary(arch),
        arch.qemu_package,
    );
    let host = version_check(
        Group::Boot,
        "qemu",
        crate::host::qemu_binary(Arch::host()),
        Arch::host().qemu_package,
    );
    if !check.ok || !host.ok {
        return check;
    }
    match (
        qemu_version_number(&check.detail),
        qemu_version_number(&host.detail),
    ) {
        (Some(theirs), Some(ours)) if theirs != ours => missing(
            group,
            "qemu",
            format!(
                "{} {theirs} is not the version of {} ({ours})",
                arch.qemu,
                Arch::host().qemu
            ),
            format!(
                "{SETUP_HINT}: it installs {} at {}'s version",
                arch.qemu_package,
                Arch::host().qemu_package
            ),
        ),
        _ => check,
    }
}

/// The host's gcov of the cross compiler `gcc`'s major version (`gcov-12`), which the
/// coverage report runs on the data of that compiler's programs.
fn cross_gcov(group: Group, gcc: &str, gcc_package: &str) -> Check {
    let major = Command::new(gcc)
        .arg("-dumpversion")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .and_then(|v| v.split('.').next().map(str::to_owned));
    let Some(major) = major else {
        return missing(
            group,
            "gcov",
            format!("cannot ask {gcc} its version (-dumpversion)"),
            format!("{SETUP_HINT}, or apt-get install {gcc_package}"),
        );
    };
    let gcov = format!("gcov-{major}");
    match which(&gcov) {
        Some(path) => ok(
            group,
            "gcov",
            format!("{} (reads {gcc} {major}'s data)", path.display()),
        ),
        None => missing(
            group,
            "gcov",
            format!("no {gcov} in PATH: the data of {gcc} {major}'s programs cannot be read"),
            format!("apt-get install gcc-{major}"),
        ),
    }
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

/// The oldest Python that runs the `flotilla` package.
const OLDEST_PYTHON: (u32, u32) = (3, 9);

/// The Python that runs Python scripts (`$FLOTILLA_PYTHON`, else `python3`): 3.9 or
/// newer.
fn python() -> Check {
    let program: PathBuf = std::env::var_os("FLOTILLA_PYTHON")
        .unwrap_or_else(|| "python3".into())
        .into();
    let mut check = version_check(Group::Python, "python3", program, "python3");
    if !check.ok {
        return check;
    }
    // `Python 3.11.2`
    let version: Vec<u32> = check
        .detail
        .trim_start_matches("Python ")
        .split('.')
        .filter_map(|n| n.parse().ok())
        .collect();
    let (major, minor) = (version.first().copied(), version.get(1).copied());
    let (oldest_major, oldest_minor) = OLDEST_PYTHON;
    if !matches!((major, minor), (Some(m), Some(n)) if (m, n) >= (oldest_major, oldest_minor)) {
        check.ok = false;
        check.hint = Some(format!(
            "Python scripts need Python {oldest_major}.{oldest_minor} or newer: install a newer \
             python3, or name one in FLOTILLA_PYTHON"
        ));
        check.detail = format!(
            "{} is older than {oldest_major}.{oldest_minor}",
            check.detail
        );
    }
    check
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
    static_libc_at(
        Group::Coverage,
        &format!("/usr/lib/{}/libc.a", Arch::host().gnu_triplet),
        "libc6-dev",
    )
}

/// A static C library at `path`, from `package`.
fn static_libc_at(group: Group, path: &str, package: &str) -> Check {
    let path = std::path::Path::new(path);
    if path.is_file() {
        ok(group, "libc.a", path.display().to_string())
    } else {
        missing(
            group,
            "libc.a",
            format!("{} not found: gcc -static cannot link", path.display()),
            format!("{SETUP_HINT}, or apt-get install {package}"),
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

/// A failure of the image crate as a check: its first line, and its hint.
fn image_error(group: Group, name: &'static str, e: &flotilla_image::Error) -> Check {
    let text = e.to_string();
    let (what, hint) = text.split_once("\nhint: ").unwrap_or((&text, SETUP_HINT));
    let mut detail = what.lines().next().unwrap_or("").to_owned();
    if let Some(source) = std::error::Error::source(e) {
        detail.push_str(&format!(": {source}"));
    }
    missing(group, name, detail, hint.to_owned())
}

/// `arch`'s kernel, as machines find it.
fn kernel(group: Group, arch: &'static Arch) -> Check {
    match flotilla_image::Kernel::locate(arch) {
        Ok(k) if arch.qboot_and_pvh => ok(
            group,
            "kernel",
            format!(
                "{} ({}; boots {})",
                k.version,
                k.image.display(),
                flotilla_image::vmlinux::boot_kernel(&k).note
            ),
        ),
        Ok(k) => ok(
            group,
            "kernel",
            format!("{} ({})", k.version, k.image.display()),
        ),
        Err(e) => image_error(group, "kernel", &e),
    }
}

/// The cloud kernels of `arch` of the Debian releases other than the default guest's
/// (trixie's), which Debian machines of that release boot.
fn release_kernels(group: Group, arch: &'static Arch) -> Vec<Check> {
    Release::ALL
        .into_iter()
        .filter(|r| !r.is_default_guest_kernel())
        .map(
            |release| match flotilla_image::Kernel::of_release(release, arch) {
                Ok(k) => ok(
                    group,
                    "kernel",
                    format!("Debian {release}'s {} ({})", k.version, k.image.display()),
                ),
                Err(e) => image_error(group, "kernel", &e),
            },
        )
        .collect()
}

/// `arch`'s static busybox, checked as the default image uses it (static, of that
/// architecture, its applets known).
fn busybox(group: Group, arch: &'static Arch) -> Check {
    match flotilla_image::check_busybox(arch) {
        Ok((path, applets)) => ok(
            group,
            "busybox",
            format!("{} (static, {applets} applets)", path.display()),
        ),
        Err(e) => image_error(group, "busybox", &e),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_other_architecture_has_a_group_of_its_own() {
        let checks = checks();
        // Sorted by group, each group's checks together.
        assert!(checks.windows(2).all(|w| w[0].group <= w[1].group));
        for arch in ARCHES.iter().filter(|a| !a.is_host()) {
            let names: Vec<&str> = checks
                .iter()
                .filter(|c| c.group == Group::Machines(arch))
                .map(|c| c.name)
                .collect();
            // The last: trixie's kernel, for Debian machines of that release.
            assert_eq!(
                names,
                ["qemu", "kernel", "busybox", "gcc", "gcov", "libc.a", "kernel"],
                "{arch}"
            );
            let title = Group::Machines(arch).to_string();
            assert!(
                title.starts_with(&format!(
                    "{} machines (arch = \"{}\"",
                    arch.debian, arch.name
                )),
                "{title}"
            );
        }
        assert!(!checks
            .iter()
            .any(|c| c.group == Group::Machines(Arch::host())));
        // Between booting and disks.
        let arm64 = Group::Machines(Arch::named("aarch64").unwrap());
        assert!(Group::Boot < arm64 && arm64 < Group::Disks);
    }

    #[test]
    fn a_failure_of_the_image_crate_keeps_its_hint() {
        let e = flotilla_image::Error::Setup {
            what: "no aarch64 kernel at /x/vmlinuz".into(),
            hint: "run scripts/setup".into(),
        };
        let c = image_error(Group::Boot, "kernel", &e);
        assert!(!c.ok);
        assert_eq!(c.detail, "no aarch64 kernel at /x/vmlinuz");
        assert_eq!(c.hint.as_deref(), Some("run scripts/setup"));
    }
}

//! `flotilla doctor`: what the host has and lacks.

use crate::image;

/// One requirement and how the host fares.
#[derive(Debug, Clone)]
pub struct Check {
    pub name: &'static str,
    pub ok: bool,
    /// What was found, or what is wrong.
    pub detail: String,
    /// How to fix it, when not ok.
    pub hint: Option<String>,
}

const SETUP_HINT: &str = "run scripts/setup (as root)";

/// Runs every check.
pub fn checks() -> Vec<Check> {
    let mut out = Vec::new();

    let qemu = crate::qemu_binary();
    out.push(
        match std::process::Command::new(&qemu).arg("--version").output() {
            Ok(o) if o.status.success() => Check {
                name: "qemu",
                ok: true,
                detail: String::from_utf8_lossy(&o.stdout)
                    .lines()
                    .next()
                    .unwrap_or("")
                    .to_owned(),
                hint: None,
            },
            Ok(o) => Check {
                name: "qemu",
                ok: false,
                detail: format!("{} --version failed ({})", qemu.display(), o.status),
                hint: Some(SETUP_HINT.into()),
            },
            Err(e) => Check {
                name: "qemu",
                ok: false,
                detail: format!("{} not found: {e}", qemu.display()),
                hint: Some(format!("{SETUP_HINT}, or apt-get install qemu-system-x86")),
            },
        },
    );

    out.push(match image::Kernel::locate() {
        Ok(k) => Check {
            name: "kernel",
            ok: true,
            detail: format!(
                "{} ({}; boots {})",
                k.version,
                k.image.display(),
                crate::vmlinux::boot_kernel(&k).note
            ),
            hint: None,
        },
        Err(e) => Check {
            name: "kernel",
            ok: false,
            detail: e.to_string().lines().next().unwrap_or("").to_owned(),
            hint: Some(SETUP_HINT.into()),
        },
    });

    let busybox = image::busybox_path();
    out.push(match std::fs::read(&busybox) {
        Ok(bytes) if image::is_static_elf(&bytes) => Check {
            name: "busybox",
            ok: true,
            detail: format!("{} (static)", busybox.display()),
            hint: None,
        },
        Ok(_) => Check {
            name: "busybox",
            ok: false,
            detail: format!("{} is not statically linked", busybox.display()),
            hint: Some("apt-get install busybox-static".into()),
        },
        Err(e) => Check {
            name: "busybox",
            ok: false,
            detail: format!("{}: {e}", busybox.display()),
            hint: Some(format!("{SETUP_HINT}, or apt-get install busybox-static")),
        },
    });

    out.push(match crate::host::which("vde_switch") {
        Some(p) => Check {
            name: "vde_switch",
            ok: true,
            detail: p.display().to_string(),
            hint: None,
        },
        None => Check {
            name: "vde_switch",
            ok: false,
            detail: "not found in PATH".into(),
            hint: Some(format!("{SETUP_HINT}, or apt-get install vde2")),
        },
    });

    let accel = crate::accel::detect();
    out.push(Check {
        name: "accelerator",
        ok: true,
        detail: accel.to_string(),
        hint: None,
    });
    out
}

//! What machines boot, found or made once per run for each architecture the plan has
//! ([`BootFiles::prepare`]): the QEMU binary, the accelerator, the firmware, the kernel
//! and the initramfs images; and which of them each machine of a [`Plan`] boots. A
//! machine of a Debian release whose cloud kernel is not the default guest's (trixie's)
//! boots that release's kernel and a stage 1 of its modules.

use std::path::PathBuf;

use super::machines::{MachinePlan, Plan};
use crate::accel::{self, AccelChoice};
use crate::error::Error;
use crate::host::{qboot_firmware, qemu_binary};
use flotilla_host::arch::Arch;

use flotilla_image::debian::Release;
use flotilla_image::{agent_binary, vmlinux, Kernel};

/// The files and settings the machines of a run boot with, per architecture.
#[derive(Debug, Clone)]
pub(crate) struct BootFiles {
    /// One entry per architecture of the plan, the host's first.
    pub arches: Vec<ArchBootFiles>,
}

/// The files and settings every machine of one architecture boots with.
#[derive(Debug, Clone)]
pub(crate) struct ArchBootFiles {
    pub arch: &'static Arch,
    /// The QEMU binary.
    pub qemu: PathBuf,
    pub accel: AccelChoice,
    /// qboot, if QEMU has it and the machine type boots it.
    pub firmware: Option<PathBuf>,
    /// The kernel's version (for the log).
    pub kernel_version: String,
    /// The kernel's bzImage: what a machine with a display boots.
    pub bz_image: PathBuf,
    /// What the others boot (the unpacked kernel, or the bzImage), and a note on it.
    pub boot_kernel: PathBuf,
    pub boot_note: String,
    /// The default initramfs.
    pub initrd: PathBuf,
    /// Stage 1 of machines with a disk image, when one has.
    pub stage1: Option<PathBuf>,
    /// The initramfs that loads virtio_blk, when a machine without an image has disks
    /// (a coverage disk too).
    pub with_disks: Option<PathBuf>,
    /// The kernels of Debian releases other than the default guest's that machines of
    /// the plan boot, each with its stage 1.
    pub releases: Vec<ReleaseKernel>,
}

/// A Debian release's cloud kernel and the stage 1 of its modules, for the machines
/// whose image is of that release.
#[derive(Debug, Clone)]
pub(crate) struct ReleaseKernel {
    pub release: Release,
    pub kernel_version: String,
    pub bz_image: PathBuf,
    pub boot_kernel: PathBuf,
    pub boot_note: String,
    pub stage1: PathBuf,
}

impl BootFiles {
    /// For each architecture of the plan: finds the kernel, builds (or reuses) the
    /// initramfs images its machines need, picks the accelerator.
    pub(crate) fn prepare(plan: &Plan, coverage: bool) -> Result<BootFiles, Error> {
        let mut arches = plan.arches();
        if arches.is_empty() {
            arches.push(Arch::host());
        }
        let arches = arches
            .into_iter()
            .map(|arch| {
                let machines: Vec<&MachinePlan> =
                    plan.machines.values().filter(|m| m.arch == arch).collect();
                ArchBootFiles::prepare(arch, &machines, coverage)
            })
            .collect::<Result<_, _>>()?;
        Ok(BootFiles { arches })
    }

    /// The files of `arch`'s machines.
    pub(crate) fn of(&self, arch: &Arch) -> Result<&ArchBootFiles, Error> {
        self.arches
            .iter()
            .find(|a| a.arch == arch)
            .ok_or_else(|| Error::Internal(format!("no boot files were prepared for {arch}")))
    }

    /// The host architecture's files, else the first architecture's: what the fleet's
    /// accelerator names.
    pub(crate) fn main(&self) -> &ArchBootFiles {
        &self.arches[0]
    }
}

impl ArchBootFiles {
    fn prepare(
        arch: &'static Arch,
        machines: &[&MachinePlan],
        coverage: bool,
    ) -> Result<ArchBootFiles, Error> {
        let kernel = flotilla_image::Kernel::locate(arch)?;
        let agent = agent_binary(arch)?;
        let initrd = flotilla_image::default_initramfs(&kernel, &agent)?;
        let stage1 = if machines.iter().any(|m| m.has_image()) {
            Some(flotilla_image::stage1_initramfs(&kernel)?)
        } else {
            None
        };
        let with_disks = if machines.iter().any(|m| needs_disks(m, coverage)) {
            Some(flotilla_image::disk_initramfs(&kernel, &agent)?)
        } else {
            None
        };
        let (boot_kernel, boot_note) = boot_kernel_of(&kernel);
        let mut releases = Vec::new();
        for m in machines {
            let Some(release) = m.kernel_release else {
                continue;
            };
            if releases
                .iter()
                .any(|r: &ReleaseKernel| r.release == release)
            {
                continue;
            }
            let kernel = Kernel::of_release(release, arch)?;
            let (boot_kernel, boot_note) = boot_kernel_of(&kernel);
            releases.push(ReleaseKernel {
                release,
                kernel_version: kernel.version.clone(),
                bz_image: kernel.image.clone(),
                boot_kernel,
                boot_note,
                stage1: flotilla_image::stage1_initramfs(&kernel)?,
            });
        }
        Ok(ArchBootFiles {
            arch,
            qemu: qemu_binary(arch),
            accel: accel::detect_for(arch),
            firmware: qboot_firmware(arch),
            kernel_version: kernel.version.clone(),
            bz_image: kernel.image.clone(),
            boot_kernel,
            boot_note,
            initrd,
            stage1,
            with_disks,
            releases,
        })
    }

    /// The kernel of `m`'s release, when it is not the default guest's.
    fn release_of(&self, m: &MachinePlan) -> Option<&ReleaseKernel> {
        let release = m.kernel_release?;
        self.releases.iter().find(|r| r.release == release)
    }

    /// The kernel machine `m` boots. The unpacked kernel starts through PVH, which
    /// passes no screen information: a machine with a screen boots the bzImage so that
    /// tty1 shows on its VGA card.
    pub(crate) fn kernel_for(&self, m: &MachinePlan) -> PathBuf {
        if let Some(r) = self.release_of(m) {
            return if m.display {
                r.bz_image.clone()
            } else {
                r.boot_kernel.clone()
            };
        }
        if m.display {
            self.bz_image.clone()
        } else {
            self.boot_kernel.clone()
        }
    }

    /// The initramfs machine `m` boots: stage 1 for an image; the one with
    /// virtio_blk for disks (only machines with disks pay for loading it); else the
    /// default.
    pub(crate) fn initrd_for(&self, m: &MachinePlan, coverage: bool) -> PathBuf {
        if let (true, Some(r)) = (m.has_image(), self.release_of(m)) {
            return r.stage1.clone();
        }
        match (m.has_image(), &self.stage1, &self.with_disks) {
            (true, Some(stage1), _) => stage1.clone(),
            (false, _, Some(with_disks)) if needs_disks(m, coverage) => with_disks.clone(),
            _ => self.initrd.clone(),
        }
    }

    /// The firmware machine `m` boots with: qboot, or SeaBIOS (`None`) for a screen.
    pub(crate) fn firmware_for(&self, m: &MachinePlan) -> Option<PathBuf> {
        self.firmware.clone().filter(|_| !m.display)
    }
}

/// What machines of `kernel`'s architecture boot without a screen (the unpacked kernel
/// through PVH, or the bzImage), and a note on it for the log.
fn boot_kernel_of(kernel: &Kernel) -> (PathBuf, String) {
    if kernel.arch.qboot_and_pvh {
        let boot = vmlinux::boot_kernel(kernel);
        (boot.path, boot.note)
    } else {
        (
            kernel.image.clone(),
            format!("vmlinuz, {} direct kernel boot", kernel.arch.machine),
        )
    }
}

/// Whether machine `m`, without an image, has disks (a coverage disk too).
fn needs_disks(m: &MachinePlan, coverage: bool) -> bool {
    !m.has_image() && (!m.disks.is_empty() || coverage)
}

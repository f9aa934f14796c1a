//! Images and kernels: what the machines boot.
//!
//! - `initramfs.rs`: the default image (busybox, the agent as `/init`, modules) and the
//!   stage 1 that boots a disk image, built once and cached by content, written with
//!   `flotilla_agent::cpio`.
//! - `modules.rs`: kernel modules: load order from `.modinfo`, signatures cut off.
//! - `elf.rs`: the ELF64 reading that modules, busybox and kernels need.
//! - `kernel.rs`: where the kernel is ([`Kernel`]).
//! - `vmlinux.rs`: the kernel unpacked from its bzImage for a PVH boot, cached.
//! - `debian/`: Debian disk images (`flotilla image debian`, and the spec's machines
//!   with `packages`, `files` or `init`), cached by content.
//! - `cache.rs`: the cache folder and its pruning.

mod cache;
pub mod debian;
mod elf;
mod initramfs;
mod kernel;
mod modules;
pub mod vmlinux;

pub use cache::cache_dir;
pub(crate) use cache::prune;
pub(crate) use elf::is_static_elf;
pub use initramfs::{busybox_path, default_initramfs};
pub(crate) use initramfs::{disk_initramfs, stage1_initramfs};
pub use kernel::Kernel;

//! Images and kernels: what Flotilla's machines boot, made and cached without a VM
//! (`flotilla image debian` uses it alone; the driver asks it for a spec's images).
//!
//! # Where things are
//!
//! - `lib.rs`: these docs and the re-exports.
//! - `error.rs`: [`Error`], what can go wrong finding or making an image.
//! - `agent.rs`: the in-guest agent's static binaries, one per architecture, built by the
//!   crate's build script and embedded.
//! - `initramfs.rs`: the default image (busybox, the agent as `/init`, modules), the
//!   stage 1 that boots a disk image and the Debian builder VM's, for the kernel's
//!   architecture; built once and cached by content, written with `flotilla_agent::cpio`.
//! - `busybox.rs`: each architecture's static busybox and its applets.
//! - `modules.rs`: kernel modules: load order from `.modinfo`, signatures cut off.
//! - `elf.rs`: the ELF64 reading that modules, busybox and kernels need.
//! - `kernel.rs`: where each architecture's kernel is ([`Kernel`]), and each Debian
//!   release's.
//! - `release.rs`: the Debian releases Debian machines are made of ([`debian::Release`]:
//!   trixie, bookworm), each with its own cloud kernel.
//! - `vmlinux.rs`: the kernel unpacked from its bzImage for a PVH boot, cached.
//! - `debian/`: Debian disk images (`flotilla image debian`, and the spec's machines
//!   with `packages`, `files` or `init`), cached by content:
//!   `mod.rs` (`flotilla image debian`, a spec's images from the cache or
//!   built), `stages.rs` (the build's stages, a function each), `emulation.rs`
//!   (how a tree of another architecture runs its programs: qemu-user through
//!   binfmt_misc, or the builder VM), `builder_vm.rs` (the short-lived VM of the
//!   tree's architecture that runs its programs, the tree going in as ext4 and out as
//!   tar), `base_tree.rs`
//!   (a base tree's packages, checked, and its cache key), `init.rs` (the init
//!   systems), `tune.rs` (what makes the tree a quick test guest),
//!   `mirror.rs` (the mirror and a release's index), `deb_file.rs` (what a
//!   local `.deb` says of itself: its architecture), `files.rs`
//!   (tools and tree files), `recipe.rs` (what goes into an image, and its
//!   cache key), `packages.rs` (apt in the tree: more packages, local `.deb`
//!   files), `store.rs` (the cache of built images, its locks).
//!
//! The cache folder and its pruning are `flotilla_host::cache`'s.

mod agent;
mod busybox;
pub mod debian;
mod elf;
mod error;
mod initramfs;
mod kernel;
mod modules;
mod release;
pub mod vmlinux;

pub use agent::{agent_binary, embedded_agent};
pub use busybox::{busybox_path, check_busybox};
pub use elf::{elf_machine, is_static_elf};
pub use error::Error;
pub use flotilla_host::cache::cache_dir;
pub use initramfs::default_initramfs;
pub use initramfs::{disk_initramfs, stage1_initramfs};
pub use kernel::Kernel;

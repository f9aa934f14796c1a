//! What every floor of Flotilla shares about the host it runs on: the image builder
//! (`flotilla-image`), coverage processing (`flotilla-coverage`), the run report
//! (`flotilla-report`) and the driver each need these, and none of them may import
//! another's.
//!
//! # Where things are
//!
//! - `lib.rs`: these docs.
//! - `process.rs`: child processes that never outlive the process that started them
//!   (also when it is killed with SIGKILL), their exit watched, their status described.
//! - `lock.rs`: the `flock` that says something is alive or being made (run folders,
//!   control sockets, cache entries), released on drop even while a forked child holds
//!   a copy of the descriptor.
//! - `programs.rs`: finding host programs (`PATH`, then the sbin folders).
//! - `cache.rs`: the cache folder and its pruning.
//! - `markup.rs`: text escaped for XML and HTML (JUnit, report pages, coverage pages).
//! - `arch.rs`: the guest architectures, a table: names, QEMU's binary, machine and CPU,
//!   console, ELF machine, Rust target.

pub mod arch;
pub mod cache;
pub mod lock;
pub mod markup;
pub mod process;
pub mod programs;

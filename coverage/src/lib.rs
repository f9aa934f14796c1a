//! Distributed coverage (`flotilla test --coverage`): what every machine's
//! instrumented programs executed, in one report.
//!
//! In the guest, every command the driver runs and every service of a Debian machine
//! gets [`guest_env`]: GCC's gcov writes `.gcda` files under [`GUEST_DIR`]`/gcov` (the
//! object file's full host path kept, so the host finds the `.gcno` beside it), LLVM's
//! runtime (C with clang, Rust with `-C instrument-coverage`) writes `.profraw` files
//! under [`GUEST_DIR`]`/llvm`. [`GUEST_DIR`] is a small disk of the machine's own,
//! mounted synchronously, so a machine that crashes loses only what its programs had
//! not written yet; the host reads it after QEMU stops. `report/` turns the data of
//! all machines into tracefiles, an HTML report and the terminal's table.
//!
//! None of it needs a VM: the driver gives every machine the disk and the
//! environment, and hands the disks it read to [`report::build`].
//!
//! # Where things are
//!
//! - `lib.rs`: the guest side: where data goes ([`GUEST_DIR`]), the environment
//!   ([`guest_env`]).
//! - `collect.rs`: reading a coverage disk on the host.
//! - `report/`: the report of all machines: `mod.rs` (the entry
//!   point, the tools chosen), `guest_files.rs` (reading the untrusted data:
//!   regular files only, no links), `tools.rs` (running gcov, llvm and lcov
//!   tools), `tracefile.rs` (the lcov format: read, write, merge),
//!   `gcov.rs` (`.gcda` paired with the host's `.gcno`, checked, read),
//!   `llvm.rs` (`.profraw` through llvm-profdata and llvm-cov),
//!   `summary.rs` (the numbers per file and machine), `table.rs` (the
//!   terminal's table), `html.rs` (our pages: counts per machine per line),
//!   `genhtml.rs` (lcov's genhtml), `tests.rs` (end to end with gcc).

pub mod collect;
pub mod report;

/// Where the guest's coverage data goes (the mount point of the coverage disk).
pub const GUEST_DIR: &str = "/run/flotilla/coverage";

/// The serial number of the coverage disk, how the guest finds it.
pub const DISK_SERIAL: &str = "flotilla-coverage";

/// The environment that sends instrumented programs' data to [`GUEST_DIR`].
pub fn guest_env() -> Vec<(String, String)> {
    vec![
        ("GCOV_PREFIX".into(), format!("{GUEST_DIR}/gcov")),
        ("GCOV_PREFIX_STRIP".into(), "0".into()),
        (
            "LLVM_PROFILE_FILE".into(),
            format!("{GUEST_DIR}/llvm/%h-%p-%m.profraw"),
        ),
    ]
}

//! The spec: a TOML file naming the machines of a test and its script.
//!
//! ```toml
//! name = "hello"            # optional, defaults to the folder's name
//! script = "test.rhai"      # relative to the spec file
//! timeout = 600             # seconds for the whole test
//! boot_timeout = 120        # seconds a machine may take to be ready
//! command_timeout = 300     # seconds a command may take unless the call says otherwise
//!
//! [network]
//! backend = "vde"           # or "multicast" (insecure, opt-in)
//! offset = 0                # machine numbers (and addresses) start at offset + 1
//!
//! [coverage]                # distributed coverage (flotilla test --coverage)
//! enabled = true
//! fail_under = 60.0         # fail the test under 60% combined line coverage
//! llvm_binaries = ["build/server"]  # LLVM-instrumented programs (GCC's need nothing)
//!
//! [[network.join]]          # share VLAN 1 with another driver's network
//! vlan = 1
//! switch = "/tmp/flotilla-abc123/vlan1.switch"
//!
//! [machines.server]
//! memory = 256              # MiB
//! cpus = 1
//! vlans = [1]               # default [1]; VLAN v is 192.168.v.0/24
//! forward = [{ host = 8080, guest = 80 }]  # 127.0.0.1:8080 -> guest port 80
//! image = "debian.qcow2"    # boot a disk image instead of the default initramfs
//! kernel_args = "loglevel=4"  # appended to the kernel command line
//! display = true            # a VGA screen for screenshot (boots about 1.5 s slower)
//! snapshot = false          # always boot (default: start from a saved, booted state where safe)
//!
//! [machines.web]            # a Debian machine, its image built from the spec
//! packages = ["nginx", "./dist/myapp_1.0_amd64.deb"]  # names, or local .deb files
//! files = { "/etc/myapp.conf" = "myapp.conf" }         # guest path = host file; modes kept
//! init = "systemd"          # or "sysvinit", "openrc", "agent"; default systemd
//! release = "trixie"        # or "bookworm"; default trixie (Debian 13)
//!
//! [machines.board]
//! arch = "aarch64"          # or "x86_64"; default the host's (another one is emulated)
//!
//! [[machines.server.disks]]  # /dev/vdb (after the image's /dev/vda; /dev/vda without one)
//! size = "64M"              # a blank qcow2: K, M or G suffix; a bare integer is MiB
//! name = "data"             # drive id and virtio serial; default disk1, disk2, ...
//!
//! [[machines.server.disks]]
//! base = "data.qcow2"       # a qcow2 overlay over this image; the image is never written
//! inject_errors = [{ event = "write_aio", once = true }]  # QEMU blkdebug rules
//! ```
//!
//! Every error names the file, line and column: unknown keys, wrong types and missing
//! files alike.
//!
//! - `types.rs`: the checked spec ([`Spec`], [`MachineSpec`], [`DiskSpec`], ...).
//! - `raw.rs`: the spec as written, as serde reads it, with the spans of its values.
//! - `parse.rs`: [`Spec::load`] and [`Spec::parse`]: raw to checked, errors at file:line:col.
//! - `disks.rs`: `[[machines.NAME.disks]]` checks: names, sizes, blkdebug rules.
//! - `debian.rs`: `packages`, `files` and `init` checks: a Debian machine's content.
//! - `forwards.rs`: `forward` checks: a guest port each, no host port forwarded twice.
//! - `names.rs`: what test, machine and disk names may be, the words scripts reserve,
//!   and a machine's host name.

mod debian;
mod disks;
mod forwards;
pub(crate) mod names;
mod parse;
mod raw;
mod types;

pub use types::{
    CoverageSpec, DiskSource, DiskSpec, FileSpec, ForwardSpec, InjectError, JoinSpec, MachineSpec,
    PackageSource, PackageSpec, Spec, SPEC_FILE_NAME,
};

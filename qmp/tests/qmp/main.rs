//! Integration tests of flotilla-qmp: against a real QEMU, and against a fake
//! server for the failures QEMU will not produce on demand.

mod bare_qemu;
mod fake;
mod guest;
mod qemu;
mod qga;
mod schema;
mod util;

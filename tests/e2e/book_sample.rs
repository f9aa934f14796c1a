//! The book's example of the driver under `cargo test` (docs/src/driver-from-cargo-test.md),
//! as it is there: `tests/book` checks that the chapter's Rust sample is this file's code.

// The sample returns the driver's error as a test would; its size is no concern here.
#![allow(clippy::result_large_err)]

use flotilla_driver::{Fleet, FleetOptions, Spec};

#[tokio::test(flavor = "multi_thread")]
async fn uname() -> Result<(), flotilla_driver::Error> {
    let spec = Spec::parse("vm.toml".as_ref(), "[machines.vm]\n")?;
    let fleet = Fleet::new(&spec, FleetOptions::new("flotilla-out/uname"))?;
    let vm = fleet.machine("vm")?;
    assert!(vm.succeed("uname -r").await?.contains("cloud"));
    fleet.stop_all().await;
    Ok(())
}

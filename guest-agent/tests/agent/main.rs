//! Integration tests of the agent: `install` on the host, and the agent in real VMs.

#![allow(clippy::unwrap_used)]

macro_rules! require_vm {
    () => {
        // The VM tests are the point of this binary: a missing part fails them.
        if let Some(why) = $crate::harness::missing_prerequisite() {
            panic!("cannot boot a VM: {why}; run scripts/setup");
        }
    };
}

mod harness;
mod install;
mod vm;

//! Integration tests of the agent: `install` on the host, and the agent in real VMs.

#![allow(clippy::unwrap_used)]

macro_rules! require_vm {
    () => {
        if let Some(why) = $crate::harness::missing_prerequisite() {
            eprintln!("SKIPPED: cannot boot a VM: {why}");
            return;
        }
    };
}

mod harness;
mod install;
mod vm;

//! Integration tests of the agent: `install` on the host, and the agent in real VMs.

#![allow(clippy::unwrap_used)]

macro_rules! require_vm {
    ($arch:expr) => {
        // The VM tests are the point of this binary: a missing part fails them.
        if let Some(why) = $crate::harness::missing_prerequisite($arch) {
            panic!("cannot boot a {} VM: {why}; run scripts/setup", $arch.name);
        }
    };
}

/// For each function `f(arch: &Arch)` named, the tests `f::x86_64` and `f::aarch64`:
/// one per row of [`harness::ARCHES`].
macro_rules! on_every_arch {
    ($($test:ident),* $(,)?) => {
        $(
            mod $test {
                use $crate::harness::Arch;

                #[test]
                fn x86_64() {
                    super::$test(Arch::x86_64());
                }

                #[test]
                fn aarch64() {
                    super::$test(Arch::aarch64());
                }
            }
        )*
    };
}

mod harness;
mod install;
mod vm;

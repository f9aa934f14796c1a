//! `flotilla image debian`: a Debian disk image for `image = "FILE"` in a spec.

use std::path::PathBuf;
use std::process::ExitCode;

use flotilla_driver::debian::{self, DebianOptions, Init, Release};
use flotilla_driver::Arch;

use crate::{print_chain, EXIT_ERROR};

/// Builds the image (or takes it from the cache) into `output`; prints its path.
pub(crate) fn debian(
    init: Init,
    release: Release,
    arch: &'static Arch,
    packages: Vec<String>,
    size: Option<u64>,
    output: PathBuf,
) -> ExitCode {
    let options = DebianOptions {
        arch,
        release,
        init,
        packages,
        size_mib: size,
        output,
    };
    match debian::build(&options, |line| eprintln!("{line}")) {
        Ok(path) => {
            if !release.is_default_guest_kernel() {
                // A machine with `image` boots the default guest's kernel unless told.
                eprintln!(
                    "debian: boot it with `image = \"{}\"` and `release = \"{release}\"` \
                     (the image has {release}'s kernel modules)",
                    path.display()
                );
            }
            println!("{}", path.display());
            ExitCode::SUCCESS
        }
        Err(e) => {
            print_chain(&e);
            // Building an image runs no test: any failure means "could not run".
            ExitCode::from(EXIT_ERROR)
        }
    }
}

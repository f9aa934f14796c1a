//! Feeds arbitrary bytes to the QMP and QGA decoders, whole and in chunks, and
//! checks that chunking never changes the decoded messages or errors.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    flotilla_qmp::fuzzing::fuzz_codecs(data);
});

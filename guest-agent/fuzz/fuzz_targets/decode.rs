//! `proto::decode` over arbitrary bytes: it must never panic, always make progress,
//! and every frame it yields must survive an encode/decode round trip. The JSON body
//! parsers get each frame's payload too.
#![no_main]

use flotilla_agent::proto::{
    decode, Decoded, ErrorBody, ExecRequest, ExitStatus, FileDone, FileInfo, FilePull, FilePush,
    Frame, Hello, HelloReply, ShutdownRequest, HEADER_LEN, MAX_PAYLOAD,
};
use libfuzzer_sys::fuzz_target;

fn bodies(frame: &Frame) {
    let _ = frame.parse_json::<Hello>();
    let _ = frame.parse_json::<HelloReply>();
    let _ = frame.parse_json::<ExecRequest>();
    let _ = frame.parse_json::<ExitStatus>();
    let _ = frame.parse_json::<ErrorBody>();
    let _ = frame.parse_json::<ShutdownRequest>();
    let _ = frame.parse_json::<FilePush>();
    let _ = frame.parse_json::<FilePull>();
    let _ = frame.parse_json::<FileInfo>();
    let _ = frame.parse_json::<FileDone>();
}

fuzz_target!(|data: &[u8]| {
    let mut rest = data;
    loop {
        match decode(rest) {
            Decoded::Incomplete => {
                // Only a partial frame (or partial magic) may be left over.
                assert!(rest.len() < HEADER_LEN + MAX_PAYLOAD as usize);
                break;
            }
            Decoded::Skip(n) | Decoded::Invalid { consumed: n, .. } => {
                assert!(n > 0 && n <= rest.len());
                rest = &rest[n..];
            }
            Decoded::Frame(frame, n) => {
                assert!(n >= HEADER_LEN && n <= rest.len());
                assert_eq!(n, HEADER_LEN + frame.payload.len());
                let bytes = frame.to_bytes();
                match decode(&bytes) {
                    Decoded::Frame(again, m) => {
                        assert_eq!(m, bytes.len());
                        assert_eq!(again, frame);
                    }
                    other => panic!("re-encoded frame does not decode: {other:?}"),
                }
                bodies(&frame);
                rest = &rest[n..];
            }
        }
    }
});

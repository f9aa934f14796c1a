//! The body of the codec fuzz target (`qmp/fuzz`), shared with a smoke test
//! that runs it on stable over seeds and deterministic mutations.

use bytes::BytesMut;
use tokio_util::codec::Decoder;

use crate::codec::{parse_message, QmpCodec};
use crate::qga::{QgaCodec, QgaFrame};

/// Decodes `data` with both codecs, whole and in chunks whose sizes come from the
/// data itself, and checks that chunking never changes what is decoded.
/// Panics on any inconsistency; must never panic otherwise.
pub fn fuzz_codecs(data: &[u8]) {
    let Some((&split, data)) = data.split_first() else {
        return;
    };
    let _ = parse_message(data);
    let chunk = usize::from(split % 64) + 1;
    // Small limit so that the line-length paths are exercised too.
    let limit = 256;

    let whole = run(
        &mut QmpCodec::with_max_line_len(limit),
        data,
        data.len().max(1),
    );
    let chunked = run(&mut QmpCodec::with_max_line_len(limit), data, chunk);
    assert_eq!(
        whole, chunked,
        "qmp: chunking by {chunk} changed the result"
    );

    let whole = run(
        &mut QgaCodec::with_max_line_len(limit),
        data,
        data.len().max(1),
    );
    let chunked = run(&mut QgaCodec::with_max_line_len(limit), data, chunk);
    assert_eq!(
        whole, chunked,
        "qga: chunking by {chunk} changed the result"
    );
}

/// A codec's output as comparable text: items, then the error that ended it.
fn run<D>(codec: &mut D, data: &[u8], chunk: usize) -> Vec<String>
where
    D: Decoder,
    D::Item: Describe,
    D::Error: std::fmt::Display,
{
    let mut out = Vec::new();
    let mut buf = BytesMut::new();
    for piece in data.chunks(chunk) {
        buf.extend_from_slice(piece);
        loop {
            match codec.decode(&mut buf) {
                Ok(Some(item)) => out.push(item.describe()),
                Ok(None) => break,
                Err(e) => {
                    out.push(format!("error: {e}"));
                    return normalize(out);
                }
            }
        }
    }
    loop {
        match codec.decode_eof(&mut buf) {
            Ok(Some(item)) => out.push(item.describe()),
            Ok(None) => break,
            Err(e) => {
                out.push(format!("error: {e}"));
                break;
            }
        }
    }
    normalize(out)
}

/// A too-long line may be noticed before its end arrives (chunked) or after
/// (whole), after different numbers of items: compare up to the first error
/// kind only.
fn normalize(mut out: Vec<String>) -> Vec<String> {
    if let Some(pos) = out
        .iter()
        .position(|s| s.starts_with("error: qmp: a line from qemu is longer"))
    {
        out.truncate(pos);
        out.push("error: too long".to_owned());
    }
    out
}

trait Describe {
    fn describe(&self) -> String;
}

impl Describe for crate::codec::Message {
    fn describe(&self) -> String {
        format!("{self:?}")
    }
}

impl Describe for QgaFrame {
    fn describe(&self) -> String {
        match self {
            QgaFrame::Invalid(e) => format!("invalid: {e}"),
            other => format!("{other:?}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn smoke_over_seeds_and_mutations() {
        let seeds: [&[u8]; 8] = [
            b"\x05{\"QMP\": {\"version\": {\"qemu\": {\"micro\": 0, \"minor\": 2, \"major\": 7}, \"package\": \"\"}, \"capabilities\": [\"oob\"]}}\r\n",
            b"\x01{\"return\": {}, \"id\": 1}\n{\"event\": \"STOP\", \"timestamp\": {\"seconds\": 1, \"microseconds\": 2}}\n",
            b"\x03{\"error\": {\"class\": \"GenericError\", \"desc\": \"x\"}}\r\n\r\n",
            b"\x07junk\n\xff{\"return\": 42}\n{\"ret",
            b"\x00\xff\xff\n\n\r",
            b"\x3f[1,2,3]\n{}\n\"str\"\n",
            b"\x02{\"return\": \"\xc3\x28\"}\n",
            b"\x09xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\nafter\n",
        ];
        // xorshift: deterministic, no dependency.
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut rand = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for seed in seeds {
            fuzz_codecs(seed);
            for _ in 0..500 {
                let mut data = seed.to_vec();
                for _ in 0..(rand() % 4 + 1) {
                    let r = rand();
                    let at = (r as usize >> 8) % (data.len() + 1);
                    match r % 4 {
                        0 if at < data.len() => data[at] = (r >> 40) as u8,
                        1 => data
                            .insert(at, [b'\n', b'\r', 0xff, b'{', b'"'][(r >> 40) as usize % 5]),
                        2 if at < data.len() => {
                            data.remove(at);
                        }
                        _ => data.truncate(at.max(1)),
                    }
                }
                fuzz_codecs(&data);
            }
        }
    }
}

//! The client again, in Rust: sends each argument to the server at ADDRESS and checks
//! the replies ("<checksum> <LINE IN CAPITALS>"), as client.c does. Built by build.sh
//! with LLVM's source-based coverage (`-C instrument-coverage`).

use std::io::{BufRead, BufReader, Write};
use std::net::{Ipv4Addr, TcpStream};
use std::process::ExitCode;

const PORT: u16 = 7000;

/// The server's signature of a reply (common.c's `checksum`).
fn checksum(text: &str) -> u32 {
    text.bytes()
        .fold(0u32, |sum, b| sum.wrapping_mul(31).wrapping_add(u32::from(b)))
        % 10000
}

/// Whether `reply` is `sent` in capitals, correctly signed.
fn check_reply(sent: &str, reply: &str) -> Result<(), String> {
    let (sum, text) = reply
        .split_once(' ')
        .ok_or_else(|| format!("malformed reply: {reply}"))?;
    let sum: u32 = sum.parse().map_err(|_| format!("malformed reply: {reply}"))?;
    if text != sent.to_ascii_uppercase() || sum != checksum(text) {
        return Err(format!("wrong reply: {reply}"));
    }
    Ok(())
}

fn run(args: &[String]) -> Result<(), String> {
    let [address, messages @ ..] = args else {
        return Err("usage: client-rs ADDRESS MESSAGE...".into());
    };
    let address: Ipv4Addr = address
        .parse()
        .map_err(|_| format!("{address} is not an IPv4 address"))?;
    let stream = TcpStream::connect((address, PORT)).map_err(|e| format!("connect: {e}"))?;
    let mut reader = BufReader::new(stream.try_clone().map_err(|e| e.to_string())?);
    let mut writer = stream;
    for message in messages {
        writeln!(writer, "{message}").map_err(|e| format!("send: {e}"))?;
        let mut reply = String::new();
        if reader.read_line(&mut reply).map_err(|e| e.to_string())? == 0 {
            return Err("connection lost".into());
        }
        let reply = reply.trim_end_matches('\n');
        check_reply(message, reply)?;
        println!("{reply}");
    }
    writeln!(writer, "bye").map_err(|e| format!("send: {e}"))?;
    Ok(())
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("client-rs: {e}");
            ExitCode::FAILURE
        }
    }
}

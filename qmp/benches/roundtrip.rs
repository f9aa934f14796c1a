//! Round-trip benchmark against a real QEMU: prints a table, times nothing else.
//!
//! ```text
//! cargo bench -p flotilla-qmp --bench roundtrip [-- SEQUENTIAL_CALLS] [--accept-missing]
//! ```
//!
//! Three clients talk to the same QEMU, each on its own QMP monitor socket:
//! - this crate's `Client`;
//! - a raw-socket floor: write one line, read one line, no JSON decoding beyond
//!   finding the newline (for throughput, 8 commands kept in flight);
//! - Python's `qemu.qmp`, run by `$FLOTILLA_BENCH_PYTHON`, else by the virtual
//!   environment `scripts/bench-setup` makes (`~/.cache/flotilla/bench-venv`), else by
//!   `python3`.
//!
//! Rows: sequential `query-status` latency (median, p99) and the throughput of 8
//! concurrent callers.
//!
//! The subject or the floor failing exits 1. A missing peer (no `qemu.qmp`) is named
//! above the table and exits 3 after it, unless `--accept-missing` is passed.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use flotilla_qmp::Client;

#[path = "../tests/qmp/bare_qemu.rs"]
mod bare_qemu;

const CONCURRENCY: usize = 8;

struct Row {
    name: &'static str,
    median: Duration,
    p99: Duration,
    throughput: f64,
}

/// Kills QEMU when the benchmark ends, however it ends.
struct QemuGuard(std::process::Child);

impl Drop for QemuGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let index = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

fn wait_for_socket(path: &Path) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(15);
    while UnixStream::connect(path).is_err() {
        if Instant::now() > deadline {
            return Err(format!("{} did not appear", path.display()));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

async fn bench_client(path: &Path, calls: usize) -> Result<Row, String> {
    let client = Client::connect_unix(path)
        .await
        .map_err(|e| e.to_string())?;
    for _ in 0..200 {
        client.query_status().await.map_err(|e| e.to_string())?;
    }
    let mut samples = Vec::with_capacity(calls);
    for _ in 0..calls {
        let start = Instant::now();
        client.query_status().await.map_err(|e| e.to_string())?;
        samples.push(start.elapsed());
    }
    samples.sort();
    let per_caller = calls / CONCURRENCY;
    let start = Instant::now();
    let tasks: Vec<_> = (0..CONCURRENCY)
        .map(|_| {
            let c = client.clone();
            tokio::spawn(async move {
                for _ in 0..per_caller {
                    c.query_status().await?;
                }
                Ok::<_, flotilla_qmp::Error>(())
            })
        })
        .collect();
    for task in tasks {
        task.await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())?;
    }
    let throughput = (per_caller * CONCURRENCY) as f64 / start.elapsed().as_secs_f64();
    Ok(Row {
        name: "flotilla-qmp",
        median: percentile(&samples, 0.5),
        p99: percentile(&samples, 0.99),
        throughput,
    })
}

fn bench_raw(path: &Path, calls: usize) -> Result<Row, String> {
    let stream = UnixStream::connect(path).map_err(|e| e.to_string())?;
    let mut writer = stream.try_clone().map_err(|e| e.to_string())?;
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    let read_line = |reader: &mut BufReader<UnixStream>, line: &mut String| {
        line.clear();
        reader.read_line(line).map_err(|e| e.to_string())
    };
    read_line(&mut reader, &mut line)?; // greeting
    writer
        .write_all(b"{\"execute\":\"qmp_capabilities\"}\n")
        .map_err(|e| e.to_string())?;
    read_line(&mut reader, &mut line)?;
    let command = b"{\"execute\":\"query-status\",\"id\":1}\n";
    let mut round_trip = |reader: &mut BufReader<UnixStream>| -> Result<(), String> {
        writer.write_all(command).map_err(|e| e.to_string())?;
        line.clear();
        reader.read_line(&mut line).map_err(|e| e.to_string())?;
        Ok(())
    };
    for _ in 0..200 {
        round_trip(&mut reader)?;
    }
    let mut samples = Vec::with_capacity(calls);
    for _ in 0..calls {
        let start = Instant::now();
        round_trip(&mut reader)?;
        samples.push(start.elapsed());
    }
    samples.sort();
    // Throughput floor: keep CONCURRENCY commands in flight on the one socket.
    let batch: Vec<u8> = command.repeat(CONCURRENCY);
    let rounds = calls / CONCURRENCY;
    let mut writer = reader.get_ref().try_clone().map_err(|e| e.to_string())?;
    let start = Instant::now();
    let mut line = String::new();
    for _ in 0..rounds {
        writer.write_all(&batch).map_err(|e| e.to_string())?;
        for _ in 0..CONCURRENCY {
            line.clear();
            reader.read_line(&mut line).map_err(|e| e.to_string())?;
        }
    }
    let throughput = (rounds * CONCURRENCY) as f64 / start.elapsed().as_secs_f64();
    Ok(Row {
        name: "raw socket (floor)",
        median: percentile(&samples, 0.5),
        p99: percentile(&samples, 0.99),
        throughput,
    })
}

const PYTHON: &str = r#"
import asyncio, json, sys, time
from qemu.qmp import QMPClient

async def main(path, calls, concurrency):
    qmp = QMPClient("bench")
    await qmp.connect(path)
    for _ in range(200):
        await qmp.execute("query-status")
    samples = []
    for _ in range(calls):
        t = time.perf_counter()
        await qmp.execute("query-status")
        samples.append(time.perf_counter() - t)
    per = calls // concurrency
    async def caller():
        for _ in range(per):
            await qmp.execute("query-status")
    t = time.perf_counter()
    await asyncio.gather(*(caller() for _ in range(concurrency)))
    elapsed = time.perf_counter() - t
    await qmp.disconnect()
    print(json.dumps({"samples": samples, "throughput": per * concurrency / elapsed}))

asyncio.run(main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3])))
"#;

/// The Python that has `qemu.qmp`: see the module docs.
fn python() -> PathBuf {
    if let Some(p) = std::env::var_os("FLOTILLA_BENCH_PYTHON") {
        return PathBuf::from(p);
    }
    let cache = std::env::var_os("FLOTILLA_CACHE")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("XDG_CACHE_HOME").map(|c| Path::new(&c).join("flotilla")))
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".cache/flotilla")));
    cache
        .map(|c| c.join("bench-venv/bin/python"))
        .filter(|p| p.is_file())
        .unwrap_or_else(|| PathBuf::from("python3"))
}

fn bench_python(path: &Path, calls: usize) -> Result<Row, String> {
    let python = python();
    let output = Command::new(&python)
        .arg("-c")
        .arg(PYTHON)
        .arg(path)
        .arg(calls.to_string())
        .arg(CONCURRENCY.to_string())
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("{} not runnable: {e}", python.display()))?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let last = stderr.lines().last().unwrap_or("").to_owned();
        return Err(format!(
            "qemu.qmp under {}: {last} (scripts/bench-setup installs it)",
            python.display()
        ));
    }
    let report: serde_json::Value =
        serde_json::from_slice(&output.stdout).map_err(|e| format!("python output: {e}"))?;
    let mut samples: Vec<Duration> = report["samples"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_f64())
                .map(Duration::from_secs_f64)
                .collect()
        })
        .unwrap_or_default();
    samples.sort();
    Ok(Row {
        name: "python qemu.qmp",
        median: percentile(&samples, 0.5),
        p99: percentile(&samples, 0.99),
        throughput: report["throughput"].as_f64().unwrap_or(0.0),
    })
}

fn micros(d: Duration) -> String {
    format!("{:.1} µs", d.as_secs_f64() * 1e6)
}

#[tokio::main]
async fn main() {
    // `cargo bench` passes `--bench`; take the first numeric argument if any.
    let calls: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(5000)
        .max(CONCURRENCY);
    let dir = match tempfile::tempdir() {
        Ok(d) => d,
        Err(e) => {
            eprintln!("roundtrip: creating a temp dir: {e}");
            std::process::exit(1);
        }
    };
    let sockets: Vec<PathBuf> = ["client", "raw", "python"]
        .iter()
        .map(|n| dir.path().join(format!("{n}.sock")))
        .collect();
    let mut qemu = bare_qemu::command(std::path::Path::new(bare_qemu::QEMU), &[], &sockets);
    let child = match qemu.stdin(Stdio::null()).stdout(Stdio::null()).spawn() {
        Ok(c) => QemuGuard(c),
        Err(e) => {
            eprintln!("roundtrip: starting qemu-system-x86_64: {e}");
            std::process::exit(1);
        }
    };
    for s in &sockets {
        if let Err(e) = wait_for_socket(s) {
            eprintln!("roundtrip: {e}");
            std::process::exit(1);
        }
    }

    println!("query-status round trips against one QEMU, {calls} sequential calls, {CONCURRENCY} concurrent callers");
    let mut rows = Vec::new();
    let mut failed = Vec::new();
    let mut missing = Vec::new();
    match bench_client(&sockets[0], calls).await {
        Ok(r) => rows.push(r),
        Err(e) => failed.push(format!("flotilla-qmp failed: {e}")),
    }
    match bench_raw(&sockets[1], calls) {
        Ok(r) => rows.push(r),
        Err(e) => failed.push(format!("raw socket (floor) failed: {e}")),
    }
    match bench_python(&sockets[2], calls) {
        Ok(r) => rows.push(r),
        Err(e) => missing.push(format!("python qemu.qmp: {e}")),
    }
    for m in &missing {
        println!("MISSING {m}");
    }
    println!();
    println!("| client | median | p99 | {CONCURRENCY}-caller throughput |");
    println!("| --- | ---: | ---: | ---: |");
    for r in &rows {
        println!(
            "| {} | {} | {} | {:.0} calls/s |",
            r.name,
            micros(r.median),
            micros(r.p99),
            r.throughput
        );
    }
    drop(child);
    if !failed.is_empty() {
        for f in failed {
            eprintln!("roundtrip: {f}");
        }
        std::process::exit(1);
    }
    if !missing.is_empty() && !std::env::args().any(|a| a == "--accept-missing") {
        eprintln!(
            "roundtrip: a peer is missing; pass --accept-missing to accept the table as it is"
        );
        std::process::exit(3);
    }
}

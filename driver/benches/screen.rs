//! `cargo bench -p flotilla-driver --bench screen`: what reading a screen's text costs,
//! by the agent and by OCR, beside their floors, in one run on one machine with
//! `display = true`, whose tty1 shows 20 lines of text.
//!
//! - read: `get_screen_text()` (the agent reads the virtual console; `BENCH_RUNS`,
//!   default 50, median and p99) beside the agent's round trip of `succeed("true")`;
//!   `get_screen_text_ocr()` (a screendump, its picture variants, `tesseract --psm 6`
//!   on the first; `BENCH_RUNS / 10` runs, at least 3) beside a bare `tesseract <png>
//!   stdout --psm 6` of a screenshot of the same screen.
//! - wait: `wait_for_text(token)` latency, from the moment a guest command that writes
//!   the token to tty1 returns to the moment the wait returns, by the agent and by OCR
//!   (`wait_for_text_with(.., ScreenReader::Ocr)`); negative when the wait saw the text
//!   before the command's end reached the host.
//!
//! The subject failing (a boot, a read, a wait, OCR text without the words on the
//! screen) panics: a non-zero exit. A missing `tesseract` is such a failure.

use std::process::Command;
use std::time::{Duration, Instant};

use common::env;
use flotilla_driver::{Fleet, FleetOptions, Machine, ScreenReader, Spec};

mod common;

/// Median and p99, in milliseconds.
fn stats(v: &mut [f64]) -> (f64, f64) {
    v.sort_by(f64::total_cmp);
    let at = |q: f64| v[((v.len() as f64 - 1.0) * q).round() as usize];
    (at(0.5), at(0.99))
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Milliseconds from the end of a guest command writing `token` to tty1 to the end of a
/// wait for it (negative: the wait ended first).
async fn wait_latency(vm: &Machine, token: &str, how: ScreenReader) -> f64 {
    let wait = async {
        let found = vm
            .wait_for_text_with(token, Duration::from_secs(300), how)
            .await
            .expect("wait_for_text");
        (Instant::now(), found)
    };
    let write = async {
        // Let the wait make its first read of a screen without the token.
        tokio::time::sleep(Duration::from_millis(300)).await;
        vm.succeed(&format!("echo {token} > /dev/tty1"))
            .await
            .expect("write the token");
        Instant::now()
    };
    let ((seen, found), written) = tokio::join!(wait, write);
    assert!(found.text.contains(token), "{found:?}");
    if seen >= written {
        ms(seen - written)
    } else {
        -ms(written - seen)
    }
}

#[tokio::main]
async fn main() {
    let runs = env("BENCH_RUNS", 50) as usize;
    let ocr_runs = (runs / 10).max(3);
    let dir = tempfile::tempdir().expect("temp dir");
    let spec = Spec::parse(
        &dir.path().join("bench.toml"),
        "[machines.vm]\ndisplay = true\n",
    )
    .expect("spec");
    let mut options = FleetOptions::new(dir.path().join("out"));
    options.terminal = false;
    let net = Fleet::new(&spec, options).expect("network");
    let vm = net.machine("vm").expect("vm");
    vm.start().await.expect("boot");
    vm.succeed(
        "printf '\\033[H\\033[2J' > /dev/tty1; \
         for i in $(seq 20); do echo \"Flotilla screen bench line $i\"; done > /dev/tty1",
    )
    .await
    .expect("fill the screen");

    // Reads.
    for _ in 0..5 {
        vm.succeed("true").await.expect("warm up");
        vm.get_screen_text().await.expect("warm up");
    }
    let (mut exec, mut agent) = (Vec::new(), Vec::new());
    for _ in 0..runs {
        let t = Instant::now();
        vm.succeed("true").await.expect("true");
        exec.push(ms(t.elapsed()));
        let t = Instant::now();
        let text = vm.get_screen_text().await.expect("get_screen_text");
        agent.push(ms(t.elapsed()));
        assert!(text.contains("bench line 20"), "{text}");
    }
    let shot = vm.screenshot("bench").await.expect("screenshot");
    let mut bare = Vec::new();
    let mut ocr = Vec::new();
    for _ in 0..ocr_runs {
        let t = Instant::now();
        let out = Command::new("tesseract")
            .arg(&shot)
            .args(["stdout", "--psm", "6"])
            .env("OMP_THREAD_LIMIT", "1")
            .output()
            .expect("tesseract (apt-get install tesseract-ocr tesseract-ocr-eng)");
        bare.push(ms(t.elapsed()));
        assert!(out.status.success(), "bare tesseract: {out:?}");
        let t = Instant::now();
        let text = vm.get_screen_text_ocr().await.expect("get_screen_text_ocr");
        ocr.push(ms(t.elapsed()));
        assert!(text.contains("bench line"), "OCR read: {text}");
    }

    // Waits.
    let mut wait_agent = Vec::new();
    for i in 0..runs.min(20) {
        wait_agent.push(wait_latency(&vm, &format!("agent-token-{i}"), ScreenReader::Auto).await);
    }
    let mut wait_ocr = Vec::new();
    for i in 0..ocr_runs {
        // Words OCR reads as they are.
        let token = format!(
            "OCRTOKEN{}",
            ["ALPHA", "BRAVO", "DELTA", "KILO", "LIMA"][i % 5]
        );
        wait_ocr.push(wait_latency(&vm, &token, ScreenReader::Ocr).await);
    }
    net.stop_all().await;

    let (em, ep) = stats(&mut exec);
    let (am, ap) = stats(&mut agent);
    let (bm, bp) = stats(&mut bare);
    let (om, op) = stats(&mut ocr);
    let (wam, wap) = stats(&mut wait_agent);
    let (wom, wop) = stats(&mut wait_ocr);
    println!();
    println!(
        "screen text, accelerator {}",
        flotilla_driver::detect_accel()
    );
    println!(
        "{:<52} {:>10} {:>10} {:>10}",
        "read", "median ms", "p99 ms", "x base"
    );
    let row = |name: String, m: f64, p: f64, base: f64| {
        println!("{name:<52} {m:>10.2} {p:>10.2} {:>10.2}", m / base);
    };
    row(format!("base: succeed(\"true\"), {runs} runs"), em, ep, em);
    row(format!("agent: get_screen_text(), {runs} runs"), am, ap, em);
    row(
        format!("base: tesseract <png> stdout --psm 6, {ocr_runs} runs"),
        bm,
        bp,
        bm,
    );
    row(
        format!("OCR: get_screen_text_ocr(), {ocr_runs} runs"),
        om,
        op,
        bm,
    );
    println!();
    println!(
        "{:<52} {:>10} {:>10}",
        "wait_for_text, from the write to the return", "median ms", "p99 ms"
    );
    println!(
        "{:<52} {wam:>10.2} {wap:>10.2}",
        format!("agent, {} runs", wait_agent.len())
    );
    println!(
        "{:<52} {wom:>10.2} {wop:>10.2}",
        format!("OCR, {} runs", wait_ocr.len())
    );
}

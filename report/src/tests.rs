//! The page in a real browser (headless Chromium, the `chromium` package): a synthetic
//! run of 16 machines and 50,000 console lines, with hostile and broken input, loads
//! within seconds, and its filter finds a line.

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use super::{write, Outline};
use crate::steps::FILE as EVENTS;

const MACHINES: usize = 16;
const LINES: usize = 50_000;

/// A log folder as a long run leaves it: `driver.log` with every machine's console
/// lines (one line hostile, one not UTF-8), the machines' folders, and `events.jsonl`
/// with steps for all and a last line cut by a crash.
fn long_run(dir: &Path) {
    let mut log: Vec<u8> = Vec::with_capacity(LINES * 90);
    let mut events = String::new();
    let per = LINES / MACHINES;
    for m in 0..MACHINES {
        let name = format!("m{m:02}");
        std::fs::create_dir_all(dir.join(&name)).unwrap();
        std::fs::write(dir.join(&name).join("console.log"), "").unwrap();
        let _ = writeln!(
            events,
            r#"{{"event":"start","t":{}.0,"id":{},"machine":"{name}","kind":"boot","label":"booting"}}"#,
            m,
            m * 1000
        );
        let _ = writeln!(
            events,
            r#"{{"event":"end","t":{}.5,"id":{},"outcome":"ok"}}"#,
            m + 3,
            m * 1000
        );
        for c in 1..100 {
            let t = 20.0 + c as f64;
            let _ = writeln!(
                events,
                r#"{{"event":"start","t":{t},"id":{},"machine":"{name}","kind":"command","label":"`step {c}`"}}"#,
                m * 1000 + c
            );
            let _ = writeln!(
                events,
                r#"{{"event":"end","t":{},"id":{},"outcome":"ok"}}"#,
                t + 0.5,
                m * 1000 + c
            );
        }
        for i in 0..per {
            let t = 1.0 + (m * per + i) as f64 * 0.002;
            let _ = writeln!(
                log,
                "[{t:8.3}] {name} # [ {t:.6}] kernel: line {i} of {name}, some text to make it long"
            );
        }
        let _ = writeln!(log, "[ 130.000] {name}: qemu: warning: a qemu line");
    }
    log.extend_from_slice(b"[ 130.100] m07 # needle-4242 found here\n");
    log.extend_from_slice(b"[ 130.200] m03 # </script><script>document.title='pwned'</script>\n");
    log.extend_from_slice(b"[ 130.300] m03 # <img src=x onerror=\"document.title='pwned'\">\n");
    log.extend_from_slice(b"[ 130.400] m03 # not utf-8: \xff\xfe pwned\n");
    events.push_str(
        r#"{"event":"start","t":125.0,"id":99999,"machine":"m05","kind":"command","label":"`false`"}
{"event":"end","t":125.5,"id":99999,"outcome":"failed","message":"exit status 1"}
{"event":"mark","t":131.0,"kind":"error","label":"boom","outcome":"failed"}
{"event":"end","t":13"#,
    );
    std::fs::write(dir.join("driver.log"), log).unwrap();
    std::fs::write(dir.join(EVENTS), events).unwrap();
}

/// `chromium --headless --dump-dom URL`: the DOM after the page's scripts ran, and how
/// long the browser took.
fn dump_dom(url: &str) -> (String, Duration) {
    let started = Instant::now();
    let out = Command::new("chromium")
        .args(["--headless", "--no-sandbox", "--disable-gpu"])
        .args(["--virtual-time-budget=10000", "--dump-dom", url])
        .stderr(std::process::Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("running chromium (apt-get install chromium): {e}"));
    assert!(
        out.status.success(),
        "chromium --dump-dom: {:?}",
        out.status
    );
    (String::from_utf8(out.stdout).unwrap(), started.elapsed())
}

#[test]
fn sixteen_machines_and_fifty_thousand_lines_load_and_filter_in_a_browser() {
    let dir = tempfile::tempdir().unwrap();
    long_run(dir.path());
    let outline = Outline {
        name: "long",
        passed: false,
        verdict: "failed",
        seconds: 131.0,
        error: Some("error: machine `m05`: boom"),
        excerpt: None,
    };
    let started = Instant::now();
    let page = write(dir.path(), &outline).unwrap();
    let made = started.elapsed();
    let size = std::fs::metadata(&page).unwrap().len();
    let url = format!("file://{}#m=m07&q=NEEDLE-4242", page.display());
    let (dom, took) = dump_dom(&url);
    let rendered: u64 = dom
        .split("data-rendered=\"")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .and_then(|s| s.parse().ok())
        .expect("the page's script ran to its end");
    eprintln!(
        "{MACHINES} machines, {LINES} lines: report.html {} KiB made in {:.2} s; \
         chromium loaded it in {:.1} s, its script drew it in {rendered} ms",
        size / 1024,
        made.as_secs_f64(),
        took.as_secs_f64()
    );
    assert!(size < 12 << 20, "{size} bytes");
    assert!(rendered < 5000, "drawn in {rendered} ms");
    assert!(took < Duration::from_secs(90), "loaded in {took:?}");
    // A lane per machine, the failing step marked, the filter's one line shown.
    assert_eq!(
        dom.matches("class=\"lane\" data-lane=\"m").count(),
        MACHINES
    );
    assert_eq!(
        dom.matches("failed failing\"").count(),
        1,
        "one failing step"
    );
    assert!(
        dom.contains("needle-4242 found here</span>"),
        "the line found"
    );
    assert!(dom.contains("1 of 3126 lines"), "the count");
    assert!(dom.contains("events.jsonl: 1 line(s) could not be read"));
    // Hostile lines stay text; bytes that are not UTF-8 are replaced.
    let url = format!("file://{}#m=m03&q=pwned", page.display());
    let (dom, _) = dump_dom(&url);
    assert!(dom.contains("3 of 3128 lines"), "the hostile lines shown");
    assert!(dom.contains("not utf-8: \u{fffd}\u{fffd} pwned"));
    assert!(dom.contains("&lt;/script&gt;&lt;script&gt;document.title='pwned'"));
    assert!(!dom.contains("<title>pwned") && !dom.contains("<img src=\"x\""));
    // Only the rows in sight are drawn, not 50,000.
    assert!(dom.matches("class=\"row").count() < 200);
    // Zoomed in eight times: lanes eight times as wide, an axis tick every 1/32 of the
    // run, the zoom tools with the failing step's button.
    let url = format!("file://{}#zoom=8", page.display());
    let (dom, _) = dump_dom(&url);
    assert!(dom.contains("data-zoom=\"8\""), "zoomed");
    assert!(
        dom.contains("class=\"tl-lanes\" style=\"width: 800%;\""),
        "the lanes' width"
    );
    assert_eq!(dom.matches("class=\"tick\"").count(), 33);
    assert!(dom.contains(">failing step</button>"));
    assert!(dom.contains("<span class=\"tl-zoom\">×8</span>"));
}

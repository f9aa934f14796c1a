//! `report.html` of real runs, opened in a real browser (headless Chromium): a failing
//! test's page shows the failure and marks the failing step; a passing suite's has
//! its screenshot inline and an `index.html`. A picture of each page is saved beside
//! it, under `target/tmp/report-cli/`.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::{assert_no_qemu_left, flotilla_test, run_expecting, tag, write_spec};

const SPEC: &str = r#"
name = "NAME"
script = "t.rhai"
timeout = 300

[machines.server]
memory = 256
display = true

[machines.client]
memory = 256
"#;

/// The script both runs share; the failing one goes on with [`FAILING`].
const SCRIPT: &str = r#"
start_all();
capture_vlan(1);
client.copy_from("/proc/version", "version.txt");
subtest("look", || {
    server.succeed("echo '</script><script>alert(1)</script>' > /dev/console");
    server.screenshot("screen");
    client.succeed("uname -r");
});
"#;

const FAILING: &str = r#"client.succeed("echo about to fail");
server.succeed("echo no such; false");
client.succeed("echo never");
"#;

/// A spec folder `spec` (with `toml` and `script`) and its log folder `out`, in a folder
/// `name` of their own under the target directory, emptied first and kept after the test.
fn spec_and_out(name: &str, toml: &str, script: &str) -> (PathBuf, PathBuf) {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("report-cli")
        .join(name);
    let _ = std::fs::remove_dir_all(&dir);
    let spec = dir.join("spec");
    std::fs::create_dir_all(&spec).unwrap();
    write_spec(&spec, toml, script);
    (spec, dir.join("out"))
}

/// Headless Chromium, as root needs it.
fn chromium() -> Command {
    let mut cmd = Command::new("chromium");
    cmd.args(["--headless", "--no-sandbox", "--disable-gpu"])
        .stderr(std::process::Stdio::null());
    cmd
}

/// The page's DOM after its scripts ran; a picture of it saved as `png`.
fn open_in_browser(page: &Path, png: &Path) -> String {
    let url = format!("file://{}", page.canonicalize().unwrap().display());
    let out = chromium()
        .args(["--virtual-time-budget=5000", "--dump-dom", &url])
        .output()
        .unwrap_or_else(|e| panic!("running chromium (apt-get install chromium): {e}"));
    assert!(
        out.status.success(),
        "chromium --dump-dom {url}: {:?}",
        out.status
    );
    let shot = chromium()
        .arg(format!("--screenshot={}", png.display()))
        .args(["--window-size=1400,1000", &url])
        .status()
        .unwrap();
    assert!(shot.success() && png.is_file(), "chromium --screenshot");
    String::from_utf8(out.stdout).unwrap()
}

/// What the page shows whether it passed or not: a lane per machine, the screenshot
/// inline, the subtest, the hostile console line as text only.
fn check_common(dom: &str) {
    for lane in ["server", "client"] {
        let n = dom.matches(&format!("data-lane=\"{lane}\"")).count();
        assert_eq!(n, 1, "one lane of {lane} in\n{dom}");
    }
    assert!(dom.contains("<img src=\"data:image/png;base64,"), "{dom}");
    assert!(dom.contains("class=\"step kind-subtest ok\""), "{dom}");
    assert!(dom.contains("class=\"step kind-boot ok"), "{dom}");
    assert!(!dom.contains("<script>alert"), "{dom}");
    // The run's own files are linked: the copied file and the capture.
    for file in ["version.txt", "vlan1.pcap", "driver.log"] {
        assert!(
            dom.contains(&format!("<a href=\"{file}\">")),
            "{file}: {dom}"
        );
    }
}

#[test]
fn report_of_a_failing_test_and_a_passing_suite_in_a_browser() {
    let tag = tag();

    // A failing test: the error and the failing line first, the failing step marked.
    let (spec, out) = spec_and_out(
        "failing",
        &SPEC.replace("NAME", "report-failing"),
        &format!("{SCRIPT}{FAILING}"),
    );
    let text = run_expecting(&mut flotilla_test(&spec, &out, &tag), 1);
    let page = out.join("report.html");
    assert!(
        text.contains(&format!("report: {}", page.display())),
        "{text}"
    );
    let dom = open_in_browser(&page, &out.join("report.png"));
    check_common(&dom);
    let failure = dom.find("id=\"failure\"").expect("the failure section");
    let timeline = dom.find("id=\"timeline\"").expect("the timeline");
    assert!(failure < timeline, "the failure comes first");
    let top = &dom[failure..timeline];
    assert!(
        top.contains("command `echo no such; false` was expected to succeed"),
        "{top}"
    );
    assert!(
        top.contains("11 | server.succeed(\"echo no such; false\");"),
        "{top}"
    );
    assert!(top.contains("Console of server"), "{top}");
    assert!(
        top.contains("&lt;/script&gt;&lt;script&gt;alert(1)&lt;/script&gt;"),
        "{top}"
    );
    assert_eq!(
        dom.matches("class=\"step kind-command failed failing\"")
            .count(),
        1,
        "{dom}"
    );
    assert!(dom.contains(">failing step</span>"), "{dom}");
    assert!(dom.contains("server: command `echo no such; false`: exit status 1 (failing step)"));
    assert_no_qemu_left(&tag);

    // A passing suite of one: no failure, an index linking the report.
    let (spec, out) = spec_and_out("passing", &SPEC.replace("NAME", "report-passing"), SCRIPT);
    let text = run_expecting(flotilla_test(&spec, &out, &tag).args(["--retries", "1"]), 0);
    let index = out.join("index.html");
    assert!(
        text.contains(&format!("report: {}", index.display())),
        "{text}"
    );
    let index_dom = open_in_browser(&index, &out.join("index.png"));
    let href = index_dom
        .split("<a href=\"")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .expect("a link in the index");
    assert!(index_dom.contains("PASSED"), "{index_dom}");
    let page = out.join(href);
    let dom = open_in_browser(&page, &page.with_file_name("report.png"));
    check_common(&dom);
    assert!(dom.contains("class=\"verdict passed\""), "{dom}");
    assert!(
        !dom.contains("id=\"failure\"") && !dom.contains("failed failing\""),
        "{dom}"
    );
    assert_no_qemu_left(&tag);
}

const ONE_MACHINE: &str = r#"
name = "NAME"
script = "t.rhai"
timeout = TIMEOUT

[machines.vm]
memory = 256
"#;

#[test]
fn report_of_a_failed_polling_condition_and_of_a_timeout() {
    let tag = tag();
    // A polling condition that fails is the failing step, on the test's lane.
    let toml = ONE_MACHINE.replace("NAME", "report-condition");
    let (spec, out) = spec_and_out(
        "condition",
        &toml.replace("TIMEOUT", "300"),
        "polling_condition(\"no bad file\", || { vm.succeed(\"test ! -e /tmp/bad\"); });\n\
         vm.succeed(\"touch /tmp/bad\");\nvm.succeed(\"true\");\n",
    );
    run_expecting(&mut flotilla_test(&spec, &out, &tag), 1);
    let dom = open_in_browser(&out.join("report.html"), &out.join("report.png"));
    assert!(
        dom.contains("class=\"step kind-condition failed mark failing\""),
        "{dom}"
    );
    assert!(dom.contains("test: condition no bad file: "), "{dom}");

    // A test that times out: its page says so, with the command it was running.
    let toml = ONE_MACHINE.replace("NAME", "report-timeout");
    let (spec, out) = spec_and_out(
        "timeout",
        &toml.replace("TIMEOUT", "20"),
        "vm.succeed(\"sleep 600\");\n",
    );
    run_expecting(&mut flotilla_test(&spec, &out, &tag), 1);
    let dom = open_in_browser(&out.join("report.html"), &out.join("report.png"));
    assert!(dom.contains("class=\"verdict failed\">timed out<"), "{dom}");
    assert!(dom.contains("id=\"failure\""), "{dom}");
    assert!(
        dom.contains("class=\"step kind-command ended failing\""),
        "the command cut short is marked: {dom}"
    );
    assert_no_qemu_left(&tag);
}

#[test]
fn report_of_a_run_whose_driver_was_killed_is_drawn_from_its_folder() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    std::fs::create_dir_all(out.join("server")).unwrap();
    // What a driver killed in the middle of a command leaves behind.
    std::fs::write(
        out.join("driver.log"),
        "[   0.001] flotilla 0.1.0: test `killed`, 1 machine(s)\n\
         [   0.500] server: must succeed: sleep 60\n",
    )
    .unwrap();
    std::fs::write(
        out.join("events.jsonl"),
        "{\"event\":\"start\",\"t\":0.5,\"id\":0,\"machine\":\"server\",\"kind\":\"command\",\"label\":\"sleep 60\"}\n",
    )
    .unwrap();
    std::fs::write(out.join("server/console.log"), "booted\n").unwrap();
    let printed = run_expecting(super::flotilla().arg("report").arg(&out), 0);
    assert!(printed.contains("report.html"), "{printed}");
    let page = std::fs::read_to_string(out.join("report.html")).unwrap();
    assert!(
        page.contains("<title>killed: did not finish</title>"),
        "{page}"
    );
    assert!(page.contains("sleep 60"));
    // A second call keeps the page; a folder that is no run's is refused.
    let again = run_expecting(super::flotilla().arg("report").arg(&out), 0);
    assert!(again.contains("the run's own"), "{again}");
    let refused = run_expecting(super::flotilla().arg("report").arg(dir.path()), 2);
    assert!(refused.contains("not a run's log folder"), "{refused}");
}

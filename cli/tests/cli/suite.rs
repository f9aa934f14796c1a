//! `flotilla test` with several specs: a suite run at once under a budget, a folder
//! per test, the summary and the JUnit report, retries, fail-fast, partitions and
//! `--list`, Ctrl-C.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use super::{
    assert_no_qemu_left, flotilla, run_expecting, tag, tagged_qemus, wait_within, workspace,
    write_spec,
};

/// `flotilla test PATHS... --out OUT`, its qemus tagged with `tag`.
fn suite(paths: &[&Path], out: &Path, tag: &str) -> std::process::Command {
    let mut cmd = flotilla();
    cmd.arg("test")
        .args(paths)
        .arg("--out")
        .arg(out)
        .env("FLOTILLA_TEST_TAG", tag);
    cmd
}

/// A spec folder `dir/rel` whose test is named `name` and runs `script` on `vm`.
fn spec(dir: &Path, rel: &str, name: &str, script: &str) {
    let folder = dir.join(rel);
    std::fs::create_dir_all(&folder).unwrap();
    write_spec(
        &folder,
        &format!("name = \"{name}\"\nscript = \"t.rhai\"\n[machines.vm]\n"),
        script,
    );
}

#[test]
fn a_suite_runs_its_tests_at_once_each_in_its_folder_and_sums_them_up() {
    let dir = tempfile::tempdir().unwrap();
    let specs = dir.path().join("specs");
    let tag = tag();
    // Two tests of one name (folders must differ), one failing, one unreadable.
    spec(
        &specs,
        "a",
        "same",
        "subtest(\"greets\", || { vm.succeed(\"echo hi\"); });\n",
    );
    spec(&specs, "nested/a", "same", "vm.succeed(\"exit 4\");\n");
    spec(&specs, "broken", "broken", "");
    std::fs::write(specs.join("broken/flotilla.toml"), "machines = 3\n").unwrap();
    let out = dir.path().join("out");
    let junit = dir.path().join("report.xml");
    let t = run_expecting(
        suite(&[&specs], &out, &tag)
            .args(["--jobs", "2", "--junit"])
            .arg(&junit),
        2,
    );
    let id = |rel: &str| format!("{}/{rel}", specs.display());
    // Not a terminal: a line when each test starts and ends.
    assert!(t.contains(&format!("START     {}", id("a"))), "{t}");
    assert!(t.contains(&format!("PASSED    {} in ", id("a"))), "{t}");
    assert!(
        t.contains(&format!("FAILED    {} in ", id("nested/a"))),
        "{t}"
    );
    assert!(
        t.contains(&format!("ERROR     {}: error: ", id("broken"))),
        "{t}"
    );
    assert!(!t.contains('\x1b'), "{t}");
    // Each test's own log stays in its folder, not on the terminal.
    assert!(!t.contains("vm # "), "{t}");
    // The summary: a row per test, then the errors again.
    let summary = &t[t.find("\ntest ").expect("the table")..];
    assert!(summary.contains("result"), "{summary}");
    let row = |rel: &str| {
        summary
            .lines()
            .find(|l| l.starts_with(&format!("{} ", id(rel))))
            .unwrap_or_else(|| panic!("no row for {rel}: {summary}"))
            .to_owned()
    };
    assert!(row("a").contains(" PASSED "), "{summary}");
    assert!(row("nested/a").contains(" FAILED "), "{summary}");
    assert!(row("broken").contains(" ERROR "), "{summary}");
    assert!(summary.contains("\nfailures:\n"), "{summary}");
    assert!(summary.contains("exit status 4"), "{summary}");
    assert!(
        summary.contains("3 test(s): 1 passed, 1 failed, 1 could not run in "),
        "{summary}"
    );
    // A folder per test, unique although both are named `same`, and the index.
    let (folders, files): (Vec<_>, Vec<_>) = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap())
        .partition(|e| e.file_type().unwrap().is_dir());
    assert_eq!(folders.len(), 2, "{folders:?}");
    let index: Vec<_> = files.iter().map(|e| e.file_name()).collect();
    assert_eq!(index, ["index.html"]);
    // (The table names each folder in full.)
    for line in [row("a"), row("nested/a")] {
        let folder = line.rsplit("  ").next().unwrap();
        let log = std::fs::read_to_string(Path::new(folder).join("driver.log")).unwrap();
        assert!(log.contains("vm: starting"), "{log}");
        assert!(Path::new(folder).join("vm/console.log").is_file());
    }
    // JUnit: a suite per spec, a case per subtest and per test, totals on the root.
    let xml = std::fs::read_to_string(&junit).unwrap();
    assert!(
        xml.contains("<testsuites name=\"flotilla\" tests=\"4\" failures=\"1\" errors=\"1\" skipped=\"0\" time=\""),
        "{xml}"
    );
    assert_eq!(xml.matches("<testsuite ").count(), 3, "{xml}");
    assert!(xml.contains("name=\"greets\""), "{xml}");
    assert_no_qemu_left(&tag);
}

#[test]
fn a_suite_retries_a_failed_test_and_reports_it_flaky_on_a_terminal() {
    let dir = tempfile::tempdir().unwrap();
    let tag = tag();
    // Fails the first time (no flag on the host yet: it leaves one), passes the next.
    let flag = dir.path().join("flag");
    spec(
        dir.path(),
        "flaky",
        "flaky",
        &format!(
            "try {{ vm.copy_to(\"{0}\", \"/tmp/flag\"); }}\n\
             catch {{ vm.succeed(\"echo up > /tmp/up\"); vm.copy_from(\"/tmp/up\", \"{0}\"); throw \"no flag yet\"; }}\n",
            flag.display()
        ),
    );
    let out = dir.path().join("out");
    // script(1) runs flotilla on a pseudo-terminal: the live view.
    let command = format!(
        "{} test {} --retries 2 --out {}",
        env!("CARGO_BIN_EXE_flotilla"),
        dir.path().join("flaky").display(),
        out.display()
    );
    let output = std::process::Command::new("script")
        .args(["-qec", &command, "/dev/null"])
        .env("FLOTILLA_TEST_TAG", &tag)
        .env("TERM", "xterm")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let t = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(0), "{t}");
    // The live view: a head line and the test with its elapsed time, redrawn in place.
    assert!(
        t.contains("\x1b[2mrunning 1 · 0 of 1 done · 0 waiting"),
        "{t}"
    );
    assert!(t.contains("\x1b[J"), "{t}");
    assert!(t.contains("attempt 2 · "), "{t}");
    assert!(t.contains("RETRY     "), "{t}");
    assert!(t.contains("attempt 1 failed: error: "), "{t}");
    assert!(t.contains("FLAKY     "), "{t}");
    let row = t
        .lines()
        .find(|l| l.contains(" FLAKY ") && l.contains("attempt-2"))
        .unwrap_or_else(|| panic!("no summary row: {t}"));
    assert!(row.contains("        1  "), "one retry: {row}");
    // Both attempts' logs are kept.
    let last = Path::new(row.rsplit("  ").next().unwrap().trim_end());
    assert!(last.starts_with(&out), "{row}");
    let folder = last.parent().unwrap();
    let first = std::fs::read_to_string(folder.join("driver.log")).unwrap();
    assert!(first.contains("no flag yet"), "{first}");
    assert!(folder.join("attempt-2/driver.log").is_file());
    assert_no_qemu_left(&tag);
}

#[test]
fn fail_fast_stops_the_running_tests_and_starts_no_other() {
    let dir = tempfile::tempdir().unwrap();
    let tag = tag();
    // `a` fails before booting anything; `b` is sleeping by then; `c` waits for room.
    spec(dir.path(), "a", "a", "throw \"broken at once\";\n");
    spec(dir.path(), "b", "b", "vm.succeed(\"sleep 600\");\n");
    spec(dir.path(), "c", "c", "vm.succeed(\"true\");\n");
    let out = dir.path().join("out");
    let started = Instant::now();
    let t = run_expecting(
        suite(&[dir.path()], &out, &tag).args(["--jobs", "2", "--fail-fast"]),
        1,
    );
    assert!(started.elapsed() < Duration::from_secs(300), "{t}");
    assert!(t.contains("FAILED    "), "{t}");
    let summary = &t[t.find("\ntest ").expect("the table")..];
    let rows: BTreeMap<&str, &str> = ["a", "b", "c"]
        .into_iter()
        .map(|n| {
            let l = summary
                .lines()
                .find(|l| l.contains(&format!("/{n} ")))
                .unwrap_or_else(|| panic!("{n}: {summary}"));
            (n, l)
        })
        .collect();
    assert!(rows["a"].contains(" FAILED "), "{summary}");
    assert!(rows["b"].contains(" CANCELLED "), "{summary}");
    assert!(rows["c"].contains(" CANCELLED "), "{summary}");
    // `c` never started: no time, no folder.
    assert!(rows["c"].ends_with("  -"), "{summary}");
    assert!(!out.join(rows["c"].rsplit("  ").next().unwrap()).exists());
    assert_no_qemu_left(&tag);
}

#[test]
fn partitions_share_a_suite_each_test_exactly_once_and_list_it() {
    let dir = tempfile::tempdir().unwrap();
    for i in 0..9 {
        spec(
            dir.path(),
            &format!("group{}/t{i}", i % 2),
            &format!("t{i}"),
            "",
        );
    }
    let list = |args: &[&str]| -> String {
        run_expecting(flotilla().arg("test").arg(dir.path()).args(args), 0)
    };
    let all: Vec<String> = list(&["--list"]).lines().map(str::to_owned).collect();
    assert_eq!(all.len(), 9, "{all:?}");
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    for k in 1..=3 {
        let shard = list(&["--list", "--partition", &format!("{k}/3")]);
        for id in shard.lines() {
            *seen.entry(id.to_owned()).or_default() += 1;
        }
        // The same shard whatever else is in the suite: listing one group alone keeps
        // its tests on the same shard.
        let alone = run_expecting(
            flotilla().arg("test").arg(dir.path().join("group0")).args([
                "--list",
                "--partition",
                &format!("{k}/3"),
            ]),
            0,
        );
        for id in alone.lines() {
            assert!(shard.lines().any(|l| l == id), "{id} moved: {shard}");
        }
    }
    assert_eq!(seen.len(), 9, "{seen:?}");
    assert!(seen.values().all(|&n| n == 1), "{seen:?}");
    // JSON: machines and cost, for other schedulers.
    let json: serde_json::Value =
        serde_json::from_str(&list(&["--list", "--format", "json"])).unwrap();
    assert_eq!(json.as_array().unwrap().len(), 9);
    assert_eq!(json[0]["machines"][0]["name"], "vm");
    assert!(json[0]["memory_mib"].as_u64().unwrap() > 256);
    assert_eq!(json[0]["cpus"], 1);
    // The workspace's CI splits its suite this way.
    let workflow =
        std::fs::read_to_string(workspace().join(".github/workflows/vm-tests.yml")).unwrap();
    assert!(
        workflow.contains("--partition ${{ matrix.partition }}/"),
        "{workflow}"
    );
}

#[test]
fn ctrl_c_stops_every_test_of_a_suite_and_exits_130() {
    let dir = tempfile::tempdir().unwrap();
    let tag = tag();
    for name in ["one", "two"] {
        spec(dir.path(), name, name, "vm.succeed(\"sleep 600\");\n");
    }
    let out = dir.path().join("out");
    let mut child = suite(&[dir.path()], &out, &tag)
        .args(["--jobs", "2"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Both up: each log says its machine is ready (its `sleep 600` comes next).
    let started = Instant::now();
    loop {
        let running = ["one", "two"]
            .iter()
            .filter(|n| {
                std::fs::read_dir(&out)
                    .map(|d| {
                        d.flatten().any(|e| {
                            e.file_name().to_string_lossy().ends_with(*n)
                                && std::fs::read_to_string(e.path().join("driver.log"))
                                    .unwrap_or_default()
                                    .contains("vm: ready: ")
                        })
                    })
                    .unwrap_or(false)
            })
            .count();
        if running == 2 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(240),
            "the tests did not start"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(tagged_qemus(&tag).len(), 2);
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let status = wait_within(&mut child, Duration::from_secs(60));
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    assert_eq!(status.code(), Some(130), "{stderr}");
    assert!(stderr.contains("2 cancelled"), "{stderr}");
    assert_no_qemu_left(&tag);
}

#[test]
fn every_example_and_sixteen_machines_pass_as_one_suite() {
    // The examples as CI runs them (the coverage example built by its build.sh, in a
    // copy of its own), and the 16-machine spec: one command, the automatic budget.
    let dir = tempfile::tempdir().unwrap();
    let coverage = super::coverage::built_example(dir.path());
    let tag = tag();
    let out = dir.path().join("out");
    let junit = dir.path().join("report.xml");
    let examples = [
        "examples/hello",
        "examples/router",
        "examples/webserver",
        "examples/nginx",
        "examples/multiarch",
    ];
    let started = Instant::now();
    let t = run_expecting(
        suite(
            &examples
                .iter()
                .map(Path::new)
                .chain([coverage.as_path(), Path::new("tests/specs/sixteen")])
                .collect::<Vec<_>>(),
            &out,
            &tag,
        )
        .current_dir(workspace())
        .arg("--junit")
        .arg(&junit),
        0,
    );
    let summary = &t[t.find("\ntest ").expect("the table")..];
    for id in examples.iter().chain(&["tests/specs/sixteen"]) {
        assert!(
            summary
                .lines()
                .any(|l| l.starts_with(&format!("{id} ")) && l.contains(" PASSED ")),
            "{id}: {summary}"
        );
    }
    assert!(summary.contains("7 test(s): 7 passed in "), "{summary}");
    let xml = std::fs::read_to_string(&junit).unwrap();
    assert!(xml.contains("failures=\"0\" errors=\"0\""), "{xml}");
    eprintln!(
        "the suite took {:.0} s:\n{summary}",
        started.elapsed().as_secs_f64()
    );
    assert_no_qemu_left(&tag);
}

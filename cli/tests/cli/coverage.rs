//! Distributed coverage through the binary: the example's C server and client on the
//! default guest (static) and on Debian (dynamic, the server a systemd service); data
//! kept across a reboot and a crash; the floor of `--coverage-fail-under`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::{assert_no_qemu_left, flotilla_test, run_expecting, tag, workspace};

/// Lines of `common.c`: one only the server runs, one only the client, one both.
const SERVER_ONLY: &str = "*text = (char)toupper";
const CLIENT_ONLY: &str = "if (sscanf(reply";
const BOTH: &str = "size_t len = strlen(line)";

/// A copy of `examples/coverage` in `dir`, built there by its own `build.sh` (so that
/// tests running at once do not rebuild each other's programs).
pub(super) fn built_example(dir: &Path) -> PathBuf {
    let example = workspace().join("examples/coverage");
    let copy = dir.join("coverage");
    std::fs::create_dir_all(&copy).unwrap();
    for entry in std::fs::read_dir(&example).unwrap().flatten() {
        if entry.path().is_file() {
            std::fs::copy(entry.path(), copy.join(entry.file_name())).unwrap();
        }
    }
    let out = std::process::Command::new(copy.join("build.sh"))
        .output()
        .unwrap();
    assert!(out.status.success(), "build.sh: {out:?}");
    copy
}

/// A built copy of the example (in its own temporary folder, returned to keep it),
/// `flotilla test` of its spec `spec` with `args`, which must exit with `code`; the
/// example's folder, the log folder and the output. No QEMU is left.
struct Run {
    _dir: tempfile::TempDir,
    example: PathBuf,
    out: PathBuf,
    text: String,
}

fn run_example(spec: &str, args: &[&str], code: i32) -> Run {
    let dir = tempfile::tempdir().unwrap();
    let example = built_example(dir.path());
    let out = dir.path().join("out");
    let tag = tag();
    let text = run_expecting(
        flotilla_test(&example.join(spec), &out, &tag).args(args),
        code,
    );
    assert_no_qemu_left(&tag);
    Run {
        _dir: dir,
        example,
        out,
        text,
    }
}

impl Run {
    /// How often `machine` ran the line of `source` containing `text`.
    fn ran(&self, machine: &str, source: &str, text: &str) -> u64 {
        ran(&self.out, &self.example, machine, source, text)
    }
}

/// Line counts per source file name in an lcov tracefile (`DA:` records summed).
fn line_counts(tracefile: &Path) -> BTreeMap<String, BTreeMap<u32, u64>> {
    let text = std::fs::read_to_string(tracefile)
        .unwrap_or_else(|e| panic!("reading {}: {e}", tracefile.display()));
    let mut files: BTreeMap<String, BTreeMap<u32, u64>> = BTreeMap::new();
    let mut current = String::new();
    for line in text.lines() {
        if let Some(path) = line.strip_prefix("SF:") {
            current = Path::new(path)
                .file_name()
                .unwrap()
                .to_string_lossy()
                .into_owned();
        } else if let Some(da) = line.strip_prefix("DA:") {
            let mut parts = da.split(',');
            let n: u32 = parts.next().unwrap().parse().unwrap();
            let count: u64 = parts.next().unwrap().parse().unwrap();
            *files
                .entry(current.clone())
                .or_default()
                .entry(n)
                .or_default() += count;
        }
    }
    files
}

/// The number of the line of `source` (in the example) that contains `text`.
fn line_of(example: &Path, source: &str, text: &str) -> u32 {
    let body = std::fs::read_to_string(example.join(source)).unwrap();
    let index = body
        .lines()
        .position(|l| l.contains(text))
        .unwrap_or_else(|| panic!("{source} has no line with {text}"));
    u32::try_from(index).unwrap() + 1
}

/// How often `machine` ran the line of `source` containing `text` (0 if never).
fn ran(out: &Path, example: &Path, machine: &str, source: &str, text: &str) -> u64 {
    let counts = line_counts(&out.join(format!("coverage/{machine}.info")));
    let line = line_of(example, source, text);
    counts
        .get(source)
        .and_then(|c| c.get(&line))
        .copied()
        .unwrap_or(0)
}

#[test]
fn the_example_reports_what_each_machine_ran() {
    let run = run_example("flotilla.toml", &["--coverage-fail-under", "10"], 0);
    let (out, t) = (&run.out, &run.text);
    // Only the server capitalises, only the client checks replies, both send lines.
    assert!(run.ran("server", "common.c", SERVER_ONLY) > 0);
    assert_eq!(run.ran("client", "common.c", SERVER_ONLY), 0);
    assert!(run.ran("client", "common.c", CLIENT_ONLY) > 0);
    assert_eq!(run.ran("server", "common.c", CLIENT_ONLY), 0);
    for machine in ["server", "client"] {
        assert!(run.ran(machine, "common.c", BOTH) > 0);
    }
    // The server's own file, run up to its clean exit on SIGTERM.
    assert!(run.ran("server", "server.c", "printf(\"server: stopping") > 0);
    // The combined tracefile sums the machines.
    let combined = line_counts(&out.join("coverage/combined.info"));
    let send = line_of(&run.example, "common.c", BOTH);
    let per_machine: u64 = ["server", "client"]
        .iter()
        .map(|m| run.ran(m, "common.c", BOTH))
        .sum();
    assert_eq!(combined["common.c"][&send], per_machine);
    // The HTML report and the table at the end.
    assert!(out.join("coverage/index.html").is_file());
    assert!(t.contains("common.c"), "{t}");
    assert!(t.contains("server") && t.contains("client"), "{t}");
    assert!(t.contains("coverage/index.html"), "{t}");
    assert!(t.contains("no kernel coverage from"), "{t}");
    // The run's report links the coverage report.
    let page = std::fs::read_to_string(out.join("report.html")).unwrap();
    assert!(page.contains("<a href=\"coverage/index.html\">"), "{page}");
}

#[test]
fn data_survives_a_reboot_and_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    let example = built_example(dir.path());
    std::fs::write(
        example.join("flotilla.toml"),
        "script = \"t.rhai\"\n[machines.server]\n[machines.client]\n",
    )
    .unwrap();
    std::fs::write(
        example.join("t.rhai"),
        r#"
start_all();
server.copy_to("build/static/server", "/usr/local/bin/server");
client.copy_to("build/static/client", "/usr/local/bin/client");
server.succeed("server > /dev/null 2>&1 &");
server.wait_for_open_port(7000);
client.succeed(`client ${server.ip(1)} one`);
// The reboot ends the server first: its data of the first connection is written.
server.reboot();
// The default guest's root is its initramfs: the program is copied in again.
server.copy_to("build/static/server", "/usr/local/bin/server");
server.succeed("server > /dev/null 2>&1 &");
server.wait_for_open_port(7000);
client.succeed(`client ${server.ip(1)} two`);
// The client's data was written when it exited; the crash does not lose it.
client.crash();
"#,
    )
    .unwrap();
    let out = dir.path().join("out");
    let tag = tag();
    // The spec has no [coverage]: the flag alone turns it on.
    let t = run_expecting(flotilla_test(&example, &out, &tag).arg("--coverage"), 0);
    assert_no_qemu_left(&tag);
    // Two connections, one before and one after the reboot.
    assert_eq!(ran(&out, &example, "server", "server.c", "serve(conn);"), 2);
    // Two runs of the client, both before its crash.
    assert_eq!(
        ran(
            &out,
            &example,
            "client",
            "client.c",
            "send_line(fd, \"bye\")"
        ),
        2
    );
    assert!(t.contains("not running at the end"), "{t}");
}

#[test]
fn a_floor_fails_a_passing_test() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("flotilla.toml"),
        "script = \"t.rhai\"\n[coverage]\nfail_under = 20\n[machines.a]\n",
    )
    .unwrap();
    std::fs::write(dir.path().join("t.rhai"), "a.succeed(\"true\");\n").unwrap();
    let tag = tag();
    // No instrumented program ran: no data is under any floor. The command line's
    // floor overrides the spec's.
    let t = run_expecting(
        flotilla_test(dir.path(), &dir.path().join("out"), &tag)
            .args(["--coverage-fail-under", "99.5"]),
        1,
    );
    assert_no_qemu_left(&tag);
    assert!(
        t.contains("coverage: no line data is under the floor of 99.5% (--coverage-fail-under)"),
        "{t}"
    );
    assert!(
        t.contains("no data from a: no coverage data: no instrumented program exited"),
        "{t}"
    );
    assert!(t.contains("FAILED"), "{t}");
    // A bad percentage is refused before anything runs.
    let t = run_expecting(
        flotilla_test(dir.path(), &dir.path().join("out"), &tag)
            .args(["--coverage-fail-under", "150"]),
        2,
    );
    assert!(t.contains("`150` is not a percentage from 0 to 100"), "{t}");
}

#[test]
fn a_debian_service_writes_coverage_data() {
    let run = run_example("debian.toml", &[], 0);
    // The server ran as a systemd service: its environment came from the kernel's
    // command line (systemd.setenv), and the SIGTERM at the end let it write.
    assert!(run.ran("server", "common.c", SERVER_ONLY) > 0);
    assert!(run.ran("client", "common.c", CLIENT_ONLY) > 0);
    // One connection before the server's reboot, one after.
    assert_eq!(run.ran("server", "server.c", "serve(conn);"), 2);
}

#[test]
fn services_of_every_init_get_the_coverage_environment() {
    // The agent is itself a service of each init (sysvinit and OpenRC start it from
    // an init script): the environment it got is what their services get.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("flotilla.toml"),
        "script = \"t.rhai\"\ntimeout = 900\nboot_timeout = 300\n\
         [coverage]\nenabled = true\n\
         [machines.sysv]\ninit = \"sysvinit\"\nmemory = 512\n\
         [machines.orc]\ninit = \"openrc\"\nmemory = 512\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("t.rhai"),
        r#"
start_all();
for m in [sysv, orc] {
    m.succeed("tr '\\0' '\\n' < /proc/$(pidof flotilla-agent)/environ | grep -qx 'GCOV_PREFIX=/run/flotilla/coverage/gcov'");
    m.succeed("tr '\\0' '\\n' < /proc/$(pidof flotilla-agent)/environ | grep -qx 'LLVM_PROFILE_FILE=/run/flotilla/coverage/llvm/%h-%p-%m.profraw'");
    // And a command's own environment.
    m.succeed("[ \"$GCOV_PREFIX_STRIP\" = 0 ]");
}
"#,
    )
    .unwrap();
    let tag = tag();
    let t = run_expecting(
        &mut flotilla_test(dir.path(), &dir.path().join("out"), &tag),
        0,
    );
    assert_no_qemu_left(&tag);
    assert!(t.contains("no kernel coverage from"), "{t}");
}

#[test]
fn a_rust_client_and_a_c_server_in_one_report() {
    // LLVM's source-based coverage (the Rust client, read against its coverage map)
    // and gcov (the C server), from two machines, in one report.
    let run = run_example("rust.toml", &[], 0);
    assert!(run.ran("client", "client.rs", "check_reply(message, reply)?;") > 0);
    // The error path the script takes on purpose.
    assert!(run.ran("client", "client.rs", "is not an IPv4 address") > 0);
    assert!(run.ran("server", "common.c", SERVER_ONLY) > 0);
    assert!(run.text.contains("client.rs"), "{}", run.text);
    assert!(
        run.text.contains("contributed: client, server"),
        "{}",
        run.text
    );
}

#[test]
fn an_arm64_server_and_an_x86_client_in_one_report() {
    // The example's server cross-built for arm64 (`aarch64-linux-gnu-gcc --coverage
    // -static`), in an arm64 machine; the client built by the example for x86. The
    // host's gcov of gcc's version reads both architectures' data.
    let dir = tempfile::tempdir().unwrap();
    let example = built_example(dir.path());
    std::fs::create_dir_all(example.join("build/arm64")).unwrap();
    let out = std::process::Command::new("aarch64-linux-gnu-gcc")
        .args(["--coverage", "-O0", "-g", "-static", "-o"])
        .args(["build/arm64/server", "server.c", "common.c"])
        .current_dir(&example)
        .output()
        .expect("aarch64-linux-gnu-gcc (scripts/setup installs gcc-aarch64-linux-gnu)");
    assert!(out.status.success(), "aarch64-linux-gnu-gcc: {out:?}");
    std::fs::write(
        example.join("flotilla.toml"),
        "script = \"t.rhai\"\ntimeout = 600\nboot_timeout = 300\n\
         [coverage]\nenabled = true\n\
         [machines.server]\narch = \"aarch64\"\n[machines.client]\n",
    )
    .unwrap();
    std::fs::write(
        example.join("t.rhai"),
        r#"
start_all();
if server.succeed("uname -m") != "aarch64\n" { throw "the server is not arm64"; }
server.copy_to("build/arm64/server", "/usr/local/bin/server");
client.copy_to("build/static/client", "/usr/local/bin/client");
server.succeed("server > /tmp/server.log 2>&1 &");
server.wait_for_open_port(7000);
client.succeed(`client ${server.ip(1)} one two`);
client.succeed(`client ${server.ip(1)} three`);
"#,
    )
    .unwrap();
    let out = dir.path().join("out");
    let tag = tag();
    let t = run_expecting(&mut flotilla_test(&example, &out, &tag), 0);
    assert_no_qemu_left(&tag);
    // Two connections to the arm64 server, which ran up to its clean exit on SIGTERM.
    assert_eq!(ran(&out, &example, "server", "server.c", "serve(conn);"), 2);
    assert!(
        ran(
            &out,
            &example,
            "server",
            "server.c",
            "printf(\"server: stopping"
        ) > 0
    );
    // The lines are capitalised by the server only: "one", "two", "three", 11 letters.
    assert_eq!(ran(&out, &example, "server", "common.c", SERVER_ONLY), 11);
    assert_eq!(ran(&out, &example, "client", "common.c", SERVER_ONLY), 0);
    assert!(ran(&out, &example, "client", "common.c", CLIENT_ONLY) > 0);
    // One source file, both architectures' counts summed.
    let combined = line_counts(&out.join("coverage/combined.info"));
    let both = line_of(&example, "common.c", BOTH);
    assert_eq!(
        combined["common.c"][&both],
        ran(&out, &example, "server", "common.c", BOTH)
            + ran(&out, &example, "client", "common.c", BOTH)
    );
    assert!(t.contains("contributed: client, server"), "{t}");
}

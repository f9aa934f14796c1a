//! The report end to end with the real tools (gcc, gcov, genhtml, installed by the
//! project's setup: a missing one fails the test, saying which): a small C program
//! compiled with `gcc --coverage`, run as machines `a` and `b` would run it, and each
//! kind of bad input.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::*;

const PROGRAM: &str = r#"#include <stdio.h>
#include <string.h>

static int only_a(void) {
    return 1;
}

static int only_b(void) {
    return 2;
}

int main(int argc, char **argv) {
    int r = 0;
    if (argc > 1 && strcmp(argv[1], "a") == 0)
        r = only_a();
    else if (argc > 1 && strcmp(argv[1], "b") == 0)
        r = only_b();
    else
        r = 3;
    printf("%d\n", r);
    return 0;
}
"#;
/// Lines of [`PROGRAM`]: run only with `a`, only with `b`, always, never.
const LINE_A: u32 = 5;
const LINE_B: u32 = 9;
const LINE_BOTH: u32 = 13;
const LINE_NEVER: u32 = 19;

fn run(command: &mut Command) {
    let what = format!("{command:?}");
    let out = command.output().unwrap_or_else(|e| {
        panic!("{what} did not start ({e}): the project's setup installs gcc, gcov and lcov")
    });
    assert!(
        out.status.success(),
        "{what} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Writes `src/<name>.c` under `root` and compiles it in `build/` (object, then
/// program): the program's path.
fn compile(root: &Path, src: &str, build: &str, name: &str, extra: &[&str]) -> PathBuf {
    let src_dir = root.join(src);
    let build_dir = root.join(build);
    std::fs::create_dir_all(&src_dir).unwrap();
    std::fs::create_dir_all(&build_dir).unwrap();
    let source = src_dir.join(format!("{name}.c"));
    std::fs::write(&source, PROGRAM).unwrap();
    run(Command::new("gcc")
        .args(["--coverage", "-O0", "-c"])
        .args(extra)
        .arg(&source)
        .arg("-o")
        .arg(format!("{name}.o"))
        .current_dir(&build_dir));
    run(Command::new("gcc")
        .args(["--coverage", &format!("{name}.o"), "-o", name])
        .current_dir(&build_dir));
    build_dir.join(name)
}

/// Runs `program` as machine `machine`'s guest would: its data under
/// `<out>/data/<machine>`.
fn run_on(out: &Path, machine: &str, program: &Path, arg: &str) -> PathBuf {
    let data = out.join("data").join(machine);
    run(Command::new(program)
        .arg(arg)
        .env("GCOV_PREFIX", data.join("gcov"))
        .env("GCOV_PREFIX_STRIP", "0"));
    data
}

fn machine(name: &str, data: PathBuf) -> MachineData {
    MachineData {
        name: name.into(),
        data,
        note: None,
    }
}

fn count(t: &Tracefile, file: &Path, line: u32) -> Option<u64> {
    t.files.get(file)?.lines.get(&line).copied()
}

fn read_info(path: &Path) -> Vec<(String, Tracefile)> {
    Tracefile::parse(&std::fs::read_to_string(path).unwrap()).unwrap()
}

#[test]
fn two_machines_each_line_counted_per_machine() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let program = compile(root, "src", "build", "p", &[]);
    let source = root.join("src/p.c");
    let out = root.join("log/coverage");
    let a = run_on(&out, "a", &program, "a");
    run_on(&out, "a", &program, "a");
    let b = run_on(&out, "b", &program, "b");
    // c ran nothing instrumented: its disk has only lost+found.
    let c = out.join("data/c");
    std::fs::create_dir_all(c.join("lost+found")).unwrap();
    let mut machines = vec![machine("a", a), machine("b", b), machine("c", c)];
    machines[1].note = Some("crashed at 12.3 s: only what was written before".into());

    let report = build(&out, &machines, &Options::default());

    assert_eq!(report.contributed, ["a", "b"], "{:#?}", report.messages);
    assert_eq!(
        report.not_contributed,
        [(
            "c".to_owned(),
            "no coverage data: no instrumented program exited".to_owned()
        )]
    );
    assert_eq!(
        report.messages,
        ["machine c: no coverage data: no instrumented program exited"]
    );
    // Per machine: its own tracefile, its name as the test name.
    let info_a = read_info(&out.join("a.info"));
    let info_b = read_info(&out.join("b.info"));
    assert_eq!(info_a.len(), 1);
    assert_eq!(info_a[0].0, "a");
    assert_eq!(info_b[0].0, "b");
    let (ta, tb) = (&info_a[0].1, &info_b[0].1);
    assert_eq!(count(ta, &source, LINE_A), Some(2));
    assert_eq!(count(tb, &source, LINE_A), Some(0));
    assert_eq!(count(ta, &source, LINE_B), Some(0));
    assert_eq!(count(tb, &source, LINE_B), Some(1));
    assert_eq!(count(ta, &source, LINE_BOTH), Some(2));
    assert_eq!(count(tb, &source, LINE_BOTH), Some(1));
    assert_eq!(count(ta, &source, LINE_NEVER), Some(0));
    let fa = &ta.files[&source].functions;
    assert_eq!(
        (fa["only_a"].count, fa["only_b"].count, fa["main"].count),
        (2, 0, 2)
    );
    // Combined: both sections kept under their names, the counts summed.
    let combined = read_info(report.combined.as_ref().unwrap());
    assert_eq!(
        combined.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>(),
        ["a", "b"]
    );
    let mut all = Tracefile::default();
    combined.iter().for_each(|(_, t)| all.merge(t));
    assert_eq!(count(&all, &source, LINE_A), Some(2));
    assert_eq!(count(&all, &source, LINE_B), Some(1));
    assert_eq!(count(&all, &source, LINE_BOTH), Some(3));
    assert_eq!(count(&all, &source, LINE_NEVER), Some(0));
    let total = report.summary.total;
    assert_eq!(total.functions.hit, 3);
    assert_eq!(
        total.lines.found - total.lines.hit,
        1,
        "only LINE_NEVER not run"
    );
    assert!(report.line_percent().unwrap() > 90.0);
    assert!(!report.below_floor(50.0));
    assert!(report.below_floor(100.0));

    // The HTML: the file's page has a count column per machine.
    let index = std::fs::read_to_string(report.html.as_ref().unwrap()).unwrap();
    assert!(index.contains("href=\"files/0-p.c.html\""), "{index}");
    assert!(index.contains("href=\"genhtml/index.html\""), "{index}");
    assert!(
        index.contains("No data from c: no coverage data"),
        "{index}"
    );
    assert!(index.contains("crashed at 12.3 s"), "{index}");
    let page = std::fs::read_to_string(out.join("files/0-p.c.html")).unwrap();
    let row = |line: u32| {
        let start = page
            .find(&format!("<td class=\"num\">{line}</td>"))
            .unwrap_or_else(|| panic!("line {line} is not on the page:\n{page}"));
        let row = &page[page[..start].rfind("<tr").unwrap()..];
        row[..row.find("</tr>").unwrap()].to_owned()
    };
    assert_eq!(
        row(LINE_A),
        "<tr class=\"some\"><td class=\"num\">5</td><td class=\"num\">2</td>\
         <td class=\"num zero\">0</td><td>    return 1;</td>"
    );
    assert!(row(LINE_B).contains("<td class=\"num zero\">0</td><td class=\"num\">1</td>"));
    assert!(row(LINE_BOTH).starts_with("<tr class=\"all\">"));
    assert!(row(LINE_BOTH).contains("<td class=\"num\">2</td><td class=\"num\">1</td>"));
    assert!(row(LINE_NEVER).starts_with("<tr class=\"none\">"));
    assert!(row(1).starts_with("<tr>"), "not instrumented");
    assert!(row(1).contains("#include &lt;stdio.h&gt;"));
    // genhtml's report, with the machines as test names.
    assert_eq!(report.genhtml, Some(out.join("genhtml/index.html")));
    assert!(out.join("genhtml/index.html").is_file());

    // The table.
    let table = report.table();
    println!("{table}");
    let head = table.lines().nth(1).unwrap();
    assert!(head.starts_with("file"), "{table}");
    assert!(
        head.contains("combined") && head.contains(" a ") && head.ends_with(" b"),
        "{table}"
    );
    assert!(table.contains("\np.c    lines  "), "{table}");
    assert!(
        table.contains("\n       funcs  100.0% 3/3   66.7% 2/3"),
        "{table}"
    );
    assert!(!table.contains("problem:"), "{table}");
    assert!(table.contains("contributed: a, b\n"), "{table}");
    assert!(table.contains("no data from c: no coverage data: no instrumented program exited\n"));
    assert!(table.contains("note: b: crashed at 12.3 s"), "{table}");
    assert!(table.ends_with(&format!("report: {}\n", out.join("index.html").display())));
    assert!(table.lines().all(|l| l.chars().count() <= 100), "{table}");
    // The guest's data is left as it was: nothing written into it.
    assert!(!out.join(".work").exists());
}

#[test]
fn bad_input_gives_messages_naming_machine_and_file() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let out = root.join("log/coverage");
    let mut machines = Vec::new();

    // gone: the build tree's .gcno was removed after the run.
    let p = compile(root, "src", "gone", "p", &[]);
    machines.push(machine("gone", run_on(&out, "gone", &p, "a")));
    std::fs::remove_file(root.join("gone/p.gcno")).unwrap();

    // rebuilt: compiled again after the run (a new stamp).
    let p = compile(root, "src", "rebuilt", "p", &[]);
    machines.push(machine("rebuilt", run_on(&out, "rebuilt", &p, "a")));
    let stamp = |path: &Path| std::fs::read(path).unwrap()[8..12].to_vec();
    let before = stamp(&root.join("rebuilt/p.gcno"));
    compile(root, "src", "rebuilt", "p", &["-DREBUILT"]);
    assert_ne!(
        before,
        stamp(&root.join("rebuilt/p.gcno")),
        "gcc gave the same stamp"
    );

    // other_gcc: the data's header says another gcc version.
    let p = compile(root, "src", "other", "p", &[]);
    let data = run_on(&out, "other_gcc", &p, "a");
    let gcda = data
        .join("gcov")
        .join(root.strip_prefix("/").unwrap())
        .join("other/p.gcda");
    let mut bytes = std::fs::read(&gcda).unwrap();
    bytes[4..8].copy_from_slice(b"*33B");
    std::fs::write(&gcda, bytes).unwrap();
    machines.push(machine("other_gcc", data));

    // cut: a .gcda cut short (a crash while writing).
    let data = run_on(&out, "cut", &p, "a");
    let gcda = data
        .join("gcov")
        .join(root.strip_prefix("/").unwrap())
        .join("other/p.gcda");
    std::fs::write(&gcda, b"adcg*2").unwrap();
    machines.push(machine("cut", data));

    // linked: the data is a symbolic link (to a real .gcda).
    let good = run_on(&out, "good", &p, "b");
    let good_gcda = good
        .join("gcov")
        .join(root.strip_prefix("/").unwrap())
        .join("other/p.gcda");
    let linked = out.join("data/linked");
    let link = linked
        .join("gcov")
        .join(root.strip_prefix("/").unwrap())
        .join("other/p.gcda");
    std::fs::create_dir_all(link.parent().unwrap()).unwrap();
    std::os::unix::fs::symlink(&good_gcda, &link).unwrap();
    machines.push(machine("linked", linked));
    machines.push(machine("good", good));

    // nosource: the source file is gone from the host (its page says so).
    let q = compile(root, "src_q", "q_build", "q", &[]);
    let data = run_on(&out, "nosource", &q, "b");
    std::fs::remove_file(root.join("src_q/q.c")).unwrap();
    machines.push(machine("nosource", data));

    // llvm: .profraw data, no binaries named; then a binary that is not LLVM's.
    let llvm = out.join("data/llvm");
    std::fs::create_dir_all(llvm.join("llvm")).unwrap();
    std::fs::write(llvm.join("llvm/vm-12-34.profraw"), b"not a profile").unwrap();
    machines.push(machine("llvm", llvm.clone()));
    // empty: a data folder with nothing in it; missing: no folder at all.
    std::fs::create_dir_all(out.join("data/empty")).unwrap();
    machines.push(machine("empty", out.join("data/empty")));
    machines.push(machine("missing", out.join("data/missing")));

    let report = build(&out, &machines, &Options::default());
    let messages = report.messages.join("\n");
    println!("{messages}");
    let has = |m: &str| {
        assert!(
            report.messages.iter().any(|x| x.contains(m)),
            "no message with {m:?} in:\n{messages}"
        )
    };
    let r = root.display();
    has(&format!(
        "machine gone: {r}/gone/p.gcda: the host has no {r}/gone/p.gcno (the build tree is gone or moved since the run): skipped"
    ));
    has(&format!(
        "machine rebuilt: {r}/rebuilt/p.gcda: the host's {r}/rebuilt/p.gcno was rebuilt since the run"
    ));
    has(&format!(
        "machine other_gcc: {r}/other/p.gcda: written by a different gcc version (the data by gcc 13.3, the host's {r}/other/p.gcno by gcc "
    ));
    has(&format!("machine cut: {r}/other/p.gcda: not a .gcda file"));
    has(&format!(
        "machine linked: data/linked/gcov/{}/other/p.gcda is a symbolic link: skipped",
        root.strip_prefix("/").unwrap().display()
    ));
    has(
        "machine llvm: 1 .profraw files in data/llvm/llvm, but no instrumented binaries were named",
    );
    has("machine empty: no coverage data: no instrumented program exited");
    has(&format!(
        "machine missing: no coverage data folder ({}/data/missing)",
        out.display()
    ));
    has("machine gone: none of its 1 data files could be read (see the problems)");
    has("machine linked: none of its 1 data files could be read (see the problems)");
    assert_eq!(report.contributed, ["good", "nosource"], "{messages}");
    let page = std::fs::read_to_string(out.join("files/1-src_q_q.c.html")).unwrap();
    assert!(
        page.contains("The source file is not readable on the host"),
        "{page}"
    );
    assert!(
        page.contains("<td class=\"num\">9</td>"),
        "the instrumented lines are listed"
    );
    let table = report.table();
    println!("{table}");
    assert!(
        table.contains("no data from rebuilt: none of its 1 data files"),
        "{table}"
    );
    assert!(table.contains("\nproblem: machine gone: "), "{table}");
    assert!(
        !table.contains("problem: machine empty"),
        "said once, as no data from empty"
    );

    // With a binary named, the junk .profraw is read by no llvm-profdata (or there
    // is none): either way a message about the machine's data.
    let report = build(
        &root.join("log2"),
        &[machine("llvm", llvm)],
        &Options {
            llvm_binaries: vec![p.clone(), root.join("no/such/binary")],
            fail_under: Some(10.0),
            notes: Vec::new(),
        },
    );
    let messages = report.messages.join("\n");
    println!("{messages}");
    assert!(
        messages.contains(&format!(
            "machine llvm: the instrumented binary {r}/no/such/binary is not on the host"
        )),
        "{messages}"
    );
    assert!(
        messages.contains("machine llvm: no llvm-profdata on the host reads the data in")
            || messages.contains("machine llvm: the host has no llvm-profdata"),
        "{messages}"
    );
    // No data is under any floor.
    assert_eq!(report.fail_under, Some(10.0));
    assert!(report.below_floor(10.0));
    assert!(report
        .table()
        .starts_with("coverage: no data from any machine\n"));
}

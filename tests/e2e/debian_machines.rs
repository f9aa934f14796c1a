//! Debian machines declared in the spec (`packages`, `files`, `init`): the user's own
//! program, built on the host and shipped as a local `.deb`, runs in the guest; equal
//! content shares one image; concurrent builds of one content build it once.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use flotilla_driver::debian::{image, GuestFile, Recipe};
use flotilla_driver::Fleet;

use super::{host_run, spec};

/// A small C program that reads a file and prints it with libc's help: dynamically
/// linked, as `cc` links by default.
const PROGRAM: &str = r#"#include <stdio.h>
#include <string.h>
#include <sys/utsname.h>

int main(void) {
    char line[256] = "";
    FILE *f = fopen("/etc/greeting.conf", "r");
    if (f == NULL) { perror("/etc/greeting.conf"); return 2; }
    if (fgets(line, sizeof line, f) == NULL) { return 3; }
    fclose(f);
    line[strcspn(line, "\n")] = 0;
    struct utsname u;
    uname(&u);
    printf("%s, from %s\n", line, u.nodename);
    return 0;
}
"#;

fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Builds `hello` with the host's `cc` and packs it as `dir/hello_1.0_amd64.deb`
/// (reproducibly: the same source gives the same bytes, so the image stays cached).
fn build_deb(dir: &Path) {
    let root = dir.join("pkg");
    std::fs::create_dir_all(root.join("DEBIAN")).unwrap();
    std::fs::create_dir_all(root.join("usr/bin")).unwrap();
    std::fs::write(dir.join("hello.c"), PROGRAM).unwrap();
    run(Command::new("cc")
        .args(["-O2", "-o"])
        .arg(root.join("usr/bin/hello"))
        .arg(dir.join("hello.c")));
    std::fs::write(
        root.join("DEBIAN/control"),
        "Package: hello\nVersion: 1.0\nArchitecture: amd64\nMaintainer: Flotilla tests <tests@localhost>\n\
         Depends: libc6\nDescription: prints a greeting\n",
    )
    .unwrap();
    run(Command::new("find").arg(&root).args([
        "-exec",
        "touch",
        "--no-dereference",
        "--date=@1700000000",
        "{}",
        "+",
    ]));
    run(Command::new("dpkg-deb")
        .args(["--root-owner-group", "-Zgzip", "--build"])
        .arg(&root)
        .arg(dir.join("hello_1.0_amd64.deb"))
        .env("SOURCE_DATE_EPOCH", "1700000000"));
}

const SPEC: &str = "[machines.one]\n\
     packages = [\"./hello_1.0_amd64.deb\"]\n\
     files = { \"/etc/greeting.conf\" = \"greeting.conf\" }\n\
     init = \"systemd\"\n\
     memory = 512\n\
     [machines.two]\n\
     packages = [\"./hello_1.0_amd64.deb\"]\n\
     files = { \"/etc/greeting.conf\" = \"greeting.conf\" }\n\
     [machines.lean]\n\
     packages = [\"./hello_1.0_amd64.deb\"]\n\
     files = { \"/etc/greeting.conf\" = \"greeting.conf\" }\n\
     init = \"agent\"\n";

fn write_inputs(dir: &Path) {
    build_deb(dir);
    let conf = dir.join("greeting.conf");
    std::fs::write(&conf, "Hello from the host's own program\n").unwrap();
    std::fs::set_permissions(&conf, std::fs::Permissions::from_mode(0o640)).unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn the_users_own_program_ships_as_a_local_deb_and_runs() {
    let dir = tempfile::tempdir().unwrap();
    write_inputs(dir.path());
    let (spec1, mut options) = spec(&dir, SPEC);
    options.boot_timeout = Duration::from_secs(300);
    let started = Instant::now();
    let net = Fleet::new(&spec1, options).unwrap();
    eprintln!("images ready in {:.1} s", started.elapsed().as_secs_f64());
    let log = std::fs::read_to_string(dir.path().join("out/driver.log")).unwrap();
    // `one` and `two` have the same content (`init = "systemd"` is the default): one
    // image for both; `lean` differs by its init.
    assert_eq!(log.matches(": Debian image (").count(), 2, "{log}");
    assert!(
        log.contains(
            "one, two: Debian image (trixie 13, systemd; packages: hello_1.0_amd64.deb; 1 file(s))"
        ),
        "{log}"
    );
    assert!(
        log.contains(
            "lean: Debian image (trixie 13, agent; packages: hello_1.0_amd64.deb; 1 file(s))"
        ),
        "{log}"
    );
    let one = net.machine("one").unwrap();
    let booting = Instant::now();
    one.start().await.unwrap();
    eprintln!(
        "one: ready {:.1} s after start()",
        booting.elapsed().as_secs_f64()
    );
    assert_eq!(
        one.succeed("hello").await.unwrap(),
        "Hello from the host's own program, from one\n"
    );
    // Built on the host, dynamically linked, run against the guest's libc.
    let ldd = one.succeed("ldd /usr/bin/hello").await.unwrap();
    assert!(
        ldd.contains("libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6"),
        "{ldd}"
    );
    assert_eq!(
        one.succeed("dpkg-query -W -f='${Package} ${Version} ${Status}' hello")
            .await
            .unwrap(),
        "hello 1.0 install ok installed"
    );
    // `files`: content and mode kept, owned by root.
    assert_eq!(
        one.succeed("stat -c '%a %U' /etc/greeting.conf")
            .await
            .unwrap(),
        "640 root\n"
    );
    assert_eq!(one.succeed("cat /proc/1/comm").await.unwrap(), "systemd\n");
    // The build started no service and left no policy-rc.d behind.
    one.succeed("test ! -e /usr/sbin/policy-rc.d")
        .await
        .unwrap();
    // `init = "agent"`: the same program on the Debian userland, the agent as PID 1.
    let lean = net.machine("lean").unwrap();
    lean.start().await.unwrap();
    assert_eq!(
        lean.succeed("hello").await.unwrap(),
        "Hello from the host's own program, from lean\n"
    );
    assert_eq!(
        lean.succeed("cat /proc/1/comm").await.unwrap(),
        "flotilla-agent\n"
    );
    net.stop_all().await;
    drop(net);

    // The same content from another folder: the cached image, nothing built.
    let again = tempfile::tempdir().unwrap();
    write_inputs(again.path());
    let (spec2, options) = spec(&again, SPEC);
    let started = Instant::now();
    let net = Fleet::new(&spec2, options).unwrap();
    let log2 = std::fs::read_to_string(again.path().join("out/driver.log")).unwrap();
    assert!(log2.contains("one, two: debian: cached image "), "{log2}");
    assert!(log2.contains("lean: debian: cached image "), "{log2}");
    assert!(!log2.contains("debian: built the image"), "{log2}");
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "{:?}",
        started.elapsed()
    );
    let image = |log: &str| {
        log.lines()
            .find_map(|l| l.split("image ready in ").nth(1))
            .and_then(|rest| rest.split(": ").nth(1))
            .map(str::to_owned)
            .unwrap_or_else(|| panic!("{log}"))
    };
    assert_eq!(image(&log), image(&log2));
    // Its manifest says what went in and what was installed.
    let manifest =
        std::fs::read_to_string(Path::new(&image(&log)).with_extension("manifest")).unwrap();
    assert!(
        manifest.contains("\ndeb hello_1.0_amd64.deb "),
        "{manifest}"
    );
    assert!(
        manifest.contains("\nfile /etc/greeting.conf 0640 "),
        "{manifest}"
    );
    assert!(manifest.contains("\nhello 1.0\n"), "{manifest}");
    drop(net);
}

#[test]
fn concurrent_builds_of_one_content_build_it_once() {
    let dir = tempfile::tempdir().unwrap();
    // Content no cache has: a file with a fresh token.
    let token = dir.path().join("token");
    let nonce = format!("{:?} {}", std::time::SystemTime::now(), std::process::id());
    std::fs::write(&token, &nonce).unwrap();
    let recipe = Recipe {
        files: vec![GuestFile {
            guest: "/etc/flotilla-token".into(),
            source: token,
        }],
        ..Recipe::default()
    };
    let builds: Vec<_> = (0..2)
        .map(|_| {
            let recipe = recipe.clone();
            std::thread::spawn(move || {
                let lines = std::sync::Mutex::new(Vec::<String>::new());
                let path = image(&recipe, &|l: &str| {
                    eprintln!("{l}");
                    lines.lock().unwrap().push(l.to_owned());
                })
                .unwrap();
                (path, lines.into_inner().unwrap())
            })
        })
        .collect();
    let results: Vec<_> = builds.into_iter().map(|b| b.join().unwrap()).collect();
    assert_eq!(results[0].0, results[1].0, "one image");
    let built = |lines: &[String]| lines.iter().any(|l| l.contains("built the image"));
    let (builder, waiter) = if built(&results[0].1) {
        (&results[0], &results[1])
    } else {
        (&results[1], &results[0])
    };
    assert!(built(&builder.1), "{:?}", builder.1);
    assert!(!built(&waiter.1), "built twice: {:?}", waiter.1);
    assert!(
        waiter
            .1
            .iter()
            .any(|l| l.contains("another flotilla is building this; waiting")),
        "{:?}",
        waiter.1
    );
    assert!(
        waiter.1.iter().any(|l| l.contains("cached image")),
        "{:?}",
        waiter.1
    );
    // The image is whole, and nothing half-written is left beside it.
    let path = &builder.0;
    host_run(
        "qemu-img check",
        Command::new("qemu-img").arg("check").arg(path),
    );
    let folder = path.parent().unwrap();
    let leftovers: Vec<_> = std::fs::read_dir(folder)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    // This content is of no use to anyone else.
    std::fs::remove_file(path).unwrap();
    std::fs::remove_file(path.with_extension("manifest")).unwrap();
}

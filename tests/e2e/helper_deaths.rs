//! A helper process of the network killed while the test runs (a VLAN's switch, a
//! machine's link switch or wirefilter, a VLAN capture's plug): the call under way, or
//! the next one, fails within a second with an error naming the VLAN (and the machine,
//! for its link) and the signal; `driver.log` and `events.jsonl` (so `report.html`)
//! have it when it happens. A run's own clean-up reports no death.
//!
//! The product's target is a second; the tests allow 5 s for a busy host and print
//! what they measured.

use std::path::Path;
use std::time::{Duration, Instant};

use flotilla_driver::{Error, Fleet};

use super::{assert_gone, gone, network, qemus_with, run_script};

const TWO: &str = "[machines.a]\n[machines.b]\n";

/// What a busy host may take; the product's target is a second.
const LIMIT: Duration = Duration::from_secs(5);

/// The pid of the helper the log calls `name`.
async fn helper_pid(net: &Fleet, name: &str) -> u32 {
    let pids = net.helper_pids().await;
    pids.iter()
        .find(|(n, _)| n == name)
        .map(|(_, pid)| *pid)
        .unwrap_or_else(|| panic!("no helper `{name}` among {pids:?}"))
}

fn sigkill(pid: u32) {
    // SAFETY: plain kill(2) of a helper the fleet reported running.
    assert_eq!(unsafe { libc::kill(pid as i32, libc::SIGKILL) }, 0);
}

/// The first line of `dir/out/driver.log` with `needle` in it, once there is one
/// (within 60 s).
async fn log_line(dir: &Path, needle: &str) -> String {
    let started = Instant::now();
    loop {
        let log = std::fs::read_to_string(dir.join("out/driver.log")).unwrap_or_default();
        if let Some(line) = log.lines().find(|l| l.contains(needle)) {
            return line.to_owned();
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "no `{needle}` in driver.log within 60 s:\n{log}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The time of a `driver.log` line, `[   1.234] ...`, in seconds since the run started.
fn line_time(line: &str) -> f64 {
    let inner = line.trim_start_matches('[').split(']').next().unwrap();
    inner.trim().parse().unwrap()
}

/// Checks that `driver.log` and `events.jsonl` recorded the death of `helper` by
/// SIGKILL (on `lane`'s timeline: a machine, or the test's); the seconds between
/// `killed_at` (on the log's clock) and the log's line.
async fn recorded(dir: &Path, helper: &str, lane: Option<&str>, killed_at: f64) -> f64 {
    let line = log_line(
        dir,
        &format!("{helper} was killed by signal 9 (SIGKILL) while the test ran"),
    )
    .await;
    let events = std::fs::read_to_string(dir.join("out/events.jsonl")).unwrap();
    let machine = lane
        .map(|m| format!(r#""machine":"{m}","#))
        .unwrap_or_default();
    let mark = format!(
        r#"{machine}"kind":"helper","label":"{helper}","outcome":"failed","message":"was killed by signal 9 (SIGKILL)"}}"#
    );
    // One mark, the death's (`{"event":"mark","t":12.345,` then the rest).
    let marks: Vec<&str> = events
        .lines()
        .filter(|l| l.contains(r#""kind":"helper""#))
        .collect();
    assert_eq!(marks.len(), 1, "{events}");
    let rest = marks[0]
        .split_once(',')
        .unwrap()
        .1
        .split_once(',')
        .unwrap()
        .1;
    assert_eq!(rest, mark, "{events}");
    line_time(&line) - killed_at
}

/// Stops the fleet; every helper it had is gone, and the log reports no other death.
async fn stop_and_check(net: Fleet, dir: &Path, pids: Vec<(String, u32)>) {
    net.stop_all().await;
    for (name, pid) in pids {
        assert!(gone(pid), "{name} ({pid}) still runs after stop_all");
    }
    let log = std::fs::read_to_string(dir.join("out/driver.log")).unwrap();
    let deaths = log.matches("while the test ran").count();
    assert_eq!(deaths, 1, "one death, not the clean-up's:\n{log}");
}

/// The machine's call that runs `command`, started on its own task; returns once the
/// command printed `started` in the guest.
async fn running(
    net: &Fleet,
    dir: &Path,
    machine: &str,
    command: &'static str,
) -> tokio::task::JoinHandle<(Result<String, Error>, Instant)> {
    let m = net.machine(machine).unwrap();
    let call = tokio::spawn(async move {
        let r = m.succeed(command).await;
        (r, Instant::now())
    });
    log_line(dir, &format!("{machine}:   started")).await;
    call
}

#[tokio::test(flavor = "multi_thread")]
async fn vlan_switch_killed_during_a_command_fails_it_and_every_later_call() {
    let dir = tempfile::tempdir().unwrap();
    let net = network(&dir, TWO);
    net.start_all().await.unwrap();
    let pids = net.helper_pids().await;
    let call = running(&net, dir.path(), "b", "echo started; sleep 60").await;
    let switch = helper_pid(&net, "vlan 1: vde_switch").await;
    let t_kill = net.log().elapsed();
    let killed = Instant::now();
    sigkill(switch);
    let (result, ended) = call.await.unwrap();
    let took = ended - killed;
    let e = result.unwrap_err();
    assert!(took < LIMIT, "the call ended {took:?} after the kill");
    assert!(
        matches!(
            &e,
            Error::HelperDied {
                vlan: 1,
                machine: None,
                ..
            }
        ),
        "{e:?}"
    );
    assert_eq!(
        e.to_string(),
        "vlan 1: vde_switch was killed by signal 9 (SIGKILL) while the test ran \
         (machine `b` was running `echo started; sleep 60`)"
    );
    let seen = recorded(dir.path(), "vlan 1: vde_switch", None, t_kill).await;
    eprintln!("vde_switch: logged {seen:.3} s after the kill, the call failed {took:?} after it");
    // Every later call fails at once: the other machine's, the network's.
    let started = Instant::now();
    let e = net.machine("a").unwrap().succeed("true").await.unwrap_err();
    assert!(started.elapsed() < LIMIT, "{:?}", started.elapsed());
    assert_eq!(
        e.to_string(),
        "vlan 1: vde_switch was killed by signal 9 (SIGKILL) while the test ran"
    );
    let e = net
        .partition(1, &[vec!["a".into()], vec!["b".into()]])
        .await;
    assert!(matches!(e, Err(Error::HelperDied { .. })), "{e:?}");
    stop_and_check(net, dir.path(), pids).await;
}

/// A boot under way (a cold one, seconds under TCG) ends when its VLAN's switch dies,
/// and its QEMU goes.
#[tokio::test(flavor = "multi_thread")]
async fn vlan_switch_killed_during_a_boot_ends_it() {
    let dir = tempfile::tempdir().unwrap();
    let net = network(&dir, "[machines.a]\n[machines.b]\nsnapshot = false\n");
    let a = net.machine("a").unwrap();
    a.start().await.unwrap();
    let pids = net.helper_pids().await;
    let b = net.machine("b").unwrap();
    let booting = {
        let b = b.clone();
        tokio::spawn(async move {
            let r = b.start().await;
            (r, Instant::now())
        })
    };
    log_line(dir.path(), "b: starting (").await;
    let killed = Instant::now();
    sigkill(helper_pid(&net, "vlan 1: vde_switch").await);
    let (result, ended) = booting.await.unwrap();
    let took = ended - killed;
    let e = result.unwrap_err().to_string();
    assert!(took < LIMIT, "the boot ended {took:?} after the kill");
    assert!(
        e.starts_with("vlan 1: vde_switch was killed by signal 9 (SIGKILL) while the test ran"),
        "{e}"
    );
    eprintln!("boot: failed {took:?} after the kill: {e}");
    assert_gone(&b).await;
    stop_and_check(net, dir.path(), pids).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn link_switch_killed_between_calls_fails_the_next_call() {
    let dir = tempfile::tempdir().unwrap();
    let net = network(&dir, TWO);
    net.start_all().await.unwrap();
    let a = net.machine("a").unwrap();
    a.succeed("true").await.unwrap();
    let pids = net.helper_pids().await;
    let helper = "machine `a` vlan 1: link switch (vde_switch)";
    let t_kill = net.log().elapsed();
    sigkill(helper_pid(&net, helper).await);
    // No call runs: the watcher sees it, and the log has it, within the second.
    let seen = recorded(dir.path(), helper, Some("a"), t_kill).await;
    assert!(
        seen < LIMIT.as_secs_f64(),
        "logged {seen:.3} s after the kill"
    );
    let started = Instant::now();
    let e = a.succeed("true").await.unwrap_err();
    let took = started.elapsed();
    assert!(took < LIMIT, "{took:?}");
    assert!(
        matches!(&e, Error::HelperDied { vlan: 1, machine: Some(m), .. } if m == "a"),
        "{e:?}"
    );
    assert_eq!(
        e.to_string(),
        format!("{helper} was killed by signal 9 (SIGKILL) while the test ran")
    );
    eprintln!("link switch: logged {seen:.3} s after the kill; the next call failed in {took:?}");
    // Another machine on the VLAN fails too: it can no longer reach `a`.
    let e = net.machine("b").unwrap().succeed("true").await.unwrap_err();
    assert!(e.to_string().starts_with(helper), "{e}");
    stop_and_check(net, dir.path(), pids).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn wirefilter_killed_fails_the_call_of_another_machine_on_its_vlan() {
    let dir = tempfile::tempdir().unwrap();
    let net = network(&dir, TWO);
    net.start_all().await.unwrap();
    let pids = net.helper_pids().await;
    let call = running(&net, dir.path(), "b", "echo started; sleep 60").await;
    let helper = "machine `a` vlan 1: wirefilter";
    let t_kill = net.log().elapsed();
    let killed = Instant::now();
    sigkill(helper_pid(&net, helper).await);
    let (result, ended) = call.await.unwrap();
    let took = ended - killed;
    let e = result.unwrap_err();
    assert!(took < LIMIT, "the call ended {took:?} after the kill");
    assert_eq!(
        e.to_string(),
        format!(
            "{helper} was killed by signal 9 (SIGKILL) while the test ran \
             (machine `b` was running `echo started; sleep 60`)"
        )
    );
    let seen = recorded(dir.path(), helper, Some("a"), t_kill).await;
    eprintln!("wirefilter: logged {seen:.3} s after the kill, the call failed {took:?} after it");
    stop_and_check(net, dir.path(), pids).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn capture_killed_fails_the_next_call() {
    let dir = tempfile::tempdir().unwrap();
    let net = network(&dir, TWO);
    net.start_all().await.unwrap();
    let pcap = net.capture_vlan(1).await.unwrap();
    let a = net.machine("a").unwrap();
    a.succeed("ping -c 1 -W 5 b").await.unwrap();
    let pids = net.helper_pids().await;
    let helper = "vlan 1: capture (vde_plug)";
    let t_kill = net.log().elapsed();
    let killed = Instant::now();
    sigkill(helper_pid(&net, helper).await);
    // The call right after the kill fails, whether it starts before the watcher
    // saw the death or after.
    let e = a.succeed("sleep 30").await.unwrap_err();
    let took = killed.elapsed();
    assert!(took < LIMIT, "{took:?}");
    assert!(
        e.to_string().starts_with(&format!(
            "{helper} was killed by signal 9 (SIGKILL) while the test ran"
        )),
        "{e}"
    );
    let seen = recorded(dir.path(), helper, None, t_kill).await;
    eprintln!("capture: logged {seen:.3} s after the kill, the next call failed {took:?} after it");
    stop_and_check(net, dir.path(), pids).await;
    // What it captured before it died is kept.
    assert!(std::fs::metadata(&pcap).unwrap().len() > 24, "{pcap:?}");
}

/// A whole run: the switch killed under the script's command fails the test with the
/// switch and the signal in its error, on the report's page too; a `retry` around the
/// command does not try again.
#[tokio::test(flavor = "multi_thread")]
async fn vlan_switch_killed_fails_the_test_and_the_report_shows_it() {
    let dir = tempfile::tempdir().unwrap();
    let spec = format!("script = \"t.rhai\"\n{TWO}");
    let script =
        "a.succeed(\"true\");\nretry(|| { b.succeed(\"echo started; sleep 60\"); }, 300);\n";
    let killer = {
        let dir = dir.path().to_owned();
        tokio::spawn(async move {
            let line = log_line(&dir, "vlan 1: switch at ").await;
            let switch = line.split("switch at ").nth(1).unwrap();
            let switch = switch.split(' ').next().unwrap().to_owned();
            log_line(&dir, "b:   started").await;
            let pids = qemus_with(&format!("--sock\0{switch}\0"));
            assert_eq!(pids.len(), 1, "{switch}: {pids:?}");
            sigkill(pids[0]);
            (Instant::now(), switch)
        })
    };
    let e = run_script(&dir, &spec, script).await.unwrap_err();
    let ended = Instant::now();
    let (killed, switch) = killer.await.unwrap();
    // The run ended (its clean-up included) long before the command's 60 s, and the
    // retry's 300 s.
    assert!(
        ended - killed < Duration::from_secs(20),
        "{:?}",
        ended - killed
    );
    let m = e.to_string();
    assert!(m.contains(":2:"), "{m}");
    assert!(
        m.contains("vlan 1: vde_switch was killed by signal 9 (SIGKILL) while the test ran"),
        "{m}"
    );
    let log = std::fs::read_to_string(dir.path().join("out/driver.log")).unwrap();
    assert!(
        log.contains("retry: try 1 failed, and a helper of the network died"),
        "{log}"
    );
    let report = std::fs::read_to_string(dir.path().join("out/report.html")).unwrap();
    assert!(
        report.contains("vlan 1: vde_switch was killed by signal 9 (SIGKILL)"),
        "the report does not name the switch"
    );
    // No helper of the run is left.
    let run_dir = Path::new(&switch).parent().unwrap().display().to_string();
    assert_eq!(qemus_with(&run_dir), Vec::<u32>::new(), "{run_dir}");
}

/// A normal run's clean-up (switches, link switches, wirefilters and a capture
/// stopped by the driver, after a partition and a heal) is no death.
#[tokio::test(flavor = "multi_thread")]
async fn a_passing_run_s_clean_up_reports_no_death() {
    let dir = tempfile::tempdir().unwrap();
    let spec = format!("script = \"t.rhai\"\n{TWO}");
    let script = "capture_vlan(1);\nb.succeed(\"true\");\na.succeed(\"ping -c 1 -W 5 b\");\n\
                  partition(1, [[\"a\"], [\"b\"]]);\nheal(1);\n";
    run_script(&dir, &spec, script).await.unwrap();
    let log = std::fs::read_to_string(dir.path().join("out/driver.log")).unwrap();
    assert!(!log.contains("while the test ran"), "{log}");
    assert!(!log.contains("was killed by signal"), "{log}");
    let events = std::fs::read_to_string(dir.path().join("out/events.jsonl")).unwrap();
    assert!(!events.contains(r#""kind":"helper""#), "{events}");
    let line = log
        .lines()
        .find(|l| l.contains("vlan 1: switch at "))
        .unwrap();
    let run_dir = line.split("switch at ").nth(1).unwrap();
    let run_dir = Path::new(run_dir.split(' ').next().unwrap())
        .parent()
        .unwrap();
    assert_eq!(
        qemus_with(&run_dir.display().to_string()),
        Vec::<u32>::new(),
        "helpers left"
    );
}

/// A death on one VLAN leaves the call of a machine on another VLAN alone; a test
/// whose script passes after a death fails all the same, at its end.
#[tokio::test(flavor = "multi_thread")]
async fn a_death_after_the_last_call_on_its_vlan_fails_the_test_at_its_end() {
    let dir = tempfile::tempdir().unwrap();
    let spec = "script = \"t.rhai\"\n[machines.a]\n[machines.c]\nvlans = [2]\n";
    let script = "c.succeed(\"true\");\na.succeed(\"echo started\");\nc.succeed(\"sleep 3\");\n";
    let killer = {
        let dir = dir.path().to_owned();
        tokio::spawn(async move {
            let line = log_line(&dir, "vlan 1: switch at ").await;
            let switch = line.split("switch at ").nth(1).unwrap();
            let run_dir = Path::new(switch.split(' ').next().unwrap())
                .parent()
                .unwrap();
            // a's call has returned: c's has begun.
            log_line(&dir, "c: must succeed: sleep 3").await;
            // a's wirefilter: the one that plugs into port 1 of VLAN 1's switch.
            let needle = format!("{}/vlan1.switch[1]:", run_dir.display());
            let pids = qemus_with(&needle);
            assert_eq!(pids.len(), 1, "{needle}: {pids:?}");
            sigkill(pids[0]);
        })
    };
    let e = run_script(&dir, spec, script).await.unwrap_err();
    killer.await.unwrap();
    assert_eq!(
        e.to_string(),
        "machine `a` vlan 1: wirefilter was killed by signal 9 (SIGKILL) while the test ran"
    );
    // c's command, on VLAN 2, ran to its end.
    let events = std::fs::read_to_string(dir.path().join("out/events.jsonl")).unwrap();
    let start = events
        .lines()
        .find(|l| l.contains(r#""label":"`sleep 3`""#))
        .unwrap_or_else(|| panic!("{events}"));
    let id = start
        .split(r#""id":"#)
        .nth(1)
        .unwrap()
        .split(',')
        .next()
        .unwrap();
    let ended = events
        .lines()
        .find(|l| l.starts_with(r#"{"event":"end","#) && l.contains(&format!(r#""id":{id},"#)))
        .unwrap_or_else(|| panic!("{events}"));
    assert!(ended.contains(r#""outcome":"ok""#), "{events}");
    let report = std::fs::read_to_string(dir.path().join("out/report.html")).unwrap();
    assert!(report.contains("machine `a` vlan 1: wirefilter was killed by signal 9"));
}

//! Snapshots (`snapshot = true`): a machine saves its booted state once, identical
//! machines restore it and are each themselves; a state QEMU refuses means a cold
//! boot; another memory size is another state.
//!
//! Each test puts a tag of its own on the kernel command line, so its states are its
//! own in the shared cache, and removes them at the end.

use std::sync::Arc;

use flotilla_driver::{snapshot_store, StartKind};

use super::*;

/// A tag no other test or run uses.
pub(super) fn tag() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!("{}-{nanos}", std::process::id())
}

/// `[machines.NAME]` tables with `snapshot = true`, `extra` and the tag.
pub(super) fn snapshot_spec(names: &[&str], tag: &str, extra: &str) -> String {
    names
        .iter()
        .map(|n| {
            format!(
                "[machines.{n}]\nsnapshot = true\nkernel_args = \"flotilla.test={tag}\"\n{extra}\n"
            )
        })
        .collect()
}

pub(super) fn driver_log(dir: &tempfile::TempDir) -> String {
    std::fs::read_to_string(dir.path().join("out/driver.log")).unwrap()
}

/// The processes with `flotilla.test=<tag>` on their command line (the test's QEMUs).
fn qemus_with_tag(tag: &str) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .map(|c| String::from_utf8_lossy(&c).contains(&format!("flotilla.test={tag}")))
                .unwrap_or(false)
        })
        .collect()
}

/// Removes a saved state, its `.ram`, its `.meta` and its disks.
pub(super) fn remove_state(file: &Path) {
    let _ = std::fs::remove_file(file);
    let _ = std::fs::remove_file(file.with_extension("ram"));
    let _ = std::fs::remove_file(file.with_extension("meta"));
    let _ = std::fs::remove_file(file.with_extension("lock"));
    for disk in saved_disks(file) {
        let _ = std::fs::remove_file(disk);
    }
}

/// The disks saved with the state in `file`.
pub(super) fn saved_disks(file: &Path) -> Vec<PathBuf> {
    let stem = file.file_stem().unwrap().to_string_lossy().into_owned();
    let mut disks: Vec<PathBuf> = std::fs::read_dir(file.parent().unwrap())
        .unwrap()
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with(&format!("{stem}.disk-"))
        })
        .map(|e| e.path())
        .collect();
    disks.sort();
    disks
}

/// Boots machine `maker` of a spec of its own once, so that the state is saved; the
/// state's file.
async fn save_state(tag: &str, extra: &str) -> PathBuf {
    let dir = tempfile::tempdir().unwrap();
    let net = network(&dir, &snapshot_spec(&["maker"], tag, extra));
    let maker = net.machine("maker").unwrap();
    let file = maker.snapshot_file().expect("a default-guest machine");
    assert!(!file.exists(), "{}", file.display());
    maker.succeed("true").await.unwrap();
    net.stop_all().await;
    let log = driver_log(&dir);
    assert!(log.contains("maker: snapshot: saved "), "{log}");
    assert!(file.is_file(), "{log}");
    file
}

#[tokio::test(flavor = "multi_thread")]
async fn machines_restored_from_one_snapshot_are_each_themselves() {
    let tag = tag();
    let file = save_state(&tag, "").await;

    let dir = tempfile::tempdir().unwrap();
    let net = network(&dir, &snapshot_spec(&["a", "b"], &tag, ""));
    let (a, b) = (net.machine("a").unwrap(), net.machine("b").unwrap());
    assert_eq!(a.snapshot_file().as_ref(), Some(&file));
    net.start_all().await.unwrap();
    let log = driver_log(&dir);
    for m in ["a", "b"] {
        assert!(
            log.contains(&format!("{m}: snapshot: restored from {}", file.display())),
            "{log}"
        );
    }
    assert!(!log.contains("FLOTILLA-AGENT-READY"), "no boot: {log}");
    for m in [&a, &b] {
        assert_eq!(m.started_as(), Some(StartKind::Restored), "{}", m.name());
    }
    // Both run on the store's RAM file, mapped privately (their pages are shared
    // until written), with only the devices in the state.
    let ram = file.with_extension("ram");
    for m in [&a, &b] {
        let pid = m.qemu_pid().unwrap();
        let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap();
        let mapped = maps
            .lines()
            .find(|l| l.ends_with(&ram.display().to_string()))
            .unwrap_or_else(|| panic!("{}: {} not mapped: {maps}", m.name(), ram.display()));
        assert!(mapped.contains(" rw-p "), "private: {mapped}");
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap();
        let cmdline = String::from_utf8_lossy(&cmdline);
        assert!(
            cmdline.contains(&format!("mem-path={},share=off", ram.display())),
            "{cmdline}"
        );
    }
    assert!(std::fs::metadata(&file).unwrap().len() < 4 << 20);

    // Own MACs (the maker was machine 1, as `a` is; `b` had to change), host names,
    // addresses and /etc/hosts.
    let macs = |m: Arc<Machine>| async move {
        m.succeed("cat /sys/class/net/eth*/address | sort")
            .await
            .unwrap()
    };
    assert_eq!(
        macs(a.clone()).await,
        "52:54:00:12:01:01\n52:54:00:ff:00:01\n"
    );
    assert_eq!(
        macs(b.clone()).await,
        "52:54:00:12:01:02\n52:54:00:ff:00:02\n"
    );
    assert_eq!(b.succeed("hostname").await.unwrap(), "b\n");
    assert_eq!(a.succeed("hostname").await.unwrap(), "a\n");
    let b_addrs = b.succeed("ip -4 -o addr").await.unwrap();
    assert!(
        b_addrs.contains(&format!("{}/", b.ip(1).unwrap())),
        "{b_addrs}"
    );
    let hosts = b.succeed("cat /etc/hosts").await.unwrap();
    assert!(
        hosts.contains(&format!("{} a\n", a.ip(1).unwrap())),
        "{hosts}"
    );
    // QEMU's NIC filters follow the guests' new MACs: they reach each other.
    b.succeed("ping -c 1 -W 5 a").await.unwrap();
    a.succeed("ping -c 1 -W 5 b").await.unwrap();
    a.succeed("ping -c 1 -W 5 10.0.2.2").await.unwrap();

    // Clocks are the host's, not the snapshot's.
    for m in [&a, &b] {
        let guest: i64 = m.succeed("date +%s").await.unwrap().trim().parse().unwrap();
        let host = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        assert!((guest - host).abs() <= 3, "{}: {guest} vs {host}", m.name());
    }
    // The kernel makes its boot id when it is first read, and nothing reads it
    // before the state is saved: each restored machine has its own. (One read before
    // the save would be every restored machine's.)
    let boot_id = |m: Arc<Machine>| async move {
        m.succeed("cat /proc/sys/kernel/random/boot_id")
            .await
            .unwrap()
    };
    assert_ne!(boot_id(a.clone()).await, boot_id(b.clone()).await);
    // Their random numbers differ (the pools got the host's randomness each).
    let random = |m: Arc<Machine>| async move {
        m.succeed("head -c 16 /dev/urandom | od -An -tx1")
            .await
            .unwrap()
    };
    assert_ne!(random(a.clone()).await, random(b.clone()).await);
    net.stop_all().await;
    remove_state(&file);
}

/// Gives the state in `file` its `.meta`'s checksum anew, after a change, so that only
/// QEMU can tell.
fn reseal(file: &Path, before: &snapshot_store::Sum) {
    let after = snapshot_store::sum_of(file).unwrap();
    let meta = file.with_extension("meta");
    let text = std::fs::read_to_string(&meta).unwrap();
    let old = format!("\"bytes\": {},\n", before.bytes);
    assert!(
        text.contains(&before.sha256) && text.contains(&old),
        "{text}"
    );
    let text = text
        .replace(&before.sha256, &after.sha256)
        .replace(&old, &format!("\"bytes\": {},\n", after.bytes));
    std::fs::write(&meta, text).unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_snapshot_qemu_refuses_is_removed_and_the_machine_boots_cold() {
    let tag = tag();
    let file = save_state(&tag, "").await;
    let before = snapshot_store::sum_of(&file).unwrap();
    let len = std::fs::metadata(&file).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&file)
        .unwrap()
        .set_len(len / 2)
        .unwrap();
    reseal(&file, &before);

    let dir = tempfile::tempdir().unwrap();
    let net = network(&dir, &snapshot_spec(&["m"], &tag, ""));
    let m = net.machine("m").unwrap();
    let started = Instant::now();
    assert_eq!(m.succeed("echo hi").await.unwrap(), "hi\n");
    assert!(started.elapsed() < Duration::from_secs(60));
    let log = driver_log(&dir);
    let refused = log
        .lines()
        .find(|l| l.contains("m: snapshot: ") && l.contains(" refused ("))
        .unwrap_or_else(|| panic!("{log}"));
    assert!(refused.contains(&file.display().to_string()), "{refused}");
    assert!(refused.ends_with("removed; booting cold"), "{refused}");
    assert!(log.contains("FLOTILLA-AGENT-READY"), "a cold boot: {log}");
    assert_eq!(m.started_as(), Some(StartKind::Booted));
    // The cold boot saved a whole state again.
    assert!(log.contains("m: snapshot: saved "), "{log}");
    assert!(std::fs::metadata(&file).unwrap().len() > len / 2);
    // No QEMU of the refused state is left: the only QEMU with the tag is m's.
    assert_eq!(qemus_with_tag(&tag), vec![m.qemu_pid().unwrap()]);
    net.stop_all().await;
    remove_state(&file);
}

#[tokio::test(flavor = "multi_thread")]
async fn another_memory_size_is_another_snapshot() {
    let tag = tag();
    let file = save_state(&tag, "").await;
    let dir = tempfile::tempdir().unwrap();
    let net = network(&dir, &snapshot_spec(&["m"], &tag, "memory = 320"));
    let m = net.machine("m").unwrap();
    let other = m.snapshot_file().unwrap();
    assert_ne!(other, file);
    m.start().await.unwrap();
    net.stop_all().await;
    let log = driver_log(&dir);
    assert!(log.contains("m: snapshot: saved "), "{log}");
    assert!(other.is_file());
    remove_state(&file);
    remove_state(&other);
}

#[tokio::test(flavor = "multi_thread")]
async fn machines_that_cannot_use_a_snapshot_say_why() {
    let dir = tempfile::tempdir().unwrap();
    let (spec, mut options) = spec(
        &dir,
        "[machines.d]\nsnapshot = true\n[[machines.d.disks]]\nsize = \"8M\"\n",
    );
    options.keep_state = Some(dir.path().join("state"));
    let net = Fleet::new(&spec, options).unwrap();
    let d = net.machine("d").unwrap();
    assert_eq!(d.snapshot_file(), None);
    d.start().await.unwrap();
    net.stop_all().await;
    let log = driver_log(&dir);
    assert!(
        log.contains("d: snapshot: not for disks kept with --keep-state; booting cold"),
        "{log}"
    );
}

/// Boots machine `m` of a spec with `tag` after `damage` changed the saved state's RAM
/// file; the log must say why the state was not used, and the machine boots cold and
/// saves a whole state again.
async fn ram_damaged_boots_cold(damage: fn(&std::fs::File, u64), why: &str) {
    use std::os::unix::fs::FileExt as _;
    let tag = tag();
    let file = save_state(&tag, "").await;
    let ram = file.with_extension("ram");
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&ram)
        .unwrap();
    // A page the guest has data in: the first non-zero byte past 1 MiB.
    let mut buf = vec![0u8; 1 << 20];
    let mut at = 1u64 << 20;
    let offset = loop {
        let n = f.read_at(&mut buf, at).unwrap();
        assert!(n > 0, "no data in {}", ram.display());
        if let Some(i) = buf[..n].iter().position(|b| *b != 0) {
            break at + i as u64;
        }
        at += n as u64;
    };
    damage(&f, offset);
    drop(f);

    let dir = tempfile::tempdir().unwrap();
    let net = network(&dir, &snapshot_spec(&["m"], &tag, ""));
    let m = net.machine("m").unwrap();
    assert_eq!(m.succeed("echo hi").await.unwrap(), "hi\n");
    let log = driver_log(&dir);
    let line = log
        .lines()
        .find(|l| l.contains("m: snapshot: ") && l.contains(" refused ("))
        .unwrap_or_else(|| panic!("{log}"));
    assert!(line.contains(&format!("{} {why}", ram.display())), "{line}");
    assert!(line.ends_with("removed; booting cold"), "{line}");
    assert!(log.contains("FLOTILLA-AGENT-READY"), "a cold boot: {log}");
    assert!(log.contains("m: snapshot: saved "), "{log}");
    assert_eq!(
        std::fs::metadata(&ram).unwrap().len(),
        256 << 20,
        "a whole RAM file again"
    );
    net.stop_all().await;
    remove_state(&file);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_ram_file_with_flipped_bytes_is_found_by_its_checksum() {
    ram_damaged_boots_cold(
        |f, offset| {
            use std::os::unix::fs::FileExt as _;
            let mut byte = [0u8; 1];
            f.read_exact_at(&mut byte, offset).unwrap();
            f.write_all_at(&[!byte[0]], offset).unwrap();
        },
        "does not match its checksum",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_truncated_ram_file_is_found_by_its_size() {
    ram_damaged_boots_cold(|f, offset| f.set_len(offset + 1).unwrap(), "has ").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_restore_whose_guest_never_answers_stops_its_qemu_and_boots_cold() {
    let tag = tag();
    let file = save_state(&tag, "").await;
    // RAM of zeros with a matching checksum: QEMU loads the devices and runs, but
    // there is no guest, so no agent answers.
    let ram = file.with_extension("ram");
    let before = snapshot_store::sum_of(&ram).unwrap();
    let f = std::fs::OpenOptions::new().write(true).open(&ram).unwrap();
    f.set_len(0).unwrap();
    f.set_len(before.bytes).unwrap();
    drop(f);
    reseal(&ram, &before);

    let dir = tempfile::tempdir().unwrap();
    let net = network(&dir, &snapshot_spec(&["m"], &tag, ""));
    let m = net.machine("m").unwrap();
    assert_eq!(m.succeed("echo hi").await.unwrap(), "hi\n");
    let log = driver_log(&dir);
    let line = log
        .lines()
        .find(|l| l.contains("m: snapshot: ") && l.contains(" refused ("))
        .unwrap_or_else(|| panic!("{log}"));
    assert!(line.ends_with("removed; booting cold"), "{line}");
    assert!(
        log.contains("m: snapshot: saved "),
        "a cold boot saved it again: {log}"
    );
    // Only the cold boot's QEMU is left.
    assert_eq!(qemus_with_tag(&tag), vec![m.qemu_pid().unwrap()]);
    net.stop_all().await;
    remove_state(&file);
}

/// A default-guest machine with a blank disk and an overlay disk: the disks are saved
/// with the state and every restored machine has its own copies (what one writes the
/// other does not see, nor what the saving machine wrote after the save); a reboot
/// keeps the machine's own disks (no restore over them).
#[tokio::test(flavor = "multi_thread")]
async fn disks_are_saved_with_the_state_and_each_machines_own() {
    let tag = tag();
    let base_dir = tempfile::tempdir().unwrap();
    let base = base_dir.path().join("base.qcow2");
    let made = std::process::Command::new("qemu-img")
        .args(["create", "-q", "-f", "qcow2"])
        .arg(&base)
        .arg("16M")
        .status()
        .unwrap();
    assert!(made.success());
    let disks = format!(
        "[[machines.{{}}.disks]]\nname = \"scratch\"\nsize = \"8M\"\n\
         [[machines.{{}}.disks]]\nname = \"data\"\nbase = \"{}\"\n",
        base.display()
    );
    let spec_of = |names: &[&str]| -> String {
        names
            .iter()
            .map(|n| {
                format!(
                    "{}{}",
                    snapshot_spec(&[n], &tag, ""),
                    disks.replace("{}", n)
                )
            })
            .collect()
    };

    let dir = tempfile::tempdir().unwrap();
    let net = network(&dir, &spec_of(&["maker"]));
    let maker = net.machine("maker").unwrap();
    let file = maker.snapshot_file().expect("disks are no obstacle");
    maker.start().await.unwrap();
    maker
        .succeed("echo after-save > /dev/vda && sync")
        .await
        .unwrap();
    net.stop_all().await;
    let log = driver_log(&dir);
    assert!(log.contains("maker: snapshot: 2 disk(s) saved ("), "{log}");
    let saved: Vec<String> = saved_disks(&file)
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    let id = file.file_stem().unwrap().to_string_lossy();
    assert_eq!(
        saved,
        [
            format!("{id}.disk-data.qcow2"),
            format!("{id}.disk-scratch.qcow2")
        ]
    );

    let dir = tempfile::tempdir().unwrap();
    let net = network(&dir, &spec_of(&["a", "b"]));
    let (a, b) = (net.machine("a").unwrap(), net.machine("b").unwrap());
    assert_eq!(a.snapshot_file().as_ref(), Some(&file));
    net.start_all().await.unwrap();
    let log = driver_log(&dir);
    for m in ["a", "b"] {
        assert!(
            log.contains(&format!("{m}: snapshot: restored from {}", file.display())),
            "{log}"
        );
        assert!(
            log.contains(&format!("{m}: snapshot: 2 disk(s) restored in ")),
            "{log}"
        );
    }
    let head = "head -c 9 /dev/vda; echo; head -c 9 /dev/vdb; echo";
    assert_eq!(
        a.succeed(head).await.unwrap(),
        format!("{0}\n{0}\n", "\0".repeat(9))
    );
    a.succeed("echo a-writes > /dev/vda && echo a-writes > /dev/vdb && sync")
        .await
        .unwrap();
    assert_eq!(
        b.succeed(&format!("echo 3 > /proc/sys/vm/drop_caches; {head}"))
            .await
            .unwrap(),
        format!("{0}\n{0}\n", "\0".repeat(9))
    );
    // A reboot keeps what the machine wrote: its disks are not restored over.
    a.reboot(Duration::from_secs(30)).await.unwrap();
    assert_eq!(a.succeed(head).await.unwrap(), "a-writes\n\na-writes\n\n");
    net.stop_all().await;
    let log = driver_log(&dir);
    assert!(
        log.contains("a: snapshot: its disks hold what an earlier boot wrote; booting cold"),
        "{log}"
    );

    // Another disk layout (size), another base image content: other states.
    let other_size = spec_of(&["m"]).replace("size = \"8M\"", "size = \"9M\"");
    let dir = tempfile::tempdir().unwrap();
    let m = network(&dir, &other_size);
    let resized = m.machine("m").unwrap().snapshot_file().unwrap();
    assert_ne!(resized, file);
    let dir = tempfile::tempdir().unwrap();
    let again = network(&dir, &spec_of(&["m"]));
    assert_eq!(again.machine("m").unwrap().snapshot_file().unwrap(), file);
    let rewritten = base_dir.path().join("rewritten.qcow2");
    std::fs::copy(&base, &rewritten).unwrap();
    std::fs::rename(&rewritten, &base).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let rebased = network(&dir, &spec_of(&["m"]));
    assert_ne!(rebased.machine("m").unwrap().snapshot_file().unwrap(), file);
    remove_state(&file);
    assert!(saved_disks(&file).is_empty());
}

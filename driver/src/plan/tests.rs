//! Commands and identities of planned machines (no QEMU runs here).

use std::path::{Path, PathBuf};

use flotilla_vmnet::Forward;

use super::*;
use crate::accel::{Accel, AccelChoice};
use crate::spec::Spec;
use boot_files::ArchBootFiles;
use flotilla_host::arch::{Arch, ARCHES};
use qemu_command::NicHost;

const V72: &str = "QEMU emulator version 7.2.0";

/// The boot files beside `top` (kernel, firmware), booting `initrd`: the same for
/// each architecture, but for QEMU's binary and qboot.
fn boot(top: &Path, initrd: &Path) -> BootFiles {
    let files = |arch: &'static Arch| ArchBootFiles {
        arch,
        qemu: format!("/usr/bin/{}", arch.qemu).into(),
        accel: AccelChoice {
            accel: Accel::Tcg,
            reason: "test".into(),
        },
        firmware: arch.qboot_and_pvh.then(|| top.join("qboot.rom")),
        kernel_version: "test".into(),
        bz_image: top.join("vmlinuz"),
        boot_kernel: top.join("vmlinux"),
        boot_note: "test".into(),
        initrd: initrd.to_owned(),
        stage1: Some(top.join("stage1")),
        with_disks: Some(top.join("with-disks")),
        releases: Vec::new(),
    };
    BootFiles {
        arches: ARCHES.iter().map(files).collect(),
    }
}

/// Machine `name` of `toml`'s network, its sockets in `run`.
fn command_of(toml: &str, name: &str, run: &Path, boot: &BootFiles) -> QemuCommand {
    let spec = Spec::parse("t.toml".as_ref(), toml).unwrap();
    let plan = Plan::of(&spec);
    let net = plan.network.vmnet(run).unwrap();
    let number = net.machine(name).unwrap().number;
    let images: Vec<PathBuf> = (0..plan.images.len())
        .map(|i| run.join(format!("debian-{i}.qcow2")))
        .collect();
    let facts = RunFacts {
        boot,
        images: &images,
        net: &net,
        run_dir: run,
        keep_state: None,
        coverage: false,
    };
    let forwards = vec![Forward::new(10000 + u16::from(number), 80).unwrap()];
    plan.command(name, facts, forwards).unwrap()
}

fn args(cmd: &QemuCommand, start: &Start) -> String {
    let argv: Vec<String> = cmd
        .argv(start)
        .iter()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    argv.join(" ")
}

/// Two machines `a` and `b` like `machine` (a TOML table's body, `NAME` for the
/// machine's name).
fn pair(machine: &str) -> String {
    let (a, b) = (machine.replace("NAME", "a"), machine.replace("NAME", "b"));
    format!("[machines.a]\n{a}\n[machines.b]\n{b}\n")
}

#[test]
fn a_command_has_the_machine_s_hardware_and_its_own_instance() {
    let top = tempfile::tempdir().unwrap();
    let run = top.path().join("run");
    let boot = boot(top.path(), &top.path().join("initrd"));
    let toml = "[machines.web]\nmemory = 300\ncpus = 2\nvlans = [1, 2]\n\
                [[machines.web.disks]]\nname = \"data\"\nsize = \"64M\"\n";
    let cmd = command_of(toml, "web", &run, &boot);
    assert_eq!(cmd.hardware.memory_mib, 300);
    assert_eq!(cmd.hardware.cpus, 2);
    assert_eq!(cmd.hardware.nics.len(), 3, "two VLANs and the host NIC");
    assert_eq!(cmd.hardware.initrd, top.path().join("with-disks"));
    assert_eq!(cmd.instance.socket_dir, run.join("web"));
    assert_eq!(cmd.instance.forwards().len(), 1);
    let cold = args(&cmd, &Start::cold());
    assert!(
        cold.starts_with("-name web,process=flotilla-web -M q35 "),
        "{cold}"
    );
    assert!(cold.contains("-m 300 -smp 2"), "{cold}");
    assert!(cold.contains("flotilla.hostname=web"), "{cold}");
    assert!(
        cold.contains("virtio-net-pci,netdev=vlan2,id=nic2,mac=52:54:00:12:02:01,romfile="),
        "{cold}"
    );
    assert!(
        cold.contains(",hostfwd=tcp:127.0.0.1:10001-10.0.2.15:80"),
        "{cold}"
    );
    let data = run.join("web").join("data.qcow2");
    assert!(cold.contains(&data.display().to_string()), "{cold}");
    assert!(!cold.contains("memory-backend") && !cold.contains("-incoming"));
}

#[test]
fn an_arm64_machine_boots_its_architecture_s_machine_on_the_same_vlans() {
    let top = tempfile::tempdir().unwrap();
    let run = top.path().join("run");
    let boot = boot(top.path(), &top.path().join("initrd"));
    let toml = "[machines.board]\narch = \"aarch64\"\n[machines.pc]\n";
    let board = command_of(toml, "board", &run, &boot);
    let pc = command_of(toml, "pc", &run, &boot);
    assert_eq!(board.program, Path::new("/usr/bin/qemu-system-aarch64"));
    assert_eq!(pc.program, Path::new("/usr/bin/qemu-system-x86_64"));
    let cold = args(&board, &Start::cold());
    assert!(cold.contains(" -M virt "), "{cold}");
    assert!(cold.contains("-accel tcg -cpu neoverse-n1"), "{cold}");
    assert!(cold.contains("console=ttyAMA0 "), "{cold}");
    assert!(!cold.contains("-bios"), "no qboot on virt: {cold}");
    let pc_args = args(&pc, &Start::cold());
    assert!(
        pc_args.contains(" -M q35 ") && pc_args.contains("-bios"),
        "{pc_args}"
    );
    // Both on VLAN 1's switch, each by its own link.
    for (cmd, link) in [(&board, "vlan1-m1.link"), (&pc, "vlan1-m2.link")] {
        assert_eq!(cmd.hardware.nics[0].netdev_id, "vlan1");
        assert_eq!(cmd.instance.nics[0].host, NicHost::Socket(run.join(link)));
    }
    let saved = Start {
        ram: Ram::Shared(top.path().to_owned()),
        incoming: Incoming::None,
    };
    assert!(args(&board, &saved).contains(" -M virt,memory-backend=ram "));
}

#[test]
fn a_start_s_ram_and_incoming_state_are_inputs_of_the_arguments() {
    let top = tempfile::tempdir().unwrap();
    let run = top.path().join("run");
    let boot = boot(top.path(), &top.path().join("initrd"));
    let cmd = command_of("[machines.m]\nmemory = 320\n", "m", &run, &boot);
    let saving = Start {
        ram: Ram::Shared("/dev/shm".into()),
        incoming: Incoming::None,
    };
    let s = args(&cmd, &saving);
    assert!(s.contains("-M q35,memory-backend=ram "), "{s}");
    assert!(
        s.ends_with("-object memory-backend-file,id=ram,size=320M,mem-path=/dev/shm,share=on"),
        "{s}"
    );
    let restoring = Start {
        ram: Ram::Private("/cache/a,b.ram".into()),
        incoming: Incoming::Snapshot("/cache/a,b.qemu".into()),
    };
    let argv: Vec<String> = cmd
        .argv(&restoring)
        .iter()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    assert_eq!(argv[2..4], ["-M", "q35,memory-backend=ram"]);
    assert_eq!(
        argv[argv.len() - 4..],
        [
            "-object",
            "memory-backend-file,id=ram,size=320M,mem-path=/cache/a,,b.ram,share=off",
            "-incoming",
            "defer",
        ]
    );
    // Neither is in the identity.
    assert_eq!(cmd.identity_view(), cmd.clone().identity_view());
    assert!(!cmd.identity_view().join(" ").contains("memory-backend"));
}

#[test]
fn the_identity_view_keeps_the_guest_side_only() {
    let top = tempfile::tempdir().unwrap();
    let run = top.path().join("run");
    let boot = boot(top.path(), &top.path().join("initrd"));
    let cmd = command_of("[machines.web]\n", "web", &run, &boot);
    let view = cmd.identity_view().join(" ");
    assert!(!view.contains("web"), "{view}");
    assert!(!view.contains("52:54:00"), "{view}");
    assert!(!view.contains(&run.display().to_string()), "{view}");
    assert!(!view.contains("hostfwd"), "{view}");
    assert!(view.contains("flotilla.hostname=<hostname>"), "{view}");
    assert!(
        view.contains("virtio-net-pci,netdev=vlan1,id=nic1,mac=00:00:00:00:00:00,romfile="),
        "{view}"
    );
    assert!(view.contains("-m 256 -smp 1"), "{view}");
}

#[test]
fn the_identity_has_what_shapes_the_state_and_not_who_the_machine_is() {
    let top = tempfile::tempdir().unwrap();
    let (run1, run2) = (top.path().join("run1"), top.path().join("run2"));
    for dir in [&run1, &run2] {
        std::fs::create_dir_all(dir).unwrap();
    }
    for file in ["vmlinux", "initrd", "initrd2", "qboot.rom", "base.qcow2"] {
        std::fs::write(top.path().join(file), file).unwrap();
    }
    let initrd = top.path().join("initrd");
    let files = boot(top.path(), &initrd);
    let identity = |toml: &str, name: &str, run: &Path, boot: &BootFiles, version: &str| {
        command_of(toml, name, run, boot).snapshot_identity(version)
    };
    let base_toml = pair("");
    let base = identity(&base_toml, "a", &run1, &files, V72);
    // Another machine (name, host name, MACs, forwards), another run (sockets,
    // links): the same state.
    let a = command_of(&base_toml, "a", &run1, &files);
    let b = command_of(&base_toml, "b", &run2, &files);
    assert_ne!(a.instance.nics[0].mac, b.instance.nics[0].mac);
    assert_ne!(a.instance.machine_id, b.instance.machine_id);
    assert_eq!(b.snapshot_identity(V72), base);
    let multicast = format!("[network]\nbackend = \"multicast\"\n{base_toml}");
    assert_eq!(
        identity(&multicast, "a", &run1, &files, V72),
        identity(&multicast, "b", &run2, &files, V72)
    );
    let alone = "[machines.other_name]\n";
    assert_eq!(identity(alone, "other_name", &run2, &files, V72), base);
    // Everything else that shapes the state is in it.
    let changed = |machine: &str| identity(&pair(machine), "a", &run1, &files, V72);
    let with = |f: fn(&mut ArchBootFiles)| {
        let mut other = files.clone();
        f(&mut other.arches[0]);
        identity(&base_toml, "a", &run1, &other, V72)
    };
    let base_image = top.path().join("base.qcow2");
    for (what, other) in [
        ("memory", changed("memory = 512")),
        ("cpus", changed("cpus = 2")),
        ("kernel_args", changed("kernel_args = \"loglevel=4\"")),
        ("vlans", changed("vlans = [1, 2]")),
        ("display", changed("display = true")),
        ("arch", changed("arch = \"aarch64\"")),
        (
            "a disk",
            changed("[[machines.NAME.disks]]\nname = \"d\"\nsize = \"64M\""),
        ),
        (
            "an image",
            changed(&format!("image = \"{}\"", base_image.display())),
        ),
        (
            "initrd",
            with(|b| b.initrd = b.initrd.with_file_name("initrd2")),
        ),
        (
            "qemu version",
            identity(
                &base_toml,
                "a",
                &run1,
                &files,
                "QEMU emulator version 8.0.0",
            ),
        ),
        ("qemu binary", with(|b| b.qemu = "/opt/qemu".into())),
        (
            "the VLANs' backend",
            identity(
                &format!("[network]\nbackend = \"multicast\"\n{base_toml}"),
                "a",
                &run1,
                &files,
                V72,
            ),
        ),
        ("accelerator", with(|b| b.accel.accel = Accel::Kvm)),
        (
            "kernel",
            with(|b| b.boot_kernel = b.boot_kernel.with_file_name("initrd2")),
        ),
        ("firmware", with(|b| b.firmware = None)),
    ] {
        assert_ne!(other, base, "{what} is not in the identity");
    }
    // Disks: their size and their number.
    let disk = |size: &str| format!("[[machines.NAME.disks]]\nname = \"d\"\nsize = \"{size}\"");
    assert_ne!(changed(&disk("64M")), changed(&disk("128M")));
    let two = format!(
        "{}\n[[machines.NAME.disks]]\nname = \"e\"\nsize = \"64M\"",
        disk("64M")
    );
    assert_ne!(changed(&disk("64M")), changed(&two));
}

#[test]
fn the_identity_has_the_content_of_the_files_it_boots() {
    let top = tempfile::tempdir().unwrap();
    let run1 = top.path().join("run1");
    std::fs::create_dir_all(&run1).unwrap();
    for file in ["vmlinux", "initrd", "qboot.rom", "base.qcow2"] {
        std::fs::write(top.path().join(file), file).unwrap();
    }
    let initrd = top.path().join("initrd");
    let files = boot(top.path(), &initrd);
    let identity = |toml: &str| command_of(toml, "a", &run1, &files).snapshot_identity(V72);
    let base_toml = pair("");
    let base = identity(&base_toml);
    let changed = |machine: &str| identity(&pair(machine));
    let base_image = top.path().join("base.qcow2");
    // A kernel or firmware file written anew at the same path is another state.
    for file in ["vmlinux", "qboot.rom"] {
        std::thread::sleep(std::time::Duration::from_millis(10));
        std::fs::write(top.path().join(file), format!("{file}, rebuilt")).unwrap();
        let rebuilt = identity(&base_toml);
        assert_ne!(rebuilt, base, "{file}'s content is not in the identity");
    }
    // The initrd's content (its size) too, at the same path.
    let before = identity(&base_toml);
    std::fs::write(&initrd, "a rebuilt initrd").unwrap();
    let rebuilt = identity(&base_toml);
    assert_ne!(
        rebuilt, before,
        "the initrd's content is not in the identity"
    );
    // And an image's.
    let image = format!("image = \"{}\"", base_image.display());
    let before = changed(&image);
    std::thread::sleep(std::time::Duration::from_millis(10));
    std::fs::write(&base_image, "another base").unwrap();
    assert_ne!(changed(&image), before, "the image's content is not in it");
}

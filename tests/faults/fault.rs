//! The faults the campaign injects, what each run must then show, and the part of the
//! test script that drives a fault from inside the guest.
//!
//! The network has three machines on VLAN 1: `ash` (the default guest), `birch` (a
//! Debian machine with `init = "agent"`: the agent is PID 1) and `cedar` (a Debian
//! systemd machine, the agent a service with `Restart=always`).

use crate::rng::Rng;

pub const MACHINES: [&str; 3] = ["ash", "birch", "cedar"];

/// The script's rounds of work; a guest fault fires at the start of one of them.
pub const ROUNDS: u64 = 5;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    KillQemu,
    KillSwitch,
    KillWirefilter,
    KillDriver,
    StopQemu,
    KillAgentPid1,
    KillAgentSystemd,
    DiskFull,
    SnapshotTruncated,
    SnapshotFlipped,
    Partition,
    Panic,
}

pub const KINDS: [Kind; 12] = [
    Kind::KillQemu,
    Kind::KillSwitch,
    Kind::KillWirefilter,
    Kind::KillDriver,
    Kind::StopQemu,
    Kind::KillAgentPid1,
    Kind::KillAgentSystemd,
    Kind::DiskFull,
    Kind::SnapshotTruncated,
    Kind::SnapshotFlipped,
    Kind::Partition,
    Kind::Panic,
];

impl Kind {
    pub fn label(self) -> &'static str {
        match self {
            Kind::KillQemu => "kill -9 QEMU",
            Kind::KillSwitch => "kill -9 vde_switch",
            Kind::KillWirefilter => "kill -9 wirefilter",
            Kind::KillDriver => "kill -9 driver",
            Kind::StopQemu => "SIGSTOP+SIGCONT QEMU",
            Kind::KillAgentPid1 => "agent killed (init=agent)",
            Kind::KillAgentSystemd => "agent killed (systemd)",
            Kind::DiskFull => "disk full in copy_to",
            Kind::SnapshotTruncated => "snapshot truncated",
            Kind::SnapshotFlipped => "snapshot bit flipped",
            Kind::Partition => "partition in a copy",
            Kind::Panic => "guest panic",
        }
    }

    /// The short name `FAULT_KINDS` selects by.
    pub fn key(self) -> &'static str {
        match self {
            Kind::KillQemu => "qemu",
            Kind::KillSwitch => "switch",
            Kind::KillWirefilter => "wirefilter",
            Kind::KillDriver => "driver",
            Kind::StopQemu => "stop",
            Kind::KillAgentPid1 => "agent-pid1",
            Kind::KillAgentSystemd => "agent-systemd",
            Kind::DiskFull => "disk-full",
            Kind::SnapshotTruncated => "snapshot-truncate",
            Kind::SnapshotFlipped => "snapshot-flip",
            Kind::Partition => "partition",
            Kind::Panic => "panic",
        }
    }
}

/// What a run must end with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Exit 1, the error naming every one of `Fault::names`.
    Fails,
    /// Exit 0, or exit 1 with such an error.
    PassesOrFails,
    /// Killed by the campaign (SIGKILL).
    Killed,
}

/// One seeded fault: its kind and its parameters.
#[derive(Clone, Debug)]
pub struct Fault {
    pub kind: Kind,
    /// The machine it hits (the VLAN's faults: none).
    pub machine: Option<&'static str>,
    /// Host faults: ms after the script's cue line.
    pub delay_ms: u64,
    /// SIGSTOP: how long QEMU stays stopped; partition: how long it lasts.
    pub hold_ms: u64,
    /// Guest faults: the round they fire in.
    pub round: u64,
    /// A variant: the agent's signal (TERM or KILL), the systemd agent killed by its own
    /// command or a moment after it, the snapshot file to corrupt (an index).
    pub variant: u64,
}

impl Fault {
    pub fn new(kind: Kind, rng: &mut Rng) -> Fault {
        let machine = match kind {
            Kind::KillQemu | Kind::KillWirefilter | Kind::StopQemu | Kind::Panic => {
                Some(*rng.pick(&MACHINES))
            }
            Kind::KillAgentPid1 => Some("birch"),
            Kind::KillAgentSystemd => Some("cedar"),
            Kind::DiskFull => Some(*rng.pick(&["birch", "cedar"])),
            _ => None,
        };
        Fault {
            kind,
            machine,
            // Well inside the rounds' work (at least 3 s after the cue).
            delay_ms: rng.below(2000),
            hold_ms: 500 + rng.below(11_500),
            round: rng.below(ROUNDS),
            variant: rng.next_u64(),
        }
    }

    pub fn describe(&self) -> String {
        let mut s = self.kind.label().to_owned();
        if let Some(m) = self.machine {
            s.push_str(&format!(" on {m}"));
        }
        match self.kind {
            Kind::KillQemu | Kind::KillSwitch | Kind::KillWirefilter | Kind::KillDriver => {
                s.push_str(&format!(", {} ms after the cue", self.delay_ms));
            }
            Kind::StopQemu => s.push_str(&format!(
                ", {} ms after the cue, for {} ms",
                self.delay_ms, self.hold_ms
            )),
            Kind::KillAgentPid1 => s.push_str(&format!(
                ", SIG{} in round {}",
                self.pid1_signal(),
                self.round
            )),
            Kind::KillAgentSystemd => s.push_str(&format!(
                ", {} in round {}",
                if self.variant % 2 == 0 {
                    "by its own command"
                } else {
                    "0.3 s after a command"
                },
                self.round
            )),
            Kind::Partition => s.push_str(&format!(
                ", {} ms into a transfer, for {} ms",
                self.delay_ms % 2000,
                self.hold_ms % 4000
            )),
            Kind::DiskFull | Kind::Panic => s.push_str(&format!(" in round {}", self.round)),
            Kind::SnapshotTruncated | Kind::SnapshotFlipped => {}
        }
        s
    }

    fn pid1_signal(&self) -> &'static str {
        if self.variant % 2 == 0 {
            "TERM"
        } else {
            "KILL"
        }
    }

    pub fn outcome(&self) -> Outcome {
        match self.kind {
            Kind::KillQemu
            | Kind::KillSwitch
            | Kind::KillWirefilter
            | Kind::DiskFull
            | Kind::Panic => Outcome::Fails,
            Kind::KillDriver => Outcome::Killed,
            Kind::StopQemu
            | Kind::KillAgentPid1
            | Kind::KillAgentSystemd
            | Kind::SnapshotTruncated
            | Kind::SnapshotFlipped
            | Kind::Partition => Outcome::PassesOrFails,
        }
    }

    /// What a failure's error must name (all of them; a partition's: any machine).
    pub fn names(&self) -> Vec<&'static str> {
        match self.kind {
            Kind::KillSwitch => vec!["vlan 1"],
            Kind::KillWirefilter => vec!["vlan 1", self.machine.unwrap_or("?")],
            Kind::Partition | Kind::KillDriver => vec![],
            _ => self.machine.into_iter().collect(),
        }
    }

    /// Whether the campaign itself injects it into the running test (after the cue).
    pub fn injected_from_host(&self) -> bool {
        matches!(
            self.kind,
            Kind::KillQemu
                | Kind::KillSwitch
                | Kind::KillWirefilter
                | Kind::KillDriver
                | Kind::StopQemu
        )
    }

    /// Script lines that fire the fault from inside the test (at the start of its round).
    pub fn in_script(&self) -> String {
        let m = self.machine.unwrap_or("ash");
        match self.kind {
            Kind::KillAgentPid1 => format!(
                // The kernel drops a SIGKILL sent to PID 1 from inside; SIGTERM makes the
                // PID-1 agent power the machine off.
                "let r = birch.execute(\"kill -{} 1\", 10);\nlog(`birch: kill 1: ${{r}}`);\n",
                self.pid1_signal()
            ),
            Kind::KillAgentSystemd if self.variant % 2 == 0 => {
                "cedar.execute(\"kill -9 $(pidof flotilla-agent)\", 10);\n".to_owned()
            }
            Kind::KillAgentSystemd => "cedar.succeed(\"setsid -f sh -c 'sleep 0.3; kill -9 $(pidof \
                 flotilla-agent)' >/dev/null 2>&1\", 10);\n"
                .to_owned(),
            Kind::DiskFull => format!(
                "{m}.succeed(\"fallocate -l $(( $(stat -f -c %f /) * $(stat -f -c %S /) - \
                 1048576 )) /fill; dd if=/dev/zero of=/fill2 bs=64k 2>/dev/null; df /; \
                 true\", 30);\n\
                 {m}.copy_to(\"big.bin\", \"/root/big.bin\");\n"
            ),
            Kind::Panic => format!("{m}.succeed(\"echo c > /proc/sysrq-trigger\", 10);\n"),
            Kind::Partition => format!(
                // ash serves 1 MB over HTTP at 200 kB/s; cedar fetches it (fetch.sh: bash's
                // /dev/tcp); the VLAN is cut in the middle, healed, and the copy must end
                // whole.
                "ash.succeed(\"mkdir -p /tmp/www && head -c 1000000 /dev/urandom > \
                 /tmp/www/big && httpd -p 8080 -h /tmp/www\", 10);\n\
                 let want = ash.succeed(\"md5sum < /tmp/www/big | cut -c1-32\", 10);\n\
                 want.trim();\n\
                 ash.impair(1, #{{bandwidth: 200000}});\n\
                 cedar.copy_to(\"fetch.sh\", \"/tmp/fetch.sh\");\n\
                 cedar.succeed(\"setsid -f timeout 80 bash /tmp/fetch.sh >/tmp/fetch.log 2>&1\", 10);\n\
                 ash.succeed(\"sleep {}\", 10);\n\
                 partition(1, [[ash], [birch, cedar]]);\n\
                 log(\"FAULT: partitioned\");\n\
                 birch.copy_to(\"payload.bin\", \"/tmp/in-partition\");\n\
                 ash.fail(\"ping -c1 -W1 cedar\", 10);\n\
                 ash.succeed(\"sleep {}\", 10);\n\
                 heal(1);\n\
                 log(\"FAULT: healed\");\n\
                 ash.unimpair(1);\n\
                 cedar.wait_until_succeeds(`test \"$(tail -c 1000000 /tmp/got | md5sum | \
                 cut -c1-32)\" = ${{want}}`, 30);\n",
                ms_as_secs(self.delay_ms % 2000),
                ms_as_secs(self.hold_ms % 4000),
            ),
            _ => String::new(),
        }
    }
}

fn ms_as_secs(ms: u64) -> String {
    format!("{}.{:03}", ms / 1000, ms % 1000)
}

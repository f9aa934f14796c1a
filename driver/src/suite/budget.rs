//! How many tests run at once: a budget of guest memory and virtual CPUs that fits the
//! host, and what each test costs of it.

use std::fmt;

use crate::plan::Plan;
use crate::spec::Spec;

/// What a QEMU process takes beyond its guest's memory under TCG (translated code,
/// QEMU's own heap and libraries): about 150 MiB measured (RSS outside the guest RAM
/// mapping, two busy default-guest machines, 2-core host).
pub const QEMU_OVERHEAD_MIB: u64 = 160;

/// Virtual CPUs run per host core by default. TCG runs a vCPU per host thread, but
/// test guests spend much of their time waiting (for the host, the network, a timer).
/// On the 2-core host (2026-12-02, `scripts/suite-speed`, one run each, the host loaded
/// by others): the examples and the 16-machine test took 250 s one at a time, 186 s
/// with 4 vCPUs (about two tests at once, the 16-machine one alone) and 161 s with
/// `-j 3` (which ran the 16 machines beside other tests). Two per core keeps the host
/// from being overcommitted beyond that; `-j` goes further.
pub const VCPUS_PER_CORE: u32 = 2;

/// Host memory kept for everything else (the driver, the build, other users).
const RESERVE_MIB: u64 = 1024;

/// The guest memory and CPUs a test needs: the sum over its machines.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Cost {
    /// Guest memory plus [`QEMU_OVERHEAD_MIB`] per machine.
    pub memory_mib: u64,
    pub cpus: u32,
}

impl Cost {
    /// The cost of `spec`'s plan.
    pub fn of(spec: &Spec) -> Cost {
        Cost::of_plan(&Plan::of(spec))
    }

    /// The cost of `plan`'s machines.
    pub fn of_plan(plan: &Plan) -> Cost {
        plan.machines.values().fold(Cost::default(), |c, m| Cost {
            memory_mib: c.memory_mib + u64::from(m.memory_mib) + QEMU_OVERHEAD_MIB,
            cpus: c.cpus + m.cpus,
        })
    }
}

/// The suite's limits. A test starts when it fits beside those running; one bigger
/// than the whole budget starts when nothing else runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    pub memory_mib: u64,
    /// Virtual CPUs of all running tests; `None` with [`Budget::jobs`].
    pub cpus: Option<u32>,
    /// At most this many tests at once (`--jobs`), instead of the CPU limit.
    pub jobs: Option<usize>,
}

impl Budget {
    /// From the host: 3/4 of `MemAvailable` less a reserve, and [`VCPUS_PER_CORE`]
    /// per core.
    pub fn automatic() -> Budget {
        let available = mem_available_mib().unwrap_or(4096);
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get() as u32);
        Budget {
            memory_mib: (available.saturating_sub(RESERVE_MIB) * 3 / 4).max(512),
            cpus: Some(cores * VCPUS_PER_CORE),
            jobs: None,
        }
    }

    /// The automatic budget with the user's overrides: `--jobs` replaces the CPU limit,
    /// `--max-memory` the memory limit.
    pub fn with(jobs: Option<usize>, memory_mib: Option<u64>) -> Budget {
        let auto = Budget::automatic();
        Budget {
            memory_mib: memory_mib.unwrap_or(auto.memory_mib),
            cpus: if jobs.is_some() { None } else { auto.cpus },
            jobs,
        }
    }

    /// Whether a test costing `next` may start beside `running`.
    pub fn admits(&self, running: &[Cost], next: Cost) -> bool {
        if running.is_empty() {
            return true;
        }
        let memory: u64 = running.iter().map(|c| c.memory_mib).sum();
        let cpus: u32 = running.iter().map(|c| c.cpus).sum();
        memory + next.memory_mib <= self.memory_mib
            && self.cpus.map_or(true, |max| cpus + next.cpus <= max)
            && self.jobs.map_or(true, |max| running.len() < max)
    }
}

impl fmt::Display for Budget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} MiB", self.memory_mib)?;
        if let Some(cpus) = self.cpus {
            write!(f, ", {cpus} vCPUs")?;
        }
        if let Some(jobs) = self.jobs {
            write!(f, ", {jobs} test(s) at once")?;
        }
        Ok(())
    }
}

/// `MemAvailable` of `/proc/meminfo`, in MiB.
fn mem_available_mib() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_test_waits_for_room_and_a_big_one_runs_alone() {
        let budget = Budget {
            memory_mib: 2000,
            cpus: Some(4),
            jobs: None,
        };
        let small = Cost {
            memory_mib: 400,
            cpus: 1,
        };
        let big = Cost {
            memory_mib: 5000,
            cpus: 16,
        };
        assert!(budget.admits(&[], small));
        assert!(budget.admits(&[small, small, small], small));
        assert!(!budget.admits(&[small; 4], small), "CPUs");
        let heavy = Cost {
            memory_mib: 1500,
            cpus: 1,
        };
        assert!(!budget.admits(&[small, small], heavy), "memory");
        assert!(!budget.admits(&[small], big));
        assert!(budget.admits(&[], big), "alone");
        let jobs = Budget {
            memory_mib: 100_000,
            cpus: None,
            jobs: Some(2),
        };
        assert!(jobs.admits(&[big], big));
        assert!(!jobs.admits(&[small, small], small));
    }

    #[test]
    fn a_spec_costs_its_machines() {
        let spec = Spec::parse(
            "t.toml".as_ref(),
            "[machines.a]\nmemory = 256\n[machines.b]\nmemory = 512\ncpus = 2\n",
        )
        .unwrap();
        assert_eq!(
            Cost::of(&spec),
            Cost {
                memory_mib: 768 + 2 * QEMU_OVERHEAD_MIB,
                cpus: 3
            }
        );
        let auto = Budget::automatic();
        assert!(auto.memory_mib >= 512 && auto.cpus.unwrap() >= VCPUS_PER_CORE);
    }
}

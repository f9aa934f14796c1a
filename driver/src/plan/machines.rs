//! The spec as a plan of plain values, before anything runs ([`Plan::of`]): each
//! machine's resources and devices, the Debian images to build, the ports to forward
//! and the VLANs. Nothing here reads or writes the host: the suite's budget and
//! `--list` read it for every spec, and [`crate::Fleet`] runs it.

use std::collections::BTreeMap;
use std::path::PathBuf;

use crate::agent_client::AgentKind;
use crate::spec::{
    CoverageSpec, DiskSpec, ForwardSpec, JoinSpec, MachineSpec, PackageSource, Spec,
};
use flotilla_host::arch::Arch;
use flotilla_image::debian::{GuestFile, Recipe, Release};

/// A spec's plan.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The test's name.
    pub name: String,
    pub machines: BTreeMap<String, MachinePlan>,
    /// The Debian images to build (or take from the cache): each distinct content
    /// once, with the machines that boot it.
    pub images: Vec<ImageBuild>,
    pub network: NetworkPlan,
    /// How long a machine may take to be ready, if the spec says.
    pub boot_timeout: Option<std::time::Duration>,
    /// How long one command may take unless its call says otherwise, if the spec says.
    pub command_timeout: Option<std::time::Duration>,
    /// The spec's `[coverage]`.
    pub coverage: CoverageSpec,
}

/// One machine of a plan.
#[derive(Debug, Clone)]
pub struct MachinePlan {
    /// The guest's architecture.
    pub arch: &'static Arch,
    /// Guest memory in MiB.
    pub memory_mib: u32,
    /// Virtual CPUs.
    pub cpus: u32,
    /// The spec's extra kernel arguments.
    pub kernel_args: String,
    /// A VGA screen (and SeaBIOS to set it up).
    pub display: bool,
    /// What the root disk is an overlay over, if the machine has one.
    pub root: Root,
    /// Which agent the guest runs.
    pub agent: AgentKind,
    /// The extra disks, in the guest's order.
    pub disks: Vec<DiskSpec>,
    /// The VLANs it has a NIC on, in order.
    pub vlans: Vec<u8>,
    /// The ports forwarded to it from 127.0.0.1 (host port 0: a free one, picked when
    /// the network is made).
    pub forwards: Vec<ForwardSpec>,
    /// The spec's `snapshot`.
    pub snapshot: Option<bool>,
    /// The Debian release whose cloud kernel the machine boots, when not the default
    /// guest's: a Debian machine's image's release, or an `image`'s `release`.
    pub kernel_release: Option<Release>,
}

/// A machine's root disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Root {
    /// None: the machine runs from its initramfs.
    None,
    /// An overlay over the spec's `image`.
    Image(PathBuf),
    /// An overlay over the Debian image [`Plan::images`]`[i]`.
    Debian(usize),
}

/// A Debian image to build, and the machines that boot it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageBuild {
    pub recipe: Recipe,
    pub machines: Vec<String>,
}

/// The network: the VLANs each machine is on and how they are made.
#[derive(Debug, Clone)]
pub struct NetworkPlan {
    pub backend: flotilla_vmnet::Backend,
    /// Machine numbers start at `offset + 1`.
    pub offset: u8,
    /// VLANs joined to another driver's switches.
    pub join: Vec<JoinSpec>,
    /// Each machine's VLANs.
    pub vlans: BTreeMap<String, Vec<u8>>,
}

impl Plan {
    /// The plan of `spec`.
    pub fn of(spec: &Spec) -> Plan {
        let mut images: Vec<ImageBuild> = Vec::new();
        let mut machines = BTreeMap::new();
        for (name, m) in &spec.machines {
            let root = if m.is_debian() {
                // Machines of equal content share an image: one build per recipe.
                let recipe = recipe_of(m);
                let i = match images.iter().position(|b| b.recipe == recipe) {
                    Some(i) => i,
                    None => {
                        images.push(ImageBuild {
                            recipe,
                            machines: Vec::new(),
                        });
                        images.len() - 1
                    }
                };
                images[i].machines.push(name.clone());
                Root::Debian(i)
            } else {
                m.image.clone().map_or(Root::None, Root::Image)
            };
            machines.insert(name.clone(), MachinePlan::of(m, root));
        }
        let vlans = spec
            .machines
            .iter()
            .map(|(name, m)| (name.clone(), m.vlans.clone()))
            .collect();
        Plan {
            name: spec.name.clone(),
            machines,
            images,
            network: NetworkPlan {
                backend: spec.backend,
                offset: spec.offset,
                join: spec.join.clone(),
                vlans,
            },
            boot_timeout: spec.boot_timeout,
            command_timeout: spec.command_timeout,
            coverage: spec.coverage.clone(),
        }
    }

    /// The architectures of the plan's machines, each once, the host's first.
    pub fn arches(&self) -> Vec<&'static Arch> {
        let mut arches: Vec<&'static Arch> = Vec::new();
        for m in self.machines.values() {
            if !arches.contains(&m.arch) {
                arches.push(m.arch);
            }
        }
        arches.sort_by_key(|a| !a.is_host());
        arches
    }

    /// The host ports the plan forwards by number (not the ones picked).
    pub fn fixed_ports(&self) -> std::collections::BTreeSet<u16> {
        self.machines
            .values()
            .flat_map(|m| m.forwards.iter().map(|f| f.host))
            .filter(|&p| p != 0)
            .collect()
    }
}

impl NetworkPlan {
    /// The vmnet plan of these VLANs, their sockets in `run_dir`: each machine's
    /// number, NICs, MACs and addresses, each VLAN's switch.
    pub fn vmnet(&self, run_dir: &std::path::Path) -> Result<flotilla_vmnet::Plan, crate::Error> {
        flotilla_vmnet::Plan::with_offset(&self.vlans, self.backend, run_dir, self.offset)
            .map_err(crate::Error::Vmnet)
    }
}

impl MachinePlan {
    fn of(m: &MachineSpec, root: Root) -> MachinePlan {
        let release = match root {
            Root::Debian(_) => Some(m.release.unwrap_or_default()),
            _ => m.release,
        };
        MachinePlan {
            kernel_release: release.filter(|r| !r.is_default_guest_kernel()),
            arch: m.arch,
            memory_mib: m.memory,
            cpus: m.cpus,
            kernel_args: m.kernel_args.clone(),
            display: m.display,
            root,
            agent: m.agent,
            disks: m.disks.clone(),
            vlans: m.vlans.clone(),
            forwards: m.forward.clone(),
            snapshot: m.snapshot,
        }
    }

    /// Whether the machine boots a disk image (stage 1, then the image's init).
    pub fn has_image(&self) -> bool {
        self.root != Root::None
    }
}

/// The image content of a Debian machine.
fn recipe_of(machine: &MachineSpec) -> Recipe {
    let mut packages = Vec::new();
    let mut debs: Vec<PathBuf> = Vec::new();
    for p in &machine.packages {
        match &p.source {
            PackageSource::Name(n) => packages.push(n.clone()),
            PackageSource::Deb(d) => debs.push(d.clone()),
        }
    }
    packages.sort();
    packages.dedup();
    debs.sort();
    debs.dedup();
    let mut files: Vec<GuestFile> = machine
        .files
        .iter()
        .map(|f| GuestFile {
            guest: f.guest.clone(),
            source: f.source.clone(),
        })
        .collect();
    files.sort_by(|a, b| a.guest.cmp(&b.guest));
    Recipe {
        arch: machine.arch,
        release: machine.release.unwrap_or_default(),
        init: machine.init.unwrap_or_default(),
        packages,
        debs,
        files,
        size_mib: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn machines_of_one_content_share_an_image() {
        let spec = Spec::parse(
            "t.toml".as_ref(),
            "[machines.a]\npackages = [\"curl\"]\n[machines.b]\npackages = [\"curl\"]\n\
             [machines.c]\ninit = \"systemd\"\n[machines.d]\nmemory = 300\ncpus = 2\nvlans = [1, 2]\n\
             forward = [{ guest = 80, host = 8080 }, { guest = 22 }]\n\
             [machines.e]\npackages = [\"curl\"]\nrelease = \"bookworm\"\n\
             [machines.f]\npackages = [\"curl\"]\nrelease = \"trixie\"\n",
        )
        .unwrap();
        let plan = Plan::of(&spec);
        // f names the default release: the same image as a and b; e is bookworm's own.
        assert_eq!(plan.images.len(), 3);
        assert_eq!(plan.images[0].machines, ["a", "b", "f"]);
        assert_eq!(plan.images[0].recipe.release, Release::Trixie);
        assert_eq!(plan.images[2].machines, ["e"]);
        assert_eq!(plan.images[2].recipe.release, Release::Bookworm);
        assert_eq!(plan.machines["e"].root, Root::Debian(2));
        // Each boots its release's kernel: bookworm's is the default guest's.
        assert_eq!(plan.machines["a"].kernel_release, Some(Release::Trixie));
        assert_eq!(plan.machines["e"].kernel_release, None);
        assert_eq!(plan.machines["d"].kernel_release, None);
        assert_eq!(plan.images[0].recipe.packages, ["curl"]);
        assert_eq!(plan.images[1].machines, ["c"]);
        assert_eq!(plan.machines["a"].root, Root::Debian(0));
        assert_eq!(plan.machines["c"].root, Root::Debian(1));
        let d = &plan.machines["d"];
        assert_eq!(d.root, Root::None);
        assert!(!d.has_image() && plan.machines["b"].has_image());
        assert_eq!((d.memory_mib, d.cpus), (300, 2));
        assert_eq!(plan.network.vlans["d"], [1, 2]);
        assert_eq!(plan.fixed_ports(), [8080].into());
    }
}

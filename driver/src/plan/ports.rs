//! The plan's ports: the host ports on 127.0.0.1 forwarded to each machine, those the
//! spec names checked free and those it leaves to us picked, before anything boots.

use std::collections::{BTreeMap, BTreeSet};

use flotilla_vmnet::Forward;

use super::machines::Plan;
use crate::error::Error;

impl Plan {
    /// Every machine's forwards, with a free host port for each the spec leaves at 0
    /// (never one the spec names). A port the spec names that something listens on now
    /// would make QEMU exit at start: [`Error::PortBusy`] says so first.
    pub(crate) fn pick_forwards(&self) -> Result<BTreeMap<String, Vec<Forward>>, Error> {
        // The spec's ports are not listened on yet: a picked one must not be one.
        let mut taken = self.fixed_ports();
        let mut out = BTreeMap::new();
        for (name, machine) in &self.machines {
            let forwards = machine
                .forwards
                .iter()
                .map(|f| pick_forward(f.host, f.guest, &mut taken))
                .collect::<Result<Vec<_>, _>>()?;
            for f in machine.forwards.iter().filter(|f| f.host != 0) {
                if flotilla_vmnet::forward::host_port_in_use(f.host) {
                    return Err(Error::PortBusy {
                        machine: name.clone(),
                        port: f.host,
                        guest: f.guest,
                        evidence: None,
                    });
                }
            }
            out.insert(name.clone(), forwards);
        }
        Ok(out)
    }
}

/// The forward of host port `host` (0: a free port not in `taken`, which it joins).
fn pick_forward(host: u16, guest: u16, taken: &mut BTreeSet<u16>) -> Result<Forward, Error> {
    if host != 0 {
        return Forward::new(host, guest).map_err(Error::Vmnet);
    }
    for _ in 0..20 {
        let f = Forward::new(0, guest).map_err(Error::Vmnet)?;
        if taken.insert(f.host) {
            return Ok(f);
        }
    }
    Err(Error::Network(format!(
        "no free host port for the forward to guest port {guest} after 20 tries"
    )))
}

#[cfg(test)]
mod tests {
    use super::pick_forward;

    #[test]
    fn picked_ports_avoid_the_spec_s_and_each_other() {
        let mut taken = std::collections::BTreeSet::from([8080]);
        assert_eq!(pick_forward(8080, 80, &mut taken).unwrap().host, 8080);
        let a = pick_forward(0, 22, &mut taken).unwrap().host;
        let b = pick_forward(0, 22, &mut taken).unwrap().host;
        assert!(a != b && a != 8080 && b != 8080 && a != 0 && b != 0);
        assert!(taken.contains(&a) && taken.contains(&b));
    }
}

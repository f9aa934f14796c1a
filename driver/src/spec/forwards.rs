//! `forward = [...]` checks: the host ports on 127.0.0.1 the machines forward, each
//! at most once across the whole spec.

use std::collections::BTreeMap;
use std::ops::Range;

use super::raw::RawForward;
use super::types::ForwardSpec;

/// A host port a machine forwards, and where the spec says so.
#[derive(Debug, Clone)]
pub(super) struct HostPort {
    pub(super) machine: String,
    pub(super) port: u16,
    pub(super) span: Range<usize>,
}

/// The checked forwards of machine `machine`; the host ports it names (not 0, which
/// picks a free one) are added to `ports` for [`duplicate_host_port`].
pub(super) fn check_forwards(
    machine: &str,
    raw: Vec<RawForward>,
    ports: &mut Vec<HostPort>,
) -> Result<Vec<ForwardSpec>, String> {
    let mut out = Vec::with_capacity(raw.len());
    for f in raw {
        if f.guest == 0 {
            return Err("forward needs a guest port".into());
        }
        let host = match f.host {
            Some(host) if *host.get_ref() != 0 => {
                ports.push(HostPort {
                    machine: machine.to_owned(),
                    port: *host.get_ref(),
                    span: host.span(),
                });
                *host.get_ref()
            }
            _ => 0,
        };
        out.push(ForwardSpec {
            host,
            guest: f.guest,
        });
    }
    Ok(out)
}

/// The second occurrence, in file order, of a host port forwarded twice (by two
/// machines or by one), with the message that names the port and both machines.
pub(super) fn duplicate_host_port(ports: &[HostPort]) -> Option<(Range<usize>, String)> {
    let mut in_order: Vec<&HostPort> = ports.iter().collect();
    in_order.sort_by_key(|p| p.span.start);
    let mut first: BTreeMap<u16, &HostPort> = BTreeMap::new();
    for p in in_order {
        if let Some(earlier) = first.get(&p.port) {
            let by = if earlier.machine == p.machine {
                format!("is forwarded twice by machine `{}`", p.machine)
            } else {
                format!("is already forwarded by machine `{}`", earlier.machine)
            };
            let message = format!(
                "machine `{}`: forward: host port {} {by} (each host port can be forwarded once)",
                p.machine, p.port
            );
            return Some((p.span.clone(), message));
        }
        first.insert(p.port, p);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn port(machine: &str, port: u16, at: usize) -> HostPort {
        HostPort {
            machine: machine.into(),
            port,
            span: at..at + 4,
        }
    }

    #[test]
    fn distinct_ports_pass() {
        assert!(duplicate_host_port(&[port("a", 8080, 10), port("b", 8081, 30)]).is_none());
        assert!(duplicate_host_port(&[]).is_none());
    }

    #[test]
    fn the_later_occurrence_in_the_file_is_reported() {
        // Machines come in name order; the file may name `b` first.
        let (span, m) = duplicate_host_port(&[port("a", 8080, 50), port("b", 8080, 10)]).unwrap();
        assert_eq!(span, 50..54);
        assert_eq!(
            m,
            "machine `a`: forward: host port 8080 is already forwarded by machine `b` (each host port can be forwarded once)"
        );
        let (span, m) = duplicate_host_port(&[port("a", 22, 10), port("a", 22, 20)]).unwrap();
        assert_eq!(span, 20..24);
        assert!(
            m.contains("host port 22 is forwarded twice by machine `a`"),
            "{m}"
        );
    }
}

//! The network as a whole: `partition` and `heal` of a VLAN, `capture_vlan`, and
//! `http_get` from the host.

use std::sync::Arc;
use std::time::Duration;

use rhai::Engine;

use crate::fabric::Fabric;
use crate::log::Log;
use crate::script::args::{machine_name, vlan_arg};
use crate::script::context::{Ctx, Res};

/// Registers these calls.
pub(super) fn register(engine: &mut Engine, ctx: &Arc<Ctx>, fabric: &Arc<Fabric>, log: &Log) {
    let c = ctx.clone();
    let f = fabric.clone();
    engine.register_fn(
        "partition",
        move |vlan: i64, groups: rhai::Array| -> Res<()> {
            let vlan = vlan_arg(vlan)?;
            let mut names = Vec::new();
            for group in groups {
                let members: rhai::Array = group
                    .try_cast::<rhai::Array>()
                    .ok_or("partition takes an array of arrays of machine names")?;
                let mut g = Vec::new();
                for member in members {
                    g.push(machine_name(member)?);
                }
                names.push(g);
            }
            let f = f.clone();
            c.block(async move { f.partition(vlan, &names).await })
        },
    );
    let c = ctx.clone();
    let f = fabric.clone();
    let l = log.clone();
    engine.register_fn("capture_vlan", move |vlan: i64| -> Res<String> {
        let vlan = vlan_arg(vlan)?;
        let path = l.dir().join(format!("vlan{vlan}.pcap"));
        let f = f.clone();
        let p = path.clone();
        c.block(async move { f.capture_vlan(vlan, &p).await })?;
        Ok(path.display().to_string())
    });
    let c = ctx.clone();
    let f = fabric.clone();
    engine.register_fn("heal", move |vlan: i64| -> Res<()> {
        let vlan = vlan_arg(vlan)?;
        let f = f.clone();
        c.block(async move { f.heal(vlan).await })
    });
    let c = ctx.clone();
    engine.register_fn("http_get", move |url: &str| -> Res<String> {
        c.block(crate::http::get(url, Duration::from_secs(30)))
    });
}

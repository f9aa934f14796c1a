//! A machine's script calls: the machine's network from the host (addresses, links, impairments,
//! forwards, captures).

use std::sync::Arc;

use rhai::{Dynamic, Engine, Map};

use crate::script::args::{impairment_arg, port_arg, vlan_arg};
use crate::script::context::{Ctx, MachineHandle, Res};
use crate::script::errors::error_to_rhai;

/// Registers these calls of the `Machine` type.
pub(super) fn register(engine: &mut Engine, ctx: &Arc<Ctx>) {
    engine.register_fn("ip", |m: &mut MachineHandle, vlan: i64| -> Res<String> {
        Ok(m.0
            .ip(vlan_arg(vlan)?)
            .map_err(|e| error_to_rhai(&e))?
            .to_string())
    });
    engine.register_fn("ipv6", |m: &mut MachineHandle, vlan: i64| -> Res<String> {
        Ok(m.0
            .ipv6(vlan_arg(vlan)?)
            .map_err(|e| error_to_rhai(&e))?
            .to_string())
    });
    let c = ctx.clone();
    engine.register_fn("block", move |m: &mut MachineHandle, vlan: i64| {
        let vlan = vlan_arg(vlan)?;
        c.block(m.0.set_link(vlan, false))
    });
    let c = ctx.clone();
    engine.register_fn("unblock", move |m: &mut MachineHandle, vlan: i64| {
        let vlan = vlan_arg(vlan)?;
        c.block(m.0.set_link(vlan, true))
    });
    let c = ctx.clone();
    engine.register_fn(
        "impair",
        move |m: &mut MachineHandle, vlan: i64, how: Map| {
            let vlan = vlan_arg(vlan)?;
            let impairment = impairment_arg(&how)?;
            c.block(m.0.impair(vlan, impairment))
        },
    );
    let c = ctx.clone();
    engine.register_fn("unimpair", move |m: &mut MachineHandle, vlan: i64| {
        let vlan = vlan_arg(vlan)?;
        c.block(m.0.impair(vlan, flotilla_vmnet::Impairment::default()))
    });
    let c = ctx.clone();
    engine.register_fn(
        "forward",
        move |m: &mut MachineHandle, guest: i64| -> Res<i64> {
            let guest = port_arg(guest)?;
            c.block(m.0.forward(0, guest)).map(i64::from)
        },
    );
    let c = ctx.clone();
    engine.register_fn(
        "forward",
        move |m: &mut MachineHandle, host: i64, guest: i64| -> Res<i64> {
            let (host, guest) = (port_arg(host)?, port_arg(guest)?);
            c.block(m.0.forward(host, guest)).map(i64::from)
        },
    );
    engine.register_fn(
        "forwarded_port",
        |m: &mut MachineHandle, guest: i64| -> Res<Dynamic> {
            let guest = port_arg(guest)?;
            Ok(m.0
                .forwarded_port(guest)
                .map_or(Dynamic::UNIT, |p| Dynamic::from(i64::from(p))))
        },
    );
    let c = ctx.clone();
    engine.register_fn(
        "capture",
        move |m: &mut MachineHandle, vlan: i64| -> Res<String> {
            let vlan = vlan_arg(vlan)?;
            c.block(m.0.capture(vlan)).map(|p| p.display().to_string())
        },
    );
}

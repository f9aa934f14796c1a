//! The checks on what a script passes: time limits, VLANs, ports, impairments, machines.

use std::time::Duration;

use rhai::{Dynamic, Map};

use super::context::{MachineHandle, Res};

/// A time limit in whole seconds from a script: 1 s or more.
pub(super) fn secs_arg(secs: i64) -> Res<Duration> {
    match u64::try_from(secs) {
        Ok(secs) if secs >= 1 => Ok(Duration::from_secs(secs)),
        _ => Err(format!("a time limit of {secs} s: give 1 s or more").into()),
    }
}

pub(super) fn vlan_arg(vlan: i64) -> Res<u8> {
    u8::try_from(vlan)
        .ok()
        .filter(|v| *v >= 1)
        .ok_or_else(|| format!("VLAN {vlan} is out of range (1 to 254)").into())
}

/// `#{delay_ms: 100, jitter_ms: 10, loss: 5.0, bandwidth: 125000}`; every key optional.
pub(super) fn impairment_arg(map: &Map) -> Res<flotilla_vmnet::Impairment> {
    let mut out = flotilla_vmnet::Impairment::default();
    for (key, value) in map {
        let number = value
            .as_float()
            .ok()
            .or_else(|| value.as_int().ok().map(|i| i as f64))
            .filter(|n| *n >= 0.0)
            .ok_or_else(|| format!("impair: `{key}` must be a number of at least 0"))?;
        match key.as_str() {
            "delay_ms" => out.delay_ms = number as u32,
            "jitter_ms" => out.jitter_ms = number as u32,
            "loss" => out.loss_percent = number,
            "bandwidth" => out.bandwidth = number as u64,
            other => {
                return Err(format!(
                    "impair: unknown key `{other}` (use delay_ms, jitter_ms, loss, bandwidth)"
                )
                .into())
            }
        }
    }
    out.check().map_err(|e| format!("impair: {e}"))?;
    Ok(out)
}

pub(super) fn port_arg(port: i64) -> Res<u16> {
    u16::try_from(port)
        .ok()
        .filter(|p| *p >= 1)
        .ok_or_else(|| format!("port {port} is out of range (1 to 65535)").into())
}

/// A machine given either as the machine itself or as its name.
pub(super) fn machine_name(value: Dynamic) -> Res<String> {
    if let Some(m) = value.clone().try_cast::<MachineHandle>() {
        return Ok(m.0.name().to_owned());
    }
    value
        .into_string()
        .map_err(|t| format!("expected a machine or its name, got {t}").into())
}

//! Event names and typed event payloads.
//!
//! Events arrive as [`Event`] with a JSON `data`; [`Event::parse_data`] turns the
//! payload into one of the typed structs here.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::codec::Event;
use crate::error::{value_snippet, Error};

/// `SHUTDOWN`: QEMU is shutting down (or, with `-no-shutdown`, stopped).
pub const SHUTDOWN: &str = "SHUTDOWN";
/// `POWERDOWN`: the ACPI power button was pressed (`system_powerdown`).
pub const POWERDOWN: &str = "POWERDOWN";
/// `RESET`: the VM was reset.
pub const RESET: &str = "RESET";
/// `STOP`: the guest CPUs stopped.
pub const STOP: &str = "STOP";
/// `RESUME`: the guest CPUs resumed.
pub const RESUME: &str = "RESUME";
/// `GUEST_PANICKED`: the guest reported a panic (pvpanic, hv-crash, ...).
pub const GUEST_PANICKED: &str = "GUEST_PANICKED";
/// `BLOCK_IO_ERROR`: a disk I/O error (the VM may be paused, see `action`).
pub const BLOCK_IO_ERROR: &str = "BLOCK_IO_ERROR";
/// `DEVICE_DELETED`: a `device_del` finished (the guest released the device).
pub const DEVICE_DELETED: &str = "DEVICE_DELETED";
/// `NIC_RX_FILTER_CHANGED`: the guest changed a NIC's receive filter (MAC, ...).
pub const NIC_RX_FILTER_CHANGED: &str = "NIC_RX_FILTER_CHANGED";
/// `MIGRATION`: the outgoing or incoming migration changed status.
pub const MIGRATION: &str = "MIGRATION";

impl Event {
    /// Whether this is the event named `name`.
    pub fn is(&self, name: &str) -> bool {
        self.event == name
    }

    /// Deserializes `data` into a typed payload.
    pub fn parse_data<T: DeserializeOwned>(&self) -> Result<T, Error> {
        T::deserialize(&self.data).map_err(|source| Error::EventData {
            event: self.event.clone(),
            data: value_snippet(&self.data),
            source,
        })
    }
}

/// A typed event payload, tied to its event name.
pub trait EventData: DeserializeOwned {
    /// The event name, e.g. `SHUTDOWN`.
    const NAME: &'static str;
}

/// Data of `SHUTDOWN`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Shutdown {
    /// True if the guest asked for it, false if the host did (`quit`, signal, ...).
    pub guest: bool,
    /// Why: `host-qmp-quit`, `host-signal`, `guest-shutdown`, `guest-reset`, ...
    pub reason: String,
}

impl EventData for Shutdown {
    const NAME: &'static str = SHUTDOWN;
}

/// Data of `RESET`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reset {
    /// True if the guest asked for it.
    pub guest: bool,
    /// Why: `host-qmp-system-reset`, `guest-reset`, ...
    pub reason: String,
}

impl EventData for Reset {
    const NAME: &'static str = RESET;
}

/// Data of `POWERDOWN` (none).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Powerdown {}

impl EventData for Powerdown {
    const NAME: &'static str = POWERDOWN;
}

/// Data of `STOP` (none).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stop {}

impl EventData for Stop {
    const NAME: &'static str = STOP;
}

/// Data of `RESUME` (none).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resume {}

impl EventData for Resume {
    const NAME: &'static str = RESUME;
}

/// Data of `GUEST_PANICKED`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GuestPanicked {
    /// `pause`, `poweroff` or `run`.
    pub action: String,
    /// Details the guest gave, if any (shape depends on the panic device).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub info: Option<serde_json::Value>,
}

impl EventData for GuestPanicked {
    const NAME: &'static str = GUEST_PANICKED;
}

/// Data of `BLOCK_IO_ERROR`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlockIoError {
    /// Block device name (may be empty when only a node name exists).
    pub device: String,
    /// Node name, if any.
    #[serde(rename = "node-name", default, skip_serializing_if = "Option::is_none")]
    pub node_name: Option<String>,
    /// `read` or `write`.
    pub operation: String,
    /// What QEMU did: `ignore`, `report` or `stop`.
    pub action: String,
    /// True for ENOSPC.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nospace: Option<bool>,
    /// Human-readable reason (strerror).
    pub reason: String,
}

impl EventData for BlockIoError {
    const NAME: &'static str = BLOCK_IO_ERROR;
}

/// Data of `DEVICE_DELETED`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceDeleted {
    /// The device id, if it had one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<String>,
    /// Its QOM path.
    pub path: String,
}

impl EventData for DeviceDeleted {
    const NAME: &'static str = DEVICE_DELETED;
}

/// Data of `NIC_RX_FILTER_CHANGED`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NicRxFilterChanged {
    /// The NIC id, if it had one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Its QOM path.
    pub path: String,
}

impl EventData for NicRxFilterChanged {
    const NAME: &'static str = NIC_RX_FILTER_CHANGED;
}

/// Data of `MIGRATION`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Migration {
    /// `setup`, `active`, `completed`, `failed`, ...
    pub status: String,
}

impl EventData for Migration {
    const NAME: &'static str = MIGRATION;
}

impl Event {
    /// Parses `data` as `T` if this is `T`'s event; `None` for other events.
    pub fn data_as<T: EventData>(&self) -> Option<Result<T, Error>> {
        self.is(T::NAME).then(|| self.parse_data())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::Timestamp;
    use serde_json::json;

    fn event(name: &str, data: serde_json::Value) -> Event {
        Event {
            event: name.into(),
            data,
            timestamp: Timestamp {
                seconds: 1,
                microseconds: 2,
            },
        }
    }

    #[test]
    fn parses_shutdown() {
        let e = event(SHUTDOWN, json!({"guest": false, "reason": "host-qmp-quit"}));
        let s: Shutdown = e.parse_data().expect("parses");
        assert_eq!(
            s,
            Shutdown {
                guest: false,
                reason: "host-qmp-quit".into()
            }
        );
    }

    #[test]
    fn data_as_checks_the_name() {
        let e = event(
            DEVICE_DELETED,
            json!({"device": "nic1", "path": "/machine/peripheral/nic1"}),
        );
        let d = e
            .data_as::<DeviceDeleted>()
            .expect("right event")
            .expect("parses");
        assert_eq!(d.device.as_deref(), Some("nic1"));
        assert!(e.data_as::<Migration>().is_none());
    }

    #[test]
    fn empty_payloads_parse() {
        let _: Stop = event(STOP, json!({})).parse_data().expect("parses");
    }

    #[test]
    fn bad_payload_says_which_event() {
        let e = event(RESET, json!({"guest": "yes"}));
        let err = e.parse_data::<Reset>().expect_err("bad");
        let text = err.to_string();
        assert!(text.contains("RESET") && text.contains("\"yes\""), "{text}");
    }
}

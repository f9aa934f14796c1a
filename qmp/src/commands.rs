//! Typed QMP commands.
//!
//! Each command is a struct whose fields are the command's arguments (serialized
//! with serde, so field names follow QEMU's spelling via `rename`), implementing
//! [`Command`] with the QMP name and the reply type.

use std::fmt;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;

use crate::codec::VersionInfo;
use crate::error::{value_snippet, Error};

/// A QMP command with typed arguments (`Self`, serialized as the `arguments`
/// object) and a typed reply.
pub trait Command: Serialize {
    /// The QMP command name, e.g. `query-status`.
    const NAME: &'static str;
    /// What the `return` value deserializes into.
    type Output: DeserializeOwned;
}

/// The `arguments` of `cmd`: `None` when it has none (a unit or empty struct).
pub(crate) fn arguments<C: Command>(cmd: &C) -> Result<Option<Value>, Error> {
    let value = serde_json::to_value(cmd).map_err(|source| Error::Encode {
        command: C::NAME.to_owned(),
        source,
    })?;
    Ok(match value {
        Value::Null => None,
        Value::Object(map) if map.is_empty() => None,
        other => Some(other),
    })
}

/// Deserializes the reply to `C`, keeping it in the error if it does not fit.
pub(crate) fn output<C: Command>(value: Value) -> Result<C::Output, Error> {
    C::Output::deserialize(&value).map_err(|source| Error::UnexpectedReply {
        command: C::NAME.to_owned(),
        reply: value_snippet(&value),
        source,
    })
}

/// The reply of commands that return nothing (`{}`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Empty {}

/// `command!(Type, "name", Output)`: implements [`Command`] for `Type`.
macro_rules! command {
    ($ty:ident, $name:literal, $out:ty) => {
        impl $crate::commands::Command for $ty {
            const NAME: &'static str = $name;
            type Output = $out;
        }
    };
}
pub(crate) use command;

/// `no_arg_command!(/// doc, Type, "name", Output)`: an empty struct and its
/// [`Command`] impl.
macro_rules! no_arg_command {
    ($(#[$doc:meta])* $ty:ident, $name:literal, $out:ty) => {
        $(#[$doc])*
        #[derive(
            Debug, Clone, Copy, Default, PartialEq, Eq, ::serde::Serialize, ::serde::Deserialize,
        )]
        pub struct $ty {}

        $crate::commands::command!($ty, $name, $out);
    };
}
pub(crate) use no_arg_command;

no_arg_command!(
    /// `query-status`.
    QueryStatus, "query-status", StatusInfo
);
no_arg_command!(
    /// `query-version`.
    QueryVersion, "query-version", VersionInfo
);
no_arg_command!(
    /// `stop`: pause the guest CPUs.
    Stop, "stop", Empty
);
no_arg_command!(
    /// `cont`: resume the guest CPUs.
    Cont, "cont", Empty
);
no_arg_command!(
    /// `system_powerdown`: ACPI power button.
    SystemPowerdown, "system_powerdown", Empty
);
no_arg_command!(
    /// `system_reset`: hard reset.
    SystemReset, "system_reset", Empty
);
no_arg_command!(
    /// `quit`: QEMU exits. Prefer `Client::quit`, which copes with the
    /// socket closing before the reply.
    Quit, "quit", Empty
);

/// The reply of `query-status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusInfo {
    /// Whether the guest CPUs are running.
    pub running: bool,
    /// The VM run state.
    pub status: RunState,
    /// Single-step mode (QEMU < 8.1 only; deprecated).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub singlestep: Option<bool>,
}

/// QEMU's `RunState`, with a fallback for states newer than this crate.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RunState {
    /// `debug`: stopped by the gdb stub.
    Debug,
    /// `inmigrate`: waiting for an incoming migration.
    InMigrate,
    /// `internal-error`.
    InternalError,
    /// `io-error`: paused on a block I/O error.
    IoError,
    /// `paused`: stopped by `stop` (or `-S` after a reset).
    Paused,
    /// `postmigrate`: outgoing migration finished.
    PostMigrate,
    /// `prelaunch`: started with `-S`, never run.
    Prelaunch,
    /// `finish-migrate`.
    FinishMigrate,
    /// `restore-vm`.
    RestoreVm,
    /// `running`.
    Running,
    /// `save-vm`.
    SaveVm,
    /// `shutdown`: the guest shut down and `-no-shutdown` kept QEMU alive.
    Shutdown,
    /// `suspended`: ACPI S3.
    Suspended,
    /// `watchdog`: a watchdog fired with action `pause`.
    Watchdog,
    /// `guest-panicked`.
    GuestPanicked,
    /// `colo`.
    Colo,
    /// A state this crate does not know.
    Other(String),
}

impl RunState {
    /// QEMU's spelling.
    pub fn as_str(&self) -> &str {
        match self {
            RunState::Debug => "debug",
            RunState::InMigrate => "inmigrate",
            RunState::InternalError => "internal-error",
            RunState::IoError => "io-error",
            RunState::Paused => "paused",
            RunState::PostMigrate => "postmigrate",
            RunState::Prelaunch => "prelaunch",
            RunState::FinishMigrate => "finish-migrate",
            RunState::RestoreVm => "restore-vm",
            RunState::Running => "running",
            RunState::SaveVm => "save-vm",
            RunState::Shutdown => "shutdown",
            RunState::Suspended => "suspended",
            RunState::Watchdog => "watchdog",
            RunState::GuestPanicked => "guest-panicked",
            RunState::Colo => "colo",
            RunState::Other(s) => s,
        }
    }

    /// Every known state, for tests against QEMU's schema.
    pub const KNOWN: [&'static str; 16] = [
        "debug",
        "inmigrate",
        "internal-error",
        "io-error",
        "paused",
        "postmigrate",
        "prelaunch",
        "finish-migrate",
        "restore-vm",
        "running",
        "save-vm",
        "shutdown",
        "suspended",
        "watchdog",
        "guest-panicked",
        "colo",
    ];
}

impl From<&str> for RunState {
    fn from(s: &str) -> Self {
        match s {
            "debug" => RunState::Debug,
            "inmigrate" => RunState::InMigrate,
            "internal-error" => RunState::InternalError,
            "io-error" => RunState::IoError,
            "paused" => RunState::Paused,
            "postmigrate" => RunState::PostMigrate,
            "prelaunch" => RunState::Prelaunch,
            "finish-migrate" => RunState::FinishMigrate,
            "restore-vm" => RunState::RestoreVm,
            "running" => RunState::Running,
            "save-vm" => RunState::SaveVm,
            "shutdown" => RunState::Shutdown,
            "suspended" => RunState::Suspended,
            "watchdog" => RunState::Watchdog,
            "guest-panicked" => RunState::GuestPanicked,
            "colo" => RunState::Colo,
            other => RunState::Other(other.to_owned()),
        }
    }
}

impl fmt::Display for RunState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for RunState {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for RunState {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = std::borrow::Cow::<'de, str>::deserialize(deserializer)?;
        Ok(RunState::from(&*s))
    }
}

no_arg_command!(
    /// `query-commands`: every command this QEMU accepts.
    QueryCommands, "query-commands", Vec<CommandInfo>
);
no_arg_command!(
    /// `query-name`: the `-name` given to QEMU.
    QueryName, "query-name", NameInfo
);
no_arg_command!(
    /// `query-block`: block devices and their media.
    QueryBlock, "query-block", Vec<BlockInfo>
);
no_arg_command!(
    /// `query-chardev`: character devices.
    QueryChardev, "query-chardev", Vec<ChardevInfo>
);
no_arg_command!(
    /// `query-migrate`: state of the outgoing migration.
    QueryMigrate, "query-migrate", MigrationInfo
);
no_arg_command!(
    /// `query-cpus-fast`: the vCPUs, without interrupting them.
    QueryCpusFast, "query-cpus-fast", Vec<CpuInfoFast>
);
no_arg_command!(
    /// `query-qmp-schema`: QEMU's introspection data (names of types are masked).
    QueryQmpSchema, "query-qmp-schema", Vec<Value>
);

/// One entry of `query-commands`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommandInfo {
    /// The command name.
    pub name: String,
}

/// The reply of `query-name`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct NameInfo {
    /// The VM name, if one was set with `-name`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// Image format for [`Screendump`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ImageFormat {
    /// Portable pixmap (QEMU's default).
    Ppm,
    /// PNG (QEMU >= 7.1).
    Png,
}

/// `screendump`: write the display to a file on the host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Screendump {
    /// Host path to write.
    pub filename: String,
    /// The display device id (default: the first console).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<String>,
    /// Head of a multi-head device.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub head: Option<i64>,
    /// File format (default PPM).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<ImageFormat>,
}
command!(Screendump, "screendump", Empty);

/// The kind of a [`KeyValue`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyValueKind {
    /// A raw scancode number.
    Number,
    /// A QEMU key code name such as `ctrl` or `a`.
    Qcode,
}

/// One key for [`SendKey`] (QMP's `KeyValue` union).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KeyValue {
    /// Which representation `data` uses.
    #[serde(rename = "type")]
    pub kind: KeyValueKind,
    /// The number or the qcode name.
    pub data: Value,
}

impl KeyValue {
    /// A key by QEMU key code name (`ctrl`, `alt`, `delete`, `a`, `ret`, ...).
    pub fn qcode(name: &str) -> Self {
        Self {
            kind: KeyValueKind::Qcode,
            data: Value::String(name.to_owned()),
        }
    }

    /// A key by scancode number.
    pub fn number(code: i64) -> Self {
        Self {
            kind: KeyValueKind::Number,
            data: Value::from(code),
        }
    }
}

/// `send-key`: press the keys together, then release them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SendKey {
    /// Keys pressed together.
    pub keys: Vec<KeyValue>,
    /// How long to hold them, in milliseconds (default 100).
    #[serde(rename = "hold-time", default, skip_serializing_if = "Option::is_none")]
    pub hold_time: Option<i64>,
}
command!(SendKey, "send-key", Empty);

/// The kind of an [`InputEvent`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum InputEventKind {
    /// Keyboard key.
    Key,
    /// Mouse button.
    Btn,
    /// Relative pointer motion.
    Rel,
    /// Absolute pointer motion.
    Abs,
}

/// One event for [`InputSendEvent`] (QMP's `InputEvent` union).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InputEvent {
    /// Which kind of event `data` describes.
    #[serde(rename = "type")]
    pub kind: InputEventKind,
    /// The event body, e.g. `{"down": true, "key": {"type": "qcode", "data": "a"}}`.
    pub data: Value,
}

impl InputEvent {
    /// A key press (`down`) or release by qcode.
    pub fn key(qcode: &str, down: bool) -> Self {
        Self {
            kind: InputEventKind::Key,
            data: serde_json::json!({"down": down, "key": KeyValue::qcode(qcode)}),
        }
    }

    /// A mouse button (`left`, `right`, `middle`, `wheel-up`, ...) press or release.
    pub fn button(button: &str, down: bool) -> Self {
        Self {
            kind: InputEventKind::Btn,
            data: serde_json::json!({"down": down, "button": button}),
        }
    }

    /// Relative motion along `axis` (`x` or `y`).
    pub fn rel(axis: &str, value: i64) -> Self {
        Self {
            kind: InputEventKind::Rel,
            data: serde_json::json!({"axis": axis, "value": value}),
        }
    }

    /// Absolute position along `axis` (`x` or `y`), 0..=0x7fff.
    pub fn abs(axis: &str, value: i64) -> Self {
        Self {
            kind: InputEventKind::Abs,
            data: serde_json::json!({"axis": axis, "value": value}),
        }
    }
}

/// `input-send-event`: inject input events.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InputSendEvent {
    /// Target input device id (default: any).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<String>,
    /// Display head for absolute events.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub head: Option<i64>,
    /// The events, in order.
    pub events: Vec<InputEvent>,
}
command!(InputSendEvent, "input-send-event", Empty);

/// `human-monitor-command`: run an HMP command and get its text output.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HumanMonitorCommand {
    /// The HMP command line, e.g. `info registers`.
    #[serde(rename = "command-line")]
    pub command_line: String,
    /// CPU to use for CPU-dependent commands.
    #[serde(rename = "cpu-index", default, skip_serializing_if = "Option::is_none")]
    pub cpu_index: Option<i64>,
}
command!(HumanMonitorCommand, "human-monitor-command", String);

/// `set_link`: set a NIC's link up or down.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SetLink {
    /// The NIC or netdev id.
    pub name: String,
    /// Link state.
    pub up: bool,
}
command!(SetLink, "set_link", Empty);

/// One entry of `query-block`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BlockInfo {
    /// Device name.
    pub device: String,
    /// qdev id or QOM path of the guest device.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub qdev: Option<String>,
    /// Device type (`unknown` in practice).
    #[serde(rename = "type")]
    pub kind: String,
    /// Whether the medium can be removed.
    pub removable: bool,
    /// Whether the tray is locked.
    pub locked: bool,
    /// The inserted medium, if any (kept as JSON: it is large and version-dependent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inserted: Option<Value>,
    /// Whether the tray is open (removable devices only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tray_open: Option<bool>,
    /// `ok`, `failed` or `nospace`, when I/O status is tracked.
    #[serde(rename = "io-status", default, skip_serializing_if = "Option::is_none")]
    pub io_status: Option<String>,
}

/// One entry of `query-chardev`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChardevInfo {
    /// The chardev id.
    pub label: String,
    /// Its backend, e.g. `unix:/tmp/x.sock,server=on`.
    pub filename: String,
    /// Whether a frontend has it open.
    #[serde(rename = "frontend-open")]
    pub frontend_open: bool,
}

/// `netdev_add`: add a network backend. `options` holds the backend-specific
/// members (e.g. for `vde`: `{"sock": "/tmp/switch"}`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NetdevAdd {
    /// The new netdev's id.
    pub id: String,
    /// Backend type: `user`, `tap`, `vde`, `socket`, `stream`, ...
    #[serde(rename = "type")]
    pub kind: String,
    /// Backend-specific members.
    #[serde(flatten)]
    pub options: serde_json::Map<String, Value>,
}
command!(NetdevAdd, "netdev_add", Empty);

/// `netdev_del`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetdevDel {
    /// The netdev id.
    pub id: String,
}
command!(NetdevDel, "netdev_del", Empty);

/// `device_add`: hot-plug a device. `properties` holds the driver's
/// properties (e.g. `{"netdev": "n0", "mac": "52:54:00:12:34:56"}`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeviceAdd {
    /// Device driver, e.g. `virtio-net-pci`.
    pub driver: String,
    /// Bus to plug into.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bus: Option<String>,
    /// The new device's id (needed to delete it later).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Driver properties.
    #[serde(flatten)]
    pub properties: serde_json::Map<String, Value>,
}
command!(DeviceAdd, "device_add", Empty);

/// `device_del`: request unplug; completion is the `DEVICE_DELETED` event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceDel {
    /// The device id or QOM path.
    pub id: String,
}
command!(DeviceDel, "device_del", Empty);

/// `object-add`: create a QOM object (`properties` are the type's members).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ObjectAdd {
    /// QOM type, e.g. `memory-backend-ram`.
    #[serde(rename = "qom-type")]
    pub qom_type: String,
    /// The new object's id.
    pub id: String,
    /// Type-specific members.
    #[serde(flatten)]
    pub properties: serde_json::Map<String, Value>,
}
command!(ObjectAdd, "object-add", Empty);

/// `object-del`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectDel {
    /// The object id.
    pub id: String,
}
command!(ObjectDel, "object-del", Empty);

/// `migrate`: start an outgoing migration to `uri` (`unix:/path`, `exec:cmd`, ...).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Migrate {
    /// Destination URI.
    pub uri: String,
    /// Ignored by QEMU (it always detaches); kept for completeness.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detach: Option<bool>,
    /// Resume a paused postcopy migration.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resume: Option<bool>,
}
command!(Migrate, "migrate", Empty);

/// Transfer figures of a migration (`ram`, `disk`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MigrationStats {
    /// Bytes transferred.
    pub transferred: i64,
    /// Bytes remaining.
    pub remaining: i64,
    /// Total bytes.
    pub total: i64,
    /// Throughput in Mbps.
    pub mbps: f64,
}

/// The reply of `query-migrate`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct MigrationInfo {
    /// `none`, `setup`, `active`, `completed`, `failed`, ... (absent before any
    /// migration).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    /// RAM transfer figures.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ram: Option<MigrationStats>,
    /// Milliseconds since the migration started.
    #[serde(
        rename = "total-time",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub total_time: Option<i64>,
    /// Final downtime in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub downtime: Option<i64>,
    /// Why it failed.
    #[serde(
        rename = "error-desc",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub error_desc: Option<String>,
}

/// Topology of a vCPU.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct CpuInstanceProperties {
    /// NUMA node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_id: Option<i64>,
    /// Socket.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub socket_id: Option<i64>,
    /// Die.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub die_id: Option<i64>,
    /// Core.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub core_id: Option<i64>,
    /// Thread.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thread_id: Option<i64>,
}

/// One entry of `query-cpus-fast`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct CpuInfoFast {
    /// Index of the vCPU.
    pub cpu_index: i64,
    /// QOM path of the vCPU object.
    pub qom_path: String,
    /// Host thread id running it.
    pub thread_id: i64,
    /// Target architecture, e.g. `x86_64`.
    pub target: String,
    /// Topology.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub props: Option<CpuInstanceProperties>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn unions_and_flattened_members_encode_like_qemu_wants() {
        let keys = SendKey {
            keys: vec![KeyValue::qcode("ctrl"), KeyValue::number(30)],
            hold_time: None,
        };
        assert_eq!(
            arguments(&keys).expect("encodes"),
            Some(
                json!({"keys": [{"type": "qcode", "data": "ctrl"}, {"type": "number", "data": 30}]})
            )
        );
        let mut properties = serde_json::Map::new();
        properties.insert("netdev".into(), json!("n0"));
        let add = DeviceAdd {
            driver: "virtio-net-pci".into(),
            bus: None,
            id: Some("nic0".into()),
            properties,
        };
        assert_eq!(
            arguments(&add).expect("encodes"),
            Some(json!({"driver": "virtio-net-pci", "id": "nic0", "netdev": "n0"}))
        );
        let shot = Screendump {
            filename: "/tmp/x.png".into(),
            device: None,
            head: None,
            format: Some(ImageFormat::Png),
        };
        assert_eq!(
            arguments(&shot).expect("encodes"),
            Some(json!({"filename": "/tmp/x.png", "format": "png"}))
        );
    }

    #[test]
    fn no_arg_commands_send_no_arguments() {
        assert_eq!(arguments(&QueryStatus {}).expect("encodes"), None);
    }

    #[test]
    fn run_state_round_trips_and_falls_back() {
        for s in RunState::KNOWN {
            let state: RunState = serde_json::from_value(json!(s)).expect("decodes");
            assert!(!matches!(state, RunState::Other(_)), "{s}");
            assert_eq!(serde_json::to_value(&state).expect("encodes"), json!(s));
        }
        let state: RunState = serde_json::from_value(json!("brand-new")).expect("decodes");
        assert_eq!(state, RunState::Other("brand-new".into()));
    }

    #[test]
    fn status_info_with_and_without_singlestep() {
        let s: StatusInfo = serde_json::from_value(
            json!({"status": "prelaunch", "singlestep": false, "running": false}),
        )
        .expect("decodes");
        assert_eq!(s.status, RunState::Prelaunch);
        assert_eq!(s.singlestep, Some(false));
        let s: StatusInfo =
            serde_json::from_value(json!({"status": "running", "running": true})).expect("decodes");
        assert!(s.running);
        assert_eq!(s.singlestep, None);
    }

    #[test]
    fn wrong_reply_shape_keeps_the_reply() {
        let e = output::<QueryStatus>(json!({"status": 3})).expect_err("bad shape");
        let text = e.to_string();
        assert!(text.contains("query-status"), "{text}");
        assert!(text.contains("{\"status\":3}"), "{text}");
    }
}

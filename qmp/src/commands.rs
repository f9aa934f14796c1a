//! Typed QMP commands.
//!
//! Each command is a struct whose fields are the command's arguments (serialized
//! with serde, so field names follow QEMU's spelling via `rename`), implementing
//! [`Command`] with the QMP name and the reply type.

use std::fmt;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;

use crate::client::decode_reply;
use crate::codec::VersionInfo;
use crate::error::Error;

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

/// Deserializes the reply to `C`.
pub(crate) fn output<C: Command>(value: Value) -> Result<C::Output, Error> {
    decode_reply(C::NAME, value)
}

/// The reply of commands that return nothing (`{}`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Empty {}

macro_rules! no_arg_command {
    ($(#[$doc:meta])* $ty:ident, $name:literal, $out:ty) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
        pub struct $ty {}

        impl Command for $ty {
            const NAME: &'static str = $name;
            type Output = $out;
        }
    };
}

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
    /// `quit`: QEMU exits. Prefer [`crate::Client::quit`], which copes with the
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

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

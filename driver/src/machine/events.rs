//! The QMP event watcher: logs every event, and tells waiting calls when the VM is
//! paused (STOP, GUEST_PANICKED) or the agent's port closes, so they fail instead of
//! hanging.

use tokio::sync::watch;

use crate::log::Log;

/// How an error says the agent went away.
pub(super) const AGENT_GONE: &str =
    "the agent closed its port in the guest (it exited or was stopped)";

/// How an error says the VM was paused.
pub(super) const STOPPED: &str = "the VM was paused (qmp STOP event)";

/// What the event watcher reports.
#[derive(Debug)]
pub(super) struct Watch {
    /// Why the VM is paused (or the agent gone), while it is.
    pub(super) paused: watch::Receiver<Option<String>>,
    /// How many times the guest closed the agent's port.
    pub(super) port_closes: watch::Receiver<u64>,
}

/// Starts the task that watches `qmp`'s events for the machine `name`, whose agent
/// talks on the serial port with QEMU id `agent_port`.
///
/// Every QMP event goes to the log, with the machine's name. STOP (and
/// GUEST_PANICKED) mark the VM paused, so waiting calls fail instead of hanging;
/// RESUME clears it. The guest closing the driving agent's port means the agent died
/// (or stopped): calls waiting on it fail instead of hanging; reopening it clears that.
pub(super) fn spawn_event_watcher(
    qmp: &flotilla_qmp::Client,
    log: Log,
    name: String,
    agent_port: &'static str,
) -> Watch {
    let mut events = qmp.subscribe();
    let (paused_tx, paused) = watch::channel(None::<String>);
    let (closes_tx, port_closes) = watch::channel(0u64);
    tokio::spawn(async move {
        while let Some(event) = events.recv().await {
            match event {
                Ok(e) => {
                    let line = format!("qmp event {} {}", e.event, e.data);
                    // Routine device chatter goes to the log file only.
                    if e.event == "NIC_RX_FILTER_CHANGED" {
                        log.file_only(&format!("{name}: {line}"));
                    } else {
                        log.machine(&name, &line);
                    }
                    if e.event == "BLOCK_IO_ERROR" {
                        log.machine(&name, &describe_io_error(&e.data));
                    }
                    match e.event.as_str() {
                        // A panic's STOP follows its GUEST_PANICKED: keep the reason.
                        "STOP" => {
                            paused_tx.send_if_modified(|p| {
                                p.is_none().then(|| *p = Some(STOPPED.into())).is_some()
                            });
                            None
                        }
                        "GUEST_PANICKED" => paused_tx.send_replace(Some(format!(
                            "the guest panicked (qmp GUEST_PANICKED {})",
                            e.data
                        ))),
                        "RESUME" => paused_tx.send_replace(None),
                        "VSERPORT_CHANGE" if e.data["id"] == agent_port => {
                            let open = e.data["open"].as_bool().unwrap_or(true);
                            if !open {
                                closes_tx.send_modify(|n| *n += 1);
                            }
                            paused_tx.send_if_modified(|p| {
                                let gone = p.as_deref().is_some_and(|p| p.starts_with(AGENT_GONE));
                                if open && gone {
                                    *p = None;
                                    true
                                } else if !open && p.is_none() {
                                    *p = Some(format!("{AGENT_GONE} (qmp VSERPORT_CHANGE)"));
                                    true
                                } else {
                                    false
                                }
                            });
                            None
                        }
                        _ => None,
                    };
                }
                Err(lost) => log.machine(&name, &format!("qmp: {} events lost", lost.0)),
            }
        }
    });
    Watch {
        paused,
        port_closes,
    }
}

/// A readable line for QMP's `BLOCK_IO_ERROR`:
/// `I/O error on drive disk1 (write, Input/output error; reported to the guest)`.
pub(super) fn describe_io_error(data: &serde_json::Value) -> String {
    let field = |key: &str| data.get(key).and_then(|v| v.as_str()).unwrap_or("?");
    let action = match field("action") {
        "report" => "reported to the guest",
        "ignore" => "ignored",
        "stop" => "the VM stops",
        other => other,
    };
    let device = match field("device") {
        "" => field("node-name"),
        device => device,
    };
    format!(
        "I/O error on drive {device} ({}, {}; {action})",
        field("operation"),
        field("reason")
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn io_errors_read_well() {
        let data = serde_json::json!({"device": "disk1", "node-name": "#block1",
            "operation": "write", "action": "report", "reason": "Input/output error"});
        assert_eq!(
            super::describe_io_error(&data),
            "I/O error on drive disk1 (write, Input/output error; reported to the guest)"
        );
    }
}

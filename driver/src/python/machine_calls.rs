//! The calls of one machine (`"machine": "server"` in a request): each maps to a
//! [`Machine`] method, whose steps are on the run's timeline.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use serde_json::{json, Value};

use super::args::Args;
use crate::error::chain_inline;
use crate::machine::{Machine, ScreenReader};

/// NixOS's limit for `shutdown` and `reboot`'s power-off.
const POWER_OFF: Duration = Duration::from_secs(60);

/// What a connection's machine calls share: where relative host paths start, the log
/// folder, and the QMP event streams a script waits on.
pub(super) struct MachineCalls {
    /// The script's folder: `copy_to`'s host paths start there.
    pub base: PathBuf,
    /// The log folder: `copy_from` copies into it.
    pub out: PathBuf,
    events: HashMap<u64, flotilla_qmp::EventStream>,
    next_events: u64,
}

type Reply = Result<Value, String>;
/// A group's answer: `None` when the call is not one of the group's.
type Handled = Result<Option<Value>, String>;

fn driver(e: crate::error::Error) -> String {
    chain_inline(&e)
}

impl MachineCalls {
    pub fn new(base: PathBuf, out: PathBuf) -> MachineCalls {
        MachineCalls {
            base,
            out,
            events: HashMap::new(),
            next_events: 0,
        }
    }

    /// Runs call `name` of machine `m`.
    pub async fn call(&mut self, m: &Machine, name: &str, args: &Args<'_>) -> Reply {
        // Each group answers its own calls, and `None` to the others.
        if let Some(value) = commands(m, name, args).await? {
            return Ok(value);
        }
        if let Some(value) = waits(m, name, args).await? {
            return Ok(value);
        }
        if let Some(value) = screen(m, name, args).await? {
            return Ok(value);
        }
        if let Some(value) = self.qmp(m, name, args).await? {
            return Ok(value);
        }
        if let Some(value) = self.files(m, name, args).await? {
            return Ok(value);
        }
        if let Some(value) = network(m, name, args).await? {
            return Ok(value);
        }
        Err(format!("a machine has no call `{name}`"))
    }

    /// Calls of QEMU's monitor and its events.
    async fn qmp(&mut self, m: &Machine, name: &str, args: &Args<'_>) -> Handled {
        let reply: Reply = match name {
            "send_monitor_command" => {
                let qmp = m.qmp().await.map_err(driver)?;
                let out = qmp
                    .human_monitor_command(args.str("command")?)
                    .await
                    .map_err(|e| format!("machine `{}`: {}", m.name(), chain_inline(&e)))?;
                Ok(json!(out))
            }
            "qmp_subscribe" => {
                let stream = m.qmp().await.map_err(driver)?.subscribe();
                self.next_events += 1;
                self.events.insert(self.next_events, stream);
                Ok(json!(self.next_events))
            }
            "qmp_next_event" => self.next_event(args).await,
            "qmp_unsubscribe" => {
                self.events.remove(&args.u64("stream")?);
                Ok(Value::Null)
            }
            _ => return Ok(None),
        };
        reply.map(Some)
    }

    /// Calls of file copies.
    async fn files(&mut self, m: &Machine, name: &str, args: &Args<'_>) -> Handled {
        let reply: Reply = match name {
            "copy_to" => {
                let local = self.base.join(args.str("local")?);
                let bytes = m
                    .copy_to(&local, args.str("remote")?)
                    .await
                    .map_err(driver)?;
                Ok(json!(bytes))
            }
            "copy_from" => {
                let local = self.out.join(args.str("local")?);
                m.copy_from(args.str("remote")?, &local)
                    .await
                    .map_err(driver)?;
                Ok(json!(local.display().to_string()))
            }
            _ => return Ok(None),
        };
        reply.map(Some)
    }

    /// The next event of a stream from `qmp_subscribe`, or null when `timeout` passed.
    async fn next_event(&mut self, args: &Args<'_>) -> Reply {
        let limit = args.timeout(None)?;
        let id = args.u64("stream")?;
        let stream = self
            .events
            .get_mut(&id)
            .ok_or_else(|| format!("no QMP event stream {id}"))?;
        match tokio::time::timeout(limit, stream.recv()).await {
            Err(_) => Ok(Value::Null),
            Ok(None) => Err("the machine's QMP connection closed".into()),
            // Events lost to a slow reader: the next ones still count.
            Ok(Some(Err(_))) => Ok(Value::Null),
            Ok(Some(Ok(event))) => Ok(json!({
                "event": event.event,
                "data": event.data,
                "timestamp": {
                    "seconds": event.timestamp.seconds,
                    "microseconds": event.timestamp.microseconds,
                },
            })),
        }
    }
}

/// Calls of power and commands: `start`, `shutdown`, `crash`, `reboot`, `wait_for_shutdown`, `is_up`, `execute`, `succeed`, `fail`, `wait_until_*`.
async fn commands(m: &Machine, name: &str, args: &Args<'_>) -> Handled {
    let commands = m.command_timeout();
    let reply: Reply = match name {
        "start" => m.start().await.map(|()| Value::Null).map_err(driver),
        "is_up" => Ok(json!(m.is_up().await)),
        "shutdown" => unit(m.shutdown(args.timeout(Some(POWER_OFF))?).await),
        "crash" => unit(m.crash().await),
        "reboot" => unit(m.reboot(args.timeout(Some(POWER_OFF))?).await),
        "wait_for_shutdown" => unit(m.wait_for_shutdown(args.timeout(None)?).await),
        "execute" => {
            let r = m
                .execute_with_timeout(args.str("command")?, args.timeout(Some(commands))?)
                .await
                .map_err(driver)?;
            // A command killed by a signal: the shell's convention.
            let status = r.code.or(r.signal.map(|s| 128 + s)).unwrap_or(-1);
            Ok(json!({"status": status, "stdout": r.stdout, "stderr": r.stderr}))
        }
        "succeed" => text(
            m.succeed_with_timeout(args.str("command")?, args.timeout(Some(commands))?)
                .await,
        ),
        "fail" => text(
            m.fail_with_timeout(args.str("command")?, args.timeout(Some(commands))?)
                .await,
        ),
        "wait_until_succeeds" => text(
            m.wait_until_succeeds(args.str("command")?, args.timeout(None)?)
                .await,
        ),
        "wait_until_fails" => text(
            m.wait_until_fails(args.str("command")?, args.timeout(None)?)
                .await,
        ),
        _ => return Ok(None),
    };
    reply.map(Some)
}

/// Calls of waits and the console: `wait_for_unit`, `wait_for_file`, the ports, `wait_for_console_text`, `get_console_log`, `send_console`.
async fn waits(m: &Machine, name: &str, args: &Args<'_>) -> Handled {
    let reply: Reply = match name {
        "wait_for_unit" => unit(
            m.wait_for_unit(args.str("unit")?, args.timeout(None)?)
                .await,
        ),
        "wait_for_file" => unit(
            m.wait_for_file(args.str("path")?, args.timeout(None)?)
                .await,
        ),
        "wait_for_open_port" => unit(
            m.wait_for_open_port(args.port("port")?, args.timeout(None)?)
                .await,
        ),
        "wait_for_closed_port" => unit(
            m.wait_for_closed_port(args.port("port")?, args.timeout(None)?)
                .await,
        ),
        "wait_for_console_text" => text(
            m.wait_for_console_text(args.str("regex")?, args.timeout(None)?)
                .await,
        ),
        "get_console_log" => Ok(json!(m.console_log())),
        "send_console" => unit(m.send_console(args.str("chars")?).await),
        _ => return Ok(None),
    };
    reply.map(Some)
}

/// Calls of the screen and the keyboard.
async fn screen(m: &Machine, name: &str, args: &Args<'_>) -> Handled {
    let reply: Reply = match name {
        "screenshot" => {
            let path = m.screenshot(args.str("name")?).await.map_err(driver)?;
            Ok(json!(path.display().to_string()))
        }
        "get_screen_text" => text(m.get_screen_text().await),
        "get_screen_text_ocr" => text(m.get_screen_text_ocr().await),
        "get_screen_text_variants" => {
            let read = m.read_screen(ScreenReader::Ocr).await.map_err(driver)?;
            Ok(json!([read.text]))
        }
        "wait_for_text" => text(
            m.wait_for_text(args.str("regex")?, args.timeout(None)?)
                .await,
        ),
        "wait_for_text_ocr" => text(
            m.wait_for_text_with(args.str("regex")?, args.timeout(None)?, ScreenReader::Ocr)
                .await
                .map(|read| read.text),
        ),
        "send_key" => unit(m.send_key(args.str("key")?).await),
        "send_chars" => {
            let delay = Duration::from_secs_f64(args.f64_or("delay", 0.01)?);
            unit(m.send_chars(args.str("chars")?, delay).await)
        }
        _ => return Ok(None),
    };
    reply.map(Some)
}

/// Calls of the machine's network from the host.
async fn network(m: &Machine, name: &str, args: &Args<'_>) -> Handled {
    let reply: Reply = match name {
        "set_link" => unit(m.set_link(args.vlan()?, args.bool("up")?).await),
        "forward" => {
            let host = args.u64("host_port")?;
            let host = u16::try_from(host)
                .map_err(|_| format!("forward_port: host port {host} is out of range"))?;
            let port = m.forward(host, args.port("guest_port")?).await;
            Ok(json!(port.map_err(driver)?))
        }
        "forwarded_port" => Ok(json!(m.forwarded_port(args.port("guest_port")?))),
        "ip" => Ok(json!(m.ip(args.vlan()?).map_err(driver)?.to_string())),
        "ipv6" => Ok(json!(m.ipv6(args.vlan()?).map_err(driver)?.to_string())),
        "impair" => {
            let impairment = flotilla_vmnet::Impairment {
                delay_ms: args.u64("delay_ms")? as u32,
                jitter_ms: args.u64("jitter_ms")? as u32,
                loss_percent: args.f64_or("loss", 0.0)?,
                bandwidth: args.u64("bandwidth")?,
            };
            impairment.check().map_err(|e| format!("impair: {e}"))?;
            unit(m.impair(args.vlan()?, impairment).await)
        }
        "unimpair" => unit(
            m.impair(args.vlan()?, flotilla_vmnet::Impairment::default())
                .await,
        ),
        "capture" => {
            let path = m.capture(args.vlan()?).await.map_err(driver)?;
            Ok(json!(path.display().to_string()))
        }
        _ => return Ok(None),
    };
    reply.map(Some)
}

fn unit(r: Result<(), crate::error::Error>) -> Reply {
    r.map(|()| Value::Null).map_err(driver)
}

fn text(r: Result<String, crate::error::Error>) -> Reply {
    r.map(Value::String).map_err(driver)
}

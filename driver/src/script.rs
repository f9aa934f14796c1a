//! Test scripts in Rhai: each machine of the spec is a variable whose methods are the
//! [`Machine`](crate::Machine) API (`server.succeed("uname -r")`).
//!
//! | call | does |
//! | --- | --- |
//! | `…, secs)` | every command, wait, `shutdown` and `reboot` takes an optional last argument, its time limit in whole seconds, 1 or more (defaults: commands 300 s, waits 120 s, power-off 60 s); a timeout error names the call and the limit |
//! | `m.start()` | boots `m` (commands boot it on first use too) |
//! | `m.succeed(cmd)` | runs a shell command that must exit 0; returns its stdout |
//! | `m.fail(cmd)` | runs a shell command that must fail; returns its stdout |
//! | `m.wait_until_succeeds(cmd)`, `m.wait_until_fails(cmd)` | retries `cmd` every 0.5 s until it succeeds / fails |
//! | `m.wait_for_console_text(regex)` | waits for a matching serial console line (earlier lines count); returns it |
//! | `m.get_console_log()` | everything the console printed in this run |
//! | `m.wait_for_file(path)` | waits until `path` exists in the guest |
//! | `m.wait_for_open_port(port)`, `m.wait_for_closed_port(port)` | waits until a TCP port listens / stops listening in the guest |
//! | `m.wait_for_unit(unit)` | waits until a systemd unit is active; fails at once when it failed |
//! | `m.execute(cmd)` | runs a shell command; returns `#{status, stdout, stderr}` (status is `()` when killed by a signal) |
//! | `m.copy_to(local, remote)` | copies a host file or folder (relative to the spec) into the guest, modes kept; returns the bytes |
//! | `m.copy_from(remote, local)` | copies a guest file or folder to the log folder's `local`; returns that path |
//! | `m.shutdown()` | powers the guest off and waits for QEMU to exit |
//! | `m.crash()` | stops QEMU at once, like a power cut; the next call boots again |
//! | `m.reboot()` | powers off cleanly and boots again (a disk image keeps its state) |
//! | `m.screenshot(name)` | saves the screen of a machine with `display = true` as `<log>/<machine>/<name>.png`; returns the path |
//! | `m.send_key(keys)` | presses a key combination: QEMU key names joined by `-` (`"ctrl-alt-delete"`, `"alt-f2"`, `"ret"`) |
//! | `m.send_chars(text)`, `m.send_chars(text, delay_ms)` | types text on a US keyboard, a key press per character (10 ms apart unless told) |
//! | `m.name` | the machine's name |
//! | `subtest(name, \|\| { ... })` | runs a named, timed section (nestable); a failure inside fails the test and names the subtest |
//! | `retry(\|\| { ... })`, `retry(\|\| { ... }, secs)` | runs the closure until it does not throw, a second apart (120 s, or `secs`); returns its value |
//! | `start_all()` | boots every machine in parallel |
//! | `polling_condition(name, \|\| { ... })`, `polling_condition(name, secs, \|\| { ... })` | the closure must not throw whenever it is checked: before every command of any machine (also between the tries of `wait_until_*`), at most every `secs`; a failure fails the step, naming the condition |
//! | `log(text)` / `print(text)` | writes a line to the log |
//! | `m.ip(vlan)`, `m.ipv6(vlan)` | the machine's address on a VLAN |
//! | `m.block(vlan)`, `m.unblock(vlan)` | takes the machine's link on a VLAN down / up |
//! | `m.impair(vlan, #{delay_ms, jitter_ms, loss, bandwidth})`, `m.unimpair(vlan)` | degrades the machine's link (loss in percent, bandwidth in bytes/s; vde backend) / restores it |
//! | `m.forward(guest)`, `m.forward(host, guest)` | forwards 127.0.0.1:host (free port if omitted) to a guest port; returns the host port |
//! | `m.forwarded_port(guest)` | the host port of a forward from the spec, or `()` |
//! | `m.capture(vlan)` | writes the NIC's frames to `<log>/<machine>/vlan<N>.pcap` (tcpdump/tshark read it); returns the path |
//! | `partition(vlan, [[a, b], [c]])`, `heal(vlan)` | splits a VLAN into groups that only reach each other (vde backend) / undoes it |
//! | `capture_vlan(vlan)` | writes every frame on a VLAN to `<log>/vlan<N>.pcap` until the end (vde backend); returns the path |
//! | `http_get(url)` | fetches `http://127.0.0.1:port/...` from the host; returns the body (any other host is refused) |
//! | `throw "message"` | fails the test with that message (plain Rhai) |
//!
//! The README's script table is this table; a test keeps the two equal and checks that
//! every function registered below is in it.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rhai::{Dynamic, Engine, EvalAltResult, Map, Position};
use tokio::runtime::Handle;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::conditions::Conditions;
use crate::error::Error;
use crate::fabric::Fabric;
use crate::fleet::Fleet;
use crate::junit::{Subtest, Subtests};
use crate::log::Log;
use crate::machine::Machine;

/// How long the `wait_*` calls wait unless told.
const DEFAULT_WAIT: Duration = Duration::from_secs(120);
/// How long `shutdown` and `reboot` wait for the guest to power off unless told.
const SHUTDOWN_WAIT: Duration = Duration::from_secs(60);

/// Registers `name(m[, arg])` and `name(m[, arg], secs)`; the body gets `limit`, the
/// call's own time limit (`None` for the default).
macro_rules! with_limit {
    ($engine:ident, $ctx:ident, $name:literal, |$c:ident, $m:ident, $limit:ident| $body:block) => {{
        let $c = $ctx.clone();
        $engine.register_fn($name, move |$m: &mut MachineHandle| {
            let $limit: Option<Duration> = None;
            $body
        });
        let $c = $ctx.clone();
        $engine.register_fn($name, move |$m: &mut MachineHandle, secs: i64| {
            let $limit = Some(secs_arg(secs)?);
            $body
        });
    }};
    ($engine:ident, $ctx:ident, $name:literal, |$c:ident, $m:ident, $arg:ident: $ty:ty, $limit:ident| $body:block) => {{
        let $c = $ctx.clone();
        $engine.register_fn($name, move |$m: &mut MachineHandle, $arg: $ty| {
            let $limit: Option<Duration> = None;
            $body
        });
        let $c = $ctx.clone();
        $engine.register_fn(
            $name,
            move |$m: &mut MachineHandle, $arg: $ty, secs: i64| {
                let $limit = Some(secs_arg(secs)?);
                $body
            },
        );
    }};
}

async fn wait(m: &Machine, cmd: &str, limit: Duration, success: bool) -> Result<String, Error> {
    if success {
        m.wait_until_succeeds(cmd, limit).await
    } else {
        m.wait_until_fails(cmd, limit).await
    }
}

#[derive(Clone)]
struct MachineHandle(Arc<Machine>);

type Res<T> = Result<T, Box<EvalAltResult>>;

struct Ctx {
    handle: Handle,
    cancel: std::sync::RwLock<CancellationToken>,
    /// The engine, for running polling conditions (set once it is built).
    engine: std::sync::OnceLock<std::sync::Weak<Engine>>,
    /// The script, whose functions conditions may call.
    ast: std::sync::RwLock<rhai::AST>,
    /// The script's polling conditions, by index.
    conditions: std::sync::Mutex<Vec<rhai::FnPtr>>,
    /// Requests to run a condition on the script thread, sent by the driver's checks.
    requests: std::sync::Mutex<Option<mpsc::UnboundedReceiver<ConditionCall>>>,
    requests_tx: mpsc::UnboundedSender<ConditionCall>,
}

/// A request to run polling condition `index`; the reply is its error message, if any.
struct ConditionCall {
    index: usize,
    reply: oneshot::Sender<Result<(), String>>,
}

enum Step<T> {
    Done(Result<T, Error>),
    Cancelled,
    Condition(ConditionCall),
}

impl Ctx {
    /// Runs `fut` to completion on the runtime. Meanwhile, polling conditions that the
    /// driver checks are run here, on the script thread, where Rhai closures can run.
    fn block<T>(&self, fut: impl std::future::Future<Output = Result<T, Error>>) -> Res<T> {
        let mut fut = std::pin::pin!(fut);
        // Only the outermost call serves conditions; calls a condition makes do not.
        let mut requests = self.requests.lock().ok().and_then(|mut r| r.take());
        let cancel = self.cancel();
        let result = loop {
            let step = self.handle.block_on(async {
                tokio::select! {
                    r = &mut fut => Step::Done(r),
                    _ = cancel.cancelled() => Step::Cancelled,
                    Some(call) = async {
                        match requests.as_mut() {
                            Some(rx) => rx.recv().await,
                            None => std::future::pending().await,
                        }
                    } => Step::Condition(call),
                }
            });
            match step {
                Step::Done(r) => break r.map_err(|e| error_to_rhai(&e)),
                Step::Cancelled => break Err("cancelled".into()),
                Step::Condition(call) => {
                    let _ = call.reply.send(self.run_condition(call.index));
                }
            }
        };
        if let (Some(rx), Ok(mut slot)) = (requests, self.requests.lock()) {
            *slot = Some(rx);
        }
        result
    }

    /// What stops calls now.
    fn cancel(&self) -> CancellationToken {
        self.cancel
            .read()
            .map(|c| c.clone())
            .unwrap_or_else(|_| CancellationToken::new())
    }

    fn run_condition(&self, index: usize) -> Result<(), String> {
        let engine = self
            .engine
            .get()
            .and_then(std::sync::Weak::upgrade)
            .ok_or("the script engine is gone")?;
        let body = self
            .conditions
            .lock()
            .ok()
            .and_then(|c| c.get(index).cloned())
            .ok_or("no such polling condition")?;
        let ast = self
            .ast
            .read()
            .map(|a| a.clone())
            .unwrap_or_else(|_| rhai::AST::empty());
        body.call::<Dynamic>(&engine, &ast, ())
            .map(drop)
            .map_err(|e| innermost(&e).1)
    }
}

fn error_to_rhai(e: &Error) -> Box<EvalAltResult> {
    EvalAltResult::ErrorRuntime(Dynamic::from(with_causes(e)), Position::NONE).into()
}

/// `e` and the causes its own text does not already give, joined by `: ` (the script
/// error is one line; `machine `a`: qmp` alone would not say what went wrong).
fn with_causes(e: &Error) -> String {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            // `machine `a`: qmp` and `qmp: `send-key` failed`: say `qmp` once.
            let last = text.rsplit(": ").next().unwrap_or_default().to_owned();
            let rest = cause_text
                .strip_prefix(&format!("{last}: "))
                .unwrap_or(&cause_text);
            text.push_str(": ");
            text.push_str(rest);
        }
        source = cause.source();
    }
    text
}

/// What a script acts on: a network's machines, its fabric and its conditions.
#[derive(Clone)]
pub(crate) struct World {
    pub machines: BTreeMap<String, Arc<Machine>>,
    pub fabric: Arc<Fabric>,
    pub conditions: Arc<Conditions>,
}

impl World {
    /// What scripts act on in `fleet`.
    pub fn of(fleet: &Fleet) -> World {
        World {
            machines: fleet.machines().clone(),
            fabric: fleet.fabric.clone(),
            conditions: fleet.conditions.clone(),
        }
    }
}

/// Runs the script at `path` against `machines`. Blocking: call it from a thread that
/// is not a runtime worker; `handle` runs the machine calls.
pub(crate) fn run(
    path: &Path,
    world: &World,
    log: &Log,
    handle: Handle,
    cancel: CancellationToken,
    subtests: Subtests,
) -> Result<(), Error> {
    let source = std::fs::read_to_string(path).map_err(|source| Error::Io {
        what: format!("reading script {}", path.display()),
        source,
    })?;
    let script = engine(path, world, log, handle, cancel.clone(), subtests);
    compile_and_run(&script, path, &source, &cancel)
}

/// An engine with the whole script API registered, and the context its functions share.
pub(crate) struct ScriptEngine {
    pub engine: Arc<Engine>,
    ctx: Arc<Ctx>,
}

impl std::fmt::Debug for ScriptEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScriptEngine").finish_non_exhaustive()
    }
}

impl ScriptEngine {
    /// What stops the engine's calls from now on (a REPL sets one per line).
    pub fn set_cancel(&self, cancel: CancellationToken) {
        if let Ok(mut c) = self.ctx.cancel.write() {
            *c = cancel;
        }
    }

    /// The script whose functions polling conditions may call.
    pub fn set_ast(&self, ast: &rhai::AST) {
        if let Ok(mut a) = self.ctx.ast.write() {
            *a = ast.clone();
        }
    }
}

/// An engine with the whole script API registered; `path`'s folder is where relative
/// host paths start, and `cancel` stops whatever the engine runs (until
/// [`ScriptEngine::set_cancel`]).
pub(crate) fn engine(
    path: &Path,
    world: &World,
    log: &Log,
    handle: Handle,
    cancel: CancellationToken,
    subtests: Subtests,
) -> ScriptEngine {
    let World {
        machines,
        fabric,
        conditions,
    } = world;
    let (requests_tx, requests) = mpsc::unbounded_channel();
    let ctx = Arc::new(Ctx {
        handle,
        cancel: std::sync::RwLock::new(cancel.clone()),
        engine: std::sync::OnceLock::new(),
        ast: std::sync::RwLock::new(rhai::AST::empty()),
        conditions: std::sync::Mutex::default(),
        requests: std::sync::Mutex::new(Some(requests)),
        requests_tx,
    });
    let mut engine = Engine::new();
    engine.set_max_call_levels(64);
    engine.set_max_expr_depths(64, 64);

    let l = log.clone();
    engine.on_print(move |text| l.info(text));
    let l = log.clone();
    engine.on_debug(move |text, _src, pos| l.info(&format!("debug at {pos}: {text}")));
    let c = ctx.clone();
    engine.on_progress(move |_| {
        c.cancel()
            .is_cancelled()
            .then(|| Dynamic::from("cancelled"))
    });

    let vars: BTreeMap<String, Dynamic> = machines
        .iter()
        .map(|(name, m)| (name.clone(), Dynamic::from(MachineHandle(m.clone()))))
        .collect();
    #[allow(deprecated)] // "volatile", not deprecated: the documented way to resolve names
    engine.on_var(move |name, _, _| Ok(vars.get(name).cloned()));

    engine.register_type_with_name::<MachineHandle>("Machine");
    engine.register_get("name", |m: &mut MachineHandle| m.0.name().to_owned());
    let c = ctx.clone();
    engine.register_fn("start", move |m: &mut MachineHandle| c.block(m.0.start()));
    with_limit!(engine, ctx, "succeed", |c, m, cmd: &str, limit| {
        let limit = limit.unwrap_or(m.0.command_timeout());
        c.block(m.0.succeed_with_timeout(cmd, limit))
    });
    with_limit!(engine, ctx, "fail", |c, m, cmd: &str, limit| {
        let limit = limit.unwrap_or(m.0.command_timeout());
        c.block(m.0.fail_with_timeout(cmd, limit))
    });
    for (name, success) in [("wait_until_succeeds", true), ("wait_until_fails", false)] {
        let c = ctx.clone();
        engine.register_fn(name, move |m: &mut MachineHandle, cmd: &str| {
            c.block(wait(&m.0, cmd, DEFAULT_WAIT, success))
        });
        let c = ctx.clone();
        engine.register_fn(name, move |m: &mut MachineHandle, cmd: &str, secs: i64| {
            c.block(wait(&m.0, cmd, secs_arg(secs)?, success))
        });
    }
    with_limit!(engine, ctx, "execute", |c, m, cmd: &str, limit| {
        let limit = limit.unwrap_or(m.0.command_timeout());
        let r = c.block(m.0.execute_with_timeout(cmd, limit))?;
        let mut map = Map::new();
        map.insert(
            "status".into(),
            r.code.map_or(Dynamic::UNIT, |c| Dynamic::from(c as i64)),
        );
        map.insert("stdout".into(), r.stdout.into());
        map.insert("stderr".into(), r.stderr.into());
        Ok::<_, Box<EvalAltResult>>(map)
    });
    with_limit!(engine, ctx, "shutdown", |c, m, limit| {
        c.block(m.0.shutdown(limit.unwrap_or(SHUTDOWN_WAIT)))
    });
    let c = ctx.clone();
    let all: Vec<Arc<Machine>> = machines.values().cloned().collect();
    engine.register_fn("start_all", move || {
        let all = all.clone();
        c.block(async move {
            let results = futures::future::join_all(all.iter().map(|m| m.start())).await;
            results
                .into_iter()
                .collect::<Result<Vec<()>, Error>>()
                .map(|_| ())
        })
    });
    let l = log.clone();
    engine.register_fn("log", move |text: &str| l.info(text));

    let c = ctx.clone();
    engine.register_fn("crash", move |m: &mut MachineHandle| c.block(m.0.crash()));
    with_limit!(engine, ctx, "reboot", |c, m, limit| {
        c.block(m.0.reboot(limit.unwrap_or(SHUTDOWN_WAIT)))
    });

    // Subtests: named, timed, nestable sections.
    let l = log.clone();
    let stack: Arc<std::sync::Mutex<Vec<String>>> = Arc::default();
    engine.register_fn(
        "subtest",
        move |call: rhai::NativeCallContext, name: &str, body: rhai::FnPtr| -> Res<Dynamic> {
            let (path, depth) = match stack.lock() {
                Ok(mut st) => {
                    st.push(name.to_owned());
                    (st.join(" / "), st.len() - 1)
                }
                Err(_) => (name.to_owned(), 0),
            };
            let indent = "  ".repeat(depth);
            l.info(&format!("{indent}subtest: {name}"));
            let started = std::time::Instant::now();
            let result = body.call_within_context::<Dynamic>(&call, ());
            let duration = started.elapsed();
            if let Ok(mut st) = stack.lock() {
                st.pop();
            }
            let failure = result.as_ref().err().map(|e| innermost(e).1);
            let verdict = if failure.is_some() { "FAILED" } else { "ok" };
            l.info(&format!(
                "{indent}subtest: {name} {verdict} ({:.2} s)",
                duration.as_secs_f64()
            ));
            if let Ok(mut list) = subtests.lock() {
                list.push(Subtest {
                    name: path,
                    duration,
                    failure,
                });
            }
            result
        },
    );

    // retry(|| { ... }) and retry(|| { ... }, secs): run the closure until it does not
    // throw, a second apart; the last error is the test's when time runs out.
    let c = ctx.clone();
    let l = log.clone();
    let retry =
        move |call: &rhai::NativeCallContext, body: &rhai::FnPtr, secs: i64| -> Res<Dynamic> {
            let deadline = std::time::Instant::now() + secs_arg(secs)?;
            let mut tries = 0;
            loop {
                tries += 1;
                match body.call_within_context::<Dynamic>(call, ()) {
                    Ok(v) => return Ok(v),
                    Err(e) if c.cancel().is_cancelled() => return Err(e),
                    Err(e) if std::time::Instant::now() >= deadline => {
                        l.info(&format!("retry: giving up after {tries} tries"));
                        return Err(e);
                    }
                    Err(e) => {
                        l.info(&format!("retry: try {tries} failed: {}", innermost(&e).1));
                        std::thread::sleep(Duration::from_secs(1));
                    }
                }
            }
        };
    let r = retry.clone();
    engine.register_fn(
        "retry",
        move |call: rhai::NativeCallContext, body: rhai::FnPtr| {
            r(&call, &body, DEFAULT_WAIT.as_secs() as i64)
        },
    );
    engine.register_fn(
        "retry",
        move |call: rhai::NativeCallContext, body: rhai::FnPtr, secs: i64| {
            retry(&call, &body, secs)
        },
    );

    // Waiting.
    with_limit!(
        engine,
        ctx,
        "wait_for_console_text",
        |c, m, pattern: &str, limit| {
            c.block(m.0.wait_for_console_text(pattern, limit.unwrap_or(DEFAULT_WAIT)))
        }
    );
    engine.register_fn("get_console_log", |m: &mut MachineHandle| m.0.console_log());
    with_limit!(engine, ctx, "wait_for_file", |c, m, path: &str, limit| {
        c.block(m.0.wait_for_file(path, limit.unwrap_or(DEFAULT_WAIT)))
    });
    with_limit!(
        engine,
        ctx,
        "wait_for_open_port",
        |c, m, port: i64, limit| {
            c.block(m.0.wait_for_open_port(port_arg(port)?, limit.unwrap_or(DEFAULT_WAIT)))
        }
    );
    with_limit!(
        engine,
        ctx,
        "wait_for_closed_port",
        |c, m, port: i64, limit| {
            c.block(m.0.wait_for_closed_port(port_arg(port)?, limit.unwrap_or(DEFAULT_WAIT)))
        }
    );
    with_limit!(engine, ctx, "wait_for_unit", |c, m, unit: &str, limit| {
        c.block(m.0.wait_for_unit(unit, limit.unwrap_or(DEFAULT_WAIT)))
    });

    // Files.
    let c = ctx.clone();
    let base = path.parent().unwrap_or(Path::new(".")).to_path_buf();
    engine.register_fn(
        "copy_to",
        move |m: &mut MachineHandle, local: &str, remote: &str| -> Res<i64> {
            let local = base.join(local);
            c.block(m.0.copy_to(&local, remote)).map(|n| n as i64)
        },
    );
    let c = ctx.clone();
    let out = log.dir().to_path_buf();
    engine.register_fn(
        "copy_from",
        move |m: &mut MachineHandle, remote: &str, local: &str| -> Res<String> {
            let local = out.join(local);
            c.block(m.0.copy_from(remote, &local))?;
            Ok(local.display().to_string())
        },
    );

    // Screen and keyboard.
    let c = ctx.clone();
    engine.register_fn(
        "screenshot",
        move |m: &mut MachineHandle, name: &str| -> Res<String> {
            c.block(m.0.screenshot(name))
                .map(|p| p.display().to_string())
        },
    );
    let c = ctx.clone();
    engine.register_fn("send_key", move |m: &mut MachineHandle, keys: &str| {
        c.block(m.0.send_key(keys))
    });
    let c = ctx.clone();
    engine.register_fn("send_chars", move |m: &mut MachineHandle, text: &str| {
        c.block(m.0.send_chars(text, Duration::from_millis(10)))
    });
    let c = ctx.clone();
    engine.register_fn(
        "send_chars",
        move |m: &mut MachineHandle, text: &str, delay_ms: i64| {
            let delay = Duration::from_millis(delay_ms.clamp(0, 10_000) as u64);
            c.block(m.0.send_chars(text, delay))
        },
    );

    // Networking.
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

    // polling_condition(name, || { ... }) and polling_condition(name, secs, || { ... }).
    let add_condition = {
        let ctx = ctx.clone();
        let conditions = conditions.clone();
        move |name: &str, secs: f64, body: rhai::FnPtr| -> Res<()> {
            if !secs.is_finite() || secs < 0.0 {
                return Err(format!(
                    "polling_condition `{name}`: interval {secs} s must be 0 or more"
                )
                .into());
            }
            let index = match ctx.conditions.lock() {
                Ok(mut list) => {
                    list.push(body);
                    list.len() - 1
                }
                Err(_) => return Err("polling conditions are unavailable".into()),
            };
            let tx = ctx.requests_tx.clone();
            conditions.add(name, Duration::from_secs_f64(secs), move || {
                let tx = tx.clone();
                async move {
                    let (reply, answer) = oneshot::channel();
                    tx.send(ConditionCall { index, reply })
                        .map_err(|_| Error::Usage("the script has ended".into()))?;
                    match answer.await {
                        Ok(Ok(())) => Ok(()),
                        Ok(Err(message)) => Err(Error::Usage(message)),
                        Err(_) => Err(Error::Usage("the script has ended".into())),
                    }
                }
            });
            Ok(())
        }
    };
    let add = add_condition.clone();
    engine.register_fn("polling_condition", move |name: &str, body: rhai::FnPtr| {
        add(name, 0.0, body)
    });
    let add = add_condition.clone();
    engine.register_fn(
        "polling_condition",
        move |name: &str, secs: i64, body: rhai::FnPtr| add(name, secs as f64, body),
    );
    engine.register_fn(
        "polling_condition",
        move |name: &str, secs: f64, body: rhai::FnPtr| add_condition(name, secs, body),
    );

    let engine = Arc::new(engine);
    let _ = ctx.engine.set(Arc::downgrade(&engine));
    ScriptEngine { engine, ctx }
}

fn compile_and_run(
    script: &ScriptEngine,
    path: &Path,
    source: &str,
    cancel: &CancellationToken,
) -> Result<(), Error> {
    let engine = &script.engine;
    let ast = engine.compile(source).map_err(|e| {
        let pos = e.position();
        Error::ScriptSyntax {
            file: path.to_path_buf(),
            line: pos.line().unwrap_or(0),
            column: pos.position().unwrap_or(0),
            message: strip_position(e.0.to_string()),
        }
    })?;
    script.set_ast(&ast);
    match engine.run_ast(&ast) {
        Ok(()) => Ok(()),
        Err(e) if cancel.is_cancelled() => {
            let (pos, _) = innermost(&e);
            Err(located(path, pos, "cancelled".into()))
        }
        Err(e) => {
            let (pos, message) = innermost(&e);
            Err(located(path, pos, message))
        }
    }
}

/// A time limit in whole seconds from a script: 1 s or more.
fn secs_arg(secs: i64) -> Res<Duration> {
    match u64::try_from(secs) {
        Ok(secs) if secs >= 1 => Ok(Duration::from_secs(secs)),
        _ => Err(format!("a time limit of {secs} s: give 1 s or more").into()),
    }
}

fn vlan_arg(vlan: i64) -> Res<u8> {
    u8::try_from(vlan)
        .ok()
        .filter(|v| *v >= 1)
        .ok_or_else(|| format!("VLAN {vlan} is out of range (1 to 254)").into())
}

/// `#{delay_ms: 100, jitter_ms: 10, loss: 5.0, bandwidth: 125000}`; every key optional.
fn impairment_arg(map: &Map) -> Res<flotilla_vmnet::Impairment> {
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

fn port_arg(port: i64) -> Res<u16> {
    u16::try_from(port)
        .ok()
        .filter(|p| *p >= 1)
        .ok_or_else(|| format!("port {port} is out of range (1 to 65535)").into())
}

/// A machine given either as the machine itself or as its name.
fn machine_name(value: Dynamic) -> Res<String> {
    if let Some(m) = value.clone().try_cast::<MachineHandle>() {
        return Ok(m.0.name().to_owned());
    }
    value
        .into_string()
        .map_err(|t| format!("expected a machine or its name, got {t}").into())
}

/// The deepest error in a chain of function calls and the position nearest to it.
pub(crate) fn innermost(e: &EvalAltResult) -> (Position, String) {
    let mut pos = e.position();
    let mut cur = e;
    loop {
        match cur {
            EvalAltResult::ErrorInFunctionCall(_, _, inner, p)
            | EvalAltResult::ErrorInModule(_, inner, p) => {
                if !p.is_none() {
                    pos = *p;
                }
                if !inner.position().is_none() {
                    pos = inner.position();
                }
                cur = inner;
            }
            EvalAltResult::ErrorRuntime(value, p) => {
                if !p.is_none() {
                    pos = *p;
                }
                let message = value
                    .clone()
                    .into_string()
                    .unwrap_or_else(|_| value.to_string());
                return (pos, message);
            }
            EvalAltResult::ErrorTerminated(_, p) => {
                return (if p.is_none() { pos } else { *p }, "cancelled".into());
            }
            other => {
                if !other.position().is_none() {
                    pos = other.position();
                }
                return (pos, strip_position(other.to_string()));
            }
        }
    }
}

/// Rhai appends " (line L, position C)"; we print the location first instead.
pub(crate) fn strip_position(text: String) -> String {
    match text.rfind(" (line ") {
        Some(i) if text.ends_with(')') => text[..i].to_owned(),
        _ => text,
    }
}

fn located(path: &Path, pos: Position, message: String) -> Error {
    Error::Script {
        file: path.to_path_buf(),
        line: pos.line().unwrap_or(0),
        column: pos.position().unwrap_or(0),
        message,
    }
}

#[cfg(test)]
mod tests {
    const SOURCE: &str = include_str!("script.rs");
    const README: &str = include_str!("../../README.md");

    fn table() -> String {
        SOURCE
            .lines()
            .filter_map(|l| l.strip_prefix("//! |"))
            .map(|l| format!("|{l}\n"))
            .collect()
    }

    #[test]
    fn script_errors_carry_their_causes_once() {
        use crate::Error;
        let qmp = Error::Qmp {
            machine: "a".into(),
            source: flotilla_qmp::Error::Qmp {
                command: "send-key".into(),
                class: "GenericError".into(),
                desc: "Parameter 'data' does not accept value 'nokey'".into(),
            },
        };
        assert_eq!(
            super::with_causes(&qmp),
            "machine `a`: qmp: `send-key` failed: GenericError: \
             Parameter 'data' does not accept value 'nokey'"
        );
        let io = Error::Io {
            what: "reading /gone".into(),
            source: std::io::Error::from(std::io::ErrorKind::NotFound),
        };
        assert_eq!(super::with_causes(&io), "reading /gone: entity not found");
        // A text that already quotes its cause keeps it once.
        let spec = Error::Network("machine `a` is not on VLAN 9".into());
        assert_eq!(
            super::with_causes(&spec),
            "network: machine `a` is not on VLAN 9"
        );
    }

    #[test]
    fn readme_script_table_is_this_modules_table() {
        let start = "<!-- script-api: generated from driver/src/script.rs; a test checks it -->\n";
        let begin = README
            .find(start)
            .expect("README has the script-api marker")
            + start.len();
        let end = README[begin..]
            .find("<!-- script-api end -->")
            .expect("README has the end marker");
        assert_eq!(
            &README[begin..begin + end],
            table(),
            "README.md's script table differs from driver/src/script.rs; copy it over"
        );
    }

    #[test]
    fn every_registered_function_is_documented() {
        let table = table();
        let code = SOURCE.split("#[cfg(test)]").next().unwrap_or(SOURCE);
        let mut names: Vec<&str> = code
            .split("register_fn(")
            .skip(1)
            .filter_map(|rest| rest.trim_start().strip_prefix('"'))
            .filter_map(|rest| rest.split('"').next())
            .collect();
        // with_limit!(engine, ctx, "name", ...): the first string is the name.
        let limited: Vec<&str> = code
            .split("with_limit!(")
            .skip(1)
            .filter_map(|rest| rest.split('"').nth(1))
            .collect();
        assert_eq!(limited.len(), 10, "{limited:?}");
        names.extend(limited);
        names.extend(["wait_until_succeeds", "wait_until_fails", "name"]);
        for name in names {
            assert!(
                table.contains(&format!("{name}(")) || table.contains(&format!(".{name}`")),
                "`{name}` is registered for scripts but not in the API table"
            );
        }
    }
}

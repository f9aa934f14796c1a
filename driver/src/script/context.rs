//! What the script's functions share: the `Machine` values scripts hold, and the
//! context that runs their calls on the runtime (and, meanwhile, polling conditions on
//! the script thread).

use std::sync::Arc;
use std::time::Duration;

use rhai::{Dynamic, Engine, EvalAltResult};
use tokio::runtime::Handle;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::errors::{error_to_rhai, innermost};
use crate::error::Error;
use crate::machine::Machine;

/// How long the `wait_*` calls wait unless told.
pub(super) const DEFAULT_WAIT: Duration = Duration::from_secs(120);
/// How long `shutdown` and `reboot` wait for the guest to power off unless told.
pub(super) const SHUTDOWN_WAIT: Duration = Duration::from_secs(60);

/// A machine as scripts see it: a value of type `Machine`.
#[derive(Clone)]
pub(super) struct MachineHandle(pub(super) Arc<Machine>);

/// What a script function returns.
pub(super) type Res<T> = Result<T, Box<EvalAltResult>>;

/// What the script's functions share.
pub(super) struct Ctx {
    pub(super) handle: Handle,
    pub(super) cancel: std::sync::RwLock<CancellationToken>,
    /// The engine, for running polling conditions (set once it is built).
    pub(super) engine: std::sync::OnceLock<std::sync::Weak<Engine>>,
    /// The script, whose functions conditions may call.
    pub(super) ast: std::sync::RwLock<rhai::AST>,
    /// The script's polling conditions, by index.
    pub(super) conditions: std::sync::Mutex<Vec<rhai::FnPtr>>,
    /// Requests to run a condition on the script thread, sent by the driver's checks.
    pub(super) requests: std::sync::Mutex<Option<mpsc::UnboundedReceiver<ConditionCall>>>,
    pub(super) requests_tx: mpsc::UnboundedSender<ConditionCall>,
}

/// A request to run polling condition `index`; the reply is its error message, if any.
pub(super) struct ConditionCall {
    pub(super) index: usize,
    pub(super) reply: oneshot::Sender<Result<(), String>>,
}

enum Step<T> {
    Done(Result<T, Error>),
    Cancelled,
    Condition(ConditionCall),
}

impl Ctx {
    /// A context whose calls run on `handle` until `cancel`.
    pub(super) fn new(handle: Handle, cancel: CancellationToken) -> Arc<Ctx> {
        let (requests_tx, requests) = mpsc::unbounded_channel();
        Arc::new(Ctx {
            handle,
            cancel: std::sync::RwLock::new(cancel),
            engine: std::sync::OnceLock::new(),
            ast: std::sync::RwLock::new(rhai::AST::empty()),
            conditions: std::sync::Mutex::default(),
            requests: std::sync::Mutex::new(Some(requests)),
            requests_tx,
        })
    }

    /// Runs `fut` to completion on the runtime. Meanwhile, polling conditions that the
    /// driver checks are run here, on the script thread, where Rhai closures can run.
    pub(super) fn block<T>(
        &self,
        fut: impl std::future::Future<Output = Result<T, Error>>,
    ) -> Res<T> {
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
    pub(super) fn cancel(&self) -> CancellationToken {
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

//! Polling conditions: checks that must hold for the whole test, run between its steps
//! (before every command a machine runs, so also between the tries of the
//! `wait_until_*` calls) rather than only where the script asks.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::error::Error;
use crate::log::Log;

type Check = Arc<dyn Fn() -> Pin<Box<dyn Future<Output = Result<(), Error>> + Send>> + Send + Sync>;

struct Condition {
    name: String,
    interval: Duration,
    last: Option<Instant>,
    check: Check,
}

/// The conditions of one network.
pub(crate) struct Conditions {
    list: Mutex<Vec<Condition>>,
    /// Held while conditions are checked: the commands a check runs (and commands
    /// that other tasks run meanwhile) do not check again.
    checking: tokio::sync::Mutex<()>,
    log: Log,
}

impl std::fmt::Debug for Conditions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<String> = self
            .list
            .lock()
            .map(|l| l.iter().map(|c| c.name.clone()).collect())
            .unwrap_or_default();
        f.debug_struct("Conditions").field("names", &names).finish()
    }
}

impl Conditions {
    pub fn new(log: Log) -> Conditions {
        Conditions {
            list: Mutex::default(),
            checking: tokio::sync::Mutex::new(()),
            log,
        }
    }

    /// Adds a condition, checked at most once per `interval` (every time when zero).
    pub fn add<F, Fut>(&self, name: &str, interval: Duration, check: F)
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), Error>> + Send + 'static,
    {
        let check: Check = Arc::new(move || Box::pin(check()));
        if let Ok(mut list) = self.list.lock() {
            list.push(Condition {
                name: name.to_owned(),
                interval,
                last: None,
                check,
            });
        }
        self.log.info(&format!(
            "polling condition `{name}` added (checked before every command{})",
            if interval.is_zero() {
                String::new()
            } else {
                format!(", at most every {} s", interval.as_secs_f64())
            }
        ));
    }

    /// Removes every condition; returns how many there were.
    pub fn clear(&self) -> usize {
        self.list
            .lock()
            .map(|mut l| std::mem::take(&mut *l).len())
            .unwrap_or(0)
    }

    /// Checks the conditions that are due; the first that fails is the error.
    pub async fn check(&self) -> Result<(), Error> {
        let Ok(_guard) = self.checking.try_lock() else {
            return Ok(());
        };
        let due: Vec<(String, Check)> = match self.list.lock() {
            Ok(mut list) => {
                let now = Instant::now();
                list.iter_mut()
                    .filter(|c| c.last.map_or(true, |l| now.duration_since(l) >= c.interval))
                    .map(|c| {
                        c.last = Some(now);
                        (c.name.clone(), c.check.clone())
                    })
                    .collect()
            }
            Err(_) => return Ok(()),
        };
        for (name, check) in due {
            self.log
                .file_only(&format!("checking polling condition `{name}`"));
            if let Err(e) = check().await {
                self.log.info(&format!("polling condition `{name}` failed"));
                let why = e.to_string();
                self.log.mark(None, "condition", &name, Err(why), None);
                return Err(Error::Condition {
                    name,
                    message: e.to_string(),
                });
            }
        }
        Ok(())
    }
}

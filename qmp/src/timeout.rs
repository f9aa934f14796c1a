//! The per-call timeout that both clients, QMP's and the guest agent's, apply.

use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;

use crate::error::Error;

/// Runs `call`, or fails with [`Error::Timeout`] naming `command` once `after`
/// has passed. Dropping `call` is all a timeout does: what the connection does
/// with the late reply is up to the client.
pub(crate) async fn within<T>(
    command: &str,
    after: Duration,
    call: impl Future<Output = Result<T, Error>>,
) -> Result<T, Error> {
    within_since(command, Instant::now(), after, call).await
}

/// [`within`] for a call whose time started counting at `start`, before this
/// part of it (the guest agent's calls include the sync that precedes them).
pub(crate) async fn within_since<T>(
    command: &str,
    start: Instant,
    after: Duration,
    call: impl Future<Output = Result<T, Error>>,
) -> Result<T, Error> {
    // Not `timeout_at(start + after)`: that sum overflows for a huge `after`.
    let left = after.saturating_sub(start.elapsed());
    tokio::time::timeout(left, call)
        .await
        .map_err(|_| Error::Timeout {
            command: command.to_owned(),
            after,
        })?
}

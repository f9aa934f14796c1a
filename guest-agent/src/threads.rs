//! The agent's helper threads: how they start, and how they lock what they share.

use std::io;
use std::sync::{Mutex, MutexGuard};

/// Stack size for the agent's helper threads: they do little and keep buffers on the heap.
pub const THREAD_STACK: usize = 128 * 1024;

/// Start a helper thread named `name` running `f`.
pub fn spawn<F: FnOnce() + Send + 'static>(name: &str, f: F) -> io::Result<()> {
    std::thread::Builder::new()
        .name(name.into())
        .stack_size(THREAD_STACK)
        .spawn(f)
        .map(drop)
}

pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic aborts the process (panic=abort), so poisoning cannot be observed in the
    // agent binary; tolerate it anyway.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

//! Link impairments (delay, jitter, loss, bandwidth) a wirefilter applies.

/// How a link is degraded; applies to both directions. All zero is a clean link.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Impairment {
    /// Added latency, milliseconds.
    pub delay_ms: u32,
    /// Random extra latency up to this many milliseconds.
    pub jitter_ms: u32,
    /// Lost frames, percent (0 to 100).
    pub loss_percent: f64,
    /// Bandwidth limit in bytes per second; 0 is unlimited.
    pub bandwidth: u64,
}

impl Impairment {
    /// The wirefilter management commands that set it.
    pub fn commands(&self) -> Vec<String> {
        let delay = if self.jitter_ms > 0 {
            format!("delay {}+{}", self.delay_ms, self.jitter_ms)
        } else {
            format!("delay {}", self.delay_ms)
        };
        vec![
            delay,
            format!("loss {}", self.loss_percent),
            format!("bandwidth {}", self.bandwidth),
        ]
    }

    /// Whether the values make sense.
    pub fn check(&self) -> Result<(), String> {
        if !(0.0..=100.0).contains(&self.loss_percent) {
            return Err(format!("loss {} is not a percentage", self.loss_percent));
        }
        Ok(())
    }
}

//! Injected faults: latency, transient errors, hangs, truncated bodies, bursts of `429`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::model::{mix, unit};

/// Which faults to inject; all off by default.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Faults {
    /// Added to every answer.
    pub latency: Duration,
    /// A uniform extra delay in `[0, jitter)`.
    pub jitter: Duration,
    /// Share of calls answered `500`, `502` or `503`.
    pub error_rate: f64,
    /// Share of calls that never answer.
    pub hang_rate: f64,
    /// Share of `200` answers whose body is cut short.
    pub truncate_rate: f64,
    /// Bursts of `429`: of every `burst_every` calls, the first `burst_length` are refused.
    pub burst_every: u64,
    pub burst_length: u64,
    /// Calls for a window starting at one of these instants always answer `503`: a window
    /// that keeps failing, for tests of partial answers.
    pub failing_window_starts: Vec<chrono::DateTime<chrono::Utc>>,
}

/// What to do to one call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    None,
    Hang,
    Error(u16),
    Burst429,
}

/// Seeded draws, one set per call, so a run with a seed injects the same faults in order.
#[derive(Debug)]
pub struct Dice {
    seed: u64,
    calls: AtomicU64,
}

impl Dice {
    pub fn new(seed: u64) -> Dice {
        Dice { seed, calls: AtomicU64::new(0) }
    }

    /// Draws the fate of the next call and its delay.
    pub fn roll(&self, faults: &Faults) -> (Fault, Duration, bool) {
        let n = self.calls.fetch_add(1, Ordering::Relaxed);
        let draw = |salt: u64| unit(mix(self.seed ^ 0x5EED) ^ n.wrapping_mul(0x9E37_79B9) ^ salt << 56);
        let delay = faults.latency + faults.jitter.mul_f64(draw(1));
        let truncate = draw(5) < faults.truncate_rate;
        let fault = if faults.burst_every > 0 && n % faults.burst_every < faults.burst_length {
            Fault::Burst429
        } else if draw(2) < faults.hang_rate {
            Fault::Hang
        } else if draw(3) < faults.error_rate {
            Fault::Error([500, 502, 503][(draw(4) * 3.0) as usize % 3])
        } else {
            Fault::None
        };
        (fault, delay, truncate)
    }
}

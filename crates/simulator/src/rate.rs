//! The per-minute call limit, counted in fixed windows of one wall-clock minute.

use std::sync::Mutex;

/// The state of the limit after one call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quota {
    pub limit: u32,
    pub remaining: u32,
    /// When the window resets, in Unix seconds.
    pub reset: i64,
    pub allowed: bool,
}

/// Counts calls in the current window (a minute, unless tests shorten it).
#[derive(Debug)]
pub struct PerMinute {
    limit: u32,
    window_secs: i64,
    window: Mutex<(i64, u32)>,
}

impl PerMinute {
    /// A limit of `limit` calls per window of `window_secs` seconds (0 means 60); 0 calls
    /// for no limit.
    pub fn new(limit: u32, window_secs: u64) -> PerMinute {
        let window_secs = if window_secs == 0 { 60 } else { window_secs as i64 };
        PerMinute { limit, window_secs, window: Mutex::new((0, 0)) }
    }

    /// Takes one call at Unix second `now`; `None` when there is no limit.
    pub fn take(&self, now: i64) -> Option<Quota> {
        if self.limit == 0 {
            return None;
        }
        let minute = now.div_euclid(self.window_secs);
        let mut w = self.window.lock().unwrap_or_else(|e| e.into_inner());
        if w.0 != minute {
            *w = (minute, 0);
        }
        let allowed = w.1 < self.limit;
        if allowed {
            w.1 += 1;
        }
        Some(Quota {
            limit: self.limit,
            remaining: self.limit - w.1,
            reset: (minute + 1) * self.window_secs,
            allowed,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_past_the_limit_until_the_next_minute() {
        let l = PerMinute::new(2, 60);
        assert_eq!(l.take(120).map(|q| (q.allowed, q.remaining, q.reset)), Some((true, 1, 180)));
        assert_eq!(l.take(150).map(|q| (q.allowed, q.remaining)), Some((true, 0)));
        assert_eq!(l.take(179).map(|q| q.allowed), Some(false));
        assert_eq!(l.take(180).map(|q| (q.allowed, q.remaining, q.reset)), Some((true, 1, 240)));
        assert!(PerMinute::new(0, 60).take(0).is_none());
    }
}

//! The per-minute call budget shared by every upstream call of the process: a GCRA limiter
//! (governor) at the configured rate, plus a pause when the upstream says the minute is
//! spent (`x-per-minute-remaining: 0`, or a `429`). Replicas of one service share both
//! through a [`SharedRate`] instead, and fall back to a local share of the rate while it
//! cannot be reached.

use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use tokio::time::Instant;

/// A rate and pause kept outside the process, for every replica of a service.
pub trait SharedRate: Send + Sync + std::fmt::Debug {
    /// Takes one call at `per_minute` (0: no rate, only a pause holds calls) with bursts of
    /// `burst`: `ZERO` when taken, else how long until one is free (nothing taken then).
    fn take(&self, per_minute: u32, burst: u32) -> BoxFuture<'static, Result<Duration, Unreachable>>;
    /// Holds every replica's calls until `wait` from now.
    fn pause(&self, wait: Duration) -> BoxFuture<'static, Result<(), Unreachable>>;
}

/// A future a [`SharedRate`] answers with.
pub type BoxFuture<'a, T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send + 'a>>;

/// Where a [`SharedRate`] is kept could not be reached.
#[derive(Debug, Clone, thiserror::Error)]
#[error("the shared rate could not be reached: {0}")]
pub struct Unreachable(pub String);

/// The shared rate, and what to do while it cannot be reached.
#[derive(Debug)]
struct Shared {
    rate: Arc<dyn SharedRate>,
    /// The local share of the rate used meanwhile; none: calls wait (and fail at their
    /// deadline) until it is back.
    fallback: Option<DefaultDirectRateLimiter>,
}

/// How long a call waits before asking a shared rate that could not be reached again,
/// when there is no local fallback.
const UNREACHABLE_WAIT: Duration = Duration::from_secs(1);

/// The budget. With no rate configured only the upstream's own signals pace calls.
#[derive(Debug)]
pub struct RateBudget {
    limiter: Option<DefaultDirectRateLimiter>,
    shared: Option<Shared>,
    per_minute: u32,
    burst: u32,
    /// The upstream's own per-minute limit, from its `x-per-minute-limit` header (0: unknown).
    learned_per_minute: AtomicU32,
    clock: DefaultClock,
    paused_until: Mutex<Option<Instant>>,
    /// Total time calls have waited here, in nanoseconds.
    waited_nanos: AtomicU64,
    /// With no rate configured, calls go unpaced while the shared pause cannot be read.
    unlimited_fallback: bool,
    /// Calls paced locally because the shared rate could not be reached.
    fallbacks: AtomicU64,
    /// When the configured rate is next free with no burst left (a GCRA's theoretical
    /// arrival time), as this process's own calls have spent it.
    tat: Mutex<Option<Instant>>,
}

fn limiter(per_minute: u32, burst: u32, clock: &DefaultClock) -> Option<DefaultDirectRateLimiter> {
    NonZeroU32::new(per_minute).map(|n| {
        let burst = NonZeroU32::new(burst.clamp(1, per_minute)).unwrap_or(NonZeroU32::MIN);
        RateLimiter::direct_with_clock(Quota::per_minute(n).allow_burst(burst), clock.clone())
    })
}

impl RateBudget {
    /// `per_minute` calls a minute (0 for no limit), at most `burst` at once. A burst of 1
    /// spaces calls evenly, which never exceeds the rate in any minute.
    pub fn new(per_minute: u32, burst: u32) -> RateBudget {
        let clock = DefaultClock::default();
        RateBudget {
            limiter: limiter(per_minute, burst, &clock),
            shared: None,
            per_minute,
            burst: burst.clamp(1, per_minute.max(1)),
            learned_per_minute: AtomicU32::new(0),
            clock,
            paused_until: Mutex::new(None),
            waited_nanos: AtomicU64::new(0),
            unlimited_fallback: false,
            fallbacks: AtomicU64::new(0),
            tat: Mutex::new(None),
        }
    }

    /// A budget of `per_minute` shared through `rate` with the other replicas. While it
    /// cannot be reached, calls take `fallback_per_minute` locally (the replica's share),
    /// or with none wait for it to come back.
    pub fn shared(
        per_minute: u32,
        burst: u32,
        rate: Arc<dyn SharedRate>,
        fallback_per_minute: Option<u32>,
    ) -> RateBudget {
        let mut budget = RateBudget::new(per_minute, burst);
        let fallback = match fallback_per_minute {
            Some(share) if per_minute > 0 => limiter(share.max(1), burst.min(share.max(1)), &budget.clock),
            _ => None,
        };
        let unlimited_fallback = fallback_per_minute.is_some() && per_minute == 0;
        budget.shared = Some(Shared { rate, fallback });
        budget.unlimited_fallback = unlimited_fallback;
        budget
    }

    /// The configured calls per minute, if any.
    pub fn configured_per_minute(&self) -> Option<u32> {
        (self.per_minute > 0).then_some(self.per_minute)
    }

    /// The calls per minute that bound how fast questions can be answered: the configured
    /// rate, else the upstream's limit as its headers last said.
    pub fn per_minute(&self) -> Option<u32> {
        self.configured_per_minute().or_else(|| {
            let learned = self.learned_per_minute.load(Ordering::Relaxed);
            (learned > 0).then_some(learned)
        })
    }

    /// Calls that may go at once within the configured rate.
    pub fn burst(&self) -> u32 {
        self.burst
    }

    /// Remembers the upstream's per-minute limit, as its `x-per-minute-limit` header says.
    pub fn learn_limit(&self, per_minute: u32) {
        self.learned_per_minute.store(per_minute, Ordering::Relaxed);
    }

    /// How long calls are held by a pause the upstream asked for, from now.
    pub fn paused_for(&self) -> Duration {
        let pause = *self.paused_until.lock().unwrap_or_else(|e| e.into_inner());
        pause.map(|until| until.saturating_duration_since(Instant::now())).unwrap_or_default()
    }

    /// Waits for a call to be free. `Ok` gives the time waited; `Err` the wait that would
    /// pass `deadline` (nothing is taken then).
    pub async fn acquire(&self, deadline: Instant) -> Result<Duration, Duration> {
        let started = Instant::now();
        let result = self.wait_for_room(deadline).await;
        let waited = started.elapsed();
        self.waited_nanos.fetch_add(waited.as_nanos() as u64, Ordering::Relaxed);
        result.map(|()| waited)
    }

    /// Calls paced by this process's share of the rate because the shared rate could not
    /// be reached, since the budget was made.
    pub fn fallbacks(&self) -> u64 {
        self.fallbacks.load(Ordering::Relaxed)
    }

    /// The total time calls have waited for the budget.
    pub fn waited(&self) -> Duration {
        Duration::from_nanos(self.waited_nanos.load(Ordering::Relaxed))
    }

    /// How far ahead of now the configured rate's calls are spent (zero when it has room
    /// for a whole burst): the calls this process made lately, paced.
    pub fn spent_ahead(&self) -> Duration {
        let tat = *self.tat.lock().unwrap_or_else(|e| e.into_inner());
        tat.map(|t| t.saturating_duration_since(Instant::now())).unwrap_or_default()
    }

    /// Counts one call taken now against the configured rate.
    fn spend(&self) {
        if self.per_minute == 0 {
            return;
        }
        let interval = Duration::from_secs(60) / self.per_minute;
        let now = Instant::now();
        let mut tat = self.tat.lock().unwrap_or_else(|e| e.into_inner());
        *tat = Some(tat.map_or(now, |t| t.max(now)) + interval);
    }

    async fn wait_for_room(&self, deadline: Instant) -> Result<(), Duration> {
        let room = self.wait_for_room_unspent(deadline).await;
        if room.is_ok() {
            self.spend();
        }
        room
    }

    async fn wait_for_room_unspent(&self, deadline: Instant) -> Result<(), Duration> {
        loop {
            let now = Instant::now();
            let pause = *self.paused_until.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(until) = pause.filter(|u| *u > now) {
                if until > deadline {
                    return Err(until - now);
                }
                tokio::time::sleep_until(until).await;
                continue;
            }
            let limiter = match &self.shared {
                None => &self.limiter,
                Some(shared) => match shared.rate.take(self.per_minute, self.burst).await {
                    Ok(wait) if wait.is_zero() => return Ok(()),
                    Ok(wait) => {
                        if now + wait > deadline {
                            return Err(wait);
                        }
                        tokio::time::sleep(wait).await;
                        continue;
                    }
                    Err(e) if shared.fallback.is_some() || self.unlimited_fallback => {
                        tracing::debug!(error = %e, "pacing calls by this replica's share of the rate");
                        self.fallbacks.fetch_add(1, Ordering::Relaxed);
                        &shared.fallback
                    }
                    Err(e) => {
                        tracing::debug!(error = %e, "waiting for the shared rate to be back");
                        if now + UNREACHABLE_WAIT > deadline {
                            return Err(UNREACHABLE_WAIT);
                        }
                        tokio::time::sleep(UNREACHABLE_WAIT).await;
                        continue;
                    }
                },
            };
            let Some(limiter) = limiter else {
                return Ok(());
            };
            match limiter.check() {
                Ok(()) => return Ok(()),
                Err(not_until) => {
                    let wait = not_until.wait_time_from(self.clock.now());
                    if now + wait > deadline {
                        return Err(wait);
                    }
                    tokio::time::sleep(wait).await;
                }
            }
        }
    }

    /// Holds every call until `wait` from now (the upstream said the minute is spent).
    pub fn pause_for(&self, wait: Duration) {
        let until = Instant::now() + wait;
        let mut p = self.paused_until.lock().unwrap_or_else(|e| e.into_inner());
        if p.is_none_or(|current| current < until) {
            *p = Some(until);
        }
        drop(p);
        if let Some(shared) = &self.shared {
            let pause = shared.rate.pause(wait);
            tokio::spawn(async move {
                if let Err(e) = pause.await {
                    tracing::debug!(error = %e, "the pause could not be shared");
                }
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn unlimited_budget_never_waits_and_a_pause_holds_calls() {
        let b = RateBudget::new(0, 1);
        let far = Instant::now() + Duration::from_secs(60);
        assert!(b.acquire(far).await.is_ok());
        b.pause_for(Duration::from_secs(30));
        let soon = Instant::now() + Duration::from_secs(1);
        let err = b.acquire(soon).await.unwrap_err();
        assert!(err > Duration::from_secs(25), "{err:?}");
    }

    #[test]
    fn the_rate_is_the_configured_one_else_the_learned_one() {
        let unset = RateBudget::new(0, 1);
        assert_eq!(unset.per_minute(), None);
        unset.learn_limit(450);
        assert_eq!((unset.per_minute(), unset.configured_per_minute()), (Some(450), None));
        let set = RateBudget::new(300, 5);
        set.learn_limit(450);
        assert_eq!((set.per_minute(), set.burst()), (Some(300), 5));
    }

    #[tokio::test]
    async fn the_rate_refuses_what_would_pass_the_deadline() {
        let b = RateBudget::new(60, 1);
        let soon = Instant::now() + Duration::from_millis(100);
        assert!(b.acquire(soon).await.is_ok(), "the first call is free");
        let wait = b.acquire(soon).await.unwrap_err();
        assert!(wait > Duration::from_millis(500), "the next is a second away: {wait:?}");
    }
}

//! How this replica shares state with the others through Redis (`[redis]`): the budget,
//! facts, calls in flight, the month's ledger and OAuth nonces; and what it does while Redis
//! is away (`redis.on_failure`): carry on alone, or refuse what needs Redis.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use replicas::rate::RedisRate;
use replicas::{Redis, Unreachable};
use secrecy::ExposeSecret;
use store::{Admission, LedgerEntry, Store};
use upstream::RateBudget;

use crate::config::{OnFailure, RedisSettings};
use crate::error::EngineError;
use crate::ledger::{Ledger, LocalLedger};
use crate::metrics;

/// How often Redis is probed, so readiness and fallbacks follow it, and how long a client
/// refused while it is away is asked to wait.
const PROBE_EVERY: Duration = Duration::from_secs(1);

/// Every this many probes, this replica's handles of the month are added to Redis again
/// (idempotently), in case Redis lost them (restarted without persistence, say).
const LEDGER_EVERY: u32 = 60;

/// What a replica does alone while Redis is away (the label of
/// `stitcher_redis_fallbacks_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Alone {
    /// Pacing calls by its share of the budget.
    Budget,
    /// Answering from its own store and calls.
    Facts,
    /// Counting handles in its own ledger.
    Ledger,
    /// Checking OAuth nonces against those it has seen.
    Nonce,
    /// Showing the month's usage from its own ledger.
    Usage,
}

impl Alone {
    /// The metric's label.
    pub fn label(self) -> &'static str {
        match self {
            Alone::Budget => "budget",
            Alone::Facts => "facts",
            Alone::Ledger => "ledger",
            Alone::Nonce => "nonce",
            Alone::Usage => "usage",
        }
    }
}

/// The Redis this replica shares state through, and its policy while Redis is away.
#[derive(Debug)]
pub struct Sharing {
    pub redis: Arc<Redis>,
    pub on_failure: OnFailure,
    expected_replicas: u32,
    /// A handle was counted in this replica's ledger alone: Redis must be told.
    owes_ledger: AtomicBool,
}

impl Sharing {
    /// The sharing `settings` ask for; none without `redis.url`.
    pub fn from_settings(settings: &RedisSettings) -> anyhow::Result<Option<Arc<Sharing>>> {
        let Some(url) = &settings.url else { return Ok(None) };
        let redis = Redis::connect(url.expose_secret(), &settings.key_prefix)?;
        Ok(Some(Arc::new(Sharing {
            redis,
            on_failure: settings.on_failure,
            expected_replicas: settings.expected_replicas,
            owes_ledger: AtomicBool::new(false),
        })))
    }

    /// The per-minute budget of every replica together; while Redis is away, this
    /// replica's share (`local`) or none (`refuse`: calls wait for Redis).
    pub fn budget(&self, per_minute: u32, burst: u32) -> RateBudget {
        let share = match self.on_failure {
            OnFailure::Local => Some(per_minute / self.expected_replicas.max(1)),
            OnFailure::Refuse => None,
        };
        RateBudget::shared(per_minute, burst, RedisRate::new(Arc::clone(&self.redis)), share)
    }

    /// What Redis answered; or, when it could not be reached, `None` if this replica may do
    /// `what` alone, which is logged and counted; else the client's `503`.
    pub fn or_alone<T>(
        &self,
        what: Alone,
        answered: Result<T, Unreachable>,
    ) -> Result<Option<T>, EngineError> {
        match answered {
            Ok(answer) => Ok(Some(answer)),
            Err(e) => {
                tracing::debug!(error = %e, what = what.label(), "Redis could not be asked");
                match self.on_failure {
                    OnFailure::Local => {
                        metrics::redis_fallback(what.label());
                        if what == Alone::Ledger {
                            // Handles counted alone are added to Redis's ledger when it returns.
                            self.owes_ledger.store(true, Ordering::Relaxed);
                        }
                        Ok(None)
                    }
                    OnFailure::Refuse => Err(self.away()),
                }
            }
        }
    }

    /// Refuses a question that needs the upstream while Redis is away under `refuse`.
    pub fn check(&self) -> Result<(), EngineError> {
        if self.redis.is_up() || self.on_failure == OnFailure::Local { Ok(()) } else { Err(self.away()) }
    }

    fn away(&self) -> EngineError {
        EngineError::SharedStateAway { retry_after: PROBE_EVERY }
    }

    /// Probes Redis every second while the service lives, so readiness and fallbacks follow
    /// it; adds to Redis the handles this replica counted alone as soon as it is back (and
    /// all of this month's, now and then, in case Redis lost them); counts the calls `budget`
    /// paced alone.
    pub fn watch(self: &Arc<Self>, store: Arc<Store>, budget: Arc<RateBudget>) {
        let sharing: Weak<Sharing> = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut every = tokio::time::interval(PROBE_EVERY);
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let (mut ticks, mut paced_alone) = (0u32, 0u64);
            loop {
                every.tick().await;
                let Some(sharing) = sharing.upgrade() else { return };
                let (up, was_away) = sharing.redis.probe().await;
                metrics::redis_up(up);
                let fallbacks = budget.fallbacks();
                for _ in paced_alone..fallbacks {
                    metrics::redis_fallback(Alone::Budget.label());
                }
                paced_alone = fallbacks;
                ticks = ticks.wrapping_add(1);
                let owed = sharing.owes_ledger.load(Ordering::Relaxed);
                if up && (was_away || owed || ticks % LEDGER_EVERY == 1) && sharing.catch_up(&store).await {
                    sharing.owes_ledger.store(false, Ordering::Relaxed);
                }
            }
        });
    }

    /// Adds the month's handles this replica counted to Redis, keeping first calls Redis
    /// has; whether that was done.
    async fn catch_up(&self, store: &Arc<Store>) -> bool {
        let now = chrono::Utc::now();
        let entries = match LocalLedger::new(Arc::clone(store)).month(now).await {
            Ok(entries) => entries,
            Err(e) => {
                tracing::warn!(error = %e, "the handle ledger could not be read");
                return false;
            }
        };
        match self.redis.catch_up(now, &entries).await {
            Ok(()) => {
                tracing::debug!(handles = entries.len(), "this replica's ledger is in Redis");
                true
            }
            Err(e) => {
                tracing::warn!(error = %e, "the month's ledger could not be shared yet");
                false
            }
        }
    }
}

/// The ledger of every replica, in Redis. This replica's store keeps what it counts too:
/// while Redis is away (under `local`) that is the ledger, and it is added back to Redis
/// when Redis returns.
#[derive(Debug)]
pub struct SharedLedger {
    sharing: Arc<Sharing>,
    local: LocalLedger,
}

impl SharedLedger {
    /// The ledger in `sharing`'s Redis, beside `local`.
    pub fn new(sharing: Arc<Sharing>, local: LocalLedger) -> SharedLedger {
        SharedLedger { sharing, local }
    }
}

#[async_trait]
impl Ledger for SharedLedger {
    async fn admit(
        &self,
        handle: &str,
        now: DateTime<Utc>,
        cap: Option<usize>,
        refuse: bool,
    ) -> Result<Admission, EngineError> {
        let answered = self.sharing.redis.admit_handle(handle, now, cap, refuse).await;
        match self.sharing.or_alone(Alone::Ledger, answered)? {
            Some(refused @ Admission::Refused { .. }) => Ok(refused),
            Some(shared) => {
                // Kept here too, uncapped: Redis has judged it.
                self.local.admit(handle, now, None, false).await?;
                Ok(shared)
            }
            None => self.local.admit(handle, now, cap, refuse).await,
        }
    }

    async fn month(&self, now: DateTime<Utc>) -> Result<Vec<LedgerEntry>, EngineError> {
        let answered = self.sharing.redis.handles_in_month(now).await;
        match self.sharing.or_alone(Alone::Usage, answered)? {
            Some(month) => Ok(month),
            None => self.local.month(now).await,
        }
    }
}

//! How this replica shares state with the others through Redis (`[redis]`): the budget,
//! the month's ledger and OAuth nonces; and what it does while Redis is away
//! (`redis.on_failure`): carry on alone, or refuse what needs the upstream.

use std::sync::{Arc, Weak};
use std::time::Duration;

use replicas::Redis;
use replicas::rate::RedisRate;
use secrecy::ExposeSecret;
use store::Store;
use upstream::RateBudget;

use crate::error::ServiceError;
use crate::metrics;
use crate::settings::{OnFailure, RedisSettings};

/// How often Redis is probed, so readiness and fallbacks follow it, and how long a client
/// refused while it is away is asked to wait.
const PROBE_EVERY: Duration = Duration::from_secs(1);

/// The Redis this replica shares state through, and its policy while Redis is away.
#[derive(Debug)]
pub struct Sharing {
    pub redis: Arc<Redis>,
    pub on_failure: OnFailure,
    expected_replicas: u32,
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

    /// Whether what Redis could not do may be done alone, noting it (`what` it was); the
    /// client's error when it may not.
    pub fn fall_back(&self, what: &'static str) -> Result<(), ServiceError> {
        match self.on_failure {
            OnFailure::Local => {
                metrics::redis_fallback(what);
                Ok(())
            }
            OnFailure::Refuse => Err(self.away()),
        }
    }

    /// Refuses a question that needs the upstream while Redis is away under `refuse`.
    pub fn check(&self) -> Result<(), ServiceError> {
        if self.redis.is_up() || self.on_failure == OnFailure::Local { Ok(()) } else { Err(self.away()) }
    }

    fn away(&self) -> ServiceError {
        ServiceError::SharedStateAway { retry_after: PROBE_EVERY }
    }

    /// Probes Redis every second while the service lives, so readiness and fallbacks follow
    /// it; when it comes back, the handles this replica counted alone meanwhile are added.
    pub fn watch(self: &Arc<Self>, store: Arc<Store>) {
        let sharing: Weak<Sharing> = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut every = tokio::time::interval(PROBE_EVERY);
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                every.tick().await;
                let Some(sharing) = sharing.upgrade() else { return };
                let (up, was_away) = sharing.redis.probe().await;
                metrics::redis_up(up);
                if up && was_away {
                    sharing.catch_up(&store).await;
                }
            }
        });
    }

    /// Adds the month's handles this replica counted to Redis, keeping first calls Redis has.
    async fn catch_up(&self, store: &Arc<Store>) {
        let now = chrono::Utc::now();
        let local = {
            let store = Arc::clone(store);
            tokio::task::spawn_blocking(move || store.handles_in_month(now)).await
        };
        match local {
            Ok(Ok(entries)) => match self.redis.catch_up(now, &entries).await {
                Ok(()) => tracing::info!(handles = entries.len(), "the month's ledger is shared again"),
                Err(e) => tracing::warn!(error = %e, "the month's ledger could not be shared yet"),
            },
            Ok(Err(e)) => tracing::warn!(error = %e, "the handle ledger could not be read"),
            Err(e) => tracing::warn!(error = %e, "reading the handle ledger failed"),
        }
    }
}

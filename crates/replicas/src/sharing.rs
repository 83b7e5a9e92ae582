//! The engine's ports on Redis (`[redis]`): the budget, facts, leases on calls in flight,
//! the month's ledger and OAuth nonces, each shared by every replica; and what a replica
//! does while Redis is away (`redis.on_failure`): carry on alone, or refuse what needs
//! Redis. That is decided here, once, for every port.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock, Weak};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use engagement::TweetId;
use engine::EngineError;
use engine::config::{OnFailure, RedisSettings};
use engine::metrics;
use engine::ports::{
    Admission, Claim, Clock, FactsTier, Fetched, Held, Leases, Ledger, LedgerEntry, Nonces, Readiness,
    Shared, SharedRate, SharedState, SystemClock, Told, Wanted,
};
use secrecy::ExposeSecret;

use engine::watches::{Watch, WatchBook, read_record, write_record};

use crate::clock::RedisClock;
use crate::rate::RedisRate;
use crate::{BadUrl, Redis, Unreachable};

/// How often Redis is probed, so readiness and fallbacks follow it, and how long a client
/// refused while it is away is asked to wait.
const PROBE_EVERY: Duration = Duration::from_secs(1);

/// Every this many probes, this replica's handles of the month are added to Redis again
/// (idempotently), in case Redis lost them (restarted without persistence, say).
const LEDGER_EVERY: u32 = 60;

/// What a replica does alone while Redis is away (the label of
/// `stitcher_redis_fallbacks_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Alone {
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
    redis: Arc<Redis>,
    on_failure: OnFailure,
    expected_replicas: u32,
    /// How long a call's lease is taken for (`redis.lease_secs`).
    lease: Duration,
    /// A handle was counted in this replica's ledger alone: Redis must be told.
    owes_ledger: AtomicBool,
    /// The clock on Redis's time, once [`Sharing::clock`] has made it.
    clock: OnceLock<Arc<RedisClock>>,
}

impl Sharing {
    /// The sharing `settings` ask for; none without `redis.url`.
    pub fn from_settings(settings: &RedisSettings) -> Result<Option<Arc<Sharing>>, BadUrl> {
        let Some(url) = &settings.url else { return Ok(None) };
        let redis = Redis::connect(url.expose_secret(), &settings.key_prefix)?;
        Ok(Some(Arc::new(Sharing {
            redis,
            on_failure: settings.on_failure,
            expected_replicas: settings.expected_replicas,
            lease: Duration::from_secs(settings.lease_secs),
            owes_ledger: AtomicBool::new(false),
            clock: OnceLock::new(),
        })))
    }

    /// The per-minute budget of every replica together, and what of `per_minute` this
    /// replica may use alone while Redis is away: its share (`local`) or none (`refuse`:
    /// calls wait for Redis).
    pub fn rate(&self, per_minute: u32) -> (Arc<dyn SharedRate>, Option<u32>) {
        (RedisRate::new(Arc::clone(&self.redis)), self.alone_share(per_minute))
    }

    /// `client`'s per-minute cap across every replica, and what of `per_minute` this replica
    /// may use alone while Redis is away (as for the deployment's budget).
    pub fn client_rate(&self, client: &str, per_minute: u32) -> (Arc<dyn SharedRate>, Option<u32>) {
        (RedisRate::of_client(Arc::clone(&self.redis), client), self.alone_share(per_minute))
    }

    /// What of `per_minute` this replica takes alone while Redis is away: its share
    /// (`local`), or none (`refuse`).
    fn alone_share(&self, per_minute: u32) -> Option<u32> {
        match self.on_failure {
            OnFailure::Local => Some((per_minute / self.expected_replicas.max(1)).max(1)),
            OnFailure::Refuse => None,
        }
    }

    /// `given`'s time on Redis's clock, so every replica judges settling, freshness and
    /// months alike; read again at each probe, carried on by this machine's clock between
    /// readings and while Redis is away (a clock never refuses).
    pub fn clock(&self, given: Arc<dyn Clock>) -> Arc<dyn Clock> {
        let clock = self.clock.get_or_init(|| Arc::new(RedisClock::new(given, Arc::new(SystemClock))));
        Arc::clone(clock) as Arc<dyn Clock>
    }

    /// The ports on Redis, each falling back on `alone`'s (the ledger and nonces of this
    /// replica) while Redis is away, as `redis.on_failure` says.
    pub fn ports(self: &Arc<Self>, alone: Shared) -> Shared {
        Shared {
            facts: Arc::new(SharedFacts(Arc::clone(self))),
            leases: Arc::new(SharedLeases(Arc::clone(self))),
            ledger: Arc::new(SharedLedger { sharing: Arc::clone(self), local: alone.ledger }),
            nonces: Arc::new(SharedNonces { sharing: Arc::clone(self), local: alone.nonces }),
            state: Arc::clone(self) as Arc<dyn SharedState>,
            watches: Arc::new(SharedWatches(Arc::clone(self))),
        }
    }

    /// What Redis answered; or, when it could not be reached, `None` if this replica may do
    /// `what` alone, which is logged and counted; else the client's `503`.
    fn or_alone<T>(&self, what: Alone, answered: Result<T, Unreachable>) -> Result<Option<T>, EngineError> {
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

    fn away(&self) -> EngineError {
        EngineError::SharedStateAway { retry_after: PROBE_EVERY }
    }

    /// Probes Redis every second while the service lives, so readiness and fallbacks follow
    /// it; adds to Redis the handles this replica counted alone as soon as it is back (and
    /// all of this month's, now and then, in case Redis lost them); counts the calls `budget`
    /// paced alone.
    pub fn watch(
        self: &Arc<Self>,
        (local, clock): (Arc<dyn Ledger>, Arc<dyn Clock>),
        fallbacks: impl Fn() -> u64 + Send + 'static,
    ) {
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
                if up && let Some(clock) = sharing.clock.get() {
                    let _ = clock.read(&sharing.redis).await;
                }
                let fallbacks = fallbacks();
                for _ in paced_alone..fallbacks {
                    metrics::redis_fallback(Alone::Budget.label());
                }
                paced_alone = fallbacks;
                ticks = ticks.wrapping_add(1);
                let owed = sharing.owes_ledger.load(Ordering::Relaxed);
                if up
                    && (was_away || owed || ticks % LEDGER_EVERY == 1)
                    && sharing.catch_up(local.as_ref(), clock.now()).await
                {
                    sharing.owes_ledger.store(false, Ordering::Relaxed);
                }
            }
        });
    }

    /// Adds the month's handles this replica counted to Redis, keeping first calls Redis
    /// has; whether that was done.
    async fn catch_up(&self, local: &dyn Ledger, now: DateTime<Utc>) -> bool {
        let entries = match local.month(now).await {
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

impl SharedState for Sharing {
    fn check(&self) -> Result<(), EngineError> {
        if self.redis.is_up() || self.on_failure == OnFailure::Local { Ok(()) } else { Err(self.away()) }
    }

    fn readiness(&self) -> Option<Readiness> {
        Some(match (self.redis.is_up(), self.on_failure) {
            (true, _) => Readiness { said: "up", ready: true },
            (false, OnFailure::Local) => {
                Readiness { said: "unreachable: answering alone (redis.on_failure = local)", ready: true }
            }
            (false, OnFailure::Refuse) => Readiness { said: "unreachable", ready: false },
        })
    }
}

/// The ledger of every replica, in Redis. This replica's store keeps what it counts too:
/// while Redis is away (under `local`) that is the ledger, and it is added back to Redis
/// when Redis returns.
#[derive(Debug)]
struct SharedLedger {
    sharing: Arc<Sharing>,
    local: Arc<dyn Ledger>,
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

/// Watches in Redis, seen by every replica. While Redis is away they cannot be made,
/// shown or refreshed (`503`): a replica's own list would differ from the others'.
#[derive(Debug)]
struct SharedWatches(Arc<Sharing>);

impl SharedWatches {
    fn answered<T>(&self, answered: Result<T, Unreachable>) -> Result<T, EngineError> {
        answered.map_err(|e| {
            tracing::debug!(error = %e, "watches could not be read or written in Redis");
            self.0.away()
        })
    }
}

#[async_trait]
impl WatchBook for SharedWatches {
    async fn all(&self) -> Result<Vec<Watch>, EngineError> {
        let records = self.answered(self.0.redis.watches().await)?;
        Ok(records.iter().filter_map(|(id, record)| read_record(id, record)).collect())
    }

    async fn get(&self, id: &str) -> Result<Option<Watch>, EngineError> {
        let record = self.answered(self.0.redis.watch(id).await)?;
        Ok(record.and_then(|record| read_record(id, &record)))
    }

    async fn put(&self, watch: &Watch, add: bool) -> Result<bool, EngineError> {
        let record = write_record(watch)?;
        self.answered(self.0.redis.put_watch(&watch.id, &record, add).await)
    }

    async fn remove(&self, id: &str) -> Result<bool, EngineError> {
        self.answered(self.0.redis.remove_watch(id).await)
    }
}

/// Nonces seen by any replica. This replica remembers them too, so a replay is refused
/// here even while Redis is away.
#[derive(Debug)]
struct SharedNonces {
    sharing: Arc<Sharing>,
    local: Arc<dyn Nonces>,
}

#[async_trait]
impl Nonces for SharedNonces {
    async fn first_use(&self, nonce: &str) -> Result<bool, EngineError> {
        let here = self.local.first_use(nonce).await?;
        let anywhere = self.sharing.redis.first_use_of_nonce(nonce, self.local.life()).await;
        Ok(self.sharing.or_alone(Alone::Nonce, anywhere)?.map_or(here, |first| first && here))
    }

    fn life(&self) -> Duration {
        self.local.life()
    }
}

/// The facts tier in Redis. A read or write that fails is logged and counted; the question
/// goes on with what it has.
#[derive(Debug)]
struct SharedFacts(Arc<Sharing>);

impl SharedFacts {
    fn answered<T>(&self, what: &str, answered: Result<T, Unreachable>) -> Option<T> {
        answered
            .inspect_err(|e| {
                tracing::debug!(error = %e, "{what}");
                metrics::redis_fallback(Alone::Facts.label());
            })
            .ok()
    }
}

#[async_trait]
impl FactsTier for SharedFacts {
    fn reachable(&self) -> bool {
        self.0.redis.is_up()
    }

    async fn read(&self, handle: &str, wanted: Wanted<'_>, statuses_of: &[TweetId]) -> Option<Held> {
        let redis = &self.0.redis;
        let Wanted { hours, slots, unsettled_from } = wanted;
        let (hours, statuses, refused) = tokio::join!(
            redis.get_facts(handle, hours, slots, unsettled_from),
            redis.get_statuses(handle, statuses_of),
            redis.get_refusals(handle, statuses_of),
        );
        let read = hours.and_then(|hours| Ok(Held { hours, statuses: statuses?, refused: refused? }));
        self.answered("the shared facts could not be read", read)
    }

    async fn give(&self, fetched: Fetched<'_>) {
        let redis = &self.0.redis;
        let Fetched {
            handle,
            slots,
            hours,
            statuses,
            unsettled_from,
            fresh_ttl,
            fetched_at,
            status_ttl,
            now,
        } = fetched;
        let (counts, statuses) = tokio::join!(
            redis.put_facts(handle, slots, hours, unsettled_from, fresh_ttl),
            redis.put_statuses(handle, statuses, (fetched_at, now), status_ttl),
        );
        self.answered("what was fetched could not be shared", counts.and(statuses));
    }

    async fn tell(&self, told: Told<'_>) {
        let Told { handle, refused, at, status_ttl, now } = told;
        let put = self.0.redis.put_refusals(handle, refused, (at, now), status_ttl).await;
        self.answered("a refusal could not be shared", put);
    }
}

/// Leases on calls, in Redis.
#[derive(Debug)]
struct SharedLeases(Arc<Sharing>);

#[async_trait]
impl Leases for SharedLeases {
    fn term(&self) -> Duration {
        self.0.lease
    }

    async fn claim(&self, name: &str, ttl: Duration) -> Claim {
        let holder = format!("{:016x}", fastrand::u64(..));
        match self.0.redis.take_lease(name, &holder, ttl).await {
            Ok(true) => Claim::Ours { holder },
            Ok(false) => Claim::Theirs,
            Err(_) => Claim::Nobody,
        }
    }

    async fn held(&self, name: &str) -> Option<bool> {
        self.0.redis.lease_held(name).await.ok()
    }

    async fn renew(&self, name: &str, holder: &str, ttl: Duration) -> bool {
        self.0.redis.renew_lease(name, holder, ttl).await.unwrap_or(false)
    }

    async fn release(&self, name: &str, holder: &str) {
        if let Err(e) = self.0.redis.release_lease(name, holder).await {
            tracing::debug!(error = %e, "a call's lease could not be given up (it expires)");
        }
    }
}

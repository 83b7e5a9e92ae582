//! What the replicas of one service share, as ports the engine and the server ask through:
//! the facts fetched ([`FactsTier`]), leases on calls in flight ([`Leases`]), the month's
//! handle ledger ([`Ledger`]), OAuth nonces ([`Nonces`]), whether shared state can be
//! reached ([`SharedState`]), where watches are kept ([`WatchBook`]), and the per-minute budget ([`SharedRate`], which the call
//! policy paces by). Beside them, the [`Clock`] every judgment of wall time reads: what has
//! settled, what is still fresh, which month a call counts in, when a job's result expires.
//!
//! [`Shared::alone`] is a service with no replicas: its own store's ledger, its own nonces,
//! nothing to share facts or leases with. The `replicas` crate implements every port on
//! Redis; what happens while Redis is away (`redis.on_failure`) lives there, inside each
//! implementation, never at a call site.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use engagement::TweetId;
use store::Store;

use crate::error::EngineError;
pub use crate::ledger::{Ledger, LocalLedger};
pub use crate::watch_book::{LocalWatchBook, WatchBook};
pub use engagement::slots::Hour;
pub use store::ledger::month_of;
pub use store::{Admission, LedgerEntry, Refused};
pub use upstream::budget::{BoxFuture, SharedRate, Unreachable};

/// Hours of Tweets as the store keeps them: per Tweet, (hour number, counts by slot).
pub type TweetHours = HashMap<TweetId, Vec<(i64, Hour)>>;

pub use store::Hours;

/// Hours of Tweets as one call brought them: per Tweet, the counts of the call's types.
pub type CallHours = HashMap<TweetId, Hours>;

/// What calls told of Tweets: per Tweet, whether it was deleted, and when that was learned.
pub type Statuses = HashMap<TweetId, (bool, DateTime<Utc>)>;

/// Hours wanted from the facts tier: per Tweet, hour numbers, each with every slot of
/// `slots`; from `unsettled_from` on those still fresh, before it the settled ones.
#[derive(Debug, Clone, Copy)]
pub struct Wanted<'a> {
    pub hours: &'a HashMap<TweetId, Vec<i64>>,
    pub slots: u32,
    pub unsettled_from: i64,
}

/// What calls told of Tweets they were refused for: per Tweet, the refusal, and when it
/// was learned.
pub type Refusals = HashMap<TweetId, (Refused, DateTime<Utc>)>;

/// What the facts tier held of a read.
#[derive(Debug, Default)]
pub struct Held {
    pub hours: TweetHours,
    pub statuses: Statuses,
    /// Of the Tweets whose statuses were asked, those a call was refused for.
    pub refused: Refusals,
}

/// What one refused call told of its Tweets, for the other replicas.
#[derive(Debug, Clone, Copy)]
pub struct Told<'a> {
    pub handle: &'a str,
    pub refused: &'a [(TweetId, Refused)],
    /// When the call was sent; the refusals live `status_ttl` from then.
    pub at: DateTime<Utc>,
    pub status_ttl: Duration,
    /// The time now, by the engine's clock.
    pub now: DateTime<Utc>,
}

/// What one call fetched, for the other replicas.
#[derive(Debug, Clone, Copy)]
pub struct Fetched<'a> {
    pub handle: &'a str,
    /// The slots (types) `hours` hold.
    pub slots: u32,
    pub hours: &'a CallHours,
    /// Each Tweet the call asked for, and whether it was deleted.
    pub statuses: &'a [(TweetId, bool)],
    /// Hours from this one on are not settled: they live `fresh_ttl`, the others for good.
    pub unsettled_from: i64,
    pub fresh_ttl: Duration,
    /// When the call was sent; statuses live `status_ttl` from then.
    pub fetched_at: DateTime<Utc>,
    pub status_ttl: Duration,
    /// The time now, by the engine's clock.
    pub now: DateTime<Utc>,
}

/// The facts every replica has fetched. A read that fails costs calls, never an answer: it
/// is `None`, and the implementation logs and counts it.
#[async_trait]
pub trait FactsTier: Send + Sync + std::fmt::Debug {
    /// Whether a read may find anything now.
    fn reachable(&self) -> bool;

    /// What is held for `handle`: of `wanted`, the hours it holds; of `statuses_of`, what
    /// is known of each Tweet and still trusted. `None` when it could not be read (counted
    /// once, as one fallback).
    async fn read(&self, handle: &str, wanted: Wanted<'_>, statuses_of: &[TweetId]) -> Option<Held>;

    /// Shares what one call fetched.
    async fn give(&self, fetched: Fetched<'_>);

    /// Shares what one refused call told of its Tweets.
    async fn tell(&self, told: Told<'_>);
}

/// Who makes a call that several replicas need at once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// This replica makes it, holding the lease as `holder` until it gives it up.
    Ours { holder: String },
    /// Another replica is making it: wait for what it writes.
    Theirs,
    /// Nobody could be asked: make it.
    Nobody,
}

/// Leases on calls in flight, so a call several replicas need is made by one of them.
#[async_trait]
pub trait Leases: Send + Sync + std::fmt::Debug {
    /// How long a lease is taken or renewed for.
    fn term(&self) -> Duration;

    /// Claims the call named `name` for `ttl` (past it, another replica may make it).
    async fn claim(&self, name: &str, ttl: Duration) -> Claim;

    /// Whether someone holds the lease on `name`; `None` when that cannot be known.
    async fn held(&self, name: &str) -> Option<bool>;

    /// Keeps the lease `holder` took on `name` for `ttl` more; whether it still holds it.
    async fn renew(&self, name: &str, holder: &str, ttl: Duration) -> bool;

    /// Gives up the lease `holder` took on `name` (else it expires).
    async fn release(&self, name: &str, holder: &str);
}

/// OAuth nonces, used once.
#[async_trait]
pub trait Nonces: Send + Sync + std::fmt::Debug {
    /// Records `nonce` (qualified by its token); whether this is its first use. An error is
    /// the client's answer (shared state away under `redis.on_failure = "refuse"`).
    async fn first_use(&self, nonce: &str) -> Result<bool, EngineError>;

    /// How long a nonce is remembered (one older than that is refused by its timestamp).
    fn life(&self) -> Duration;
}

/// How shared state stands, for readiness.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Readiness {
    /// What `/readyz` says of it.
    pub said: &'static str,
    /// Whether the service takes questions meanwhile.
    pub ready: bool,
}

/// Whether the state replicas share can be reached.
pub trait SharedState: Send + Sync + std::fmt::Debug {
    /// Refuses a question that needs the upstream while shared state is away and the
    /// service may not do without it.
    fn check(&self) -> Result<(), EngineError>;

    /// How it stands; `None` with no replicas.
    fn readiness(&self) -> Option<Readiness>;
}

/// Every port, as one service sees them.
#[derive(Debug, Clone)]
pub struct Shared {
    pub facts: Arc<dyn FactsTier>,
    pub leases: Arc<dyn Leases>,
    pub ledger: Arc<dyn Ledger>,
    pub nonces: Arc<dyn Nonces>,
    pub state: Arc<dyn SharedState>,
    /// Where watches are kept.
    pub watches: Arc<dyn WatchBook>,
}

impl Shared {
    /// A service alone: `store`'s ledger, nonces remembered `nonce_life` here, nothing else
    /// shared.
    pub fn alone(store: Arc<Store>, nonce_life: Duration) -> Shared {
        let alone = Arc::new(Alone);
        Shared {
            facts: alone.clone(),
            leases: alone.clone(),
            ledger: Arc::new(LocalLedger::new(Arc::clone(&store))),
            nonces: Arc::new(LocalNonces::new(nonce_life)),
            state: alone,
            watches: Arc::new(LocalWatchBook::new(store)),
        }
    }
}

/// No replicas: no facts but the store's, every call this service's to make.
#[derive(Debug, Clone, Copy)]
struct Alone;

#[async_trait]
impl FactsTier for Alone {
    fn reachable(&self) -> bool {
        false
    }

    async fn read(&self, _: &str, _: Wanted<'_>, _: &[TweetId]) -> Option<Held> {
        None
    }

    async fn give(&self, _: Fetched<'_>) {}

    async fn tell(&self, _: Told<'_>) {}
}

#[async_trait]
impl Leases for Alone {
    fn term(&self) -> Duration {
        Duration::from_secs(30)
    }

    async fn claim(&self, _: &str, _: Duration) -> Claim {
        Claim::Nobody
    }

    async fn held(&self, _: &str) -> Option<bool> {
        None
    }

    async fn renew(&self, _: &str, _: &str, _: Duration) -> bool {
        true
    }

    async fn release(&self, _: &str, _: &str) {}
}

impl SharedState for Alone {
    fn check(&self) -> Result<(), EngineError> {
        Ok(())
    }

    fn readiness(&self) -> Option<Readiness> {
        None
    }
}

/// Wall-clock time. Durations and deadlines are `tokio::time`'s, which tests pause; this is
/// the time of day facts are judged by: [`SystemClock`] alone, [`MovedClock`] in tests, and
/// Redis's clock with replicas (`replicas::clock`).
pub trait Clock: Send + Sync + std::fmt::Debug {
    fn now(&self) -> DateTime<Utc>;
}

/// The system's clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// The system's clock, moved ahead by hand: tests of TTLs, settling and expiry pass time
/// without waiting for it.
#[derive(Debug, Default)]
pub struct MovedClock {
    ahead: Mutex<chrono::Duration>,
}

impl MovedClock {
    /// Moves the clock `by` further ahead.
    pub fn advance(&self, by: Duration) {
        let by = chrono::Duration::from_std(by).unwrap_or(chrono::Duration::MAX);
        let mut ahead = self.ahead.lock().unwrap_or_else(|p| p.into_inner());
        *ahead = ahead.checked_add(&by).unwrap_or(chrono::Duration::MAX);
    }
}

impl Clock for MovedClock {
    fn now(&self) -> DateTime<Utc> {
        let ahead = *self.ahead.lock().unwrap_or_else(|p| p.into_inner());
        Utc::now().checked_add_signed(ahead).unwrap_or(DateTime::<Utc>::MAX_UTC)
    }
}

/// Nonces seen by this process, each remembered for a while (a nonce older than that is
/// refused by its timestamp anyway).
#[derive(Debug)]
pub struct LocalNonces {
    seen: moka::sync::Cache<String, ()>,
}

impl LocalNonces {
    /// Nonces remembered for `life`.
    pub fn new(life: Duration) -> LocalNonces {
        LocalNonces { seen: moka::sync::Cache::builder().time_to_live(life).max_capacity(1_000_000).build() }
    }
}

#[async_trait]
impl Nonces for LocalNonces {
    async fn first_use(&self, nonce: &str) -> Result<bool, EngineError> {
        Ok(self.seen.entry(nonce.to_string()).or_insert(()).is_fresh())
    }

    fn life(&self) -> Duration {
        self.seen.policy().time_to_live().unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_moved_clock_runs_ahead_of_the_system_by_what_it_was_moved() {
        let clock = MovedClock::default();
        let before = Utc::now();
        clock.advance(Duration::from_secs(3600));
        clock.advance(Duration::from_secs(60));
        let moved = clock.now();
        let after = Utc::now();
        assert!(moved >= before + chrono::Duration::seconds(3660), "{moved} vs {before}");
        assert!(moved <= after + chrono::Duration::seconds(3660), "{moved} vs {after}");
    }

    #[tokio::test]
    async fn a_nonce_is_fresh_once() {
        let nonces = LocalNonces::new(Duration::from_secs(600));
        assert!(nonces.first_use("token:abc").await.unwrap_or(false));
        assert!(!nonces.first_use("token:abc").await.unwrap_or(true), "a replay");
        assert!(nonces.first_use("token:abd").await.unwrap_or(false));
        assert_eq!(nonces.life(), Duration::from_secs(600));
    }
}

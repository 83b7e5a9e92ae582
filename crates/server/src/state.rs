//! What every request shares: settings, clients, the upstream, the scheduler.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use engagement::Limits;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use upstream::{RateBudget, RetryPolicy, Upstream};

use crate::auth::Keyring;
use crate::scheduler::Scheduler;
use crate::settings::Settings;

/// The service's shared state.
#[derive(Debug)]
pub struct AppState {
    pub settings: Settings,
    pub keyring: Keyring,
    pub upstream: Arc<dyn Upstream>,
    /// The per-minute budget of the HTTP upstream, for its metrics.
    pub budget: Option<Arc<RateBudget>>,
    pub scheduler: Scheduler,
    pub retry_policy: RetryPolicy,
    /// What one question may ask: any span, up to `server.max_tweet_ids` Tweets.
    pub limits: Limits,
    /// Client requests being answered; full means `503` at once.
    pub admission: Arc<Semaphore>,
    /// Counts the answers in flight may hold (one permit per count).
    pub counts: Arc<Semaphore>,
    /// False once shutdown has begun.
    pub ready: AtomicBool,
    /// Cancelled when shutdown's grace period is over: questions still in flight then are
    /// answered `503` with what was not done.
    pub cut_off: CancellationToken,
}

impl AppState {
    /// Questions being answered now.
    pub fn questions_in_flight(&self) -> usize {
        self.settings.server.max_concurrent_requests - self.admission.available_permits()
    }

    /// The state for `settings`, calling `upstream` (paced by `budget`, if it is shown).
    pub fn new(settings: Settings, upstream: Arc<dyn Upstream>, budget: Option<Arc<RateBudget>>) -> AppState {
        let u = &settings.upstream;
        AppState {
            keyring: Keyring::from_settings(&settings),
            scheduler: Scheduler::new(u.max_in_flight),
            retry_policy: RetryPolicy {
                max_attempts: u.max_attempts,
                base_delay: Duration::from_millis(u.retry_base_ms),
                max_delay: Duration::from_millis(u.retry_max_ms),
            },
            limits: Limits {
                max_tweet_ids: settings.server.max_tweet_ids,
                max_span_hours: None,
                clamp_future_end: true,
            },
            admission: Arc::new(Semaphore::new(settings.server.max_concurrent_requests)),
            counts: Arc::new(Semaphore::new(settings.max_counts_in_flight() as usize)),
            ready: AtomicBool::new(true),
            cut_off: CancellationToken::new(),
            upstream,
            budget,
            settings,
        }
    }
}

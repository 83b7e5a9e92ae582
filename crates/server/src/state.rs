//! What every request shares: settings, clients, the question engine, the admission limits.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use engagement::Limits;
use store::Store;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use upstream::{CallPolicy, RateBudget, RetryPolicy, Upstream};

use crate::auth::Keyring;
use crate::settings::Settings;
use engine::Engine;
use engine::jobs::Jobs;
use engine::ports::Shared;

/// The service's shared state.
#[derive(Debug)]
pub struct AppState {
    pub settings: Settings,
    pub keyring: Keyring,
    pub engine: Arc<Engine>,
    pub jobs: Arc<Jobs>,
    /// What one question may ask: any span, up to `server.max_tweet_ids` Tweets.
    pub limits: Limits,
    /// Client requests being answered; full means `503` at once.
    pub admission: Arc<Semaphore>,
    /// Counts the answers in flight may hold (one permit per count).
    pub counts: Arc<Semaphore>,
    /// False once shutdown has begun.
    pub ready: AtomicBool,
    /// The questions and jobs in flight: shutdown closes it and waits for it to empty.
    pub tasks: TaskTracker,
    /// Cancelled when shutdown's grace period is over: questions still in flight then are
    /// answered `503` with what was not done.
    pub cut_off: CancellationToken,
}

impl AppState {
    /// Questions being answered now.
    pub fn questions_in_flight(&self) -> usize {
        self.settings.server.max_concurrent_requests - self.admission.available_permits()
    }

    /// The state for `settings`, calling `upstream` paced by `budget` (which the upstream
    /// may also be telling what it learns of its limit), keeping facts in `store`, sharing
    /// what `shared` holds with the other replicas.
    pub fn new(
        settings: Settings,
        upstream: Arc<dyn Upstream>,
        budget: Arc<RateBudget>,
        store: Arc<Store>,
        shared: Shared,
    ) -> AppState {
        let u = &settings.upstream;
        let retry = RetryPolicy {
            max_attempts: u.max_attempts,
            base_delay: Duration::from_millis(u.retry_base_ms),
            max_delay: Duration::from_millis(u.retry_max_ms),
        };
        let calls = CallPolicy::new(upstream, budget, u.max_in_flight, retry);
        let tasks = TaskTracker::new();
        AppState {
            keyring: Keyring::from_settings(&settings, Arc::clone(&shared.nonces)),
            jobs: Arc::new(Jobs::new(settings.jobs.clone(), tasks.clone())),
            engine: Arc::new(Engine::new(
                calls,
                store,
                settings.store.enabled,
                settings.ledger.clone(),
                shared,
            )),
            limits: Limits {
                max_tweet_ids: settings.server.max_tweet_ids,
                max_span_hours: None,
                clamp_future_end: true,
            },
            admission: Arc::new(Semaphore::new(settings.server.max_concurrent_requests)),
            counts: Arc::new(Semaphore::new(settings.max_counts_in_flight() as usize)),
            ready: AtomicBool::new(true),
            tasks,
            cut_off: CancellationToken::new(),
            settings,
        }
    }
}

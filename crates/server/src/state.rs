//! What every request shares: settings, clients, the question engine, the admission limits.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use engagement::Limits;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::auth::Keyring;
use crate::settings::Settings;
use engine::Engine;
use engine::jobs::Jobs;
use engine::watches::Watches;

/// The service's shared state.
#[derive(Debug)]
pub struct AppState {
    pub settings: Settings,
    pub keyring: Keyring,
    pub engine: Arc<Engine>,
    pub jobs: Arc<Jobs>,
    /// Watched Tweets, kept warm.
    pub watches: Arc<Watches>,
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

    /// The state for `settings`, answering through `engine`.
    pub fn new(settings: Settings, engine: Arc<Engine>) -> AppState {
        let tasks = TaskTracker::new();
        let keyring = Keyring::from_settings(&settings, Arc::clone(&engine.shared.nonces));
        let handles = keyring.credentials();
        let find = move |name: &str| handles.iter().find(|h| h.handle == name).cloned();
        AppState {
            keyring,
            watches: Arc::new(Watches::new(Arc::clone(&engine), settings.watches.clone(), Arc::new(find))),
            jobs: Arc::new(Jobs::new(settings.jobs.clone(), tasks.clone(), Arc::clone(&engine.clock))),
            engine,
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

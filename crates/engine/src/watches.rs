//! Watches: sets of Tweets whose hours the service keeps in the store over a lookback, so a
//! dashboard's question about them costs no call.
//!
//! A watch is a client's, for one of its handles. Every `refresh_secs` (and at once when
//! made) its Tweets' missing hours, and unsettled hours past their life, are fetched with
//! the fewest windows, exactly as a question over the lookback would fetch them, but on an
//! idle lane: its calls take only turns and budget no question waits for. Its calls count
//! its handle in the month's ledger like a question's.
//!
//! Watches are kept in a [`WatchBook`] (`engine::watch_book`): the store alone, Redis among
//! replicas (so every replica sees them). One replica refreshes a watch at a time, holding
//! a lease on it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, SubsecRound, Utc};
use engagement::request::{IdText, Sent};
use engagement::{EngagementType, Query, TimeRange, TweetId};
use serde::Deserialize;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;
use upstream::HandleCredentials;

pub use crate::watch_book::{LocalWatchBook, Watch, WatchBook, WatchState, read_record, write_record};

use crate::config::WatchSettings;
use crate::error::EngineError;
use crate::ports::Claim;
use crate::{Ask, Engine, Question};

/// The longest lookback, in days: the API counts nothing older.
pub const MAX_LOOKBACK_DAYS: u32 = 1800;
/// The shortest time between refreshes.
pub const MIN_REFRESH_SECS: u64 = 60;
/// The longest time between refreshes: a year.
pub const MAX_REFRESH_SECS: u64 = 365 * 24 * 3600;
/// How often the refresher looks for watches due.
const TICK: Duration = Duration::from_secs(1);
/// Tweets refreshed together: what the store is read for at once.
const TWEETS_AT_ONCE: usize = 250;
/// The time a refresh's calls may wait for idle turns before they are given up (and asked
/// again at the next refresh).
const REFRESH_DEADLINE: Duration = Duration::from_secs(3600);

/// A watch's body, as a client sends it.
#[derive(Debug, Clone, Default, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema), schema(example = json!({
    "tweet_ids": ["1790000000000000000", "1850000000000000000"],
    "engagement_types": ["impressions", "engagements"],
    "lookback_days": 90,
    "refresh_secs": 900
})))]
pub struct WatchBody {
    /// Tweet IDs as decimal strings; at most `watches.max_tweets` over the client's watches.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(schema_with = engagement::openapi::tweet_ids, required = true))]
    pub tweet_ids: Sent<Vec<Sent<IdText>>>,
    /// Types of the historical endpoint.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(schema_with = engagement::openapi::engagement_types, required = true))]
    pub engagement_types: Sent<Vec<Sent<String>>>,
    /// Days before today kept warm, 1 to 1800.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(value_type = u32, minimum = 1, maximum = 1800, required = true))]
    pub lookback_days: Sent<u32>,
    /// Seconds between refreshes, from 60 to 31536000 (a year).
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(value_type = u64, minimum = 60, maximum = 31_536_000, required = true))]
    pub refresh_secs: Sent<u64>,
}

/// What a new watch asks for, read and checked.
#[derive(Debug, Clone)]
pub struct WatchSpec {
    pub tweet_ids: Vec<TweetId>,
    pub types: Vec<EngagementType>,
    pub lookback_days: u32,
    pub refresh_secs: u64,
}

impl WatchSpec {
    /// Reads a watch's body at `now`, taking at most `max_tweets` Tweets; every problem is
    /// reported at once.
    pub fn read(
        body: &[u8],
        max_tweets: usize,
        now: DateTime<Utc>,
    ) -> Result<WatchSpec, engagement::ApiError> {
        let body: WatchBody = engagement::request::read_strict_body(body, engagement::members::WATCH)?;
        let mut errors = Vec::new();
        let read = engagement::request::read_tweets_and_types(
            &body.tweet_ids,
            &body.engagement_types,
            max_tweets,
            now,
        );
        let (tweet_ids, types) = read.unwrap_or_else(|e| {
            errors.extend(e.errors);
            Default::default()
        });
        let lookback_days = match body.lookback_days {
            Sent::Given(days @ 1..=MAX_LOOKBACK_DAYS) => days,
            other => {
                errors.push(format!(
                    "lookback_days must be a whole number of days from 1 to {MAX_LOOKBACK_DAYS} (the API counts nothing older), not {other}"
                ));
                0
            }
        };
        let refresh_secs = match body.refresh_secs {
            Sent::Given(secs @ MIN_REFRESH_SECS..=MAX_REFRESH_SECS) => secs,
            other => {
                errors.push(format!(
                    "refresh_secs must be a whole number of seconds from {MIN_REFRESH_SECS} to {MAX_REFRESH_SECS} (a year), not {other}"
                ));
                0
            }
        };
        if !errors.is_empty() {
            return Err(engagement::ApiError { errors });
        }
        Ok(WatchSpec { tweet_ids, types, lookback_days, refresh_secs })
    }
}

/// Why a watch was not made.
#[derive(Debug, thiserror::Error)]
pub enum WatchRefusal {
    #[error("watches are turned off on this service (watches.enabled = false)")]
    Disabled,
    #[error("watches keep Tweets' hours in the store, which is off on this service (store.enabled = false)")]
    NoStore,
    #[error(
        "client {client} has {have} watches, the most one client may have (watches.max_per_client = {max}): delete one first"
    )]
    TooMany { client: String, have: usize, max: usize },
    #[error(
        "client {client}'s watches hold {have} Tweets; {adding} more would pass watches.max_tweets = {max}: watch fewer Tweets, or delete a watch first"
    )]
    TooManyTweets { client: String, have: usize, adding: usize, max: usize },
    #[error(transparent)]
    Engine(#[from] EngineError),
}

/// Finds a handle's credentials by name: they are not kept with a watch.
pub type Handles = Arc<dyn Fn(&str) -> Option<Arc<HandleCredentials>> + Send + Sync>;

/// Every watch, as this replica makes, shows and refreshes them.
pub struct Watches {
    engine: Arc<Engine>,
    settings: WatchSettings,
    handles: Handles,
    /// Refreshes running here, by watch: a `DELETE` stops its watch's.
    running: Mutex<HashMap<String, CancellationToken>>,
    /// Wakes the refresher when a watch is made.
    made: tokio::sync::Notify,
    /// Fires when shutdown begins: the refresher stops, and a refresh running stops too.
    closing: CancellationToken,
    /// Held while a watch is made, so two made at once cannot both pass a client's limits
    /// (at this replica).
    creating: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for Watches {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watches").field("settings", &self.settings).finish_non_exhaustive()
    }
}

impl Watches {
    /// Watches kept in `engine`'s watch book, refreshed through `engine`, as `settings` say;
    /// `handles` finds the credentials of a watch's handle.
    pub fn new(engine: Arc<Engine>, settings: WatchSettings, handles: Handles) -> Watches {
        Watches {
            engine,
            settings,
            handles,
            running: Mutex::default(),
            made: tokio::sync::Notify::new(),
            closing: CancellationToken::new(),
            creating: tokio::sync::Mutex::new(()),
        }
    }

    /// Refused while watches are off (`watches.enabled = false`): every route says so.
    pub fn available(&self) -> Result<(), WatchRefusal> {
        if self.settings.enabled { Ok(()) } else { Err(WatchRefusal::Disabled) }
    }

    /// Makes a watch of `client` for `handle` as `spec` asks, due for its first fill now.
    /// Refused when watches are off, past the client's limits, or when its calls would
    /// count `handle` past the month's handle cap.
    pub async fn create(&self, client: &str, handle: &str, spec: WatchSpec) -> Result<Watch, WatchRefusal> {
        self.available()?;
        if !self.engine.store_enabled {
            return Err(WatchRefusal::NoStore);
        }
        let _one_at_a_time = self.creating.lock().await;
        let mine = self.list(client).await?;
        let max = self.settings.max_per_client;
        if mine.len() >= max {
            return Err(WatchRefusal::TooMany { client: client.into(), have: mine.len(), max });
        }
        let have: usize = mine.iter().map(|w| w.tweet_ids.len()).sum();
        let (adding, max) = (spec.tweet_ids.len(), self.settings.max_tweets);
        if have + adding > max {
            return Err(WatchRefusal::TooManyTweets { client: client.into(), have, adding, max });
        }
        self.engine.handle_fits(handle).await?;
        let now = self.engine.clock.now().trunc_subsecs(0);
        let watch = Watch {
            id: format!("{:032x}", fastrand::u128(..)),
            client: client.into(),
            handle: handle.into(),
            tweet_ids: spec.tweet_ids.iter().map(ToString::to_string).collect(),
            engagement_types: spec.types.iter().map(|t| t.name().to_string()).collect(),
            lookback_days: spec.lookback_days,
            refresh_secs: spec.refresh_secs,
            created_at: now,
            last_refresh: None,
            next_refresh: now,
            tweet_hours_held: 0,
            calls_spent: 0,
            state: WatchState::Pending,
            last_error: None,
        };
        self.engine.shared.watches.put(&watch, true).await?;
        self.made.notify_one();
        Ok(watch)
    }

    /// The watches of `client`, oldest first.
    pub async fn list(&self, client: &str) -> Result<Vec<Watch>, EngineError> {
        let mut mine: Vec<Watch> =
            self.engine.shared.watches.all().await?.into_iter().filter(|w| w.client == client).collect();
        mine.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
        Ok(mine)
    }

    /// The watch `id`, if `client` made it.
    pub async fn get(&self, client: &str, id: &str) -> Result<Option<Watch>, EngineError> {
        Ok(self.engine.shared.watches.get(id).await?.filter(|w| w.client == client))
    }

    /// Forgets the watch `id` if `client` made it, stopping its refresh here; what it was.
    pub async fn delete(&self, client: &str, id: &str) -> Result<Option<Watch>, EngineError> {
        let Some(watch) = self.get(client, id).await? else { return Ok(None) };
        if !self.engine.shared.watches.remove(id).await? {
            return Ok(None);
        }
        if let Some(refresh) = self.lock_running().get(id) {
            refresh.cancel();
        }
        Ok(Some(watch))
    }

    fn lock_running(&self) -> std::sync::MutexGuard<'_, HashMap<String, CancellationToken>> {
        self.running.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Refreshes watches as they fall due, one at a time, tracked by `tasks`, until
    /// [`Watches::close`].
    pub fn keep_warm(self: &Arc<Self>, tasks: &TaskTracker) {
        if !self.settings.enabled || !self.engine.store_enabled {
            return;
        }
        let (watches, closing) = (Arc::clone(self), self.closing.clone());
        tasks.spawn(async move {
            loop {
                tokio::select! {
                    () = tokio::time::sleep(TICK) => {}
                    () = watches.made.notified() => {}
                    () = closing.cancelled() => return,
                }
                watches.refresh_due(&closing).await;
            }
        });
    }

    /// Stops refreshing: a refresh running stops too (what its calls brought is kept).
    pub fn close(&self) {
        self.closing.cancel();
    }

    /// Refreshes every watch due now, the longest due first, each in a task of its own: one
    /// that fails cannot stop the others.
    async fn refresh_due(self: &Arc<Self>, closing: &CancellationToken) {
        let Ok(all) = self.engine.shared.watches.all().await else { return };
        let now = self.engine.clock.now();
        let mut due: Vec<Watch> = all.into_iter().filter(|w| w.next_refresh <= now).collect();
        due.sort_by_key(|w| w.next_refresh);
        for watch in due {
            if closing.is_cancelled() {
                return;
            }
            let span = tracing::info_span!("watch refresh", watch = %watch.id, client = %watch.client);
            let (watches, closing) = (Arc::clone(self), closing.clone());
            let refresh = async move { watches.refresh_leased(&watch.id, &closing).await };
            if let Err(e) = tokio::spawn(refresh.instrument(span)).await {
                tracing::error!(error = %e, "a watch's refresh failed; it is due again");
            }
        }
    }

    /// Refreshes the watch `id` while holding its lease (another replica holding it
    /// refreshes it instead).
    async fn refresh_leased(&self, id: &str, closing: &CancellationToken) {
        let leases = self.engine.shared.leases.as_ref();
        let name = format!("watch:{id}");
        match leases.claim(&name, leases.term()).await {
            Claim::Theirs => {}
            Claim::Nobody => self.refresh(id, closing).await,
            Claim::Ours { holder } => {
                crate::fetch::held_while(leases, &name, &holder, self.refresh(id, closing)).await;
                leases.release(&name, &holder).await;
            }
        }
    }

    /// Refreshes the watch `id` if it is still due (another replica may just have), and
    /// keeps what the refresh did with it.
    async fn refresh(&self, id: &str, closing: &CancellationToken) {
        let book = &self.engine.shared.watches;
        let Ok(Some(mut watch)) = book.get(id).await else { return };
        let now = self.engine.clock.now().trunc_subsecs(0);
        if watch.next_refresh > now {
            return;
        }
        watch.state = WatchState::Refreshing;
        if !matches!(book.put(&watch, false).await, Ok(true)) {
            return;
        }
        let stop = closing.child_token();
        self.lock_running().insert(id.to_string(), stop.clone());
        let done = self.fill(&watch, now, &stop).await;
        self.lock_running().remove(id);
        watch.last_refresh = Some(now);
        // A refresh stopped by shutdown is due again at once (after a restart, say).
        if !stop.is_cancelled() {
            let every = chrono::Duration::seconds(watch.refresh_secs.min(MAX_REFRESH_SECS) as i64);
            watch.next_refresh = now.checked_add_signed(every).unwrap_or(DateTime::<Utc>::MAX_UTC);
        }
        watch.calls_spent += u64::from(done.calls);
        watch.tweet_hours_held = done.tweet_hours_held;
        watch.state = if done.error.is_none() { WatchState::Warm } else { WatchState::Behind };
        watch.last_error = done.error;
        tracing::info!(
            watch = %watch.id,
            calls = done.calls,
            tweet_hours_held = watch.tweet_hours_held,
            state = ?watch.state,
            "watch refreshed"
        );
        if let Err(e) = book.put(&watch, false).await {
            tracing::warn!(watch = %watch.id, error = %e, "a refreshed watch could not be kept");
        }
    }

    /// Fetches what the store lacks of `watch` over its range at `now`, a few hundred
    /// Tweets at a time, on idle lanes, until `stop` fires.
    async fn fill(&self, watch: &Watch, now: DateTime<Utc>, stop: &CancellationToken) -> Filled {
        let mut done = Filled::default();
        let Some(handle) = (self.handles)(&watch.handle) else {
            done.error = Some(format!("handle {} is not configured on this service", watch.handle));
            return done;
        };
        let (tweets, types, range) = (watch.tweets(), watch.types(), watch.range(now));
        let mut failed = 0;
        for chunk in tweets.chunks(TWEETS_AT_ONCE) {
            // Deleted meanwhile, maybe at another replica: its refresh stops.
            if matches!(self.engine.shared.watches.get(&watch.id).await, Ok(None)) {
                done.error = Some("the watch was deleted".into());
                return done;
            }
            let deadline = tokio::time::Instant::now() + REFRESH_DEADLINE;
            let ask = Ask::new(&watch.client, Arc::clone(&handle), deadline, stop.clone()).idle();
            match self.engine.keep_warm(&ask, &question(chunk, &types, range)).await {
                Ok(warmed) => {
                    done.calls += warmed.calls;
                    done.tweet_hours_held += warmed.tweet_hours_held;
                    failed += warmed.failed;
                }
                Err(e) => {
                    done.error = Some(e.messages().join("; "));
                    return done;
                }
            }
        }
        if failed > 0 {
            done.error = Some(format!("{failed} slices could not be fetched; the next refresh asks again"));
        }
        done
    }
}

/// What one refresh did.
#[derive(Debug, Default)]
struct Filled {
    calls: u32,
    tweet_hours_held: u64,
    error: Option<String>,
}

/// The question a refresh asks of `tweets`: `types` over `range`, partial, nothing derived.
fn question(tweets: &[TweetId], types: &[EngagementType], range: TimeRange) -> Question {
    let query = Query {
        endpoint: engagement::Endpoint::Historical,
        tweet_ids: tweets.to_vec(),
        types: types.to_vec(),
        groupings: Vec::new(),
        range: Some(range),
        end_clamped: false,
        zone: engagement::Zone::Utc,
    };
    Question { query, range, partial: true, derive: Default::default() }
}

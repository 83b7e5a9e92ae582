//! The question engine: one validated `/historical` question, for one handle, answered
//! from the store of facts and the calls for what it lacks ([`recall`]), or without a
//! store as plan → fetch → merge on the fixed grid ([`grid`]); `/totals` and `/28hr`
//! questions ([`current`]); and [`jobs`], questions answered in the background.
//! Synchronous routes and jobs both call [`Engine::answer`]; they differ only in their
//! deadline, how they watch [`Progress`], and what cancels them.
//!
//! Calls go through the [`CallPolicy`] (fair turns, calls in flight, the per-minute budget,
//! retries). Off the async workers, a call for facts reads its answer's text straight into
//! the store's rows, and the other calls' answers are read as trees and merged (with the
//! synthesized zeros rendered) by one blocking task fed by a channel, so a big question's
//! work never holds up the workers that serve small ones.

use std::hash::{Hash, Hasher};
use std::sync::Arc;

use engagement::derive::{Derived, Totals};
use engagement::time::format_instant;
use engagement::{Query, Response, TimeRange};
use serde::Serialize;
use stitch::Plan;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;
use upstream::{AttemptError, CallPolicy, HandleCredentials};

use store::{Admission, Store};
use upstream::Coalesce;

use crate::config::{CapPolicy, LedgerSettings};
use crate::ports::{Clock, Shared};

pub mod clients;
pub mod config;
mod current;
pub mod error;
mod estimate;
mod execute;
mod facts_tier;
mod failure;
mod fetch;
mod grid;
mod in_flight;
pub mod jobs;
pub mod ledger;
pub mod metrics;
mod needs;
pub mod ports;
mod progress;
pub mod question;
mod recall;
mod rendered;
mod watch_book;
pub mod watches;

pub use current::{NowAnswer, NowMeta};
pub use error::{EngineError, FailedSlice};
pub use estimate::Estimate;
pub use progress::{Progress, ProgressSnapshot, Stage};
pub use question::{NativeQuestion, Question, Reading};
pub use upstream::blocking::{TaskFailed, off_the_workers};

/// One question being answered: who asks it and for which handle, by when, who watches it,
/// what stops it, and the span its log lines go under. Synchronous routes, jobs and
/// `stitcher query` differ only in these.
#[derive(Debug, Clone)]
pub struct Ask {
    /// The client asking (`clients.NAME`, or `oauth:HANDLE`).
    pub client: String,
    pub handle: Arc<HandleCredentials>,
    pub deadline: Instant,
    pub progress: Arc<Progress>,
    /// Once it fires no call starts, and the question fails with what was not done.
    pub cancel: CancellationToken,
    /// `question`, with the client (and, for `/totals` and `/28hr`, the endpoint).
    pub span: tracing::Span,
    /// Its calls take only turns and budget no question waits for (a watch's refresh), and
    /// are not checked against the budget first.
    pub idle: bool,
}

impl Ask {
    /// A question from `client` for `handle` due by `deadline`, stopped by `cancel`,
    /// watched by nobody.
    pub fn new(
        client: &str,
        handle: Arc<HandleCredentials>,
        deadline: Instant,
        cancel: CancellationToken,
    ) -> Ask {
        let span = tracing::info_span!("question", client, endpoint = tracing::field::Empty);
        Ask {
            client: client.to_string(),
            handle,
            deadline,
            progress: Arc::new(Progress::default()),
            cancel,
            span,
            idle: false,
        }
    }

    /// The same work, done only with what no question waits for.
    pub fn idle(self) -> Ask {
        Ask { idle: true, ..self }
    }

    /// The same question, watched through `progress`.
    pub fn watched(self, progress: Arc<Progress>) -> Ask {
        Ask { progress, ..self }
    }
}

/// The span of one upstream call: its batch of the plan and window (none for `/totals` and
/// `/28hr`); each attempt records its number and its outcome on it.
pub(crate) fn call_span(batch: usize, window: Option<TimeRange>) -> tracing::Span {
    tracing::info_span!(
        "upstream call",
        batch,
        window = window.map(|w| w.describe()),
        attempt = tracing::field::Empty,
        status = tracing::field::Empty,
    )
}

/// Runs `work` on a blocking thread, as [`off_the_workers`], for writes whose loss costs no
/// more than a call made again later: a failure is logged at WARN as `what`, not returned.
pub(crate) async fn off_the_workers_or_warn<E: std::fmt::Display + Send + 'static>(
    what: &'static str,
    work: impl FnOnce() -> Result<(), E> + Send + 'static,
) {
    /// What went wrong, in words.
    struct Said(String);
    impl From<TaskFailed> for Said {
        fn from(e: TaskFailed) -> Said {
            Said(e.to_string())
        }
    }
    if let Err(Said(e)) = off_the_workers(what, move || work().map_err(|e| Said(e.to_string()))).await {
        tracing::warn!(error = %e, "{what}");
    }
}

/// What a question took, for the native endpoint's `meta`.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Meta {
    pub start: String,
    pub end: String,
    /// The zone the answer's days, weeks, months and hours are counted in, when not UTC.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub time_zone: Option<String>,
    /// `start` as the local instant of `time_zone` (with its offset), when not UTC.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub local_start: Option<String>,
    /// `end` as the local instant of `time_zone`, when not UTC.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub local_end: Option<String>,
    /// The weeks and months the range cuts, by level: the keys of the first and last ones
    /// whose counts are of the range's hours alone.
    #[serde(skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub partial_buckets: std::collections::BTreeMap<String, Vec<String>>,
    /// Whether the end asked for was in the future and was clamped to the hour in progress.
    pub end_clamped: bool,
    pub tweets: usize,
    pub batches: usize,
    pub windows: usize,
    pub slices_planned: usize,
    pub slices_fetched: usize,
    pub slices_synthesized: usize,
    /// Slices of the grid whose every hour the store held, so no call was made for them.
    pub slices_from_store: usize,
    pub upstream_calls: u32,
    pub retries: u32,
    pub duration_ms: u64,
}

impl Meta {
    /// What `plan` for `query` over `range` sets out to do, started at `started`, before
    /// any slice is fetched or found held.
    fn planned(plan: &Plan, query: &Query, range: TimeRange, started: Instant) -> Meta {
        let zone = query.zone;
        let local = |t| (!zone.is_utc()).then(|| zone.format_local(t));
        Meta {
            start: format_instant(range.start),
            end: format_instant(range.end),
            time_zone: (!zone.is_utc()).then(|| zone.to_string()),
            local_start: local(range.start),
            local_end: local(range.end),
            partial_buckets: engagement::calendar::partial_buckets(range, &zone, &query.groupings),
            end_clamped: query.end_clamped,
            tweets: query.tweet_ids.len(),
            batches: plan.batches.len(),
            windows: plan.windows.len(),
            slices_planned: plan.planned(),
            slices_synthesized: plan.synthesized_slices(),
            duration_ms: started.elapsed().as_millis() as u64,
            ..Meta::default()
        }
    }

    /// Counts what the answer to `question` for `handle` took in the metrics, and logs it
    /// (`incomplete`: the slices left out of a partial answer).
    fn answered(&self, handle: &str, question: &Question, incomplete: usize) {
        metrics::slices(
            self.slices_planned,
            self.slices_fetched,
            self.slices_synthesized,
            self.slices_from_store,
            self.retries,
        );
        tracing::info!(
            handle,
            tweets = self.tweets,
            range = %question.range.describe(),
            slices_planned = self.slices_planned,
            slices_fetched = self.slices_fetched,
            slices_synthesized = self.slices_synthesized,
            slices_from_store = self.slices_from_store,
            upstream_calls = self.upstream_calls,
            retries = self.retries,
            incomplete,
            duration_ms = self.duration_ms,
            "question answered"
        );
    }
}

/// A stitched answer.
#[derive(Debug)]
pub struct Answer {
    /// Shared: an answer over settled time is also kept rendered for repeats.
    pub response: Arc<Response>,
    pub meta: Meta,
    /// Slices that could not be had (only when partial answers were asked for).
    pub incomplete: Vec<FailedSlice>,
    /// The answer's text, kept with a rendered answer for its repeats.
    pub written: Option<Arc<Written>>,
    /// The numbers the question asked to derive.
    pub derived: Derived,
    /// The question's groupings, which say what each level of a tree is.
    pub groupings: Vec<engagement::Grouping>,
    /// Until when a client may reuse the answer: while its every hour is settled, until
    /// the first of its Tweets' statuses may be asked again; else a fresh hour's life.
    pub reuse_until: chrono::DateTime<chrono::Utc>,
    /// Where the time went, and whether calls were shared with other questions.
    pub took: Took,
}

/// Where a question's time went.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Took {
    /// Time during which some call waited for the per-minute budget (waits together count
    /// once).
    pub budget_wait: std::time::Duration,
    /// From the first call to the last answer in.
    pub calling: std::time::Duration,
    /// Rendering (or merging) the answer once the calls were in.
    pub rendering: std::time::Duration,
    /// Calls this question joined rather than made: another question made them.
    pub shared_calls: u32,
}

impl Took {
    /// What a question watched through `progress` took: `calling` from its first call to
    /// its last answer, `rendering` after, `shared_calls` joined from other questions.
    fn of(
        progress: &Progress,
        calling: std::time::Duration,
        rendering: std::time::Duration,
        shared_calls: u32,
    ) -> Took {
        let budget_wait = std::time::Duration::from_millis(progress.snapshot().budget_wait_ms);
        Took { budget_wait, calling, rendering, shared_calls }
    }
}

impl Answer {
    /// An answer as stitched, before anything is derived from it.
    fn stitched(
        response: Arc<Response>,
        meta: Meta,
        incomplete: Vec<FailedSlice>,
        written: Option<Arc<Written>>,
    ) -> Answer {
        Answer {
            response,
            meta,
            incomplete,
            written,
            derived: Derived::default(),
            groupings: Vec::new(),
            reuse_until: chrono::DateTime::<chrono::Utc>::MIN_UTC,
            took: Took::default(),
        }
    }

    /// A digest of the answer's content, for an entity tag: its counts and lists, derived
    /// numbers and the slices it lacks, its groupings' levels (which CSV's columns follow),
    /// and what `meta` says of the question (range, zone, weeks and months cut), but not
    /// what it says of how the answer was made (calls, time). Equal answers have equal
    /// digests. The trees' part is kept with a rendered answer, so a repeat needs no walk
    /// of them; otherwise they are walked: call it off the async workers.
    pub fn digest(&self) -> u64 {
        let of_counts = || {
            let mut h = std::hash::DefaultHasher::new();
            self.response.hash(&mut h);
            h.finish()
        };
        let counts = match &self.written {
            Some(written) => *written.digest.get_or_init(of_counts),
            None => of_counts(),
        };
        let mut h = std::hash::DefaultHasher::new();
        counts.hash(&mut h);
        serde_json::to_vec(&self.derived).unwrap_or_default().hash(&mut h);
        serde_json::to_vec(&self.incomplete).unwrap_or_default().hash(&mut h);
        self.groupings.hash(&mut h);
        let m = &self.meta;
        (&m.start, &m.end, &m.time_zone, &m.local_start, &m.local_end, &m.partial_buckets).hash(&mut h);
        (m.end_clamped, m.tweets).hash(&mut h);
        h.finish()
    }
}

/// An answer's `data` as JSON text in each count style, made the first time a repeat asks
/// for it: a repeat writes bytes already made instead of serializing the tree again.
#[derive(Debug, Default)]
pub struct Written {
    integers: std::sync::OnceLock<bytes::Bytes>,
    strings: std::sync::OnceLock<bytes::Bytes>,
    /// The digest of the answer's trees ([`Answer::digest`]).
    digest: std::sync::OnceLock<u64>,
}

impl Written {
    /// The text of `response` with counts in `style` (made now if not yet; this serializes,
    /// so call it off the async workers).
    pub fn text(
        &self,
        response: &Response,
        style: engagement::CountStyle,
    ) -> serde_json::Result<bytes::Bytes> {
        let cell = match style {
            engagement::CountStyle::Integers => &self.integers,
            engagement::CountStyle::Strings => &self.strings,
        };
        if let Some(text) = cell.get() {
            return Ok(text.clone());
        }
        let text = bytes::Bytes::from(serde_json::to_vec(&response.styled(style))?);
        Ok(cell.get_or_init(|| text).clone())
    }
}

/// Answers questions through the process's call policy.
#[derive(Debug)]
pub struct Engine {
    pub calls: CallPolicy,
    /// Facts, statuses and the handle ledger.
    pub store: Arc<Store>,
    /// Whether questions are answered from the store (`store.enabled`).
    pub store_enabled: bool,
    /// The month's handle cap and what happens past it.
    pub ledger_settings: LedgerSettings,
    /// Calls in flight, shared by every question that needs the same one.
    facts_calls: Coalesce<needs::CallKey, Arc<fetch::CallOutcome>>,
    /// `/totals` and `/28hr` calls in flight, likewise.
    current_calls: Coalesce<current::CurrentKey, current::CurrentOutcome>,
    /// Answers of questions over settled time, rendered, for repeats.
    rendered: rendered::Rendered,
    /// (month, handle) known to be in the ledger, so a call need not read it.
    counted: std::sync::Mutex<std::collections::HashSet<(String, String)>>,
    /// What this service shares with its replicas (or keeps alone): facts, leases on
    /// calls, the month's handle ledger, nonces.
    pub shared: Shared,
    /// The time of day facts are judged by.
    pub clock: Arc<dyn Clock>,
    /// Each client's calls this minute and this month, at this replica.
    pub clients: clients::ClientCalls,
    /// Answers read or waiting to be written at once, two per core: more would only hold
    /// more answers expanded in memory while they share the same cores and the one writer.
    keeping: Arc<tokio::sync::Semaphore>,
}

impl Engine {
    /// An engine calling through `calls`, keeping facts in `store` if `store_enabled`,
    /// sharing what `shared` holds with the other replicas, the month's ledger capped as
    /// `ledger_settings` say, judging time by `clock`.
    pub fn new(
        calls: CallPolicy,
        store: Arc<Store>,
        store_enabled: bool,
        ledger_settings: LedgerSettings,
        shared: Shared,
        clock: Arc<dyn Clock>,
    ) -> Engine {
        let rendered = rendered::Rendered::new(store.config().status_ttl);
        Engine {
            calls,
            store,
            store_enabled,
            ledger_settings,
            facts_calls: Coalesce::default(),
            current_calls: Coalesce::default(),
            rendered,
            counted: Default::default(),
            clients: Default::default(),
            shared,
            clock,
            keeping: Arc::new(tokio::sync::Semaphore::new(
                2 * std::thread::available_parallelism().map_or(2, std::num::NonZeroUsize::get),
            )),
        }
    }
}

/// The outcome of a call shared between questions (`key` in `calls`): joined if one is in
/// flight, else `start`ed. A call joined from a question whose deadline came first
/// (`ran_out`) is made again for this one while its own `deadline` allows. Also whether the
/// outcome is of a call another question made; `failed` makes the outcome of a call whose
/// task died.
async fn coalesced_call<K, V>(
    calls: &Coalesce<K, V>,
    key: &K,
    deadline: Instant,
    start: impl Fn() -> futures::future::BoxFuture<'static, V>,
    ran_out: impl Fn(&V) -> bool,
    failed: impl Fn(AttemptError) -> V,
) -> (V, bool)
where
    K: std::hash::Hash + Eq + Clone + Send + 'static,
    V: Clone + Send + Sync + 'static,
{
    loop {
        let (outcome, joined) = calls.run(key.clone(), &start).await;
        if joined {
            metrics::coalesced();
        }
        let outcome = outcome.unwrap_or_else(|| {
            let reason = "the call's task failed".to_string();
            failed(AttemptError::Transient { reason, status: None, retry_after: None })
        });
        if !(joined && ran_out(&outcome) && Instant::now() < deadline) {
            return (outcome, joined);
        }
    }
}

impl Engine {
    /// Answers `question` as `ask` says. Once its cancellation fires no call starts and the
    /// question fails with what was not done. With the store on, what is held is not
    /// fetched again; without it, every slice of the grid is.
    pub async fn answer(self: &Arc<Self>, ask: &Ask, question: &Question) -> Result<Answer, EngineError> {
        self.answer_in_span(ask, question).instrument(ask.span.clone()).await
    }

    async fn answer_in_span(self: &Arc<Self>, ask: &Ask, question: &Question) -> Result<Answer, EngineError> {
        let mut answer = self.answer_counts(ask, question).await?;
        answer.groupings.clone_from(&question.query.groupings);
        // Numbers over part of the range would mislead: an incomplete answer has none.
        if question.derive.any() && answer.incomplete.is_empty() {
            self.derive(ask, question, &mut answer).await?;
        }
        Ok(answer)
    }

    /// The answer to `question` alone, before anything is derived from it: from the store
    /// and the calls for what it lacks, or on the grid without a store.
    async fn answer_counts(self: &Arc<Self>, ask: &Ask, question: &Question) -> Result<Answer, EngineError> {
        if self.store_enabled { self.recall(ask, question).await } else { self.by_grid(ask, question).await }
    }

    /// Derives what `question` asks from its `answer`: from one of its groupings that has
    /// Tweets and types, else from the question asked again per Tweet and type (with the
    /// store on, what the answer just fetched is held, so that costs no call; with it off,
    /// the calls are made again). Nothing is derived if that second answer is incomplete.
    async fn derive(
        self: &Arc<Self>,
        ask: &Ask,
        question: &Question,
        answer: &mut Answer,
    ) -> Result<(), EngineError> {
        let (response, grouping) = match engagement::derive::totals_grouping(&question.query.groupings) {
            Some(grouping) => (Arc::clone(&answer.response), grouping.clone()),
            None => {
                let per_tweet = question.per_tweet();
                // Its own progress: a watcher's count of slices is the question's.
                let unwatched = Ask { progress: Arc::new(Progress::default()), ..ask.clone() };
                let more = self.answer_counts(&unwatched, &per_tweet).await?;
                answer.meta.upstream_calls += more.meta.upstream_calls;
                answer.meta.retries += more.meta.retries;
                if !more.incomplete.is_empty() {
                    return Ok(());
                }
                (more.response, per_tweet.query.groupings[0].clone())
            }
        };
        let wanted = question.derive;
        let derived = off_the_workers("deriving numbers failed", move || {
            Ok::<_, EngineError>(Totals::of(&response, &grouping).map(|totals| wanted.compute(&totals)))
        })
        .await?;
        answer.derived = derived.ok_or_else(|| EngineError::internal("no grouping to derive from", None))?;
        Ok(())
    }

    /// Counts an `attempt` of a call for `client`, which ended as `result`: in the metrics,
    /// on the call's span, and as the client's call unless the budget gave it no room (then
    /// no call was made).
    pub(crate) fn attempted(
        &self,
        client: &str,
        result: &Result<upstream::Body, AttemptError>,
        attempt: upstream::Attempt,
    ) {
        let outcome = failure::outcome(result);
        metrics::upstream_call(&outcome);
        let span = tracing::Span::current();
        span.record("attempt", attempt.number);
        span.record("status", outcome.as_str());
        if !matches!(result, Err(AttemptError::Budget { .. })) {
            self.clients.record(client, self.clock.now(), Instant::now(), attempt.waited);
        }
    }

    /// Until when an answer over `range` made at `now` may be reused, the oldest of the
    /// statuses it was made with learned at `oldest_status` (none kept: now): while its
    /// every hour is settled, until that status may be asked again; else a fresh hour's life.
    fn reuse_until(
        &self,
        range: TimeRange,
        oldest_status: Option<chrono::DateTime<chrono::Utc>>,
        now: chrono::DateTime<chrono::Utc>,
    ) -> chrono::DateTime<chrono::Utc> {
        let config = self.store.config();
        let life = |d: std::time::Duration| chrono::Duration::from_std(d).unwrap_or_default();
        if store::facts::hour_of(range.end) > self.store.unsettled_from(now) {
            return now + life(config.fresh_ttl);
        }
        oldest_status.unwrap_or(now) + life(config.status_ttl)
    }

    /// Refuses `handle` if a call for it now would count it past the month's handle cap
    /// (whatever `ledger.policy` says: nothing is called yet).
    pub async fn handle_fits(&self, handle: &str) -> Result<(), EngineError> {
        let Some(cap) = self.ledger_settings.handle_cap else { return Ok(()) };
        let (used, counted) = self.ledger_standing(handle).await?;
        if used >= cap && !counted {
            let month = store::ledger::month_of(self.clock.now());
            return Err(EngineError::HandleCap { cap, month, handle: handle.into() });
        }
        Ok(())
    }

    /// The handles counted in the month's ledger now, and whether `handle` is one of them.
    async fn ledger_standing(&self, handle: &str) -> Result<(usize, bool), EngineError> {
        let month = self.shared.ledger.month(self.clock.now()).await?;
        Ok((month.len(), month.iter().any(|entry| entry.handle == handle)))
    }

    /// Counts `handle` in the month's ledger before its first call, refusing it past the
    /// cap when `may_refuse` and the policy say so. A question checks before any call; each
    /// call counts again, so a question that runs into a new month counts there too.
    async fn admit_handle(&self, handle: &str, may_refuse: bool) -> Result<(), EngineError> {
        if may_refuse {
            self.shared.state.check()?;
        }
        let now = self.clock.now();
        let month = store::ledger::month_of(now);
        let counted = (month.clone(), handle.to_string());
        if self.counted.lock().unwrap_or_else(|p| p.into_inner()).contains(&counted) {
            return Ok(());
        }
        let settings = &self.ledger_settings;
        let (cap, refuse) = (settings.handle_cap, may_refuse && settings.policy == CapPolicy::Refuse);
        let admitted = self.shared.ledger.admit(handle, now, cap, refuse).await?;
        if !matches!(admitted, Admission::Refused { .. }) {
            self.counted.lock().unwrap_or_else(|p| p.into_inner()).insert(counted);
        }
        match admitted {
            Admission::Counted => Ok(()),
            Admission::Added { used, over_cap } => {
                metrics::handle_counted(over_cap);
                if over_cap {
                    tracing::warn!(
                        handle,
                        handles_used = used,
                        handle_cap = cap,
                        %month,
                        "a handle past the month's cap was called for; the API bills it"
                    );
                }
                Ok(())
            }
            Admission::Refused { cap } => {
                metrics::handle_refused();
                Err(EngineError::HandleCap { cap, month, handle: handle.into() })
            }
        }
    }
}

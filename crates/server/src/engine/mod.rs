//! The question engine: one validated `/historical` question, for one handle, answered
//! from the store of facts and the calls for what it lacks ([`recall`]), or without a
//! store as plan → fetch → merge on the fixed grid ([`grid`]). Synchronous routes and jobs both call [`Engine::answer`];
//! they differ only in their deadline, how they watch [`Progress`], and what cancels them.
//!
//! Calls go through the [`CallPolicy`] (fair turns, calls in flight, the per-minute budget,
//! retries). Answers are parsed by the HTTP client off the async workers, and merged (with
//! the synthesized zeros rendered) by one blocking task fed by a channel, so a big question's
//! merging never holds up the workers that serve small ones.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use engagement::derive::{Derivations, Derived, Totals};
use engagement::time::format_instant;
use engagement::{Query, Response, TimeRange};
use serde::Serialize;
use stitch::{Plan, Slice};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use upstream::{AttemptError, BudgetRefusal, CallPolicy, HandleCredentials};

use chrono::Utc;
use store::{Admission, Store};
use upstream::Coalesce;

use crate::error::{FailedSlice, ServiceError};
use crate::metrics;
use crate::settings::{CapPolicy, LedgerSettings};
use crate::sharing::Sharing;

mod current;
mod grid;
mod recall;
mod shared_facts;

pub use current::{NowAnswer, NowMeta};

/// A validated historical question.
#[derive(Debug, Clone)]
pub struct Question {
    pub query: Query,
    /// The normalized range (a historical question always has one).
    pub range: TimeRange,
    /// List the slices that failed under `incomplete` instead of failing the question.
    pub partial: bool,
    /// Numbers to derive from the answer (the engagement rate, the Top Tweets).
    pub derive: Derivations,
}

impl Question {
    /// A historical question from a validated query; `None` if it has no range.
    pub fn historical(query: Query, partial: bool, derive: Derivations) -> Option<Question> {
        let range = query.range?;
        Some(Question { query, range, partial, derive })
    }

    /// The same Tweets and range, per Tweet and type, for the types `derive` reads.
    fn per_tweet(&self) -> Question {
        let mut query = self.query.clone();
        query.types = self.derive.types();
        query.groupings = vec![engagement::Grouping {
            name: "per tweet".into(),
            group_by: vec![engagement::GroupBy::TweetId, engagement::GroupBy::EngagementType],
        }];
        Question { query, range: self.range, partial: self.partial, derive: Derivations::default() }
    }
}

/// What a question took, for the native endpoint's `meta`.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct Meta {
    pub start: String,
    pub end: String,
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
    /// What `plan` for `question` sets out to do, started at `started`, before any slice
    /// is fetched or found held.
    fn planned(plan: &Plan, question: &Question, started: Instant) -> Meta {
        Meta {
            start: format_instant(question.range.start),
            end: format_instant(question.range.end),
            end_clamped: question.query.end_clamped,
            tweets: question.query.tweet_ids.len(),
            batches: plan.batches.len(),
            windows: plan.windows.len(),
            slices_planned: plan.planned(),
            slices_synthesized: plan.synthesized_slices(),
            duration_ms: started.elapsed().as_millis() as u64,
            ..Meta::default()
        }
    }

    /// Counts what the answer took in the metrics.
    fn record(&self) {
        metrics::slices(
            self.slices_planned,
            self.slices_fetched,
            self.slices_synthesized,
            self.slices_from_store,
            self.retries,
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
}

impl Answer {
    /// An answer as stitched, before anything is derived from it.
    fn stitched(
        response: Arc<Response>,
        meta: Meta,
        incomplete: Vec<FailedSlice>,
        written: Option<Arc<Written>>,
    ) -> Answer {
        Answer { response, meta, incomplete, written, derived: Derived::default(), groupings: Vec::new() }
    }
}

/// An answer's `data` as JSON text in each count style, made the first time a repeat asks
/// for it: a repeat writes bytes already made instead of serializing the tree again.
#[derive(Debug, Default)]
pub struct Written {
    integers: std::sync::OnceLock<bytes::Bytes>,
    strings: std::sync::OnceLock<bytes::Bytes>,
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

/// How far a question has come; shared with whoever watches it (a job's status, its event
/// stream). Every change wakes the watchers.
#[derive(Debug)]
pub struct Progress {
    slices_total: AtomicUsize,
    slices_done: AtomicUsize,
    slices_synthesized: AtomicUsize,
    upstream_calls: AtomicU32,
    retries: AtomicU32,
    budget_wait_ms: AtomicU64,
    /// Time the question's calls took, for estimates.
    call_ms: AtomicU64,
    changed: watch::Sender<()>,
}

/// A moment's copy of [`Progress`].
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct ProgressSnapshot {
    pub slices_total: usize,
    pub slices_done: usize,
    pub slices_synthesized: usize,
    pub upstream_calls: u32,
    pub retries: u32,
    /// Time the question's calls waited for the per-minute budget, in milliseconds.
    pub budget_wait_ms: u64,
}

impl Default for Progress {
    fn default() -> Self {
        Progress {
            slices_total: AtomicUsize::new(0),
            slices_done: AtomicUsize::new(0),
            slices_synthesized: AtomicUsize::new(0),
            upstream_calls: AtomicU32::new(0),
            retries: AtomicU32::new(0),
            budget_wait_ms: AtomicU64::new(0),
            call_ms: AtomicU64::new(0),
            changed: watch::Sender::new(()),
        }
    }
}

impl Progress {
    /// The counts now.
    pub fn snapshot(&self) -> ProgressSnapshot {
        ProgressSnapshot {
            slices_total: self.slices_total.load(Ordering::Relaxed),
            slices_done: self.slices_done.load(Ordering::Relaxed),
            slices_synthesized: self.slices_synthesized.load(Ordering::Relaxed),
            upstream_calls: self.upstream_calls.load(Ordering::Relaxed),
            retries: self.retries.load(Ordering::Relaxed),
            budget_wait_ms: self.budget_wait_ms.load(Ordering::Relaxed),
        }
    }

    /// Wakes on every change.
    pub fn subscribe(&self) -> watch::Receiver<()> {
        self.changed.subscribe()
    }

    /// The mean time of one call so far, if any was made.
    pub fn mean_call(&self) -> Option<Duration> {
        let calls = self.upstream_calls.load(Ordering::Relaxed);
        (calls > 0).then(|| Duration::from_millis(self.call_ms.load(Ordering::Relaxed) / u64::from(calls)))
    }

    /// Real slices not yet fetched.
    pub fn slices_left(&self) -> usize {
        let s = self.snapshot();
        s.slices_total.saturating_sub(s.slices_done + s.slices_synthesized)
    }

    /// Tells the watchers something changed (also when the question's state does).
    pub fn touch(&self) {
        self.changed.send_replace(());
    }

    fn attempt(&self, retry: bool, waited: Duration, took: Duration) {
        self.upstream_calls.fetch_add(1, Ordering::Relaxed);
        if retry {
            self.retries.fetch_add(1, Ordering::Relaxed);
        }
        self.budget_wait_ms.fetch_add(waited.as_millis() as u64, Ordering::Relaxed);
        self.call_ms.fetch_add(took.as_millis() as u64, Ordering::Relaxed);
        self.touch();
    }
}

/// Answers questions through the process's call policy.
#[derive(Debug)]
pub struct Engine {
    pub calls: CallPolicy,
    /// Facts, statuses and the handle ledger.
    pub store: Arc<Store>,
    /// Whether questions are answered from the store (`store.enabled`).
    pub remember: bool,
    pub ledger: LedgerSettings,
    /// Calls in flight, shared by every question that needs the same one.
    shared: Coalesce<recall::CallKey, recall::Shared>,
    /// `/totals` and `/28hr` calls in flight, likewise.
    now_calls: Coalesce<current::NowKey, current::NowShared>,
    /// Answers of questions over settled time, rendered, for repeats.
    rendered: recall::Rendered,
    /// (month, handle) known to be in the ledger, so a call need not read it.
    counted: std::sync::Mutex<std::collections::HashSet<(String, String)>>,
    /// The Redis shared with other replicas, which keeps the ledger of them all.
    sharing: Option<Arc<Sharing>>,
}

impl Engine {
    /// An engine calling through `calls`, keeping facts in `store` if `remember`, and the
    /// month's ledger in Redis when `sharing` (in `store` too, for when Redis is away).
    pub fn new(
        calls: CallPolicy,
        store: Arc<Store>,
        remember: bool,
        ledger: LedgerSettings,
        sharing: Option<Arc<Sharing>>,
    ) -> Engine {
        let rendered = recall::Rendered::new(store.config().status_ttl);
        Engine {
            calls,
            store,
            remember,
            ledger,
            shared: Coalesce::default(),
            now_calls: Coalesce::default(),
            rendered,
            counted: Default::default(),
            sharing,
        }
    }
}

/// Waits for a question's calls in `tasks`, handing each finished one to `each`, which
/// says which slice it was and whether to wait for the rest. Stops early at the deadline
/// (the slices of `expected` not finished are returned as failed by it) or when `cancel`
/// fires (the question is cut off, naming them). Calls still running are dropped.
async fn collect<T: 'static>(
    tasks: &mut JoinSet<T>,
    plan: &Plan,
    expected: &[Slice],
    deadline: Instant,
    cancel: &CancellationToken,
    mut each: impl FnMut(T) -> Result<(Slice, bool), ServiceError>,
) -> Result<Vec<(Slice, AttemptError, u32)>, ServiceError> {
    let mut done = std::collections::HashSet::with_capacity(expected.len());
    let collecting = tokio::time::timeout_at(deadline, async {
        while let Some(joined) = tasks.join_next().await {
            let finished =
                joined.map_err(|e| ServiceError::internal("a call's task failed", Some(Box::new(e))))?;
            let (slice, go_on) = each(finished)?;
            done.insert(slice);
            if !go_on {
                break;
            }
        }
        Ok::<(), ServiceError>(())
    });
    let stopped = tokio::select! {
        collected = collecting => match collected {
            Ok(collected) => { collected?; None }
            Err(_) => Some(false),
        },
        () = cancel.cancelled() => Some(true),
    };
    tasks.abort_all();
    let not_done = expected.iter().filter(|s| !done.contains(*s)).copied();
    match stopped {
        None => Ok(Vec::new()),
        Some(false) => Ok(not_done.map(|s| (s, AttemptError::Deadline { last: None }, 0)).collect()),
        Some(true) => Err(ServiceError::CutOff {
            failed: not_done
                .map(|s| failed_slice(plan, s, vec!["not fetched: the question was stopped".into()], None, 0))
                .collect(),
        }),
    }
}

/// The outcome of a call shared between questions (`key` in `calls`): joined if one is in
/// flight, else `start`ed. A call joined from a question whose deadline came first
/// (`ran_out`) is made again for this one while its own `deadline` allows. Also whether the
/// outcome is of a call another question made; `failed` makes the outcome of a call whose
/// task died.
async fn shared_call<K, V>(
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
    /// Answers `question` as `handle` by `deadline`, reporting to `progress`. Once `cancel`
    /// fires no call starts and the question fails with what was not done. With the store
    /// on, what is held is not fetched again; without it, every slice of the grid is.
    pub async fn answer(
        self: &Arc<Self>,
        handle: &Arc<HandleCredentials>,
        question: &Question,
        deadline: Instant,
        progress: &Arc<Progress>,
        cancel: &CancellationToken,
    ) -> Result<Answer, ServiceError> {
        let mut answer = self.stitch(handle, question, deadline, progress, cancel).await?;
        answer.groupings.clone_from(&question.query.groupings);
        // Numbers over part of the range would mislead: an incomplete answer has none.
        if question.derive.any() && answer.incomplete.is_empty() {
            self.derive(handle, question, &mut answer, deadline, cancel).await?;
        }
        Ok(answer)
    }

    /// The answer to `question` alone, before anything is derived from it: from the store
    /// and the calls for what it lacks, or on the grid without a store.
    async fn stitch(
        self: &Arc<Self>,
        handle: &Arc<HandleCredentials>,
        question: &Question,
        deadline: Instant,
        progress: &Arc<Progress>,
        cancel: &CancellationToken,
    ) -> Result<Answer, ServiceError> {
        if self.remember {
            self.recall(handle, question, deadline, progress, cancel).await
        } else {
            self.by_grid(handle, question, deadline, progress, cancel).await
        }
    }

    /// Derives what `question` asks from its `answer`: from one of its groupings that has
    /// Tweets and types, else from the question asked again per Tweet and type (with the
    /// store on, what the answer just fetched is held, so that costs no call; with it off,
    /// the calls are made again). Nothing is derived if that second answer is incomplete.
    async fn derive(
        self: &Arc<Self>,
        handle: &Arc<HandleCredentials>,
        question: &Question,
        answer: &mut Answer,
        deadline: Instant,
        cancel: &CancellationToken,
    ) -> Result<(), ServiceError> {
        let (response, grouping) = match engagement::derive::totals_grouping(&question.query.groupings) {
            Some(grouping) => (Arc::clone(&answer.response), grouping.clone()),
            None => {
                let per_tweet = question.per_tweet();
                // Its own progress: a watcher's count of slices is the question's.
                let more =
                    self.stitch(handle, &per_tweet, deadline, &Arc::new(Progress::default()), cancel).await?;
                answer.meta.upstream_calls += more.meta.upstream_calls;
                answer.meta.retries += more.meta.retries;
                if !more.incomplete.is_empty() {
                    return Ok(());
                }
                (more.response, per_tweet.query.groupings[0].clone())
            }
        };
        let wanted = question.derive;
        let derived = tokio::task::spawn_blocking(move || {
            Totals::of(&response, &grouping).map(|totals| wanted.compute(&totals))
        })
        .await
        .map_err(|e| ServiceError::internal("deriving numbers failed", Some(Box::new(e))))?;
        answer.derived = derived.ok_or_else(|| ServiceError::internal("no grouping to derive from", None))?;
        Ok(())
    }

    /// Counts `handle` in the month's ledger before its first call, refusing it past the
    /// cap when `may_refuse` and the policy say so. A question checks before any call; each
    /// call counts again, so a question that runs into a new month counts there too.
    async fn admit_handle(&self, handle: &str, may_refuse: bool) -> Result<(), ServiceError> {
        if let Some(sharing) = &self.sharing
            && may_refuse
        {
            sharing.check()?;
        }
        let now = Utc::now();
        let counted = (store::ledger::month_of(now), handle.to_string());
        if self.counted.lock().unwrap_or_else(|p| p.into_inner()).contains(&counted) {
            return Ok(());
        }
        let (cap, refuse) = (self.ledger.handle_cap, may_refuse && self.ledger.policy == CapPolicy::Refuse);
        let shared = match &self.sharing {
            Some(sharing) => sharing.or_alone(
                crate::sharing::Alone::Ledger,
                sharing.redis.admit_handle(handle, now, cap, refuse).await,
            )?,
            None => None,
        };
        // The store keeps the ledger too: alone, it is the ledger; beside Redis, it is what
        // this replica adds back when Redis returns after being away.
        let (store, name) = (Arc::clone(&self.store), handle.to_string());
        let (cap, refuse) = if shared.is_some() { (None, false) } else { (cap, refuse) };
        let local = match shared {
            Some(Admission::Refused { .. }) => None,
            _ => Some(
                tokio::task::spawn_blocking(move || store.admit_handle(&name, now, cap, refuse))
                    .await
                    .map_err(|e| ServiceError::internal("the ledger's task failed", Some(Box::new(e))))?
                    .map_err(|e| {
                        ServiceError::internal("the handle ledger could not be read", Some(Box::new(e)))
                    })?,
            ),
        };
        let Some(admitted) = shared.or(local) else {
            return Err(ServiceError::internal("the handle ledger gave no answer", None));
        };
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
                        month = %store::ledger::month_of(now),
                        "a handle past the month's cap was called for; the API bills it"
                    );
                }
                Ok(())
            }
            Admission::Refused { cap } => {
                metrics::handle_refused();
                Err(ServiceError::HandleCap {
                    cap,
                    month: store::ledger::month_of(now),
                    handle: handle.into(),
                })
            }
        }
    }
}

/// The client's error for a question the budget cannot carry.
fn refusal(refused: BudgetRefusal) -> ServiceError {
    match refused {
        BudgetRefusal::Never { .. } => ServiceError::BadRequest(engagement::ApiError::new(format!(
            "{refused}, its deadline: ask it as a job (POST /v1/jobs, which has hours), or ask for a shorter range or fewer Tweets"
        ))),
        BudgetRefusal::Busy { calls, ahead, wait } => {
            ServiceError::BudgetBusy { retry_after: wait, calls, ahead }
        }
    }
}

/// The label of one attempt's outcome: the upstream's status, or what kept it from one.
fn outcome(result: &Result<Response, AttemptError>) -> String {
    match result {
        Ok(_) => "200".into(),
        Err(e) => match (e, e.status()) {
            (_, Some(status)) => status.to_string(),
            (AttemptError::Budget { .. }, None) => "budget".into(),
            (AttemptError::Deadline { .. }, None) => "deadline".into(),
            (_, None) => "error".into(),
        },
    }
}

fn failed_slice(
    plan: &Plan,
    slice: Slice,
    errors: Vec<String>,
    status: Option<u16>,
    attempts: u32,
) -> FailedSlice {
    FailedSlice {
        start: format_instant(slice.window.start),
        end: format_instant(slice.window.end),
        tweet_ids: plan.batches[slice.batch].iter().map(ToString::to_string).collect(),
        status,
        errors,
        attempts,
    }
}

/// A slice whose last attempt failed with `error`: the upstream's own messages when it
/// refused, else what went wrong.
fn failed_attempt(plan: &Plan, slice: Slice, error: &AttemptError, attempts: u32) -> FailedSlice {
    let errors = match error {
        AttemptError::Refused { errors, .. } => errors.clone(),
        other => vec![other.to_string()],
    };
    failed_slice(plan, slice, errors, error.status(), attempts)
}

/// The client's error for a question whose slices failed, by the worst failure: a refusal
/// by the upstream, then the rate budget, then the deadline, then transient failures.
fn failure(plan: &Plan, timeout: &Duration, failed: Vec<(Slice, AttemptError, u32)>) -> ServiceError {
    let slices: Vec<FailedSlice> = failed
        .iter()
        .map(|(slice, error, attempts)| failed_attempt(plan, *slice, error, *attempts))
        .collect();
    if let Some((_, AttemptError::Refused { status, errors }, _)) =
        failed.iter().find(|(_, e, _)| matches!(e, AttemptError::Refused { .. }))
    {
        // 400 and 403 are about the Tweets asked for, and pass through. Anything else the
        // upstream refuses (401: the handle's credentials) is this service's problem.
        return match status {
            400 | 403 => {
                ServiceError::UpstreamRefused { status: *status, errors: errors.clone(), failed: slices }
            }
            _ => ServiceError::UpstreamRefused {
                status: 502,
                errors: errors
                    .iter()
                    .map(|e| format!("the Engagement API refused the service's call ({status}): {e}"))
                    .collect(),
                failed: slices,
            },
        };
    }
    if let Some((_, AttemptError::Budget { wait }, _)) =
        failed.iter().find(|(_, e, _)| matches!(e, AttemptError::Budget { .. }))
    {
        return ServiceError::RateBudget { retry_after: *wait, failed: slices };
    }
    if failed.iter().any(|(_, e, _)| matches!(e, AttemptError::Deadline { .. })) {
        return ServiceError::DeadlineExceeded { timeout: *timeout, failed: slices };
    }
    ServiceError::UpstreamFailed { failed: slices }
}

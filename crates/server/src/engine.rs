//! The question engine: one validated `/historical` question, for one handle, answered as
//! plan → fetch → merge → finish. Synchronous routes and jobs both call [`Engine::answer`];
//! they differ only in their deadline, how they watch [`Progress`], and what cancels them.
//!
//! Calls go through the [`CallPolicy`] (fair turns, calls in flight, the per-minute budget,
//! retries). Answers are parsed by the HTTP client off the async workers, and merged (with
//! the synthesized zeros rendered) by one blocking task fed by a channel, so a big question's
//! merging never holds up the workers that serve small ones.

use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, mpsc};
use std::time::Duration;

use engagement::time::format_instant;
use engagement::tree::TreeError;
use engagement::{Endpoint, Query, Response, TimeRange};
use serde::Serialize;
use stitch::{Plan, Slice, absorb, absorb_zeros, finish};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use upstream::{AttemptError, BudgetRefusal, CallPolicy, HandleCredentials, Retried};

use crate::error::{FailedSlice, ServiceError};
use crate::metrics;

/// A validated historical question.
#[derive(Debug, Clone)]
pub struct Question {
    pub query: Query,
    /// The normalized range (a historical question always has one).
    pub range: TimeRange,
    /// List the slices that failed under `incomplete` instead of failing the question.
    pub partial: bool,
}

impl Question {
    /// A historical question from a validated query; `None` if it has no range.
    pub fn historical(query: Query, partial: bool) -> Option<Question> {
        let range = query.range?;
        Some(Question { query, range, partial })
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
    pub upstream_calls: u32,
    pub retries: u32,
    pub duration_ms: u64,
}

/// A stitched answer.
#[derive(Debug)]
pub struct Answer {
    pub response: Response,
    pub meta: Meta,
    /// Slices that could not be had (only when partial answers were asked for).
    pub incomplete: Vec<FailedSlice>,
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
}

/// The outcome of one real slice.
struct Fetched {
    slice: Slice,
    retried: Retried<Response>,
}

/// Why the wait for a question's slices ended early.
enum Stopped {
    Deadline,
    Cancelled,
}

impl Engine {
    /// Answers `question` as `handle` by `deadline`, reporting to `progress`. Once `cancel`
    /// fires no call starts and the question fails with what was not done.
    pub async fn answer(
        self: &Arc<Self>,
        handle: &Arc<HandleCredentials>,
        question: &Question,
        deadline: Instant,
        progress: &Arc<Progress>,
        cancel: &CancellationToken,
    ) -> Result<Answer, ServiceError> {
        let started = Instant::now();
        let Question { query, range, partial } = question;
        let plan = Arc::new(stitch::plan(&query.tweet_ids, *range, Endpoint::Historical.max_tweet_ids()));
        let calls = plan.fetched.len();
        self.calls.check(calls, deadline).map_err(refusal)?;
        progress.slices_total.store(plan.planned(), Ordering::Relaxed);
        progress.slices_synthesized.store(plan.synthesized_slices(), Ordering::Relaxed);
        progress.touch();

        let lane = Arc::new(self.calls.lane(calls, deadline));
        let mut tasks = JoinSet::new();
        for &slice in &plan.fetched {
            let body = plan.slice_request(slice, &query.types, &query.groupings);
            let (engine, lane, handle, progress) =
                (Arc::clone(self), Arc::clone(&lane), Arc::clone(handle), Arc::clone(progress));
            tasks.spawn(async move {
                let sent = std::sync::atomic::AtomicU32::new(0);
                let retried = engine
                    .calls
                    .call(&lane, &handle, &body, deadline, |result, waited, took| {
                        let retry = sent.fetch_add(1, Ordering::Relaxed) > 0;
                        metrics::upstream_call(&outcome(result));
                        progress.attempt(retry, waited, took);
                    })
                    .await;
                Fetched { slice, retried }
            });
        }

        // Answers are merged by one blocking task as they arrive.
        let (to_merge, merging) = mpsc::channel::<(Slice, Response)>();
        let merger = {
            let (plan, types, groupings, range) =
                (Arc::clone(&plan), query.types.clone(), query.groupings.clone(), *range);
            tokio::task::spawn_blocking(move || -> Result<Response, (Option<Slice>, TreeError)> {
                let mut merged = Response::default();
                for (slice, response) in merging {
                    absorb(&mut merged, response).map_err(|e| (Some(slice), e))?;
                }
                absorb_zeros(&mut merged, &plan, &types, &groupings).map_err(|e| (None, e))?;
                finish(&mut merged, &groupings, range);
                Ok(merged)
            })
        };

        let mut done = std::collections::HashSet::with_capacity(calls);
        let mut failed: Vec<(Slice, AttemptError, u32)> = Vec::new();
        let mut attempts = 0u32;
        let mut fetched = 0usize;
        let collecting = tokio::time::timeout_at(deadline, async {
            while let Some(joined) = tasks.join_next().await {
                let Fetched { slice, retried } =
                    joined.map_err(|e| ServiceError::internal("a slice task failed", Some(Box::new(e))))?;
                done.insert(slice);
                attempts += retried.attempts;
                match retried.result {
                    Ok(response) => {
                        fetched += 1;
                        progress.slices_done.fetch_add(1, Ordering::Relaxed);
                        progress.touch();
                        // The merger only stops early on an error, which it returns below.
                        let _ = to_merge.send((slice, response));
                    }
                    Err(error) => {
                        failed.push((slice, error, retried.attempts));
                        if !partial {
                            break;
                        }
                    }
                }
            }
            Ok(())
        });
        let collected = tokio::select! {
            collected = collecting => collected.map_err(|_| Stopped::Deadline),
            () = cancel.cancelled() => Err(Stopped::Cancelled),
        };
        tasks.abort_all();
        drop(to_merge);
        let not_done = || plan.fetched.iter().filter(|s| !done.contains(s)).copied().collect::<Vec<_>>();
        match collected {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(e),
            // Whatever did not finish is what the deadline cut off.
            Err(Stopped::Deadline) => {
                failed.extend(
                    not_done().into_iter().map(|slice| (slice, AttemptError::Deadline { last: None }, 0)),
                );
            }
            Err(Stopped::Cancelled) => {
                let missing = not_done()
                    .into_iter()
                    .map(|slice| {
                        failed_slice(
                            &plan,
                            slice,
                            vec!["not fetched: the question was stopped".into()],
                            None,
                            0,
                        )
                    })
                    .collect();
                return Err(ServiceError::CutOff { failed: missing });
            }
        }
        if !failed.is_empty() && !partial {
            let timeout = deadline.saturating_duration_since(started);
            return Err(failure(&plan, &timeout, failed));
        }
        let merged = match merger.await {
            Ok(Ok(merged)) => merged,
            Ok(Err((Some(slice), e))) => {
                return Err(ServiceError::UpstreamFailed {
                    failed: vec![failed_slice(
                        &plan,
                        slice,
                        vec![format!("the upstream's answers do not add up: {e}")],
                        None,
                        0,
                    )],
                });
            }
            Ok(Err((None, e))) => {
                return Err(ServiceError::internal(
                    "synthesized zeros do not fit the answers",
                    Some(Box::new(e)),
                ));
            }
            Err(e) => return Err(ServiceError::internal("merging the answers failed", Some(Box::new(e)))),
        };

        let meta = Meta {
            start: format_instant(range.start),
            end: format_instant(range.end),
            end_clamped: query.end_clamped,
            tweets: query.tweet_ids.len(),
            batches: plan.batches.len(),
            windows: plan.windows.len(),
            slices_planned: plan.planned(),
            slices_fetched: fetched,
            slices_synthesized: plan.synthesized_slices(),
            upstream_calls: attempts,
            retries: attempts.saturating_sub(done.len() as u32),
            duration_ms: started.elapsed().as_millis() as u64,
        };
        metrics::slices(meta.slices_planned, meta.slices_fetched, meta.slices_synthesized, meta.retries);
        tracing::info!(
            handle = %handle.handle,
            tweets = meta.tweets,
            range = %range.describe(),
            slices_planned = meta.slices_planned,
            slices_synthesized = meta.slices_synthesized,
            upstream_calls = meta.upstream_calls,
            retries = meta.retries,
            incomplete = failed.len(),
            duration_ms = meta.duration_ms,
            "question answered"
        );
        let incomplete = failed
            .iter()
            .map(|(slice, error, attempts)| failed_attempt(&plan, *slice, error, *attempts))
            .collect();
        Ok(Answer { response: merged, meta, incomplete })
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

//! Answering one `/historical` question: plan the slices, fetch the real ones through the
//! shared scheduler with retries, synthesize the zeros, merge.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use engagement::time::format_instant;
use engagement::{Endpoint, Query, Response, TweetId};
use serde::Serialize;
use stitch::{Plan, Slice, absorb, synthesize};
use tokio::task::JoinSet;
use tokio::time::Instant;
use upstream::{AttemptError, Retried, retry::retry};

use crate::auth::Caller;
use crate::error::{FailedSlice, ServiceError};
use crate::metrics;
use crate::state::AppState;

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

/// The outcome of one real slice.
struct Fetched {
    slice: Slice,
    retried: Retried<Response>,
}

/// Answers `query` as `caller`. With `partial`, failed slices are listed instead of
/// failing the question.
pub async fn answer(
    state: &Arc<AppState>,
    caller: &Caller,
    query: Query,
    partial: bool,
) -> Result<Answer, ServiceError> {
    let started = Instant::now();
    let Some(range) = query.range else {
        return Err(ServiceError::Internal("a historical question without a range".into()));
    };
    let plan = stitch::plan(&query.tweet_ids, range, Endpoint::Historical.max_tweet_ids());
    let deadline = started + state.settings.request_timeout();
    check_budget(state, plan.fetched.len())?;
    let lane = Arc::new(state.scheduler.lane_for(plan.fetched.len()));
    let mut tasks = JoinSet::new();
    for &slice in &plan.fetched {
        // The slice's own question: its batch and window, the rest as asked (built field by
        // field so the question's full ID list is not copied for every slice).
        let body = Query {
            endpoint: Endpoint::Historical,
            tweet_ids: plan.batches[slice.batch].clone(),
            types: query.types.clone(),
            groupings: query.groupings.clone(),
            range: Some(slice.window),
            end_clamped: false,
        }
        .to_raw();
        let (state, lane, handle) = (Arc::clone(state), Arc::clone(&lane), Arc::clone(&caller.handle));
        tasks.spawn(async move {
            let retried = retry(&state.retry_policy, deadline, |_| async {
                let _turn = lane.turn().await;
                let result = state.upstream.historical(&handle, &body, deadline).await;
                metrics::upstream_call(&outcome(&result));
                result
            })
            .await;
            Fetched { slice, retried }
        });
    }

    let mut merged = Response::default();
    let mut done: HashSet<Slice> = HashSet::with_capacity(plan.fetched.len());
    let mut failed: Vec<(Slice, AttemptError, u32)> = Vec::new();
    let mut attempts = 0u32;
    let mut fetched = 0usize;
    let collecting = tokio::time::timeout_at(deadline, async {
        while let Some(joined) = tasks.join_next().await {
            let Ok(Fetched { slice, retried }) = joined else {
                return Err(ServiceError::Internal("a slice task failed".into()));
            };
            done.insert(slice);
            attempts += retried.attempts;
            match retried.result {
                Ok(response) => {
                    fetched += 1;
                    absorb(&mut merged, response).map_err(|e| ServiceError::UpstreamFailed {
                        failed: vec![failed_slice(
                            &plan,
                            slice,
                            vec![format!("the upstream's answers do not add up: {e}")],
                            None,
                            retried.attempts,
                        )],
                    })?;
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
        () = state.cut_off.cancelled() => Err(Stopped::CutOff),
    };
    tasks.abort_all();
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
        Err(Stopped::CutOff) => {
            let missing = not_done()
                .into_iter()
                .map(|slice| {
                    failed_slice(&plan, slice, vec!["not fetched: the service shut down".into()], None, 0)
                })
                .collect();
            return Err(ServiceError::CutOff { failed: missing });
        }
    }
    if !failed.is_empty() && !partial {
        return Err(failure(&plan, &state.settings.request_timeout(), failed));
    }

    // Zeros for the windows before each batch existed, without the Tweets the API says
    // are deleted (it leaves those out of every grouping).
    let deleted: HashSet<TweetId> = merged.unavailable_tweet_ids.iter().copied().collect();
    for (b, zeros) in plan.synthesized.iter().enumerate() {
        if let Some(z) = zeros {
            let shown: Vec<TweetId> =
                plan.batches[b].iter().copied().filter(|id| !deleted.contains(id)).collect();
            absorb(&mut merged, synthesize(&shown, &query.types, &query.groupings, *z)).map_err(|e| {
                ServiceError::Internal(format!("synthesized zeros do not fit the answers: {e}"))
            })?;
        }
    }
    for g in &query.groupings {
        merged.groupings.entry(g.name.clone()).or_insert_with(engagement::Node::branch);
    }
    merged.start = Some(format_instant(range.start));
    merged.end = Some(format_instant(range.end));

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
        client = %caller.client,
        handle = %caller.handle.handle,
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

/// Why the wait for a question's slices ended early.
enum Stopped {
    Deadline,
    CutOff,
}

/// Refuses, before any call, a question of `calls` upstream calls that the per-minute budget
/// cannot carry before the deadline: never (`400`, however idle the service), or not now,
/// beside the questions already in flight (`429` with the wait until it would fit). Turns go
/// round-robin between questions, so each question in flight goes ahead of this one by at
/// most as many calls as this one makes. Only a rate the service paces itself is known well
/// enough to say "not now"; one learned from the upstream's headers is used for "never".
fn check_budget(state: &AppState, calls: usize) -> Result<(), ServiceError> {
    let Some(budget) = &state.budget else {
        return Ok(());
    };
    let Some(per_minute) = budget.per_minute() else {
        return Ok(());
    };
    let timeout = state.settings.request_timeout();
    let configured = budget.configured_per_minute().is_some();
    // A configured rate lets `burst` go at once; the upstream's own minute lets its whole
    // limit go at the start of a window.
    let burst = if configured { budget.burst() } else { per_minute } as usize;
    let interval = Duration::from_secs(60) / per_minute;
    let fit = burst + (timeout.as_secs_f64() / interval.as_secs_f64()) as usize;
    if calls > fit {
        let source =
            if configured { "upstream.requests_per_minute" } else { "the upstream's x-per-minute-limit" };
        return Err(ServiceError::BadRequest(engagement::ApiError::new(format!(
            "this question needs {calls} upstream calls, but at {per_minute} calls a minute ({source}) at most {fit} fit in its deadline of {} s (server.request_timeout_secs): ask for a shorter range or fewer Tweets",
            timeout.as_secs()
        ))));
    }
    if !configured {
        return Ok(());
    }
    let ahead = state.scheduler.calls_ahead_of(calls);
    let needed = budget.paused_for() + interval * (ahead + calls).saturating_sub(burst) as u32;
    if needed > timeout {
        return Err(ServiceError::BudgetBusy { retry_after: needed - timeout, calls, ahead });
    }
    Ok(())
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

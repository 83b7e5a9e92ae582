//! `/totals` and `/28hr`: counts as they are now. They are never kept as facts (they
//! describe the moment they are asked, and `/totals` counts what `/historical` does not),
//! but identical calls in flight are made once. A question is cut into batches of the
//! endpoint's size (250 for `/totals`, 25 for `/28hr`), fetched in parallel through the
//! call policy like any slice, and the answers merged by the same rules as `/historical`'s.

use std::sync::Arc;

use chrono::Utc;
use engagement::time::ceil_hour;
use engagement::vocabulary::earliest_start;
use engagement::{Endpoint, Query, Response, TimeRange};
use futures::FutureExt;
use serde::Serialize;
use stitch::{Plan, absorb};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use upstream::{AttemptError, HandleCredentials, Retried};

use super::failure::{failed_slice, failure, outcome, refusal};
use super::in_flight::{InFlight, Told, collect};
use super::{Engine, shared_call};
use crate::error::ServiceError;
use crate::metrics;

/// A call in flight to `/totals` or `/28hr`: who asks, where, and the body's text.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct NowKey {
    handle: String,
    endpoint: Endpoint,
    body: String,
}

/// What a shared call came to.
pub(crate) type NowShared = Arc<Retried<Response>>;

/// What the native `/v1/totals` and `/v1/28hr` say of an answer besides its counts.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct NowMeta {
    /// The span counted (`/28hr` only: `/totals` counts each Tweet's life so far).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub start: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub end: Option<String>,
    pub tweets: usize,
    /// Batches of at most 250 (`/totals`) or 25 (`/28hr`) Tweets: one call each.
    pub batches: usize,
    /// Calls this question made.
    pub upstream_calls: u32,
    /// Calls it shared with another question asking the same at the same time.
    pub shared_calls: u32,
    pub retries: u32,
    pub duration_ms: u64,
}

/// A `/totals` or `/28hr` answer, merged.
#[derive(Debug)]
pub struct NowAnswer {
    pub response: Response,
    pub meta: NowMeta,
}

impl Engine {
    /// Answers a `/totals` or `/28hr` `query` as `handle` by `deadline`, unless `cancel`
    /// fires first.
    pub async fn now(
        self: &Arc<Self>,
        handle: &Arc<HandleCredentials>,
        query: &Query,
        deadline: Instant,
        cancel: &CancellationToken,
    ) -> Result<NowAnswer, ServiceError> {
        let started = Instant::now();
        let (first, spans) = self.now_once(handle, query, deadline, cancel).await?;
        if spans <= 1 {
            return Ok(first);
        }
        // Batches of /28hr answered either side of an hour count different 28 hours, which
        // do not add up to one answer: asked again, they all fall in the new hour.
        let (mut again, _) = self.now_once(handle, query, deadline, cancel).await?;
        again.meta.upstream_calls += first.meta.upstream_calls;
        again.meta.shared_calls += first.meta.shared_calls;
        again.meta.retries += first.meta.retries;
        again.meta.duration_ms = started.elapsed().as_millis() as u64;
        Ok(again)
    }

    /// One round of calls for `query`, and how many spans its batches' answers counted
    /// (`start` as the upstream said it: one, unless an hour began between the calls).
    async fn now_once(
        self: &Arc<Self>,
        handle: &Arc<HandleCredentials>,
        query: &Query,
        deadline: Instant,
        cancel: &CancellationToken,
    ) -> Result<(NowAnswer, usize), ServiceError> {
        let started = Instant::now();
        let endpoint = query.endpoint;
        // Only for naming a failed batch: `/totals` has no range of its own.
        let span =
            query.range.unwrap_or_else(|| TimeRange { start: earliest_start(), end: ceil_hour(Utc::now()) });
        let plan = Arc::new(Plan::at_once(&query.tweet_ids, span, endpoint.max_tweet_ids()));
        let calls = plan.fetched.len();
        self.calls.check(calls, deadline).map_err(refusal)?;
        self.admit_handle(&handle.handle, true).await?;

        let lane = Arc::new(self.calls.lane(calls, deadline));
        let mut tasks = InFlight::new();
        // The types in one order, so questions that list them differently share calls.
        let mut types = query.types.clone();
        types.sort_unstable();
        for &slice in &plan.fetched {
            let mut body = Query {
                tweet_ids: plan.batches[slice.batch].clone(),
                types: types.clone(),
                range: None,
                end_clamped: false,
                ..query.clone()
            }
            .to_raw();
            (body.start, body.end) = (None, None);
            let key = NowKey {
                handle: handle.handle.clone(),
                endpoint,
                body: serde_json::to_string(&body).unwrap_or_default(),
            };
            let (engine, lane, handle) = (Arc::clone(self), Arc::clone(&lane), Arc::clone(handle));
            tasks.spawn(slice.batch, async move {
                let start = || {
                    let (engine, lane, handle, body) =
                        (Arc::clone(&engine), Arc::clone(&lane), Arc::clone(&handle), body.clone());
                    async move {
                        if let Err(e) = engine.admit_handle(&handle.handle, false).await {
                            tracing::error!(error = %e, handle = %handle.handle, "the handle ledger could not be written");
                        }
                        let call = engine.calls.call(&lane, endpoint, &handle, &body, deadline, |result, _, _| {
                            metrics::upstream_call(&outcome(result));
                        });
                        Arc::new(call.await)
                    }
                    .boxed()
                };
                let ran_out = |shared: &NowShared| matches!(shared.result, Err(AttemptError::Deadline { .. }));
                let failed = |e| Arc::new(Retried { result: Err(e), attempts: 0 });
                let (shared, joined) = shared_call(&engine.now_calls, &key, deadline, start, ran_out, failed).await;
                (slice, shared, joined)
            });
        }

        let mut merged = Response::default();
        let mut spans = std::collections::HashSet::new();
        let mut failed = Vec::new();
        let (mut made, mut joined_calls, mut attempts) = (0u32, 0u32, 0u32);
        let cut_off = collect(
            &mut tasks,
            &plan,
            &plan.fetched,
            (deadline, false),
            cancel,
            |(slice, shared, joined)| {
                if joined {
                    joined_calls += 1;
                } else {
                    made += 1;
                    attempts += shared.attempts;
                }
                match &shared.result {
                    Ok(response) => {
                        spans.insert(response.start.clone());
                        absorb(&mut merged, response.clone()).map_err(|e| ServiceError::UpstreamFailed {
                            failed: vec![failed_slice(
                                &plan,
                                slice,
                                vec![format!("the upstream's answers do not add up: {e}")],
                                None,
                                0,
                            )],
                        })?;
                    }
                    Err(error) => failed.push((slice, error.clone(), shared.attempts)),
                }
                Ok((slice, Told::of(&shared.result)))
            },
        )
        .await?;
        failed.extend(cut_off);
        if !failed.is_empty() {
            let timeout = deadline.saturating_duration_since(started);
            return Err(failure(&plan, &timeout, failed));
        }
        let meta = NowMeta {
            start: merged.start.clone(),
            end: merged.end.clone(),
            tweets: query.tweet_ids.len(),
            batches: plan.batches.len(),
            upstream_calls: made,
            shared_calls: joined_calls,
            retries: attempts.saturating_sub(made),
            duration_ms: started.elapsed().as_millis() as u64,
        };
        tracing::info!(
            endpoint = endpoint.name(),
            tweets = meta.tweets,
            batches = meta.batches,
            upstream_calls = meta.upstream_calls,
            shared_calls = meta.shared_calls,
            duration_ms = meta.duration_ms,
            "question answered"
        );
        Ok((NowAnswer { response: merged, meta }, spans.len()))
    }
}

//! `/totals` and `/28hr`: counts as they are now. They are never kept as facts (they
//! describe the moment they are asked, and `/totals` counts what `/historical` does not),
//! but identical calls in flight are made once. A question is cut into batches of the
//! endpoint's size (250 for `/totals`, 25 for `/28hr`), fetched in parallel through the
//! call policy like any slice, and the answers merged by the same rules as `/historical`'s.

use std::sync::Arc;

use engagement::time::ceil_hour;
use engagement::vocabulary::earliest_start;
use engagement::{Endpoint, Query, RawRequest, Response, TimeRange};
use futures::FutureExt;
use serde::Serialize;
use stitch::{Plan, Slice, absorb};
use tokio::time::Instant;
use tracing::Instrument;
use upstream::{AttemptError, Calling, Lane, Retried};

use crate::error::EngineError;
use crate::execute::{Ended, Round};
use crate::failure::{failed_slice, failure};
use crate::{Ask, Engine, Meta, coalesced_call};

/// A call in flight to `/totals` or `/28hr`: who asks, where, and the body's text.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct CurrentKey {
    handle: String,
    endpoint: Endpoint,
    body: String,
}

/// What a shared call came to.
pub(crate) type CurrentOutcome = Arc<Retried<Response>>;

/// What the native `/v1/totals` and `/v1/28hr` say of an answer besides its counts.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
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

impl NowMeta {
    /// What the executor's `meta` says of a `/totals` or `/28hr` question's plan and calls,
    /// with the span the upstream counted in `counted` and the calls `shared` with others.
    fn built_on(meta: Meta, counted: &Response, shared: u32) -> NowMeta {
        NowMeta {
            start: counted.start.clone(),
            end: counted.end.clone(),
            tweets: meta.tweets,
            batches: meta.batches,
            upstream_calls: meta.upstream_calls,
            shared_calls: shared,
            retries: meta.retries,
            duration_ms: meta.duration_ms,
        }
    }
}

/// A `/totals` or `/28hr` answer, merged.
#[derive(Debug)]
pub struct NowAnswer {
    pub response: Response,
    pub meta: NowMeta,
}

impl Engine {
    /// Answers a `/totals` or `/28hr` `query` as `ask` says.
    pub async fn current(self: &Arc<Self>, ask: &Ask, query: &Query) -> Result<NowAnswer, EngineError> {
        ask.span.record("endpoint", query.endpoint.name());
        self.current_in_span(ask, query).instrument(ask.span.clone()).await
    }

    async fn current_in_span(self: &Arc<Self>, ask: &Ask, query: &Query) -> Result<NowAnswer, EngineError> {
        let started = Instant::now();
        let (first, spans) = self.current_round(ask, query).await?;
        if spans <= 1 {
            return Ok(first);
        }
        // Batches of /28hr answered either side of an hour count different 28 hours, which
        // do not add up to one answer: asked again, they all fall in the new hour.
        let (mut again, _) = self.current_round(ask, query).await?;
        again.meta.upstream_calls += first.meta.upstream_calls;
        again.meta.shared_calls += first.meta.shared_calls;
        again.meta.retries += first.meta.retries;
        again.meta.duration_ms = started.elapsed().as_millis() as u64;
        Ok(again)
    }

    /// One round of calls for `query`, and how many spans its batches' answers counted
    /// (`start` as the upstream said it: one, unless an hour began between the calls).
    async fn current_round(
        self: &Arc<Self>,
        ask: &Ask,
        query: &Query,
    ) -> Result<(NowAnswer, usize), EngineError> {
        let started = Instant::now();
        let endpoint = query.endpoint;
        // Only for naming a failed batch: `/totals` has no range of its own.
        let span = query
            .range
            .unwrap_or_else(|| TimeRange { start: earliest_start(), end: ceil_hour(self.clock.now()) });
        let plan = Plan::at_once(&query.tweet_ids, span, endpoint.max_tweet_ids());
        // The types in one order, so questions that list them differently share calls.
        let mut types = query.types.clone();
        types.sort_unstable();
        let start = |slice: Slice, lane: Arc<Lane>| {
            let mut body = Query {
                tweet_ids: plan.batches[slice.batch].clone(),
                types: types.clone(),
                range: None,
                end_clamped: false,
                ..query.clone()
            }
            .to_raw();
            (body.start, body.end) = (None, None);
            CurrentCall { engine: Arc::clone(self), ask: ask.clone(), endpoint, lane, body }.call(slice)
        };
        let mut merged = Response::default();
        let mut spans = std::collections::HashSet::new();
        let absorb_one = |slice: Slice, response: Response| {
            spans.insert(response.start.clone());
            absorb(&mut merged, response).map_err(|e| EngineError::UpstreamFailed {
                failed: vec![failed_slice(
                    &plan,
                    slice,
                    vec![format!("the upstream's answers do not add up: {e}")],
                    None,
                    0,
                )],
            })?;
            Ok(1)
        };
        let round = Round { ask, plan: &plan, partial: false, checked: true };
        let made = self.execute(round, &plan.fetched, start, absorb_one).await?;
        if !made.failed.is_empty() {
            return Err(failure(&plan, &ask.deadline.saturating_duration_since(started), made.failed));
        }
        let meta = Meta {
            upstream_calls: made.made,
            retries: made.retries(),
            ..Meta::planned(&plan, query, span, started)
        };
        let meta = NowMeta::built_on(meta, &merged, made.joined);
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

/// One batch's call to `/totals` or `/28hr`, shared with the questions asking the same.
struct CurrentCall {
    engine: Arc<Engine>,
    ask: Ask,
    endpoint: Endpoint,
    lane: Arc<Lane>,
    body: RawRequest,
}

impl CurrentCall {
    /// The call's outcome, made here or joined if another question is making it.
    async fn call(self, slice: Slice) -> Ended<Slice, Response> {
        let CurrentCall { engine, ask, endpoint, lane, body } = self;
        let key = CurrentKey {
            handle: ask.handle.handle.clone(),
            endpoint,
            body: serde_json::to_string(&body).unwrap_or_default(),
        };
        let deadline = ask.deadline;
        let start = || {
            let (engine, lane, handle, body) =
                (Arc::clone(&engine), Arc::clone(&lane), Arc::clone(&ask.handle), body.clone());
            let client = ask.client.clone();
            let span = crate::call_span(slice.batch, None);
            async move {
                let calling = Calling { lane: &lane, endpoint, handle: &handle, body: &body, deadline };
                let call = engine
                    .calls
                    .call(calling, |result, attempt| engine.attempted(&client, result, attempt))
                    .instrument(span);
                Arc::new(call.await)
            }
            .boxed()
        };
        let ran_out = |shared: &CurrentOutcome| matches!(shared.result, Err(AttemptError::Deadline { .. }));
        let failed = |e| Arc::new(Retried { result: Err(e), attempts: 0 });
        let (shared, joined) =
            coalesced_call(&engine.current_calls, &key, deadline, start, ran_out, failed).await;
        Ended { call: slice, result: shared.result.clone(), attempts: shared.attempts, joined }
    }
}

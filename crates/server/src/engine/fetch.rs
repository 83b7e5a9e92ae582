//! One call for facts: made through the call policy (or, among replicas, taken from the
//! replica that holds its lease), its answer kept in the store while the call still holds
//! its place among the calls in flight, and shared with every question waiting for the
//! same call.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use chrono::{DateTime, Utc};
use engagement::{
    Endpoint, EngagementType, GroupBy, Grouping, Query, RawRequest, Response, TimeRange, TweetId,
};
use futures::FutureExt;
use stitch::Plan;
use store::{CallFacts, Store, StoreError};
use tokio::time::Instant;
use upstream::{AttemptError, HandleCredentials, Lane};

use super::failure::outcome;
use super::needs::{Need, refusal_told};
use super::{Engine, Progress, shared_call, shared_facts};
use crate::metrics;

/// The grouping of every call that fetches facts: each Tweet's every type, hour by hour.
pub(crate) const HOURLY: &str = "hourly";

/// What makes two calls the same call.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct CallKey {
    handle: String,
    tweets: Vec<TweetId>,
    types: Vec<EngagementType>,
    window: TimeRange,
    status_only: bool,
}

/// Why a call's facts could not be had.
#[derive(Debug, Clone)]
pub(crate) enum CallFailure {
    Call(AttemptError),
    Store(Arc<StoreError>),
}

/// What a shared call came to: its facts and the first hour it kept as unsettled, or why
/// not; and the attempts it took.
pub(crate) type Shared = Arc<(Result<(Arc<CallFacts>, i64), CallFailure>, u32)>;

/// One question's call for `need`: its lane, who asks, and by when.
pub(crate) struct Ask {
    pub engine: Arc<Engine>,
    pub lane: Arc<Lane>,
    pub handle: Arc<HandleCredentials>,
    pub plan: Arc<Plan>,
    /// The question's types, in one order, so questions listing them differently share calls.
    pub types: Vec<EngagementType>,
    pub deadline: Instant,
    pub progress: Arc<Progress>,
}

impl Ask {
    /// The outcome of the call for `need`, made here or joined if another question is
    /// making it; and whether it was joined.
    pub(crate) async fn call(self, need: Need) -> (Need, Shared, bool) {
        let body = request(&self.plan, need, &self.types);
        let key = CallKey {
            handle: self.handle.handle.clone(),
            tweets: self.plan.batches[need.slice.batch].clone(),
            types: self.types.clone(),
            window: need.slice.window,
            status_only: need.status_only,
        };
        let ask = Arc::new(self);
        let start = || {
            let (ask, body, tweets) = (Arc::clone(&ask), body.clone(), key.tweets.clone());
            async move {
                let types = ask.types.clone();
                ask.engine
                    .fetch(&ask.lane, &ask.handle, body, (tweets, types), need, ask.deadline, &ask.progress)
                    .await
            }
            .boxed()
        };
        let ran_out =
            |shared: &Shared| matches!(shared.0, Err(CallFailure::Call(AttemptError::Deadline { .. })));
        let failed = |e| Arc::new((Err(CallFailure::Call(e)), 0));
        let (shared, joined) =
            shared_call(&ask.engine.shared, &key, ask.deadline, start, ran_out, failed).await;
        (need, shared, joined)
    }
}

/// The call for `need`: the question's types, hour by hour; or, for a status, one type
/// over one hour.
fn request(plan: &Plan, need: Need, types: &[EngagementType]) -> RawRequest {
    let (types, group_by) = if need.status_only {
        (vec![types.first().copied().unwrap_or(EngagementType::Favorites)], vec![GroupBy::TweetId])
    } else {
        (types.to_vec(), GroupBy::ALL.to_vec())
    };
    Query {
        endpoint: Endpoint::Historical,
        tweet_ids: plan.batches[need.slice.batch].clone(),
        types,
        groupings: vec![Grouping { name: HOURLY.into(), group_by }],
        range: Some(need.slice.window),
        end_clamped: false,
    }
    .to_raw()
}

impl Engine {
    /// Keeps which of `tweets` the upstream refused in `error`, if it named them. Failing to
    /// keep it costs only a call next time, so it is logged, not the question's failure.
    async fn remember_refusal(
        &self,
        handle: &str,
        tweets: &[TweetId],
        error: &AttemptError,
        at: DateTime<Utc>,
    ) {
        let told = refusal_told(tweets, error);
        if told.is_empty() {
            return;
        }
        let (store, name) = (Arc::clone(&self.store), handle.to_string());
        let kept = tokio::task::spawn_blocking(move || store.refuse(&name, told, at)).await;
        if let Err(e) = kept.map_err(|e| e.to_string()).and_then(|r| r.map_err(|e| e.to_string())) {
            tracing::warn!(error = %e, "the store could not keep a refusal");
        }
    }

    /// Makes one call through the call policy and keeps what it brings.
    #[allow(clippy::too_many_arguments)]
    async fn fetch(
        &self,
        lane: &Lane,
        handle: &HandleCredentials,
        body: RawRequest,
        (tweets, types): (Vec<TweetId>, Vec<EngagementType>),
        need: Need,
        deadline: Instant,
        progress: &Progress,
    ) -> Shared {
        if let Err(e) = self.admit_handle(&handle.handle, false).await {
            let reason = format!("the handle ledger could not be written: {e}");
            return Arc::new((
                Err(CallFailure::Call(AttemptError::Transient { reason, status: None, retry_after: None })),
                0,
            ));
        }
        // Among replicas, one makes the call and the others take what it wrote.
        let mut lease = None;
        if let Some(sharing) = self.sharing.as_ref().filter(|s| s.redis.is_up()) {
            let (window, status_only) = (need.slice.window, need.status_only);
            let name = shared_facts::call_name(&handle.handle, &tweets, &types, window, status_only);
            let holder = format!("{:016x}", fastrand::u64(..));
            match sharing.redis.take_lease(&name, &holder, shared_facts::LEASE).await {
                Ok(true) => lease = Some((name, holder)),
                Ok(false) => {
                    let theirs = shared_facts::wait_for(
                        sharing,
                        &self.store,
                        &handle.handle,
                        &name,
                        &tweets,
                        &types,
                        window,
                        status_only,
                        deadline,
                    )
                    .await;
                    if let Some((facts, unsettled_from)) = theirs {
                        metrics::coalesced();
                        return Arc::new((Ok((Arc::new(facts), unsettled_from)), 0));
                    }
                }
                Err(_) => {}
            }
        }
        let sent = AtomicU32::new(0);
        // Hours are judged settled from before the call was sent: never from after the
        // upstream answered, when a not-yet-final hour may have turned old enough.
        let sent_at: DateTime<Utc> = Utc::now();
        // The facts are read and kept while the call holds its place among the calls in
        // flight, so answers waiting to be kept never pile up beyond those calls.
        let keep = |response: Response| {
            let (store, name, tweets, types) =
                (Arc::clone(&self.store), handle.handle.clone(), tweets.clone(), types.clone());
            let sharing = self.sharing.clone();
            async move {
                let kept = {
                    let (store, name) = (Arc::clone(&store), name.clone());
                    tokio::task::spawn_blocking(move || {
                        keep(&store, &name, &tweets, &types, need, response, sent_at)
                    })
                    .await
                    .unwrap_or_else(|e| {
                        let reason = format!("keeping the answer failed: {e}");
                        Err(AttemptError::Transient { reason, status: None, retry_after: None })
                    })?
                };
                let (mut facts, unsettled_from) = match kept {
                    Ok(kept) => kept,
                    Err(failure) => return Ok(Err(failure)),
                };
                if let Some(sharing) = &sharing {
                    shared_facts::give(sharing, &store, &name, &facts, sent_at).await;
                }
                // Only the unsettled hours go to the questions waiting (settled ones are on
                // disk), so a big question never holds every call's facts.
                facts.drop_settled(unsettled_from);
                Ok(Ok((Arc::new(facts), unsettled_from)))
            }
        };
        let retried = self
            .calls
            .call_then(
                lane,
                Endpoint::Historical,
                handle,
                &body,
                deadline,
                |result, waited, took| {
                    let retry = sent.fetch_add(1, Ordering::Relaxed) > 0;
                    metrics::upstream_call(&outcome(result));
                    progress.attempt(retry, waited, took);
                },
                keep,
            )
            .await;
        let kept = match retried.result {
            Ok(kept) => kept,
            Err(e) => {
                self.remember_refusal(&handle.handle, &tweets, &e, sent_at).await;
                Err(CallFailure::Call(e))
            }
        };
        if let (Some(sharing), Some((name, holder))) = (&self.sharing, lease)
            && let Err(e) = sharing.redis.release_lease(&name, &holder).await
        {
            tracing::debug!(error = %e, "a call's lease could not be given up (it expires)");
        }
        Arc::new((kept, retried.attempts))
    }
}

/// Reads an answer's facts and keeps them, returning them with the first hour kept as
/// unsettled. An answer that is not the hourly shape asked for is the attempt's failure; a
/// store that cannot keep them is the call's.
fn keep(
    store: &Store,
    handle: &str,
    tweets: &[TweetId],
    types: &[EngagementType],
    need: Need,
    response: Response,
    sent_at: DateTime<Utc>,
) -> Result<Result<(CallFacts, i64), CallFailure>, AttemptError> {
    let facts = if need.status_only {
        CallFacts::status_only(tweets, &response)
    } else {
        CallFacts::hourly(tweets, types, need.slice.window, &response, HOURLY).map_err(|e| {
            AttemptError::Transient { reason: e.to_string(), status: Some(200), retry_after: None }
        })?
    };
    drop(response);
    if let Err(e) = store.keep(handle, &facts, sent_at) {
        return Ok(Err(CallFailure::Store(Arc::new(e))));
    }
    Ok(Ok((facts, store.unsettled_from(sent_at))))
}

//! One call for facts: made through the call policy (or, among replicas, taken from the
//! replica that holds its lease), its answer kept in the store while the call still holds
//! its place among the calls in flight, and shared with every question waiting for the
//! same call.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use engagement::{Endpoint, EngagementType, GroupBy, Grouping, Query, RawRequest};
use futures::FutureExt;
use stitch::Plan;
use stitch::rebucket::HOURLY;
use store::{CallFacts, StoreError};
use tracing::Instrument;
use upstream::{AttemptError, Body, Calling, Lane, Retried};

use crate::execute::Ended;
use crate::metrics;
use crate::needs::{CallKey, Need, refusal_told};
use crate::ports::{Claim, Leases, Told};
use crate::{Ask, Engine, TaskFailed, coalesced_call, facts_tier, off_the_workers};

/// How many times a call's lease is claimed before the call is made without one.
const CLAIMS: usize = 3;

/// Runs `call` while holding the lease `holder` took on `name`, renewing it every third of
/// its life so a slow call is never made again by another replica. A lease that cannot be
/// renewed (lost, or Redis away) is left to expire while the call goes on.
pub(crate) async fn held_while<T>(
    leases: &dyn Leases,
    name: &str,
    holder: &str,
    call: impl Future<Output = T>,
) -> T {
    let renew = async {
        loop {
            tokio::time::sleep(leases.term() / 3).await;
            if !leases.renew(name, holder, leases.term()).await {
                tracing::debug!("a call's lease could not be renewed (lost, or Redis away)");
                return;
            }
        }
    };
    tokio::pin!(call);
    tokio::select! {
        done = &mut call => return done,
        () = renew => {}
    }
    call.await
}

/// Why a call's facts could not be had.
#[derive(Debug, Clone)]
pub(crate) enum CallFailure {
    Call(AttemptError),
    Store(Arc<StoreError>),
}

/// An answer read, its facts queued to be kept.
struct Read {
    facts: CallFacts,
    /// Its facts being written: started as they are queued, so it runs to its end even if
    /// no question waits for it any more.
    written: Written,
    /// Its place among the answers between read and written.
    turn: Option<tokio::sync::OwnedSemaphorePermit>,
}

/// Waiting for queued facts to be written, on a blocking thread.
type Written = std::pin::Pin<Box<dyn Future<Output = Result<Result<(), StoreError>, TaskFailed>> + Send>>;

/// What a call brought: its facts (the unsettled hours only: settled ones are on disk) and
/// the first hour it kept as unsettled.
#[derive(Debug, Clone)]
pub(crate) struct Brought {
    pub facts: Arc<CallFacts>,
    pub unsettled_from: i64,
}

/// What a shared call came to, and the attempts it took.
#[derive(Debug)]
pub(crate) struct CallOutcome {
    pub result: Result<Brought, CallFailure>,
    pub attempts: u32,
}

impl CallOutcome {
    fn new(result: Result<Brought, CallFailure>, attempts: u32) -> Arc<CallOutcome> {
        Arc::new(CallOutcome { result, attempts })
    }
}

/// One question's call for facts: what it asks, and the question's lane, handle, deadline
/// and progress.
pub(crate) struct FactsCall {
    engine: Arc<Engine>,
    lane: Arc<Lane>,
    ask: Ask,
    key: CallKey,
    need: Need,
}

/// What an ended call brings the executor: facts, or a store that could not keep them.
pub(crate) type Kept = Result<Brought, Arc<StoreError>>;

impl FactsCall {
    /// The call for `need` of `plan`, asking `types` (in one order, so questions listing
    /// them differently share calls).
    pub(crate) fn new(
        engine: Arc<Engine>,
        (ask, lane): (&Ask, Arc<Lane>),
        plan: &Plan,
        types: &[EngagementType],
        need: Need,
    ) -> FactsCall {
        let key = CallKey {
            handle: ask.handle.handle.clone(),
            tweets: plan.batches[need.slice.batch].clone(),
            types: types.to_vec(),
            window: need.slice.window,
            status_only: need.status_only,
        };
        FactsCall { engine, lane, ask: ask.clone(), key, need }
    }

    /// The call's outcome, made here or joined if another question is making it.
    pub(crate) async fn call(self) -> Ended<Need, Kept> {
        let (engine, deadline, need) = (Arc::clone(&self.engine), self.ask.deadline, self.need);
        let key = self.key.clone();
        let span = crate::call_span(need.slice.batch, Some(need.slice.window));
        let this = Arc::new(self);
        let start = || Arc::clone(&this).made().instrument(span.clone()).boxed();
        let ran_out = |shared: &Arc<CallOutcome>| {
            matches!(shared.result, Err(CallFailure::Call(AttemptError::Deadline { .. })))
        };
        let failed = |e| CallOutcome::new(Err(CallFailure::Call(e)), 0);
        let (shared, joined) =
            coalesced_call(&engine.facts_calls, &key, deadline, start, ran_out, failed).await;
        let result = match &shared.result {
            Ok(brought) => Ok(Ok(brought.clone())),
            Err(CallFailure::Store(e)) => Ok(Err(Arc::clone(e))),
            Err(CallFailure::Call(e)) => Err(e.clone()),
        };
        Ended { call: need, result, attempts: shared.attempts, joined }
    }

    /// The call, made by this question for every question waiting for it: through the
    /// call policy, unless another replica holds its lease and has written its facts.
    async fn made(self: Arc<Self>) -> Arc<CallOutcome> {
        let lease = match self.lease().await {
            Ok(lease) => lease,
            Err(theirs) => return theirs,
        };
        // Hours are judged settled from before the call was sent: never from after the
        // upstream answered, when a not-yet-final hour may have turned old enough.
        let sent_at: DateTime<Utc> = self.engine.clock.now();
        let body = self.request();
        let progress = Arc::clone(&self.ask.progress);
        let engine = &self.engine;
        let call = engine.calls.call_then(
            Calling {
                lane: &self.lane,
                endpoint: Endpoint::Historical,
                handle: &self.ask.handle,
                body: &body,
                deadline: self.ask.deadline,
            },
            |result, attempt| {
                engine.attempted(&self.ask.client, result, attempt);
                progress.attempt(attempt);
            },
            // Read while the call holds its place among the calls in flight, so answers
            // waiting to be read never pile up beyond those calls.
            |body| Arc::clone(&self).read(body, sent_at),
        );
        let kept = async {
            match call.await {
                Retried { result: Ok(read), attempts } => {
                    (Arc::clone(&self).kept(read, sent_at).await, attempts)
                }
                Retried { result: Err(e), attempts } => {
                    self.remember_refusal(&e, sent_at).await;
                    (Err(CallFailure::Call(e)), attempts)
                }
            }
        };
        let (kept, attempts) = match &lease {
            Some((name, holder)) => held_while(engine.shared.leases.as_ref(), name, holder, kept).await,
            None => kept.await,
        };
        if let Some((name, holder)) = lease {
            engine.shared.leases.release(&name, &holder).await;
        }
        CallOutcome::new(kept, attempts)
    }

    /// Among replicas, one makes a call and the others take what it wrote: the lease this
    /// replica took (its name and holder), if any, or the other replica's outcome.
    async fn lease(&self) -> Result<Option<(String, String)>, Arc<CallOutcome>> {
        let shared = &self.engine.shared;
        if !shared.facts.reachable() {
            return Ok(None);
        }
        let name = facts_tier::call_name(&self.key);
        // A holder that gave up its lease without writing the facts (its call failed) leaves
        // the call to whoever claims it next: this replica claims it again before calling.
        for _ in 0..CLAIMS {
            match shared.leases.claim(&name, shared.leases.term()).await {
                Claim::Ours { holder } => return Ok(Some((name, holder))),
                Claim::Nobody => return Ok(None),
                Claim::Theirs => {
                    if let Some((facts, unsettled_from)) =
                        facts_tier::wait_for(&self.engine, &self.key, &name, self.ask.deadline).await
                    {
                        metrics::coalesced();
                        let brought = Brought { facts: Arc::new(facts), unsettled_from };
                        return Err(CallOutcome::new(Ok(brought), 0));
                    }
                }
            }
            if tokio::time::Instant::now() >= self.ask.deadline {
                break;
            }
        }
        Ok(None)
    }

    /// The call: the question's types, hour by hour; or, for a status, one type over one
    /// hour.
    fn request(&self) -> RawRequest {
        let (types, grouping) = if self.need.status_only {
            let ty = self.key.types.first().copied().unwrap_or(EngagementType::Favorites);
            (vec![ty], Grouping { name: HOURLY.into(), group_by: vec![GroupBy::TweetId] })
        } else {
            (self.key.types.clone(), stitch::hourly_grouping())
        };
        Query {
            endpoint: Endpoint::Historical,
            tweet_ids: self.key.tweets.clone(),
            types,
            groupings: vec![grouping],
            range: Some(self.need.slice.window),
            end_clamped: false,
            zone: engagement::Zone::Utc,
        }
        .to_raw()
    }

    /// Reads an answer's facts straight from its `body` and queues them to be kept in this
    /// process's store, on a blocking thread. An answer that is not the hourly shape asked
    /// for is the attempt's failure. Answers between being read and being written are
    /// bounded (two per core): past that, a call keeps its place among the calls in flight
    /// until one is written, so they never pile up in memory behind the writer.
    async fn read(self: Arc<Self>, body: Body, sent_at: DateTime<Utc>) -> Result<Read, AttemptError> {
        let turn = Arc::clone(&self.engine.keeping).acquire_owned().await.ok();
        let this = Arc::clone(&self);
        off_the_workers("reading the answer failed", move || {
            // Inflated here, where it is read next, while it is in the cache.
            let body = body.text()?;
            let CallKey { handle, tweets, types, window, .. } = &this.key;
            let facts = if this.need.status_only {
                CallFacts::read_status(tweets, &body)
            } else {
                CallFacts::read_hourly(tweets, types, *window, &body, HOURLY)
            }
            .map_err(|e| upstream::unreadable(&e))?;
            let store = &this.engine.store;
            let queued = store.queue(handle, &facts, sent_at);
            let store = Arc::clone(store);
            let written: Written =
                Box::pin(off_the_workers("keeping the answer failed", move || Ok(store.written(queued))));
            Ok(Read { facts, written, turn })
        })
        .await
    }

    /// Waits for what `read` queued to be written to this process's store, then gives it
    /// to the other replicas: the call's facts, with only its unsettled hours. A store that
    /// cannot keep them is the call's failure.
    async fn kept(self: Arc<Self>, read: Read, sent_at: DateTime<Utc>) -> Result<Brought, CallFailure> {
        let Read { mut facts, written, turn } = read;
        let written = written.await;
        drop(turn);
        match written {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(CallFailure::Store(Arc::new(e))),
            Err(e) => return Err(CallFailure::Call(e.into())),
        }
        let unsettled_from = self.engine.store.unsettled_from(sent_at);
        let tier = self.engine.shared.facts.as_ref();
        let times = (sent_at, self.engine.clock.now());
        facts_tier::give(tier, &self.engine.store, &self.key.handle, &facts, times).await;
        // Only the unsettled hours go to the questions waiting (settled ones are on disk),
        // so a big question never holds every call's facts.
        facts.drop_settled(unsettled_from);
        Ok(Brought { facts: Arc::new(facts), unsettled_from })
    }

    /// Keeps which of the call's Tweets the upstream refused in `error`, if it named them,
    /// here and among replicas.
    /// Failing to keep it costs only a call next time, so it is logged, not the question's
    /// failure.
    async fn remember_refusal(&self, error: &AttemptError, at: DateTime<Utc>) {
        let told = refusal_told(&self.key.tweets, error);
        if told.is_empty() {
            return;
        }
        let engine = &self.engine;
        let status_ttl = engine.store.config().status_ttl;
        let now = engine.clock.now();
        let told_here = Told { handle: &self.key.handle, refused: &told, at, status_ttl, now };
        engine.shared.facts.tell(told_here).await;
        let (store, name) = (Arc::clone(&engine.store), self.key.handle.clone());
        crate::off_the_workers_or_warn("the store could not keep a refusal", move || {
            store.refuse(&name, told, at)
        })
        .await;
    }
}

//! Answering from the store of facts. A question reads what the store holds of its Tweets
//! over its range; for each batch of 25 it fetches only the hours missing, with the fewest
//! windows of at most 28 days, for the types asked at hourly grain; identical calls in flight
//! are shared between questions; what comes back is kept; and the answer is rendered from
//! the hourly counts with the renderer the simulator uses, so any grouping or subset of
//! Tweets later needs no call for hours already held.

use std::collections::HashSet;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use engagement::{Endpoint, EngagementType, Grouping, Response, TimeRange, TweetId};
use stitch::{Plan, Slice, absorb, finish};
use store::facts::hour_of;
use store::{Known, Store, StoreError};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use upstream::{AttemptError, HandleCredentials};

use super::failure::{failed_attempt, failure, refusal};
use super::fetch::{Ask, CallFailure};
use super::in_flight::{InFlight, Told, collect};
use super::needs::{Coverage, Need, Needs, judging, needs};
use super::rendered::{RenderedAnswer, RenderedKey, no_video_views};
use super::{Answer, Engine, Meta, Progress, Question, shared_facts};
use crate::error::{FailedSlice, ServiceError};
use crate::metrics;

/// Runs `work` on a blocking thread.
async fn blocking<T: Send + 'static>(
    what: &str,
    work: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, ServiceError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| ServiceError::internal(format!("{what}: the task failed"), Some(Box::new(e))))?
        .map_err(|e| ServiceError::internal(what.to_string(), Some(Box::new(e))))
}

/// What a question's calls came to.
#[derive(Debug, Default)]
struct Fetched {
    /// Slices that could not be had (refused from memory, or calls that failed).
    failed: Vec<(Slice, AttemptError, u32)>,
    /// Grid slices whose every hour the store held before any call.
    held: HashSet<Slice>,
    /// Attempts of the calls this question made, and the calls.
    attempts: u32,
    made: u32,
}

/// A question's Tweets pinned against eviction; once they are let go, however the question
/// ends, the store evicts what the pins kept past its bound.
struct Pinned<'a> {
    engine: &'a Engine,
    pin: Option<store::Pin>,
}

impl Drop for Pinned<'_> {
    fn drop(&mut self) {
        drop(self.pin.take());
        self.engine.shrink_store();
    }
}

/// One question being answered: who asks, what, by when, watched and stopped how.
#[derive(Clone, Copy)]
struct Asking<'a> {
    handle: &'a Arc<HandleCredentials>,
    question: &'a Question,
    plan: &'a Arc<Plan>,
    deadline: Instant,
    progress: &'a Arc<Progress>,
    cancel: &'a CancellationToken,
}

/// What one round of calls came to: the calls answered, besides what [`Fetched`] counts.
#[derive(Debug, Default)]
struct Round {
    answered: HashSet<Need>,
}

impl Engine {
    /// Answers `question` from the store, fetching only what it lacks.
    pub(super) async fn recall(
        self: &Arc<Self>,
        handle: &Arc<HandleCredentials>,
        question: &Question,
        deadline: Instant,
        progress: &Arc<Progress>,
        cancel: &CancellationToken,
    ) -> Result<Answer, ServiceError> {
        let started = Instant::now();
        let Question { query, range, partial, .. } = question;
        let range = *range;
        let plan = Arc::new(stitch::plan(&query.tweet_ids, range, Endpoint::Historical.max_tweet_ids()));
        let now = Utc::now();
        let tweets: Vec<TweetId> = plan.batches.concat();
        let settled = hour_of(range.end) <= self.store.unsettled_from(now);
        let key = RenderedKey {
            handle: handle.handle.clone(),
            tweets: tweets.clone(),
            types: query.types.clone(),
            groupings: query.groupings.clone(),
            range,
        };
        progress.planned(&plan, 0);
        if settled && let Some(kept) = self.rendered.repeat(&key, now) {
            self.mark_used(&handle.handle, tweets, now);
            progress.planned(&plan, kept.from_store);
            let meta = Meta { slices_from_store: kept.from_store, ..Meta::planned(&plan, question, started) };
            meta.record();
            return Ok(Answer::stitched(
                Arc::clone(&kept.response),
                meta,
                Vec::new(),
                Some(Arc::clone(&kept.written)),
            ));
        }
        let pin = Pinned { engine: self, pin: Some(self.store.pin(&handle.handle, &tweets)) };
        self.mark_used(&handle.handle, tweets.clone(), now);
        let (store, name, types) = (Arc::clone(&self.store), handle.handle.clone(), query.types.clone());
        let mut known =
            blocking("the store could not be read", move || store.known(&name, &tweets, &types, range, now))
                .await?;
        let asking = Asking { handle, question, plan: &plan, deadline, progress, cancel };
        let fetched = self.fetch_missing(&asking, &mut known).await?;
        let Fetched { mut failed, held, attempts, made } = fetched;
        progress.answering();
        if !failed.is_empty() && !partial {
            return Err(failure(&plan, &deadline.saturating_duration_since(started), failed));
        }
        let oldest_status = known.oldest_status;
        // A batch whose Tweets' status is still unknown (its call failed, in a partial
        // answer) is left out whole, and said so.
        let mut seen = HashSet::new();
        for (slice, _, _) in &mut failed {
            if plan.batches[slice.batch].iter().any(|t| !known.status.contains_key(t)) {
                slice.window = range;
            }
        }
        failed.retain(|(slice, _, _)| seen.insert(*slice));
        // The windows that failed are left out of their batch: a hole is never shown as zeros.
        let holes: Vec<Slice> = failed.iter().map(|(s, _, _)| *s).collect();
        // The grid's slices answered by this question's calls: those the store lacked, but
        // for those a failed window leaves out (so fetched, held and synthesized add up to
        // the slices planned, less those incomplete).
        let slices_fetched = plan
            .fetched
            .iter()
            .filter(|s| !held.contains(s))
            .filter(|s| {
                !holes.iter().any(|h| {
                    h.batch == s.batch && h.window.start < s.window.end && s.window.start < h.window.end
                })
            })
            .count();

        let merged = {
            let (store, name, plan) = (Arc::clone(&self.store), handle.handle.clone(), Arc::clone(&plan));
            let (types, groupings) = (query.types.clone(), query.groupings.clone());
            tokio::task::spawn_blocking(move || {
                render(&store, &name, &plan, &known, &types, &groupings, &holes, now)
            })
            .await
            .map_err(|e| ServiceError::internal("rendering the answer failed", Some(Box::new(e))))??
        };
        drop(pin);

        let meta = Meta {
            slices_fetched,
            slices_from_store: held.len(),
            upstream_calls: attempts,
            retries: attempts.saturating_sub(made),
            ..Meta::planned(&plan, question, started)
        };
        meta.record();
        progress.fetched(slices_fetched);
        tracing::info!(
            handle = %handle.handle,
            tweets = meta.tweets,
            range = %range.describe(),
            calls = made,
            slices_from_store = meta.slices_from_store,
            upstream_calls = meta.upstream_calls,
            retries = meta.retries,
            incomplete = failed.len(),
            duration_ms = meta.duration_ms,
            "question answered"
        );
        let response = Arc::new(merged);
        if settled && failed.is_empty() {
            // Every real slice of the grid is held now.
            let ttl = chrono::Duration::from_std(self.store.config().status_ttl).unwrap_or_default();
            let kept = RenderedAnswer {
                response: Arc::clone(&response),
                valid_until: oldest_status.unwrap_or(now) + ttl,
                no_video_views: no_video_views(&plan.batches.concat(), &query.types, now),
                from_store: plan.fetched.len(),
                written: Arc::default(),
            };
            self.rendered.keep(key, kept);
        }
        let incomplete = failed
            .iter()
            .map(|(slice, error, attempts)| failed_attempt(&plan, *slice, error, *attempts))
            .collect();
        Ok(Answer::stitched(response, meta, incomplete, None))
    }

    /// What `known` lacks of `plan`, from Redis when replicas share it, else as calls.
    async fn needs_of(
        &self,
        handle: &str,
        plan: &Plan,
        known: &mut Known,
        types: &[EngagementType],
    ) -> Needs {
        let mut needs = needs(plan, known);
        if let Some(sharing) = self.sharing.as_ref().filter(|s| s.redis.is_up())
            && !needs.calls.is_empty()
        {
            shared_facts::take(sharing, &self.store, handle, plan, known, types, Utc::now()).await;
            needs = self::needs(plan, known);
        }
        needs
    }

    /// Fetches what `known` lacks of `plan`'s answer and learns what the calls bring into
    /// it. A batch whose status alone was asked (its Tweets last seen deleted or refused
    /// for) and whose call shows a Tweet after all gets a second round for that Tweet's
    /// hours. A question that fails anyway (a batch refused from memory, without
    /// `"partial": true`) asks only what decides its refusal.
    async fn fetch_missing(
        self: &Arc<Self>,
        asking: &Asking<'_>,
        known: &mut Known,
    ) -> Result<Fetched, ServiceError> {
        let (plan, question) = (asking.plan, asking.question);
        let types = &question.query.types;
        let needs = self.needs_of(&asking.handle.handle, plan, known, types).await;
        metrics::store_lookups(needs.hits, needs.misses);
        asking.progress.planned(plan, needs.held.len());
        let mut out = Fetched {
            failed: needs.refused.iter().map(|(slice, e)| (*slice, e.clone(), 0)).collect(),
            held: needs.held,
            ..Fetched::default()
        };
        let doomed = !question.partial && !needs.refused.is_empty();
        let (calls, checked) =
            if doomed { (judging(plan, known, &needs.refused), false) } else { (needs.calls, true) };
        let round = self.fetch_round(asking, &calls, checked, &out.held, known).await;
        let round = out.absorb(round?);
        if doomed || (!question.partial && !out.failed.is_empty()) {
            return Ok(out);
        }
        let shown_after_all: HashSet<usize> = calls
            .iter()
            .filter(|n| n.status_only && round.answered.contains(n))
            .map(|n| n.slice.batch)
            .collect();
        if shown_after_all.is_empty() {
            return Ok(out);
        }
        let again = self.needs_of(&asking.handle.handle, plan, known, types).await;
        // What those batches lack was taken for held while their Tweets seemed to show nothing.
        out.held.retain(|s| !shown_after_all.contains(&s.batch) || again.held.contains(s));
        asking.progress.planned(plan, out.held.len());
        let more: Vec<Need> = again
            .calls
            .into_iter()
            .filter(|n| !n.status_only && shown_after_all.contains(&n.slice.batch))
            .collect();
        let round = self.fetch_round(asking, &more, true, &out.held, known).await;
        out.absorb(round?);
        Ok(out)
    }

    /// Makes `calls` for the question (each shared with the questions that need the same
    /// call) and learns what they bring into `known`. `checked`: they are first checked
    /// against the per-minute budget (calls that only judge a question failing anyway are
    /// not: they wait their turn within its deadline).
    async fn fetch_round(
        self: &Arc<Self>,
        asking: &Asking<'_>,
        calls: &[Need],
        checked: bool,
        held: &HashSet<Slice>,
        known: &mut Known,
    ) -> Result<(Round, Fetched), ServiceError> {
        let Asking { handle, question, plan, deadline, progress, cancel } = *asking;
        let mut round = (Round::default(), Fetched::default());
        if calls.is_empty() {
            return Ok(round);
        }
        if checked {
            self.calls.check(calls.len(), deadline).map_err(refusal)?;
        }
        self.admit_handle(&handle.handle, true).await?;
        progress.calls_ahead(calls.len());
        let mut coverage = Coverage::of(plan, calls, held);
        let lane = Arc::new(self.calls.lane(calls.len(), deadline));
        let mut types = question.query.types.clone();
        types.sort_unstable();
        let mut tasks = InFlight::new();
        for &need in calls {
            let ask = Ask {
                engine: Arc::clone(self),
                lane: Arc::clone(&lane),
                handle: Arc::clone(handle),
                plan: Arc::clone(plan),
                types: types.clone(),
                deadline,
                progress: Arc::clone(progress),
            };
            tasks.spawn(need.slice.batch, ask.call(need));
        }
        let (answered, fetched) = (&mut round.0.answered, &mut round.1);
        let expected: Vec<Slice> = calls.iter().map(|n| n.slice).collect();
        let cut_off = collect(
            &mut tasks,
            plan,
            &expected,
            (deadline, question.partial),
            cancel,
            |(need, shared, joined)| {
                let (result, tries) = &*shared;
                if !joined {
                    fetched.attempts += tries;
                    fetched.made += 1;
                }
                match result {
                    Ok((facts, unsettled_from)) => {
                        progress.call_finished(coverage.answered(&need));
                        // Only the unsettled hours are taken (settled ones are on disk), and the
                        // call's facts are let go at once: a big question never holds them all.
                        known.learn(facts, *unsettled_from, Utc::now());
                        answered.insert(need);
                        Ok((need.slice, Told::Answered))
                    }
                    Err(CallFailure::Store(e)) => Err(ServiceError::internal(
                        "what was fetched could not be kept in the store",
                        Some(Box::new(Arc::clone(e))),
                    )),
                    Err(CallFailure::Call(error)) => {
                        progress.call_finished(0);
                        fetched.failed.push((need.slice, error.clone(), *tries));
                        Ok((need.slice, Told::of::<()>(&Err(error.clone()))))
                    }
                }
            },
        )
        .await?;
        round.1.failed.extend(cut_off);
        Ok(round)
    }

    /// Marks `tweets` used now for eviction, off the answer's path: losing the mark costs
    /// nothing but the order of eviction, so no question waits for it.
    fn mark_used(&self, handle: &str, tweets: Vec<TweetId>, now: DateTime<Utc>) {
        let (store, name) = (Arc::clone(&self.store), handle.to_string());
        tokio::task::spawn_blocking(move || {
            if let Err(e) = store.touch(&name, &tweets, now) {
                tracing::warn!(error = %e, "the store could not mark Tweets used");
            }
        });
    }

    /// Evicts what a question held pinned past the store's bound, off the answer's path.
    fn shrink_store(&self) {
        if self.store.over_bound() {
            let store = Arc::clone(&self.store);
            tokio::task::spawn_blocking(move || {
                if let Err(e) = store.shrink() {
                    tracing::warn!(error = %e, "the store could not evict down to its bound");
                }
            });
        }
    }
}

impl Fetched {
    /// Adds what a round of calls came to; the round's own part.
    fn absorb(&mut self, (round, fetched): (Round, Fetched)) -> Round {
        self.failed.extend(fetched.failed);
        self.attempts += fetched.attempts;
        self.made += fetched.made;
        round
    }
}

/// The answer from the counts held, batch by batch (so memory holds one batch's counts at a
/// time), leaving out the windows in `holes` (calls that failed, in a partial answer).
#[allow(clippy::too_many_arguments)]
fn render(
    store: &Store,
    handle: &str,
    plan: &Plan,
    known: &Known,
    types: &[EngagementType],
    groupings: &[Grouping],
    holes: &[Slice],
    now: DateTime<Utc>,
) -> Result<Response, ServiceError> {
    let mut merged = Response::default();
    for (b, batch) in plan.batches.iter().enumerate() {
        let mut failed: Vec<TimeRange> = holes.iter().filter(|s| s.batch == b).map(|s| s.window).collect();
        failed.sort_unstable_by_key(|w| w.start);
        if batch.iter().any(|t| !known.status.contains_key(t)) {
            // Whether a Tweet was deleted since its facts were kept is not known.
            continue;
        }
        let (deleted, shown): (Vec<TweetId>, Vec<TweetId>) =
            batch.iter().partition(|t| known.status.get(t) == Some(&true));
        let held = store.held(handle, &shown, types, known, &failed, now).map_err(|e| match e {
            StoreError::Vanished { tweet } => ServiceError::UpstreamFailed {
                failed: vec![FailedSlice {
                    start: engagement::time::format_instant(plan.range.start),
                    end: engagement::time::format_instant(plan.range.end),
                    tweet_ids: batch.iter().map(ToString::to_string).collect(),
                    status: Some(200),
                    errors: vec![format!("the upstream's answers lacked hours of Tweet {tweet}; retry")],
                    attempts: 0,
                }],
            },
            other => ServiceError::internal("the store could not be read", Some(Box::new(other))),
        })?;
        let mut part = Response { unavailable_tweet_ids: deleted, ..Response::default() };
        if types.contains(&EngagementType::VideoViews) {
            part.unsupported_for_video_views_tweet_ids =
                shown.iter().copied().filter(|t| held.no_video_views.contains(t)).collect();
        }
        absorb(&mut merged, part).map_err(adds_up)?;
        for range in around(plan.range, &failed) {
            let counts = Response {
                groupings: engagement::render(&shown, types, groupings, range, &held),
                ..Response::default()
            };
            absorb(&mut merged, counts).map_err(adds_up)?;
        }
    }
    finish(&mut merged, groupings, plan.range);
    Ok(merged)
}

fn adds_up(e: engagement::tree::TreeError) -> ServiceError {
    ServiceError::internal("the counts held do not add up", Some(Box::new(e)))
}

/// The parts of `range` outside the `holes` (sorted, disjoint).
fn around(range: TimeRange, holes: &[TimeRange]) -> Vec<TimeRange> {
    let mut out = Vec::new();
    let mut from = range.start;
    for hole in holes {
        if hole.start > from {
            out.push(TimeRange { start: from, end: hole.start.min(range.end) });
        }
        from = from.max(hole.end);
    }
    if from < range.end {
        out.push(TimeRange { start: from, end: range.end });
    }
    out
}

//! Answering from the store of facts. A question reads what the store holds of its Tweets
//! over its range; for each batch of 25 it fetches only the hours missing, with the fewest
//! windows of at most 28 days, for the types asked at hourly grain; identical calls in flight
//! are shared between questions; what comes back is kept; and the answer is rendered from
//! the hourly counts with the renderer the simulator uses, so any grouping or subset of
//! Tweets later needs no call for hours already held.

use std::collections::HashSet;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use engagement::{EngagementType, Response, TimeRange, TweetId};
use stitch::{Plan, Slice, absorb, finish};
use store::facts::hour_of;
use store::{Known, Store, StoreError};
use tokio::time::Instant;
use tracing::Instrument;

use crate::error::{EngineError, FailedSlice};
use crate::execute::{Made, Round};
use crate::failure::{failed_attempt, failure};
use crate::fetch::{FactsCall, Kept};
use crate::metrics;
use crate::needs::{Coverage, Need, Needs, judging, needs};
use crate::rendered::{RenderedAnswer, RenderedKey, no_video_views};
use crate::{Answer, Ask, Engine, Meta, Question, Took, facts_tier, off_the_workers};

/// What a question's calls came to.
#[derive(Debug, Default)]
struct Fetched {
    /// What the calls took, and the slices that could not be had (refused from memory, or
    /// calls that failed).
    made: Made,
    /// Grid slices whose every hour the store held before any call.
    held: HashSet<Slice>,
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

/// One question answered from the store: as asked, and its plan.
#[derive(Clone, Copy)]
struct Recalling<'a> {
    ask: &'a Ask,
    question: &'a Question,
    plan: &'a Arc<Plan>,
    started: Instant,
    now: DateTime<Utc>,
}

impl Recalling<'_> {
    /// The question as its rendered answers are kept by.
    fn key(&self) -> RenderedKey {
        rendered_key(&self.ask.handle.handle, self.plan, self.question)
    }

    /// A round of calls for it.
    fn round(&self, checked: bool) -> Round<'_> {
        Round { ask: self.ask, plan: self.plan, partial: self.question.partial, checked }
    }
}

impl Engine {
    /// Answers `question` from the store, fetching only what it lacks.
    pub(super) async fn recall(
        self: &Arc<Self>,
        ask: &Ask,
        question: &Question,
    ) -> Result<Answer, EngineError> {
        let range = question.range;
        let plan = Arc::new(question.plan());
        let now = self.clock.now();
        let r = Recalling { ask, question, plan: &plan, started: Instant::now(), now };
        ask.progress.planned(&plan, 0);
        let settled = hour_of(range.end) <= self.store.unsettled_from(now);
        if settled && let Some(answer) = self.repeat(&r) {
            return Ok(answer);
        }
        let (pin, mut known) = self.pinned_and_known(&r).await?;
        let calling = Instant::now();
        let Fetched { mut made, held } = self.fetch_missing(&r, &mut known).await?;
        let calling = calling.elapsed();
        ask.progress.answering();
        if !made.failed.is_empty() && !question.partial {
            return Err(failure(&plan, &ask.deadline.saturating_duration_since(r.started), made.failed));
        }
        let holes = holes(&plan, &known, &mut made.failed);
        let meta = Meta {
            slices_fetched: fetched_slices(&plan, &held, &holes),
            slices_from_store: held.len(),
            upstream_calls: made.attempts,
            retries: made.retries(),
            ..Meta::planned(&plan, &question.query, question.range, r.started)
        };
        let oldest_status = known.oldest_status;
        let rendering = Rendering { store: Arc::clone(&self.store), r: &r, known, holes };
        let rendered = Instant::now();
        let response = Arc::new(off_the_workers("rendering the answer failed", rendering.task()).await?);
        let took = Took::of(&ask.progress, calling, rendered.elapsed(), made.joined);
        drop(pin);
        meta.answered(&ask.handle.handle, question, made.failed.len());
        ask.progress.fetched(meta.slices_fetched);
        if settled && made.failed.is_empty() {
            self.keep_rendered(&r, &response, oldest_status);
        }
        let incomplete = made
            .failed
            .iter()
            .map(|(slice, error, attempts)| failed_attempt(&plan, *slice, error, *attempts))
            .collect();
        let mut answer = Answer::stitched(response, meta, incomplete, None);
        answer.reuse_until = self.reuse_until(range, oldest_status, now);
        answer.took = took;
        Ok(answer)
    }

    /// Fetches what the store lacks of `question` (its missing hours, and unsettled ones
    /// past their life) as `ask` says, rendering nothing: what a watch's refresh does.
    /// Slices that fail are counted, not fatal (the question is partial).
    pub(crate) async fn keep_warm(
        self: &Arc<Self>,
        ask: &Ask,
        question: &Question,
    ) -> Result<Warmed, EngineError> {
        async {
            let plan = Arc::new(question.plan());
            let now = self.clock.now();
            let r = Recalling { ask, question, plan: &plan, started: Instant::now(), now };
            let (_pin, mut known) = self.pinned_and_known(&r).await?;
            let Fetched { made, .. } = self.fetch_missing(&r, &mut known).await?;
            Ok(Warmed {
                calls: made.attempts,
                tweet_hours_held: hours_held(&plan, &known, &made.failed),
                failed: made.failed.len(),
            })
        }
        .instrument(ask.span.clone())
        .await
    }

    /// `r`'s Tweets pinned against eviction and marked used, and what the store knows of
    /// them for its question.
    async fn pinned_and_known<'e>(&'e self, r: &Recalling<'_>) -> Result<(Pinned<'e>, Known), EngineError> {
        let tweets: Vec<TweetId> = r.plan.batches.concat();
        let handle = &r.ask.handle.handle;
        let pin = Pinned { engine: self, pin: Some(self.store.pin(handle, &tweets)) };
        self.mark_used(handle, tweets.clone(), r.now);
        let known = self.known(handle, tweets, r.question, r.now).await?;
        Ok((pin, known))
    }

    /// The answer kept rendered for the very same question over settled time, if it still
    /// holds: a dashboard reloaded costs a lookup.
    fn repeat(&self, r: &Recalling<'_>) -> Option<Answer> {
        let key = r.key();
        let kept = self.rendered.repeat(&key, r.now)?;
        self.mark_used(&key.handle, key.tweets, r.now);
        r.ask.progress.planned(r.plan, kept.from_store);
        let meta = Meta {
            slices_from_store: kept.from_store,
            ..Meta::planned(r.plan, &r.question.query, r.question.range, r.started)
        };
        meta.answered(&r.ask.handle.handle, r.question, 0);
        let written = Some(Arc::clone(&kept.written));
        let mut answer = Answer::stitched(Arc::clone(&kept.response), meta, Vec::new(), written);
        answer.reuse_until = kept.valid_until;
        Some(answer)
    }

    /// Keeps the answer to a question over settled time rendered for its repeats, while
    /// the statuses it was rendered with (the oldest learned at `oldest_status`) are trusted.
    fn keep_rendered(
        &self,
        r: &Recalling<'_>,
        response: &Arc<Response>,
        oldest_status: Option<DateTime<Utc>>,
    ) {
        let ttl = chrono::Duration::from_std(self.store.config().status_ttl).unwrap_or_default();
        let key = r.key();
        let kept = RenderedAnswer {
            response: Arc::clone(response),
            valid_until: oldest_status.unwrap_or(r.now) + ttl,
            no_video_views: no_video_views(&key.tweets, &key.types, r.now),
            // Every real slice of the grid is held now.
            from_store: r.plan.fetched.len(),
            written: Arc::default(),
        };
        self.rendered.keep(key, kept);
    }

    /// What the store knows at `now` of `tweets` of `handle` for `question`'s types and
    /// range, read off the async workers.
    pub(crate) async fn known(
        &self,
        handle: &str,
        tweets: Vec<TweetId>,
        question: &Question,
        now: DateTime<Utc>,
    ) -> Result<Known, EngineError> {
        let (store, types, range) = (Arc::clone(&self.store), question.query.types.clone(), question.range);
        let (handle, read) = (handle.to_string(), tracing::info_span!("store read", tweets = tweets.len()));
        off_the_workers("the store could not be read", move || {
            store.known(&handle, &tweets, &types, range, now).map_err(unreadable)
        })
        .instrument(read)
        .await
    }

    /// What `known` lacks of `plan`: from the facts tier when replicas share one, else as
    /// calls.
    pub(crate) async fn needs_of(
        &self,
        handle: &str,
        plan: &Plan,
        known: &mut Known,
        types: &[EngagementType],
    ) -> Needs {
        let mut needs = needs(plan, known);
        let tier = self.shared.facts.as_ref();
        if tier.reachable() && !needs.calls.is_empty() {
            facts_tier::take(tier, &self.store, handle, plan, known, types, self.clock.now())
                .instrument(tracing::info_span!("shared tier read"))
                .await;
            needs = self::needs(plan, known);
        }
        needs
    }

    /// Fetches what `known` lacks of the question's answer and learns what the calls bring
    /// into it. A batch whose status alone was asked (its Tweets last seen deleted or
    /// refused for) and whose call shows a Tweet after all gets a second round for that
    /// Tweet's hours. A question that fails anyway (a batch refused from memory, without
    /// `"partial": true`) asks only what decides its refusal.
    async fn fetch_missing(
        self: &Arc<Self>,
        r: &Recalling<'_>,
        known: &mut Known,
    ) -> Result<Fetched, EngineError> {
        let (plan, question, handle) = (r.plan, r.question, &r.ask.handle.handle);
        let types = &question.query.types;
        let needs = self.needs_of(handle, plan, known, types).await;
        metrics::store_lookups(needs.hits, needs.misses);
        r.ask.progress.planned(plan, needs.held.len());
        let mut out = Fetched { held: needs.held, ..Fetched::default() };
        out.made.failed = needs.refused.iter().map(|(slice, e)| (*slice, e.clone(), 0)).collect();
        let doomed = !question.partial && !needs.refused.is_empty();
        let (calls, checked) =
            if doomed { (judging(plan, known, &needs.refused), false) } else { (needs.calls, true) };
        let (answered, made) = self.fetch_round(r, &calls, checked, &out.held, known).await?;
        out.made.add(made);
        if doomed || (!question.partial && !out.made.failed.is_empty()) {
            return Ok(out);
        }
        let shown_after_all: HashSet<usize> =
            calls.iter().filter(|n| n.status_only && answered.contains(n)).map(|n| n.slice.batch).collect();
        if shown_after_all.is_empty() {
            return Ok(out);
        }
        let again = self.needs_of(handle, plan, known, types).await;
        // What those batches lack was taken for held while their Tweets seemed to show nothing.
        out.held.retain(|s| !shown_after_all.contains(&s.batch) || again.held.contains(s));
        r.ask.progress.planned(plan, out.held.len());
        let more: Vec<Need> = again
            .calls
            .into_iter()
            .filter(|n| !n.status_only && shown_after_all.contains(&n.slice.batch))
            .collect();
        let (_, made) = self.fetch_round(r, &more, true, &out.held, known).await?;
        out.made.add(made);
        Ok(out)
    }

    /// Makes `calls` through the executor (`checked` against the budget, or not) and
    /// learns what they bring into `known`; the calls answered, and what they took.
    async fn fetch_round(
        self: &Arc<Self>,
        r: &Recalling<'_>,
        calls: &[Need],
        checked: bool,
        held: &HashSet<Slice>,
        known: &mut Known,
    ) -> Result<(HashSet<Need>, Made), EngineError> {
        let mut coverage = Coverage::of(r.plan, calls, held);
        let mut types = r.question.query.types.clone();
        types.sort_unstable();
        let start =
            |need: Need, lane| FactsCall::new(Arc::clone(self), (r.ask, lane), r.plan, &types, need).call();
        let mut answered = HashSet::new();
        let learn = |need: Need, kept: Kept| {
            let brought = kept.map_err(|e| {
                EngineError::internal("what was fetched could not be kept in the store", Some(Box::new(e)))
            })?;
            // Only the unsettled hours are taken (settled ones are on disk), and the call's
            // facts are let go at once: a big question never holds them all.
            known.learn(&brought.facts, brought.unsettled_from, self.clock.now());
            answered.insert(need);
            Ok(coverage.answered(&need))
        };
        let made = self.execute(r.round(checked), calls, start, learn).await?;
        Ok((answered, made))
    }

    /// Marks `tweets` used now for eviction, off the answer's path: losing the mark costs
    /// nothing but the order of eviction, so no question waits for it.
    fn mark_used(&self, handle: &str, tweets: Vec<TweetId>, now: DateTime<Utc>) {
        let (store, name) = (Arc::clone(&self.store), handle.to_string());
        tokio::spawn(crate::off_the_workers_or_warn("the store could not mark Tweets used", move || {
            store.mark_used(&name, &tweets, now)
        }));
    }

    /// Evicts what a question held pinned past the store's bound, off the answer's path.
    fn shrink_store(&self) {
        if self.store.over_bound() {
            let store = Arc::clone(&self.store);
            tokio::spawn(crate::off_the_workers_or_warn(
                "the store could not evict down to its bound",
                move || store.shrink(),
            ));
        }
    }
}

/// What keeping a question's hours warm did.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Warmed {
    /// Upstream calls made (retries too).
    pub calls: u32,
    /// Hours of live Tweets, from their creation, the store holds every type of now.
    pub tweet_hours_held: u64,
    /// Slices that could not be had.
    pub failed: usize,
}

/// The hours of `plan`'s live Tweets (from their creation on) that the store holds once
/// every call but the `failed` ones has been answered: the calls covered all it lacked.
fn hours_held(plan: &Plan, known: &Known, failed: &[(Slice, upstream::AttemptError, u32)]) -> u64 {
    let range = plan.range;
    let mut held = 0;
    for (b, batch) in plan.batches.iter().enumerate() {
        let holes: Vec<TimeRange> =
            failed.iter().filter(|(s, _, _)| s.batch == b).map(|(s, _, _)| s.window).collect();
        for t in batch.iter().filter(|t| known.status.get(t) == Some(&store::TweetStatus::Live)) {
            let from = range.start.max(t.created_at());
            let from = engagement::time::floor_hour(from);
            if from >= range.end {
                continue;
            }
            let lived = TimeRange { start: from, end: range.end };
            let lost: usize = holes
                .iter()
                .filter(|h| h.overlaps(&lived))
                .map(|h| TimeRange { start: h.start.max(lived.start), end: h.end.min(lived.end) }.hours())
                .sum();
            held += (lived.hours() - lost.min(lived.hours())) as u64;
        }
    }
    held
}

/// `question` for `handle`, planned as `plan`, as its rendered answers are kept by.
pub(crate) fn rendered_key(handle: &str, plan: &Plan, question: &Question) -> RenderedKey {
    RenderedKey {
        handle: handle.to_string(),
        tweets: plan.batches.concat(),
        types: question.query.types.clone(),
        groupings: question.query.groupings.clone(),
        range: question.range,
        zone: question.query.zone,
    }
}

fn unreadable(e: StoreError) -> EngineError {
    EngineError::internal("the store could not be read", Some(Box::new(e)))
}

/// The windows a partial answer leaves out of their batch (a hole is never shown as zeros),
/// from its failed slices: a batch whose Tweets' status is still unknown (its call failed)
/// is left out whole, and said so.
fn holes(plan: &Plan, known: &Known, failed: &mut Vec<(Slice, upstream::AttemptError, u32)>) -> Vec<Slice> {
    for (slice, _, _) in failed.iter_mut() {
        if plan.batches[slice.batch].iter().any(|t| !known.status.contains_key(t)) {
            slice.window = plan.range;
        }
    }
    let mut seen = HashSet::new();
    failed.retain(|(slice, _, _)| seen.insert(*slice));
    failed.iter().map(|(s, _, _)| *s).collect()
}

/// The grid's slices answered by the question's calls: those the store lacked, but for
/// those a hole leaves out (so fetched, held and synthesized add up to the slices planned,
/// less those incomplete).
fn fetched_slices(plan: &Plan, held: &HashSet<Slice>, holes: &[Slice]) -> usize {
    let overlaps = |h: &Slice, s: &Slice| h.batch == s.batch && h.window.overlaps(&s.window);
    plan.fetched
        .iter()
        .filter(|s| !held.contains(s))
        .filter(|s| !holes.iter().any(|h| overlaps(h, s)))
        .count()
}

/// What an answer is rendered from, off the async workers.
struct Rendering<'a> {
    store: Arc<Store>,
    r: &'a Recalling<'a>,
    known: Known,
    holes: Vec<Slice>,
}

impl Rendering<'_> {
    /// The rendering as a task of its own.
    fn task(self) -> impl FnOnce() -> Result<Response, EngineError> + Send + 'static {
        let Rendering { store, r, known, holes } = self;
        let (handle, plan, now) = (r.ask.handle.handle.clone(), Arc::clone(r.plan), r.now);
        let (types, groupings) = (r.question.query.types.clone(), r.question.query.groupings.clone());
        let zone = r.question.query.zone;
        move || {
            let mut merged = Response::default();
            for b in 0..plan.batches.len() {
                let batch =
                    Batch { store: &store, handle: &handle, plan: &plan, known: &known, b, now, zone: &zone };
                batch.render(&types, &groupings, &holes, &mut merged)?;
            }
            finish(&mut merged, &groupings, plan.range);
            Ok(merged)
        }
    }
}

/// One batch of a question, rendered from the counts held, so memory holds one batch's
/// counts at a time.
struct Batch<'a> {
    store: &'a Store,
    handle: &'a str,
    plan: &'a Plan,
    known: &'a Known,
    b: usize,
    now: DateTime<Utc>,
    zone: &'a engagement::Zone,
}

impl Batch<'_> {
    /// Adds the batch's answer to `merged`, leaving out the windows in `holes` (calls that
    /// failed, in a partial answer).
    fn render(
        &self,
        types: &[EngagementType],
        groupings: &[engagement::Grouping],
        holes: &[Slice],
        merged: &mut Response,
    ) -> Result<(), EngineError> {
        let (plan, known, batch) = (self.plan, self.known, &self.plan.batches[self.b]);
        let mut failed: Vec<TimeRange> =
            holes.iter().filter(|s| s.batch == self.b).map(|s| s.window).collect();
        failed.sort_unstable_by_key(|w| w.start);
        if batch.iter().any(|t| !known.status.contains_key(t)) {
            // Whether a Tweet was deleted since its facts were kept is not known.
            return Ok(());
        }
        let (deleted, shown): (Vec<TweetId>, Vec<TweetId>) =
            batch.iter().partition(|t| known.status.get(t) == Some(&store::TweetStatus::Deleted));
        let held = self
            .store
            .held(self.handle, &shown, types, known, &failed, self.now)
            .map_err(|e| self.vanished(e))?;
        let mut part = Response { unavailable_tweet_ids: deleted, ..Response::default() };
        if types.contains(&EngagementType::VideoViews) {
            part.unsupported_for_video_views_tweet_ids =
                shown.iter().copied().filter(|t| held.no_video_views.contains(t)).collect();
        }
        absorb(merged, part).map_err(adds_up)?;
        for range in around(plan.range, &failed) {
            let counts = Response {
                groupings: engagement::render(&shown, types, groupings, range, self.zone, &held),
                ..Response::default()
            };
            held.intact().map_err(|e| unreadable(e.into()))?;
            absorb(merged, counts).map_err(adds_up)?;
        }
        Ok(())
    }

    /// The question's error when the store cannot give what it held.
    fn vanished(&self, e: StoreError) -> EngineError {
        match e {
            StoreError::Vanished { tweet } => EngineError::UpstreamFailed {
                failed: vec![FailedSlice {
                    start: engagement::time::format_instant(self.plan.range.start),
                    end: engagement::time::format_instant(self.plan.range.end),
                    tweet_ids: self.plan.batches[self.b].iter().map(ToString::to_string).collect(),
                    status: Some(200),
                    errors: vec![format!("the upstream's answers lacked hours of Tweet {tweet}; retry")],
                    attempts: 0,
                }],
            },
            other => unreadable(other),
        }
    }
}

fn adds_up(e: engagement::tree::TreeError) -> EngineError {
    EngineError::internal("the counts held do not add up", Some(Box::new(e)))
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

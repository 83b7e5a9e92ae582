//! Answering from the store of facts. A question reads what the store holds of its Tweets
//! over its range; for each batch of 25 it fetches only the hours missing, with the fewest
//! windows of at most 28 days, for the types asked at hourly grain; identical calls in flight
//! are shared between questions; what comes back is kept; and the answer is rendered from
//! the hourly counts with the renderer the simulator uses, so any grouping or subset of
//! Tweets later needs no call for hours already held.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use chrono::{DateTime, Utc};
use engagement::time::HOUR;
use engagement::{
    Endpoint, EngagementType, GroupBy, Grouping, Query, RawRequest, Response, TimeRange, TweetId,
};
use futures::FutureExt;
use stitch::cover::runs;
use stitch::{Plan, Slice, absorb, cover, finish};
use store::facts::{born_hour, hour_of};
use store::{CallFacts, Known, Refused, Store, StoreError};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use upstream::{AttemptError, HandleCredentials};

use super::{
    Answer, Engine, Meta, Progress, Question, collect, failed_attempt, failure, outcome, refusal,
    shared_call, shared_facts,
};
use crate::error::{FailedSlice, ServiceError};
use crate::metrics;

/// The grouping of every call that fetches facts: each Tweet's every type, hour by hour.
const HOURLY: &str = "hourly";

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

/// A question over settled time, as the rendered answers are kept by.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct RenderedKey {
    handle: String,
    tweets: Vec<TweetId>,
    types: Vec<EngagementType>,
    groupings: Vec<Grouping>,
    range: TimeRange,
}

/// A rendered answer, and what it depended on besides settled facts.
#[derive(Debug)]
struct RenderedAnswer {
    response: Arc<Response>,
    /// Until when the statuses it was rendered with are trusted.
    valid_until: DateTime<Utc>,
    /// The Tweets whose video views were reported as zero (a rule of the Tweet's age now).
    no_video_views: Vec<TweetId>,
    from_store: usize,
    /// Its text, once a repeat has written it.
    written: Arc<super::Written>,
}

/// The most counts the rendered answers kept may hold together (about 100 MB).
const RENDERED_COUNTS: u64 = 1_000_000;

/// Answers of questions whose every hour is settled, kept rendered so an exact repeat (a
/// dashboard reloaded) is served without reading or rendering facts again. They live as long
/// as the statuses they were rendered with are trusted.
pub(crate) struct Rendered {
    answers: moka::sync::Cache<RenderedKey, Arc<RenderedAnswer>>,
}

impl std::fmt::Debug for Rendered {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rendered").field("answers", &self.answers.entry_count()).finish()
    }
}

impl Rendered {
    pub(crate) fn new(ttl: std::time::Duration) -> Rendered {
        let answers = moka::sync::Cache::builder()
            .max_capacity(RENDERED_COUNTS)
            // A count weighs its tree and, once repeated, its text in two styles.
            .weigher(|_, a: &Arc<RenderedAnswer>| counts(&a.response).min(u64::from(u32::MAX)) as u32)
            .time_to_live(ttl.max(std::time::Duration::from_millis(1)))
            .build();
        Rendered { answers }
    }
}

/// The leaves of an answer's trees.
fn counts(response: &Response) -> u64 {
    fn leaves(node: &engagement::Node) -> u64 {
        match node {
            engagement::Node::Count(_) => 1,
            engagement::Node::Branch(b) => b.iter().map(|(_, n)| leaves(n)).sum(),
        }
    }
    response.groupings.values().map(leaves).sum()
}

/// The Tweets of `tweets` whose video views are not reported at `now`.
fn no_video_views(tweets: &[TweetId], types: &[EngagementType], now: DateTime<Utc>) -> Vec<TweetId> {
    if !types.contains(&EngagementType::VideoViews) {
        return Vec::new();
    }
    let limit = chrono::Duration::days(engagement::vocabulary::VIDEO_VIEWS_MAX_AGE_DAYS);
    tweets.iter().copied().filter(|t| now - t.created_at() > limit).collect()
}

/// One call a question needs: a batch over a window, for facts or only for the status of
/// its Tweets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Need {
    slice: Slice,
    status_only: bool,
}

/// The calls a question needs, and what the store saved it.
struct Needs {
    calls: Vec<Need>,
    /// Batches holding a Tweet the upstream refused while that is trusted: they get no call,
    /// and the same refusal.
    refused: Vec<(Slice, AttemptError)>,
    /// Grid slices (not synthesized) whose every hour was held.
    held: HashSet<Slice>,
    hits: u64,
    misses: u64,
}

/// For each batch, the fewest windows covering the hours some Tweet of it lacks; or, when
/// nothing is missing but what the store knows of a Tweet is too old, one call of one hour.
fn needs(plan: &Plan, known: &Known) -> Needs {
    let range = plan.range;
    let first = hour_of(range.start);
    let mut out = Needs { calls: Vec::new(), refused: Vec::new(), held: HashSet::new(), hits: 0, misses: 0 };
    for (b, batch) in plan.batches.iter().enumerate() {
        if let Some(refusal) = remembered_refusal(batch, known) {
            out.refused.push((Slice { batch: b, window: range }, refusal));
            continue;
        }
        let mut missing = vec![false; range.hours()];
        for t in batch {
            if known.status.get(t) == Some(&true) {
                continue; // deleted: the API shows nothing of it
            }
            let born = born_hour(*t);
            for (i, held) in known.held.get(t).map(Vec::as_slice).unwrap_or_default().iter().enumerate() {
                missing[i] |= !held;
                if first + i as i64 >= born {
                    if *held {
                        out.hits += 1;
                    } else {
                        out.misses += 1;
                    }
                }
            }
        }
        let windows = cover(&runs(range, &missing));
        let stale = batch.iter().any(|t| !known.status.contains_key(t));
        if windows.is_empty() && stale {
            let window = TimeRange { start: range.end - HOUR, end: range.end };
            out.calls.push(Need { slice: Slice { batch: b, window }, status_only: true });
        }
        out.calls.extend(
            windows.into_iter().map(|window| Need { slice: Slice { batch: b, window }, status_only: false }),
        );
        out.held.extend(plan.fetched.iter().filter(|s| s.batch == b).filter(|s| {
            let from = (hour_of(s.window.start) - first) as usize;
            missing[from..from + s.window.hours()].iter().all(|m| !m)
        }));
    }
    out
}

/// The refusal a call for `batch` would get, when what refused calls told of its Tweets
/// settles it: `403` (not the handle's) once every Tweet's ownership is known, else `400`
/// (protected) once every Tweet is known to be the handle's and protected or not. The
/// errors name the batch's Tweets refused, as the upstream does.
fn remembered_refusal(batch: &[TweetId], known: &Known) -> Option<AttemptError> {
    let told = |t: &TweetId| known.refused.get(t);
    let shown = |t: &TweetId| known.status.contains_key(t);
    let status = batch
        .iter()
        .filter_map(|t| told(t)?.refusal())
        .map(|(status, _)| status)
        .max_by_key(|s| *s == 403)?;
    let settled = if status == 403 {
        batch.iter().all(|t| shown(t) || told(t).is_some())
    } else {
        let judged =
            |t: &TweetId| shown(t) || matches!(told(t), Some(Refused::Protected { .. } | Refused::Neither));
        batch.iter().all(judged)
    };
    if !settled {
        return None;
    }
    let mut by_message: Vec<(&str, Vec<TweetId>)> = Vec::new();
    for t in batch {
        let Some(message) = told(t).and_then(Refused::refusal).filter(|(s, _)| *s == status).map(|(_, m)| m)
        else {
            continue;
        };
        match by_message.iter_mut().find(|(m, _)| *m == message) {
            Some((_, tweets)) => tweets.push(*t),
            None => by_message.push((message, vec![*t])),
        }
    }
    let errors = by_message
        .into_iter()
        .map(|(message, mut tweets)| {
            tweets.sort_unstable();
            let named: Vec<String> = tweets.iter().map(ToString::to_string).collect();
            format!("{message}: {}", named.join(", "))
        })
        .collect();
    Some(AttemptError::Refused { status, errors })
}

/// What a refusal of a call for `batch` tells of its Tweets. `403` (not the handle's) and
/// `400` (protected) name the Tweets refused for after a colon, as in `Forbidden to access
/// tweets: 111, 222`; the batch's others are then the handle's (and, after a `400`, not
/// protected). A refusal that names none of the batch's Tweets tells nothing.
fn refusal_told(batch: &[TweetId], error: &AttemptError) -> Vec<(TweetId, Refused)> {
    let AttemptError::Refused { status: status @ (400 | 403), errors } = error else {
        return Vec::new();
    };
    let mut told = Vec::new();
    for e in errors {
        let Some((message, list)) = e.rsplit_once(": ") else { continue };
        let Some(named) = list.split(',').map(|id| TweetId::parse(id.trim())).collect::<Option<Vec<_>>>()
        else {
            continue;
        };
        let message = message.to_string();
        for t in named.into_iter().filter(|t| batch.contains(t)) {
            let r = match status {
                403 => Refused::Foreign { message: message.clone() },
                _ => Refused::Protected { message: message.clone() },
            };
            told.push((t, r));
        }
    }
    if told.is_empty() {
        return told;
    }
    let other = if *status == 403 { Refused::NotForeign } else { Refused::Neither };
    for t in batch {
        if !told.iter().any(|(named, _)| named == t) {
            told.push((*t, other.clone()));
        }
    }
    told
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
        if settled
            && let Some(kept) = self.rendered.answers.get(&key)
            && now < kept.valid_until
            && kept.no_video_views == no_video_views(&tweets, &query.types, now)
        {
            progress.touch();
            self.mark_used(&handle.handle, tweets, now);
            let meta = Meta { slices_from_store: kept.from_store, ..Meta::planned(&plan, question, started) };
            meta.record();
            return Ok(Answer::stitched(
                Arc::clone(&kept.response),
                meta,
                Vec::new(),
                Some(Arc::clone(&kept.written)),
            ));
        }
        let pin = self.store.pin(&handle.handle, &tweets);
        self.mark_used(&handle.handle, tweets.clone(), now);
        let (store, name, types) = (Arc::clone(&self.store), handle.handle.clone(), query.types.clone());
        let mut known =
            blocking("the store could not be read", move || store.known(&name, &tweets, &types, range, now))
                .await?;
        let mut needs = needs(&plan, &known);
        if let Some(sharing) = self.sharing.as_ref().filter(|s| s.redis.is_up())
            && !needs.calls.is_empty()
        {
            shared_facts::take(sharing, &self.store, &handle.handle, &plan, &mut known, &query.types, now)
                .await;
            needs = self::needs(&plan, &known);
        }
        metrics::store_lookups(needs.hits, needs.misses);
        if !partial && !needs.refused.is_empty() {
            let refused = needs.refused.iter().map(|(slice, e)| (*slice, e.clone(), 0)).collect();
            return Err(failure(&plan, &deadline.saturating_duration_since(started), refused));
        }
        let calls = needs.calls.len();
        if calls > 0 {
            self.calls.check(calls, deadline).map_err(refusal)?;
            self.admit_handle(&handle.handle, true).await?;
        }
        progress.slices_total.store(calls, Ordering::Relaxed);
        progress.touch();

        let lane = Arc::new(self.calls.lane(calls, deadline));
        let mut tasks = JoinSet::new();
        for &need in &needs.calls {
            let (engine, lane, handle, progress, plan) = (
                Arc::clone(self),
                Arc::clone(&lane),
                Arc::clone(handle),
                Arc::clone(progress),
                Arc::clone(&plan),
            );
            // In one order, so questions listing the same types differently share calls.
            let mut types = query.types.clone();
            types.sort_unstable();
            tasks.spawn(async move {
                let body = request(&plan, need, &types);
                let key = CallKey {
                    handle: handle.handle.clone(),
                    tweets: plan.batches[need.slice.batch].clone(),
                    types: types.clone(),
                    window: need.slice.window,
                    status_only: need.status_only,
                };
                let start = || {
                    let (engine, handle, body, tweets, types) = (
                        Arc::clone(&engine),
                        Arc::clone(&handle),
                        body.clone(),
                        key.tweets.clone(),
                        key.types.clone(),
                    );
                    let (lane, progress) = (Arc::clone(&lane), Arc::clone(&progress));
                    async move {
                        engine.fetch(&lane, &handle, body, (tweets, types), need, deadline, &progress).await
                    }
                    .boxed()
                };
                let ran_out = |shared: &Shared| {
                    matches!(shared.0, Err(CallFailure::Call(AttemptError::Deadline { .. })))
                };
                let failed = |e| Arc::new((Err(CallFailure::Call(e)), 0));
                let (shared, joined) =
                    shared_call(&engine.shared, &key, deadline, start, ran_out, failed).await;
                (need, shared, joined)
            });
        }

        let mut failed: Vec<(Slice, AttemptError, u32)> =
            needs.refused.iter().map(|(slice, e)| (*slice, e.clone(), 0)).collect();
        let (mut attempts, mut made) = (0u32, 0u32);
        let expected: Vec<Slice> = needs.calls.iter().map(|n| n.slice).collect();
        let cut_off = collect(&mut tasks, &plan, &expected, deadline, cancel, |(need, shared, joined)| {
            let (result, tries) = &*shared;
            if !joined {
                attempts += tries;
                made += 1;
            }
            match result {
                Ok((facts, unsettled_from)) => {
                    progress.slices_done.fetch_add(1, Ordering::Relaxed);
                    progress.touch();
                    // Only the unsettled hours are taken (settled ones are on disk), and the
                    // call's facts are let go at once: a big question never holds them all.
                    known.learn(facts, *unsettled_from);
                    Ok((need.slice, true))
                }
                Err(CallFailure::Store(e)) => Err(ServiceError::internal(
                    "what was fetched could not be kept in the store",
                    Some(Box::new(Arc::clone(e))),
                )),
                Err(CallFailure::Call(error)) => {
                    failed.push((need.slice, error.clone(), *tries));
                    Ok((need.slice, *partial))
                }
            }
        })
        .await?;
        failed.extend(cut_off);
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
        let fetched = plan
            .fetched
            .iter()
            .filter(|s| !needs.held.contains(s))
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
            slices_fetched: fetched,
            slices_from_store: needs.held.len(),
            upstream_calls: attempts,
            retries: attempts.saturating_sub(made),
            ..Meta::planned(&plan, question, started)
        };
        meta.record();
        tracing::info!(
            handle = %handle.handle,
            tweets = meta.tweets,
            range = %range.describe(),
            calls = calls,
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
            self.rendered.answers.insert(key, Arc::new(kept));
        }
        let incomplete = failed
            .iter()
            .map(|(slice, error, attempts)| failed_attempt(&plan, *slice, error, *attempts))
            .collect();
        Ok(Answer::stitched(response, meta, incomplete, None))
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
        lane: &upstream::Lane,
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

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(status: u16, errors: &[&str]) -> AttemptError {
        AttemptError::Refused { status, errors: errors.iter().map(ToString::to_string).collect() }
    }

    #[test]
    fn a_refusal_tells_of_the_tweets_it_names_and_of_the_batchs_others() {
        let batch = [TweetId(11), TweetId(22), TweetId(33)];
        let told = refusal_told(&batch, &refused(403, &["Forbidden to access tweets: 22, 99"]));
        let foreign = Refused::Foreign { message: "Forbidden to access tweets".into() };
        assert_eq!(
            told,
            [(TweetId(22), foreign), (TweetId(11), Refused::NotForeign), (TweetId(33), Refused::NotForeign)]
        );
        let told = refusal_told(&batch, &refused(400, &["Tweet ID(s) are unavailable: 33"]));
        assert!(told.contains(&(TweetId(11), Refused::Neither)));

        // Nothing is learned from a refusal that names no Tweet of the batch, or no Tweet.
        assert!(refusal_told(&batch, &refused(400, &["Tweet ID(s) are unavailable"])).is_empty());
        assert!(refusal_told(&batch, &refused(400, &["bad start: 2020-13-01"])).is_empty());
        assert!(refusal_told(&batch, &refused(403, &["Forbidden to access tweets: 99"])).is_empty());
        assert!(refusal_told(&batch, &refused(401, &["Unauthorized: 11"])).is_empty());
    }

    #[test]
    fn a_remembered_refusal_is_given_only_when_it_is_what_the_upstream_would_say() {
        let batch = [TweetId(11), TweetId(22), TweetId(33)];
        let mut known = Known::default();
        let protected = Refused::Protected { message: "Tweet ID(s) are unavailable".into() };
        known.refused.insert(TweetId(33), protected.clone());
        known.refused.insert(TweetId(11), Refused::Neither);
        assert!(remembered_refusal(&batch, &known).is_none(), "whether 22 is the handle's is not known");
        known.status.insert(TweetId(22), false);
        let Some(AttemptError::Refused { status, errors }) = remembered_refusal(&batch, &known) else {
            panic!("every Tweet is judged")
        };
        assert_eq!((status, errors), (400, vec!["Tweet ID(s) are unavailable: 33".to_string()]));

        known.refused.insert(TweetId(22), Refused::Foreign { message: "Forbidden to access tweets".into() });
        known.refused.insert(TweetId(11), Refused::Foreign { message: "Forbidden to access tweets".into() });
        let Some(AttemptError::Refused { status, errors }) = remembered_refusal(&batch, &known) else {
            panic!("every Tweet's owner is known")
        };
        assert_eq!((status, errors), (403, vec!["Forbidden to access tweets: 11, 22".to_string()]));
        assert!(remembered_refusal(&[TweetId(44)], &known).is_none());
    }
}

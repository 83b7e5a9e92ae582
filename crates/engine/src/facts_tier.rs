//! The store's shared tier (the [`FactsTier`] port), for replicas: before calling for what
//! its own store lacks, a question takes what another replica fetched; what a replica
//! fetches it gives there too. A tier that cannot be read costs calls, never an answer: the
//! question goes on with what it has.

use std::collections::HashMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use engagement::slots::types_mask;
use engagement::{EngagementType, TweetId};
use stitch::Plan;
use store::facts::{born_hour, hour_of};
use store::{CallFacts, Hours, Known, Store};

use crate::Engine;
use crate::metrics;
use crate::needs::CallKey;
use crate::ports::{FactsTier, Fetched, Held, Refusals, Wanted};

/// Takes from the facts tier the hours of `plan`'s Tweets that `known` lacks, and what is
/// known of the Tweets whose status is not: keeps them in `store` and adds them to `known`.
/// A batch at a time, so at most one batch's hours are read into memory at once; a read
/// that fails leaves the rest to calls.
pub(super) async fn take(
    tier: &dyn FactsTier,
    store: &Arc<Store>,
    handle: &str,
    plan: &Plan,
    known: &mut Known,
    types: &[EngagementType],
    now: DateTime<Utc>,
) {
    let taking = Taking {
        store,
        handle,
        first: hour_of(plan.range.start),
        slots: types_mask(types),
        unsettled_from: store.unsettled_from(now),
        now,
    };
    for batch in &plan.batches {
        let (wanted, unknown) = lacked(batch, taking.first, known);
        if wanted.is_empty() && unknown.is_empty() {
            continue;
        }
        let asked = Wanted { hours: &wanted, slots: taking.slots, unsettled_from: taking.unsettled_from };
        let Some(held) = tier.read(handle, asked, &unknown).await else { return };
        taking.learn(held, known).await;
    }
}

/// Of `batch`, the hours (from hour `first` on) that `known` lacks per Tweet, and the Tweets
/// whose status it does not know.
fn lacked(batch: &[TweetId], first: i64, known: &Known) -> (HashMap<TweetId, Vec<i64>>, Vec<TweetId>) {
    let mut wanted: HashMap<TweetId, Vec<i64>> = HashMap::new();
    for t in batch {
        if known.shows_nothing_of(t) {
            continue;
        }
        let born = born_hour(*t);
        let held = known.held.get(t).map(Vec::as_slice).unwrap_or_default();
        let missing: Vec<i64> = held
            .iter()
            .enumerate()
            .map(|(i, held)| (first + i as i64, held))
            .filter(|(hour, held)| !**held && *hour >= born)
            .map(|(hour, _)| hour)
            .collect();
        if !missing.is_empty() {
            wanted.insert(*t, missing);
        }
    }
    let unknown = batch
        .iter()
        .copied()
        .filter(|t| !known.status.contains_key(t) && !known.refused.contains_key(t))
        .collect();
    (wanted, unknown)
}

/// One question taking from the facts tier: where it keeps what it takes, and when.
struct Taking<'a> {
    store: &'a Arc<Store>,
    handle: &'a str,
    /// The question's first hour.
    first: i64,
    slots: u32,
    unsettled_from: i64,
    now: DateTime<Utc>,
}

impl Taking<'_> {
    /// Adds what the tier `held` to `known`, and keeps it in this replica's store.
    async fn learn(&self, held: Held, known: &mut Known) {
        let Held { hours: found, statuses, refused } = held;
        let hours: u64 = found.values().map(|h| h.len() as u64).sum();
        metrics::shared_hits(hours);
        let found = found.iter().map(|(t, hours)| (*t, Hours::of(self.slots, hours))).collect();
        let counts = CallFacts { slots: self.slots, hours: found, ..CallFacts::default() };
        for (tweet, hours) in &counts.hours {
            if let Some(held) = known.held.get_mut(tweet) {
                for (hour, _) in hours.iter() {
                    if let Some(h) = held.get_mut((hour - self.first) as usize) {
                        *h = true;
                    }
                }
            }
        }
        known.learn(&counts, self.unsettled_from, self.now);
        for (tweet, (deleted, learned)) in &statuses {
            known.status.insert(*tweet, store::TweetStatus::of(*deleted));
            known.oldest_status = Some(known.oldest_status.map_or(*learned, |o| o.min(*learned)));
        }
        // A refusal another replica was told holds here too, unless a status says otherwise.
        let refused: Refusals = refused.into_iter().filter(|(t, _)| !statuses.contains_key(t)).collect();
        for (tweet, (refusal, learned)) in &refused {
            known.refused.insert(*tweet, refusal.clone());
            known.oldest_status = Some(known.oldest_status.map_or(*learned, |o| o.min(*learned)));
        }
        keep_here(self.store, self.handle, counts, &statuses, self.now).await;
        keep_refusals_here(self.store, self.handle, refused).await;
    }
}

/// Keeps in this replica's store the refusals another replica was told, each with the
/// time it was learned.
async fn keep_refusals_here(store: &Arc<Store>, handle: &str, refused: Refusals) {
    if refused.is_empty() {
        return;
    }
    let mut by_learned: HashMap<DateTime<Utc>, Vec<(TweetId, store::Refused)>> = HashMap::new();
    for (tweet, (refusal, learned)) in refused {
        by_learned.entry(learned).or_default().push((tweet, refusal));
    }
    let (store, name) = (Arc::clone(store), handle.to_string());
    crate::off_the_workers_or_warn(
        "the shared refusals could not be kept in this replica's store",
        move || by_learned.into_iter().try_for_each(|(at, told)| store.refuse(&name, told, at)),
    )
    .await;
}

/// Keeps in this replica's store what Redis held: the settled hours of `counts` (its
/// unsettled ones live only as long as the question that read them, so they are never
/// trusted past the TTL they had in Redis), and each status with the time it was learned.
async fn keep_here(
    store: &Arc<Store>,
    handle: &str,
    mut counts: CallFacts,
    statuses: &HashMap<TweetId, (bool, DateTime<Utc>)>,
    now: DateTime<Utc>,
) {
    counts.drop_unsettled(store.unsettled_from(now));
    let mut writes: Vec<(CallFacts, DateTime<Utc>)> = vec![(counts, now)];
    let mut by_learned: HashMap<DateTime<Utc>, CallFacts> = HashMap::new();
    for (tweet, (deleted, learned)) in statuses {
        let facts = by_learned.entry(*learned).or_default();
        facts.tweets.push(*tweet);
        if *deleted {
            facts.deleted.push(*tweet);
        }
    }
    writes.extend(by_learned.into_iter().map(|(at, facts)| (facts, at)));
    let (store, name) = (Arc::clone(store), handle.to_string());
    crate::off_the_workers_or_warn("the shared facts could not be kept in this replica's store", move || {
        writes.iter().try_for_each(|(facts, at)| store.keep(&name, facts, *at))
    })
    .await;
}

/// Gives what one call fetched (kept in this replica's store already) to the other
/// replicas.
pub(super) async fn give(
    tier: &dyn FactsTier,
    store: &Store,
    handle: &str,
    facts: &CallFacts,
    (fetched_at, now): (DateTime<Utc>, DateTime<Utc>),
) {
    let config = store.config();
    let statuses: Vec<(TweetId, bool)> =
        facts.tweets.iter().map(|t| (*t, facts.deleted.contains(t))).collect();
    tier.give(Fetched {
        handle,
        slots: facts.slots,
        hours: &facts.hours,
        statuses: &statuses,
        unsettled_from: store.unsettled_from(fetched_at),
        fresh_ttl: config.fresh_ttl,
        fetched_at,
        status_ttl: config.status_ttl,
        now,
    })
    .await;
}

/// The name replicas know one call by: its handle, Tweets, types and window.
pub(super) fn call_name(key: &CallKey) -> String {
    use sha2::Digest;
    let tweets: Vec<String> = key.tweets.iter().map(ToString::to_string).collect();
    let types: Vec<&str> = key.types.iter().map(|t| t.name()).collect();
    let text = format!(
        "{}|{}|{}|{}|{}|{}",
        key.handle,
        tweets.join(","),
        types.join(","),
        key.window.start.timestamp(),
        key.window.end.timestamp(),
        key.status_only
    );
    hex::encode(sha2::Sha256::digest(text.as_bytes()))
}

/// Waits (until `deadline`) for the replica holding the lease on the call `key` (named
/// `name`) to give it up, then reads what it wrote: the call's facts, kept in this
/// replica's store, with the first hour kept as unsettled and only the unsettled hours left
/// in them, as a call of its own would give. `None` when they are not all there (that call
/// failed): then this replica makes the call.
pub(super) async fn wait_for(
    engine: &Engine,
    key: &CallKey,
    name: &str,
    deadline: tokio::time::Instant,
) -> Option<(CallFacts, i64)> {
    let CallKey { handle, tweets, types, window, status_only } = key;
    let (window, status_only) = (*window, *status_only);
    let (tier, leases, store) = (engine.shared.facts.as_ref(), engine.shared.leases.as_ref(), &engine.store);
    let mut pause = std::time::Duration::from_millis(25);
    loop {
        match leases.held(name).await {
            Some(false) => break,
            Some(true) if tokio::time::Instant::now() + pause < deadline => {
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(std::time::Duration::from_millis(400));
            }
            _ => return None,
        }
    }
    let now = engine.clock.now();
    let unsettled_from = store.unsettled_from(now);
    let none = HashMap::new();
    let nothing = Wanted { hours: &none, slots: 0, unsettled_from };
    let statuses = tier.read(handle, nothing, tweets).await?.statuses;
    if tweets.iter().any(|t| !statuses.contains_key(t)) {
        return None;
    }
    let mut facts = CallFacts {
        window: Some(window),
        tweets: tweets.to_vec(),
        deleted: tweets.iter().copied().filter(|t| statuses[t].0).collect(),
        ..CallFacts::default()
    };
    if !status_only {
        let (first, last) = (hour_of(window.start), hour_of(window.end));
        let wanted: HashMap<TweetId, Vec<i64>> = tweets
            .iter()
            .filter(|t| !facts.deleted.contains(t))
            .map(|t| (*t, (first.max(born_hour(*t))..last).collect::<Vec<_>>()))
            .filter(|(_, hours)| !hours.is_empty())
            .collect();
        facts.slots = types_mask(types);
        let wanted_hours = Wanted { hours: &wanted, slots: facts.slots, unsettled_from };
        let read = tier.read(handle, wanted_hours, &[]).await?.hours;
        facts.hours = read.iter().map(|(t, hours)| (*t, Hours::of(facts.slots, hours))).collect();
        let complete =
            wanted.iter().all(|(t, hours)| facts.hours.get(t).is_some_and(|h| h.len() == hours.len()));
        if !complete {
            return None;
        }
        metrics::shared_hits(wanted.values().map(|h| h.len() as u64).sum());
    }
    let counts = CallFacts { slots: facts.slots, hours: facts.hours.clone(), ..CallFacts::default() };
    keep_here(store, handle, counts, &statuses, now).await;
    facts.drop_settled(unsettled_from);
    Some((facts, unsettled_from))
}

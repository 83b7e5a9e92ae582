//! Facts on their way in and out: what one call's answer holds ([`CallFacts`]), what a
//! question found held before fetching ([`Known`]), and the counts it renders from
//! ([`Held`]).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use engagement::time::floor_hour;
use engagement::{EngagementType, HourlyCounts, TimeRange, TweetId};

use crate::row::{Hour, SLOTS, slots_in};

pub use engagement::time::hour_number as hour_of;

/// The first hour a Tweet can have counts in: before it, every count is zero.
pub fn born_hour(tweet: TweetId) -> i64 {
    hour_of(floor_hour(tweet.created_at()))
}

/// What one call's answer says: which Tweets are deleted, and the counts of the types it
/// asked for per hour for the others.
#[derive(Debug, Clone, Default)]
pub struct CallFacts {
    pub window: Option<TimeRange>,
    /// Every Tweet the call asked for.
    pub tweets: Vec<TweetId>,
    pub deleted: Vec<TweetId>,
    /// The slots of the types the call asked for (a mask).
    pub slots: u32,
    /// Per Tweet shown, the complete hours of the window (every type asked present).
    pub hours: HashMap<TweetId, Hours>,
}

/// One Tweet's hours from a call, each with the counts of the call's types only (a call
/// asks a few types of seventeen): the `i`-th hour's number is `hours[i]` and its counts,
/// in slot order, are `counts[i * width..(i + 1) * width]`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Hours {
    width: usize,
    hours: Vec<i64>,
    counts: Vec<u64>,
}

impl Hours {
    /// No hours yet, of the types in `slots` (a mask).
    pub fn new(slots: u32) -> Hours {
        Hours { width: slots.count_ones() as usize, ..Hours::default() }
    }

    /// Hours `hours` with their `counts` laid out as [`Hours`] says, of the types in `slots`.
    pub(crate) fn from_parts(slots: u32, hours: Vec<i64>, counts: Vec<u64>) -> Hours {
        let width = slots.count_ones() as usize;
        debug_assert_eq!(hours.len() * width, counts.len());
        Hours { width, hours, counts }
    }

    /// Of full hours, the counts of the types in `slots`.
    pub fn of(slots: u32, full: &[(i64, Hour)]) -> Hours {
        let mut out = Hours::new(slots);
        for (hour, counts) in full {
            out.hours.push(*hour);
            out.counts.extend(slots_in(slots).map(|s| counts[s]));
        }
        out
    }

    pub fn len(&self) -> usize {
        self.hours.len()
    }

    pub fn is_empty(&self) -> bool {
        self.hours.is_empty()
    }

    /// The hours room is held for.
    #[cfg(test)]
    pub(crate) fn capacity(&self) -> usize {
        self.hours.capacity().max(self.counts.capacity() / self.width.max(1))
    }

    /// Each hour's number and its counts, in slot order.
    pub fn iter(&self) -> impl Iterator<Item = (i64, &[u64])> {
        self.hours.iter().copied().zip(self.counts.chunks_exact(self.width.max(1)))
    }

    /// Each hour with every type's count (those not asked 0), for the types in `slots`.
    #[cfg(test)]
    pub(crate) fn full(&self, slots: u32) -> Vec<(i64, Hour)> {
        self.iter().map(|(hour, counts)| (hour, full_hour(slots, counts))).collect()
    }

    /// Keeps only the hours `keep` says.
    pub fn retain(&mut self, keep: impl Fn(i64) -> bool) {
        let mut kept = 0;
        for i in 0..self.hours.len() {
            if keep(self.hours[i]) {
                self.hours[kept] = self.hours[i];
                let w = self.width;
                self.counts.copy_within(i * w..(i + 1) * w, kept * w);
                kept += 1;
            }
        }
        self.hours.truncate(kept);
        self.counts.truncate(kept * self.width);
        self.hours.shrink_to_fit();
        self.counts.shrink_to_fit();
    }
}

/// An hour's counts of the types in `slots` (slot order) as every type's (the others 0).
pub fn full_hour(slots: u32, counts: &[u64]) -> Hour {
    let mut hour = [0; SLOTS];
    for (slot, count) in slots_in(slots).zip(counts) {
        hour[slot] = *count;
    }
    hour
}

/// An unsettled hour held in memory: the slots it holds and their counts, and when each
/// slot was fetched (calls for other types of the same hour add theirs, each fresh for its
/// own time).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FreshHour {
    pub slots: u32,
    pub counts: Hour,
    /// The slots of each call that brought some, with the time it was sent.
    pub fetched: Vec<(u32, DateTime<Utc>)>,
}

impl FreshHour {
    /// The slots of one call sent at `at`.
    pub fn new(slots: u32, counts: Hour, at: DateTime<Utc>) -> FreshHour {
        FreshHour { slots, counts, fetched: vec![(slots, at)] }
    }

    /// The slots still fresh at `now` when each is kept for `ttl`.
    pub fn fresh_slots(&self, now: DateTime<Utc>, ttl: std::time::Duration) -> u32 {
        let ttl = chrono::Duration::from_std(ttl).unwrap_or(chrono::Duration::MAX);
        self.fetched.iter().filter(|(_, at)| now < *at + ttl).fold(0, |m, (slots, _)| m | slots)
    }

    /// This hour with the counts of `slots` from a call sent at `at` laid over it (but for
    /// slots a call sent later brought already), less the slots no longer fresh at `at`.
    pub fn with(&self, slots: u32, counts: &Hour, at: DateTime<Utc>, ttl: std::time::Duration) -> FreshHour {
        let newer = self.fetched.iter().filter(|(_, when)| *when > at).fold(0, |m, (s, _)| m | s);
        let taken = slots & !newer;
        let kept = self.fresh_slots(at, ttl) & !taken;
        let mut merged = FreshHour { slots: kept | taken, counts: [0; SLOTS], fetched: Vec::new() };
        for (s, count) in merged.counts.iter_mut().enumerate() {
            if taken & (1 << s) != 0 {
                *count = counts[s];
            } else if kept & (1 << s) != 0 {
                *count = self.counts[s];
            }
        }
        for &(older, when) in &self.fetched {
            if older & kept != 0 {
                merged.fetched.push((older & kept, when));
            }
        }
        if taken != 0 {
            merged.fetched.push((taken, at));
        }
        merged
    }
}

/// An answer that is not the hourly shape the call asked for.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("the upstream's hourly answer has an unexpected shape: {0}")]
pub struct Shape(pub(crate) String);

impl CallFacts {
    /// Lets go of the hours before `unsettled_from` (kept on disk), keeping the unsettled
    /// ones that questions render from memory.
    pub fn drop_settled(&mut self, unsettled_from: i64) {
        if self.window.is_some_and(|w| hour_of(w.end) <= unsettled_from) {
            // Every hour is settled: nothing to look through.
            self.hours.values_mut().for_each(|hours| *hours = Hours::new(self.slots));
            return;
        }
        // What is left is held while questions wait for it: without the settled room.
        for hours in self.hours.values_mut() {
            hours.retain(|hour| hour >= unsettled_from);
        }
    }

    /// Lets go of the hours from `unsettled_from` on, keeping the settled ones.
    pub fn drop_unsettled(&mut self, unsettled_from: i64) {
        for hours in self.hours.values_mut() {
            hours.retain(|hour| hour < unsettled_from);
        }
    }
}

/// What a question found held before fetching, for some Tweets over its range.
#[derive(Debug, Default)]
pub struct Known {
    pub range: Option<TimeRange>,
    /// Per Tweet, one flag per hour of the range: every type asked held, or before the
    /// Tweet existed.
    pub held: HashMap<TweetId, Vec<bool>>,
    /// Unsettled hours held in memory, kept by the question so they cannot expire under it.
    pub fresh: HashMap<(TweetId, i64), Arc<FreshHour>>,
    /// Whether each Tweet is live or deleted, for the Tweets whose status is still trusted.
    pub status: HashMap<TweetId, TweetStatus>,
    /// When the oldest of those statuses was learned (none: no status was read).
    pub oldest_status: Option<DateTime<Utc>>,
    /// What refused calls told of Tweets, while that is trusted (a Tweet refused for has
    /// no entry in `status`).
    pub refused: HashMap<TweetId, Refused>,
    /// Tweets the upstream last showed nothing of, learned too long ago to be trusted:
    /// until a call says otherwise, their hours are not expected, only their status is
    /// asked again.
    pub unshown: HashMap<TweetId, Unshown>,
}

/// What the upstream last said of a Tweet it answered for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TweetStatus {
    /// It was there.
    Live,
    /// It was deleted.
    Deleted,
}

impl TweetStatus {
    /// `Deleted` if `deleted`, else `Live`.
    pub fn of(deleted: bool) -> TweetStatus {
        if deleted { TweetStatus::Deleted } else { TweetStatus::Live }
    }
}

/// Why the upstream last showed nothing of a Tweet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unshown {
    /// It was deleted.
    Deleted,
    /// A call for it was refused (protected, or not the handle's).
    Refused,
}

/// What a call the upstream refused told of a Tweet. The upstream judges a batch's Tweets
/// not the handle's (`403`) before protected ones (`400`), and names the Tweets it refuses
/// for after its words (`message`); the batch's other Tweets are learned about too.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refused {
    /// Not the handle's: `403`.
    Foreign { message: String },
    /// Protected: `400`.
    Protected { message: String },
    /// In a batch refused for another Tweet not the handle's: this one is the handle's;
    /// whether it is protected is not known.
    NotForeign,
    /// In a batch refused for another, protected Tweet: this one is neither.
    Neither,
}

impl Refused {
    /// How it is kept, in the store and among replicas: a code and the upstream's words.
    pub fn code(&self) -> (u8, &str) {
        match self {
            Refused::Foreign { message } => (1, message),
            Refused::Protected { message } => (2, message),
            Refused::NotForeign => (3, ""),
            Refused::Neither => (4, ""),
        }
    }

    /// What [`Refused::code`] keeps, read back; `None` for a code no version wrote.
    pub fn from_code(code: u8, message: &str) -> Option<Refused> {
        let message = message.to_string();
        match code {
            1 => Some(Refused::Foreign { message }),
            2 => Some(Refused::Protected { message }),
            3 => Some(Refused::NotForeign),
            4 => Some(Refused::Neither),
            _ => None,
        }
    }

    /// The upstream's status and words when the Tweet cannot be answered for (then nothing
    /// else learned of it holds).
    pub fn refusal(&self) -> Option<(u16, &str)> {
        match self {
            Refused::Foreign { message } => Some((403, message)),
            Refused::Protected { message } => Some((400, message)),
            Refused::NotForeign | Refused::Neither => None,
        }
    }
}

impl Known {
    /// Adds what a call sent at `sent_at` brought (its unsettled hours, and the status of
    /// its Tweets), so the question renders from it.
    pub fn learn(&mut self, facts: &CallFacts, unsettled_from: i64, sent_at: DateTime<Utc>) {
        for &t in &facts.tweets {
            self.refused.remove(&t);
            self.unshown.remove(&t);
            self.status.insert(t, TweetStatus::of(facts.deleted.contains(&t)));
        }
        for (tweet, hours) in &facts.hours {
            for (hour, counts) in hours.iter() {
                if hour >= unsettled_from {
                    let fresh = FreshHour::new(facts.slots, full_hour(facts.slots, counts), sent_at);
                    self.fresh.insert((*tweet, hour), Arc::new(fresh));
                }
            }
        }
    }

    /// Whether the upstream is expected to show no counts of `tweet`: deleted, refused for,
    /// or last seen so and not yet asked again.
    pub fn shows_nothing_of(&self, tweet: &TweetId) -> bool {
        self.status.get(tweet) == Some(&TweetStatus::Deleted)
            || self.refused.get(tweet).is_some_and(|r| r.refusal().is_some())
            || (self.unshown.contains_key(tweet) && !self.status.contains_key(tweet))
    }

    /// Whether a call for `tweet` is expected to be refused: it is refused for, or was when
    /// last asked.
    pub fn refuses(&self, tweet: &TweetId) -> bool {
        self.refused.get(tweet).is_some_and(|r| r.refusal().is_some())
            || (self.unshown.get(tweet) == Some(&Unshown::Refused) && !self.status.contains_key(tweet))
    }
}

/// A Tweet's stored days, ascending: their rows as kept, one after another, and where each
/// day's is.
#[derive(Debug, Default)]
pub(crate) struct DayRows {
    bytes: Vec<u8>,
    days: Vec<(i64, std::ops::Range<usize>)>,
}

impl DayRows {
    pub(crate) fn push(&mut self, day: i64, row: &[u8]) {
        let from = self.bytes.len();
        self.bytes.extend_from_slice(row);
        self.days.push((day, from..self.bytes.len()));
    }

    fn iter(&self) -> impl Iterator<Item = (i64, &[u8])> {
        self.days.iter().map(|(day, at)| (*day, &self.bytes[at.clone()]))
    }
}

/// The counts a question renders from: for each Tweet shown, its stored days over the range
/// as they are kept (each type's counts read when the answer is rendered, so a batch's
/// hours are never all held at once), and its unsettled hours from memory.
#[derive(Debug, Default)]
pub struct Held {
    /// Per Tweet shown, its rows of the range's days.
    pub(crate) rows: HashMap<TweetId, DayRows>,
    /// Per Tweet, hours of the range (by number) taken from memory, where rows lacked them.
    pub(crate) fresh: HashMap<TweetId, Vec<(i64, Arc<FreshHour>)>>,
    /// Tweets whose `video_views` the API reports as zero at the time of the question.
    pub no_video_views: HashSet<TweetId>,
    /// A row's counts could not be read while rendering (see [`Held::intact`]).
    pub(crate) malformed: std::sync::atomic::AtomicBool,
}

impl Held {
    /// Whether every row rendered from so far was read whole; an answer rendered from rows
    /// that were not is not given.
    pub fn intact(&self) -> Result<(), crate::row::Malformed> {
        if self.malformed.load(std::sync::atomic::Ordering::Relaxed) {
            Err(crate::row::Malformed("counts cut short"))
        } else {
            Ok(())
        }
    }
}

impl HourlyCounts for Held {
    /// One type's counts: what [`HourlyCounts::fill_each`] gives of it alone. Answers are
    /// rendered through `fill_each`; this serves callers asking for one type.
    fn fill(&self, tweet: TweetId, ty: EngagementType, start: DateTime<Utc>, out: &mut [u64]) {
        let mut one = [vec![0; out.len()]];
        self.fill_each(tweet, &[ty], start, &mut one);
        out.copy_from_slice(&one[0]);
    }

    /// Each stored day is decoded once for every type asked, not once per type.
    fn fill_each(
        &self,
        tweet: TweetId,
        types: &[EngagementType],
        start: DateTime<Utc>,
        outs: &mut [Vec<u64>],
    ) {
        outs.iter_mut().for_each(|out| out.fill(0));
        // The slots asked, ascending, each with the series it fills.
        let mut wanted: Vec<(usize, usize)> = types
            .iter()
            .enumerate()
            .take(outs.len())
            .filter(|(_, ty)| **ty != EngagementType::VideoViews || !self.no_video_views.contains(&tweet))
            .filter_map(|(k, ty)| crate::row::slot(*ty).map(|s| (s, k)))
            .collect();
        wanted.sort_unstable();
        if wanted.windows(2).any(|w| w[0].0 == w[1].0) {
            // A type asked twice: each is filled on its own.
            return engagement::render::fill_each_alone(self, tweet, types, start, outs);
        }
        let slots: Vec<usize> = wanted.iter().map(|(s, _)| *s).collect();
        let first = hour_of(start);
        for (day, row) in self.rows.get(&tweet).into_iter().flat_map(DayRows::iter) {
            let from = day * 24 - first;
            let decoded = crate::row::decode_slots(row, &slots, true, |w, h, c| {
                let series = &mut outs[wanted[w].1];
                if let Some(at) = usize::try_from(from + h as i64).ok().and_then(|i| series.get_mut(i)) {
                    *at = c;
                }
            });
            if decoded.is_err() {
                self.malformed.store(true, std::sync::atomic::Ordering::Relaxed);
            }
        }
        for (hour, fresh) in self.fresh.get(&tweet).into_iter().flatten() {
            let Ok(i) = usize::try_from(hour - first) else { continue };
            for &(slot, k) in &wanted {
                if let Some(at) = outs[k].get_mut(i) {
                    *at = fresh.counts[slot];
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use engagement::parse_instant;

    #[test]
    fn an_hour_keeps_each_types_latest_count_while_it_is_fresh() {
        let t0 = parse_instant("2024-06-01T12:00:00Z").unwrap();
        let ttl = std::time::Duration::from_secs(60);
        let secs = chrono::Duration::seconds;
        let (a, b) = (1u32 << 0, 1u32 << 1);
        let hour = |a_count: u64, b_count: u64| {
            let mut counts = [0u64; SLOTS];
            counts[0] = a_count;
            counts[1] = b_count;
            counts
        };
        let first = FreshHour::new(a, hour(10, 0), t0);
        // Another type, a little later: both are held.
        let both = first.with(b, &hour(0, 7), t0 + secs(20), ttl);
        assert_eq!((both.slots, both.counts[0], both.counts[1]), (a | b, 10, 7));
        assert_eq!(both.fresh_slots(t0 + secs(70), ttl), b, "the first type's life is over first");
        // A call sent before the one that brought a type does not undo it.
        let late = both.with(a | b, &hour(9, 6), t0 + secs(10), ttl);
        assert_eq!((late.counts[0], late.counts[1]), (9, 7));
        // Past its life, a type is let go when another call comes.
        let after = both.with(b, &hour(0, 8), t0 + secs(65), ttl);
        assert_eq!((after.slots, after.counts[1]), (b, 8));
    }
}

//! Cutting a question into slices: batches of at most 25 Tweets times windows of at most
//! 28 days on a fixed grid.

use chrono::{DateTime, Duration, Utc};
use engagement::vocabulary::{EngagementType, Grouping};
use engagement::vocabulary::{MAX_WINDOW_HOURS, earliest_start};
use engagement::{Endpoint, Query, RawRequest, TimeRange, TweetId};

/// Windows are cut on a grid of 28-day cells from this instant, so the interior windows
/// of two overlapping questions are the same calls (and can share a cache).
pub fn grid_anchor() -> DateTime<Utc> {
    earliest_start()
}

/// Cuts `range` at the grid's boundaries: disjoint, hour-aligned windows of at most 28
/// days whose union is `range`.
pub fn windows(range: TimeRange) -> Vec<TimeRange> {
    let cell = MAX_WINDOW_HOURS;
    let anchor_hour = engagement::time::hour_number(grid_anchor());
    let start_hour = engagement::time::hour_number(range.start);
    let mut out = Vec::new();
    let mut from = range.start;
    while from < range.end {
        let offset = (start_hour - anchor_hour) + (from - range.start).num_hours();
        let next_boundary = from + Duration::hours(cell - offset.rem_euclid(cell));
        let to = next_boundary.min(range.end);
        out.push(TimeRange { start: from, end: to });
        from = to;
    }
    out
}

/// One call of a plan: a batch of Tweets over one window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Slice {
    /// Index into [`Plan::batches`].
    pub batch: usize,
    pub window: TimeRange,
}

/// How a question is answered: which calls are made, and which windows are known to be
/// all zeros because they end before every Tweet of their batch was created.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub range: TimeRange,
    /// Distinct IDs sorted numerically (about by creation time), at most `batch_size` each.
    pub batches: Vec<Vec<TweetId>>,
    /// The grid windows of the range.
    pub windows: Vec<TimeRange>,
    /// The calls to make.
    pub fetched: Vec<Slice>,
    /// For each batch, the part of the range answered as zeros without a call (the windows
    /// that end before its earliest Tweet was created), if any.
    pub synthesized: Vec<Option<TimeRange>>,
}

impl Plan {
    /// The call for `slice`: its batch over its window, asking `types` grouped by
    /// `groupings` (built from the batch, so a question's whole ID list is never copied per
    /// slice).
    pub fn slice_request(
        &self,
        slice: Slice,
        types: &[EngagementType],
        groupings: &[Grouping],
    ) -> RawRequest {
        Query {
            endpoint: Endpoint::Historical,
            tweet_ids: self.batches[slice.batch].clone(),
            types: types.to_vec(),
            groupings: groupings.to_vec(),
            range: Some(slice.window),
            end_clamped: false,
            zone: engagement::Zone::Utc,
        }
        .to_raw()
    }

    /// Slices planned in all: batches × windows.
    pub fn planned(&self) -> usize {
        self.batches.len() * self.windows.len()
    }

    /// Slices answered as zeros without a call.
    pub fn synthesized_slices(&self) -> usize {
        self.planned() - self.fetched.len()
    }
}

/// `ids` sorted numerically, deduplicated and cut into batches of at most `batch_size`.
pub fn batches(ids: &[TweetId], batch_size: usize) -> Vec<Vec<TweetId>> {
    let mut sorted = ids.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    sorted.chunks(batch_size.max(1)).map(<[TweetId]>::to_vec).collect()
}

impl Plan {
    /// A question the API answers for one span it picks itself (`/totals`: each Tweet's
    /// life so far; `/28hr`: the last 28 hours), described here as `range`: one call per
    /// batch of at most `batch_size`, nothing synthesized.
    pub fn at_once(ids: &[TweetId], range: TimeRange, batch_size: usize) -> Plan {
        let batches = batches(ids, batch_size);
        let fetched = (0..batches.len()).map(|batch| Slice { batch, window: range }).collect();
        let synthesized = vec![None; batches.len()];
        Plan { range, batches, windows: vec![range], fetched, synthesized }
    }
}

/// Plans a question for `ids` over `range`, in batches of at most `batch_size`.
pub fn plan(ids: &[TweetId], range: TimeRange, batch_size: usize) -> Plan {
    let batches = batches(ids, batch_size);
    let windows = windows(range);
    let mut fetched = Vec::new();
    let mut synthesized = Vec::with_capacity(batches.len());
    for (b, batch) in batches.iter().enumerate() {
        // IDs grow with creation time, so the first of a sorted batch is its oldest Tweet.
        let born = batch.first().map(|id| id.created_at()).unwrap_or(range.start);
        let zeros = windows.iter().take_while(|w| w.end <= born).count();
        let real = if zeros < windows.len() {
            zeros..windows.len()
        } else {
            // Every window is before the batch existed. One real call still reports what
            // the API says of these Tweets (deleted, protected, foreign): the shorter of the
            // first and last windows (the inner ones are all 28 days), so the zeros stay
            // one span.
            let last = windows.len() - 1;
            if windows[0].hours() < windows[last].hours() { 0..1 } else { last..last + 1 }
        };
        fetched.extend(windows[real.clone()].iter().map(|&window| Slice { batch: b, window }));
        let before =
            (real.start > 0).then(|| TimeRange { start: windows[0].start, end: windows[real.start - 1].end });
        let after =
            (real.end < windows.len()).then(|| TimeRange { start: windows[real.end].start, end: range.end });
        synthesized.push(before.or(after));
    }
    Plan { range, batches, windows, fetched, synthesized }
}

#[cfg(test)]
mod tests {
    use super::*;
    use engagement::parse_instant;

    fn range(a: &str, b: &str) -> TimeRange {
        TimeRange { start: parse_instant(a).unwrap(), end: parse_instant(b).unwrap() }
    }

    #[test]
    fn windows_follow_the_28_day_grid() {
        // 2014-09-01 + 28 days = 2014-09-29; the grid cuts there.
        let w = windows(range("2014-09-10", "2014-11-01"));
        let cuts: Vec<String> = w.iter().map(|w| w.describe()).collect();
        assert_eq!(
            cuts,
            [
                "2014-09-10T00:00:00Z/2014-09-29T00:00:00Z",
                "2014-09-29T00:00:00Z/2014-10-27T00:00:00Z",
                "2014-10-27T00:00:00Z/2014-11-01T00:00:00Z",
            ]
        );
        // An overlapping question shares the interior window.
        let other = windows(range("2014-09-20T05:00:00Z", "2014-12-01"));
        assert!(other.contains(&w[1]));
    }

    #[test]
    fn windows_before_a_batch_existed_are_synthesized() {
        let r = range("2015-01-01", "2015-06-01");
        let young = TweetId::minted_at(parse_instant("2015-04-01T10:00:00Z").unwrap());
        let p = plan(&[young], r, 25);
        let first_fetched = p.fetched.first().unwrap().window;
        assert!(first_fetched.end > young.created_at() && first_fetched.start <= young.created_at());
        assert_eq!(p.synthesized[0], Some(TimeRange { start: r.start, end: first_fetched.start }));
        assert_eq!(p.fetched.len() + p.synthesized_slices(), p.windows.len());
    }

    #[test]
    fn a_batch_younger_than_the_whole_range_still_gets_one_call() {
        let r = range("2015-01-01", "2015-03-15");
        let later = TweetId::minted_at(parse_instant("2016-01-01").unwrap());
        let p = plan(&[later], r, 25);
        assert_eq!(p.fetched.len(), 1);
        let only = p.fetched[0].window;
        assert_eq!(only, *p.windows.iter().min_by_key(|w| w.hours()).unwrap());
        let zeros = p.synthesized[0].unwrap();
        assert_eq!(zeros.hours() + only.hours(), r.hours());
    }

    #[test]
    fn ids_are_sorted_deduplicated_and_batched() {
        let ids: Vec<TweetId> = (0..60).rev().chain(0..5).map(TweetId).collect();
        let p = plan(&ids, range("2015-01-01", "2015-01-02"), 25);
        let sizes: Vec<usize> = p.batches.iter().map(Vec::len).collect();
        assert_eq!(sizes, [25, 25, 10]);
        assert_eq!(p.batches[0][0], TweetId(0));
        assert_eq!(p.batches[2][9], TweetId(59));
    }
}

//! Building the answer's trees from hourly counts. The simulator, its oracle and the
//! service's synthesized slices all render through here, so they cannot disagree on shape.

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, Timelike, Utc};

use crate::time::TimeRange;
use crate::tree::{Branch, HOUR_KEYS, Key, Node, day_key};
use crate::tweet_id::TweetId;
use crate::vocabulary::{EngagementType, GroupBy, Grouping};

/// A source of counts per Tweet, type and hour.
pub trait HourlyCounts {
    /// Writes into `out[i]` the count of `ty` for `tweet` in the hour that starts at
    /// `start + i` hours.
    fn fill(&self, tweet: TweetId, ty: EngagementType, start: DateTime<Utc>, out: &mut [u64]);
}

/// Every count is zero: what the API answers for hours before a Tweet existed.
#[derive(Debug, Clone, Copy, Default)]
pub struct Zeros;

impl HourlyCounts for Zeros {
    fn fill(&self, _: TweetId, _: EngagementType, _: DateTime<Utc>, out: &mut [u64]) {
        out.fill(0);
    }
}

/// The calendar of a range: for each hour, its day and its hour of day.
struct Calendar {
    /// Every hour's index, `0..hours`: the selection the trees start from.
    hours: Vec<u32>,
    day_of: Vec<u32>,
    /// The first hour of each day, and after the last day the number of hours.
    day_start: Vec<u32>,
    day_keys: Vec<Key>,
    hour_of_day: Vec<u8>,
}

impl Calendar {
    fn new(range: TimeRange) -> Calendar {
        let hours = range.hours();
        let mut day_of = Vec::with_capacity(hours);
        let mut day_keys: Vec<Key> = Vec::new();
        let mut day_start = Vec::new();
        let mut hour_of_day = Vec::with_capacity(hours);
        // In UTC the hour of day counts on from the first, one an hour; only a new day's key
        // needs the calendar.
        let first_hour = range.start.hour() as usize;
        for i in 0..hours {
            let h = ((first_hour + i) % 24) as u8;
            if i == 0 || h == 0 {
                let t = range.start + Duration::hours(i as i64);
                day_keys.push(day_key(&t.format("%Y-%m-%d").to_string()));
                day_start.push(i as u32);
            }
            day_of.push((day_keys.len() - 1) as u32);
            hour_of_day.push(h);
        }
        day_start.push(hours as u32);
        Calendar { hours: (0..hours as u32).collect(), day_of, day_start, day_keys, hour_of_day }
    }
}

/// Renders every grouping of a question over `range` for `tweets` (the ones to show: a
/// deleted Tweet is left out by the caller). Day and hour buckets are dense over the range.
pub fn render(
    tweets: &[TweetId],
    types: &[EngagementType],
    groupings: &[Grouping],
    range: TimeRange,
    counts: &impl HourlyCounts,
) -> BTreeMap<String, Node> {
    render_each(tweets, types, groupings, |_| range, counts)
}

/// Like [`render`], with a range of its own for each Tweet (lifetime totals). Groupings
/// with day or hour levels need one common range and belong to [`render`].
pub fn render_each(
    tweets: &[TweetId],
    types: &[EngagementType],
    groupings: &[Grouping],
    range_of: impl Fn(TweetId) -> TimeRange,
    counts: &impl HourlyCounts,
) -> BTreeMap<String, Node> {
    let mut out: BTreeMap<String, Node> =
        groupings.iter().map(|g| (g.name.clone(), Node::branch())).collect();
    let mut cached: Option<(TimeRange, Calendar)> = None;
    let mut series: Vec<Vec<u64>> = vec![Vec::new(); types.len()];
    let all_types: Vec<usize> = (0..types.len()).collect();
    for &tweet in tweets {
        let range = range_of(tweet);
        if cached.as_ref().is_none_or(|(r, _)| *r != range) {
            cached = Some((range, Calendar::new(range)));
        }
        let Some((_, calendar)) = cached.as_ref() else {
            continue;
        };
        for (ty, s) in types.iter().zip(series.iter_mut()) {
            s.clear();
            s.resize(range.hours(), 0);
            counts.fill(tweet, *ty, range.start, s);
        }
        let cx = Context { tweet, types, series: &series, calendar };
        for g in groupings {
            let tree = cx.build(&g.group_by, &all_types, &calendar.hours);
            if let Some(acc) = out.get_mut(&g.name) {
                // Trees rendered here share one shape and are far from 2^64.
                let _ = acc.absorb(tree);
            }
        }
    }
    out
}

struct Context<'a> {
    tweet: TweetId,
    types: &'a [EngagementType],
    series: &'a [Vec<u64>],
    calendar: &'a Calendar,
}

impl Context<'_> {
    /// The subtree of one Tweet for `levels`, over the types (indices) and hours given
    /// (ascending, each once).
    fn build(&self, levels: &[GroupBy], types: &[usize], hours: &[u32]) -> Node {
        let Some((level, rest)) = levels.split_first() else {
            let sum = types
                .iter()
                .map(|&t| match contiguous(hours) {
                    Some(run) => self.series[t][run].iter().sum::<u64>(),
                    None => hours.iter().map(|&h| self.series[t][h as usize]).sum(),
                })
                .sum();
            return Node::Count(sum);
        };
        let entries: Vec<(Key, Node)> = match level {
            GroupBy::TweetId => vec![(Key::Owned(self.tweet.to_string()), self.build(rest, types, hours))],
            GroupBy::EngagementType => types
                .iter()
                .map(|&t| (Key::Borrowed(self.types[t].name()), self.build(rest, &[t], hours)))
                .collect(),
            GroupBy::EngagementDay => self
                .days(hours)
                .map(|(day, run)| (self.calendar.day_keys[day].clone(), self.build(rest, types, run)))
                .collect(),
            GroupBy::EngagementHour => {
                let contiguous = hours.len() <= 24 && hours.windows(2).all(|w| w[1] == w[0] + 1);
                if contiguous {
                    hours.chunks(1).map(|one| (self.hour_key(one[0]), self.build(rest, types, one))).collect()
                } else {
                    let mut by_hour: [Vec<u32>; 24] = Default::default();
                    for &h in hours {
                        by_hour[self.calendar.hour_of_day[h as usize] as usize].push(h);
                    }
                    by_hour
                        .iter()
                        .enumerate()
                        .filter(|(_, hs)| !hs.is_empty())
                        .map(|(hod, hs)| (Key::Borrowed(HOUR_KEYS[hod]), self.build(rest, types, hs)))
                        .collect()
                }
            }
        };
        Node::Branch(Branch::from_entries(entries))
    }

    /// `hours` cut by day: each day's number and its hours.
    fn days<'h>(&self, hours: &'h [u32]) -> Box<dyn Iterator<Item = (usize, &'h [u32])> + 'h>
    where
        Self: 'h,
    {
        let calendar = self.calendar;
        let Some(run) = contiguous(hours) else {
            return Box::new(
                hours
                    .chunk_by(|a, b| calendar.day_of[*a as usize] == calendar.day_of[*b as usize])
                    .map(|run| (calendar.day_of[run[0] as usize] as usize, run)),
            );
        };
        // One run of hours: its days' bounds are known without looking at each hour.
        let (first, last) = (calendar.day_of[run.start] as usize, calendar.day_of[run.end - 1] as usize);
        Box::new((first..=last).map(move |day| {
            let from = (calendar.day_start[day] as usize).max(run.start) - run.start;
            let to = (calendar.day_start[day + 1] as usize).min(run.end) - run.start;
            (day, &hours[from..to])
        }))
    }

    fn hour_key(&self, h: u32) -> Key {
        Key::Borrowed(HOUR_KEYS[self.calendar.hour_of_day[h as usize] as usize])
    }
}

/// The hours `hours` (ascending, each once) as one run of indices, if they are one.
fn contiguous(hours: &[u32]) -> Option<std::ops::Range<usize>> {
    let (&first, &last) = (hours.first()?, hours.last()?);
    (last - first + 1 == hours.len() as u32).then_some(first as usize..last as usize + 1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::time::parse_instant;
    use crate::vocabulary::GroupBy as G;
    use serde_json::json;

    /// Count = hour of day + 100 × type index + 1000 × (tweet id), so every cell is known.
    struct Formula;
    impl HourlyCounts for Formula {
        fn fill(&self, tweet: TweetId, ty: EngagementType, start: DateTime<Utc>, out: &mut [u64]) {
            for (i, c) in out.iter_mut().enumerate() {
                let t = start + Duration::hours(i as i64);
                *c = t.hour() as u64 + 100 * ty.index() as u64 + 1000 * tweet.0;
            }
        }
    }

    fn range(a: &str, b: &str) -> TimeRange {
        TimeRange { start: parse_instant(a).unwrap(), end: parse_instant(b).unwrap() }
    }

    fn g(levels: &[GroupBy]) -> Vec<Grouping> {
        vec![Grouping { name: "g".into(), group_by: levels.to_vec() }]
    }

    fn tree(v: serde_json::Value) -> Node {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn day_and_hour_buckets_are_dense_over_the_window() {
        // 22:00 to 02:00 next day: day 1 has hours 22, 23; day 2 has 00, 01.
        let out = render(
            &[TweetId(1)],
            &[EngagementType::Impressions],
            &g(&[G::TweetId, G::EngagementType, G::EngagementDay, G::EngagementHour]),
            range("2015-09-14T22:00:00Z", "2015-09-15T02:00:00Z"),
            &Formula,
        );
        assert_eq!(
            out["g"],
            tree(json!({"1": {"impressions": {
                "2015-09-14": {"22": 1022, "23": 1023},
                "2015-09-15": {"00": 1000, "01": 1001}
            }}}))
        );
        // Zero counts still appear.
        let zeros = render(
            &[TweetId(7)],
            &[EngagementType::Favorites],
            &g(&[G::EngagementDay]),
            range("2015-09-14T22:00:00Z", "2015-09-16T01:00:00Z"),
            &Zeros,
        );
        assert_eq!(zeros["g"], tree(json!({"2015-09-14": 0, "2015-09-15": 0, "2015-09-16": 0})));
    }

    #[test]
    fn hour_without_day_sums_the_hour_of_day_over_the_window() {
        // Two Tweets, two days and two hours: hour 23 appears on day 1, hours 00 and 23 ... by hand:
        // window 2015-01-01T23 .. 2015-01-03T01 holds hours 23(d1), 00..23(d2), 00(d3).
        let out = render(
            &[TweetId(1), TweetId(2)],
            &[EngagementType::Impressions, EngagementType::Engagements],
            &g(&[G::EngagementHour]),
            range("2015-01-01T23:00:00Z", "2015-01-03T01:00:00Z"),
            &Formula,
        );
        let Node::Branch(hours) = &out["g"] else { panic!("not a branch") };
        assert_eq!(hours.len(), 24);
        // Hour 00 occurs twice per (tweet, type): sum over tweets 1,2 and types 0,1 of
        // 2 × (0 + 100 × type + 1000 × tweet) = 2 × (4×0 + 2×100 + 2×3000) = 12400.
        assert_eq!(hours.get("00"), Some(&Node::Count(12_400)));
        // Hour 12 occurs once: 12×4 + 200 + 6000 = 6248.
        assert_eq!(hours.get("12"), Some(&Node::Count(6_248)));
    }

    #[test]
    fn hour_above_day_and_grand_totals() {
        let r = range("2015-01-01T22:00:00Z", "2015-01-02T23:00:00Z");
        let out = render(
            &[TweetId(0)],
            &[EngagementType::Impressions],
            &g(&[G::EngagementHour, G::EngagementDay]),
            r,
            &Formula,
        );
        assert_eq!(out["g"].get("22"), Some(&tree(json!({"2015-01-01": 22, "2015-01-02": 22}))));
        assert_eq!(out["g"].get("23"), Some(&tree(json!({"2015-01-01": 23}))));
        let totals = render(
            &[TweetId(1), TweetId(2)],
            &[EngagementType::Retweets],
            &g(&[G::EngagementType]),
            range("2015-01-01T00:00:00Z", "2015-01-01T02:00:00Z"),
            &Formula,
        );
        // Retweets is index 3: per hour 300 + hour + 1000 × tweet; hours 0,1; tweets 1,2.
        assert_eq!(totals["g"], tree(json!({"retweets": 2 * 300 + 1 + 2 * 300 + 1 + 2000 + 4000})));
    }

    /// Every grouping's tree, counted hour by hour into nested maps: what [`render`] must
    /// give, by the plainest means.
    fn by_hand(
        tweets: &[TweetId],
        types: &[EngagementType],
        levels: &[GroupBy],
        r: TimeRange,
    ) -> serde_json::Value {
        let mut out = serde_json::Map::new();
        for &tweet in tweets {
            for &ty in types {
                let mut one = [0u64];
                for i in 0..r.hours() {
                    let t = r.start + Duration::hours(i as i64);
                    Formula.fill(tweet, ty, t, &mut one);
                    let path: Vec<String> = levels
                        .iter()
                        .map(|level| match level {
                            GroupBy::TweetId => tweet.to_string(),
                            GroupBy::EngagementType => ty.name().to_string(),
                            GroupBy::EngagementDay => t.format("%Y-%m-%d").to_string(),
                            GroupBy::EngagementHour => format!("{:02}", t.hour()),
                        })
                        .collect();
                    let mut at = &mut out;
                    for (k, key) in path.iter().enumerate() {
                        if k + 1 == path.len() {
                            let before =
                                at.get(key).and_then(|v| v.as_str()?.parse::<u64>().ok()).unwrap_or(0);
                            at.insert(key.clone(), json!((before + one[0]).to_string()));
                        } else {
                            at = at.entry(key.clone()).or_insert_with(|| json!({})).as_object_mut().unwrap();
                        }
                    }
                }
            }
        }
        serde_json::Value::Object(out)
    }

    proptest::proptest! {
        #[test]
        fn every_grouping_adds_up_hour_by_hour(
            start in 0i64..72,
            hours in 1i64..80,
            levels in proptest::sample::subsequence(
                vec![G::TweetId, G::EngagementType, G::EngagementDay, G::EngagementHour], 1..=4),
            swap in proptest::bool::ANY,
        ) {
            let mut levels = levels;
            if swap && levels.len() >= 2 {
                levels.swap(0, 1);
            }
            let from = parse_instant("2015-03-07T00:00:00Z").unwrap() + Duration::hours(start);
            let r = TimeRange { start: from, end: from + Duration::hours(hours) };
            let (tweets, types) = ([TweetId(1), TweetId(2)], [EngagementType::Impressions, EngagementType::Favorites]);
            let out = render(&tweets, &types, &g(&levels), r, &Formula);
            let rendered = serde_json::to_value(&out["g"]).unwrap();
            proptest::prop_assert_eq!(rendered, by_hand(&tweets, &types, &levels, r));
        }
    }
}

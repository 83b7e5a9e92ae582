//! Building the answer's trees from hourly counts. The simulator, its oracle and the
//! service's synthesized slices all render through here, so they cannot disagree on shape.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};

use crate::calendar::{Calendar, Periods};
use crate::time::TimeRange;
use crate::tree::{Branch, HOUR_KEYS, Key, Node};
use crate::tweet_id::TweetId;
use crate::vocabulary::{EngagementType, GroupBy, Grouping};
use crate::zone::Zone;

/// A source of counts per Tweet, type and hour.
pub trait HourlyCounts {
    /// Writes into `out[i]` the count of `ty` for `tweet` in the hour that starts at
    /// `start + i` hours.
    fn fill(&self, tweet: TweetId, ty: EngagementType, start: DateTime<Utc>, out: &mut [u64]);

    /// Writes into `outs[k]` what [`HourlyCounts::fill`] writes for `types[k]`: a source
    /// that reads every type of an hour at once reads each hour once.
    fn fill_each(
        &self,
        tweet: TweetId,
        types: &[EngagementType],
        start: DateTime<Utc>,
        outs: &mut [Vec<u64>],
    ) {
        fill_each_alone(self, tweet, types, start, outs);
    }
}

/// [`HourlyCounts::fill_each`] as `fill` for each type in turn.
pub fn fill_each_alone<C: HourlyCounts + ?Sized>(
    counts: &C,
    tweet: TweetId,
    types: &[EngagementType],
    start: DateTime<Utc>,
    outs: &mut [Vec<u64>],
) {
    for (ty, out) in types.iter().zip(outs.iter_mut()) {
        counts.fill(tweet, *ty, start, out);
    }
}

/// Every count is zero: what the API answers for hours before a Tweet existed.
#[derive(Debug, Clone, Copy, Default)]
pub struct Zeros;

impl HourlyCounts for Zeros {
    fn fill(&self, _: TweetId, _: EngagementType, _: DateTime<Utc>, out: &mut [u64]) {
        out.fill(0);
    }
}

/// Renders every grouping of a question over `range` for `tweets` (the ones to show: a
/// deleted Tweet is left out by the caller), with days, weeks, months and hours of day
/// those of `zone`. Period and hour buckets are dense over the range; on a day whose clocks
/// go back, the repeated hour's counts add up under its one key, and on a day they go
/// forward the skipped hour has none.
pub fn render(
    tweets: &[TweetId],
    types: &[EngagementType],
    groupings: &[Grouping],
    range: TimeRange,
    zone: &Zone,
    counts: &impl HourlyCounts,
) -> BTreeMap<String, Node> {
    render_in(tweets, types, groupings, |_| range, zone, counts)
}

/// Like [`render`] in UTC, with a range of its own for each Tweet (lifetime totals).
/// Groupings with time levels need one common range and belong to [`render`].
pub fn render_each(
    tweets: &[TweetId],
    types: &[EngagementType],
    groupings: &[Grouping],
    range_of: impl Fn(TweetId) -> TimeRange,
    counts: &impl HourlyCounts,
) -> BTreeMap<String, Node> {
    render_in(tweets, types, groupings, range_of, &Zone::Utc, counts)
}

fn render_in(
    tweets: &[TweetId],
    types: &[EngagementType],
    groupings: &[Grouping],
    range_of: impl Fn(TweetId) -> TimeRange,
    zone: &Zone,
    counts: &impl HourlyCounts,
) -> BTreeMap<String, Node> {
    let mut out: BTreeMap<String, Node> =
        groupings.iter().map(|g| (g.name.clone(), Node::branch())).collect();
    let levels: Vec<GroupBy> = groupings.iter().flat_map(|g| g.group_by.iter().copied()).collect();
    let mut cached: Option<(TimeRange, Calendar)> = None;
    let mut series: Vec<Vec<u64>> = vec![Vec::new(); types.len()];
    let all_types: Vec<usize> = (0..types.len()).collect();
    for &tweet in tweets {
        let range = range_of(tweet);
        if cached.as_ref().is_none_or(|(r, _)| *r != range) {
            cached = Some((range, Calendar::new(range, zone, &levels)));
        }
        let Some((_, calendar)) = cached.as_ref() else {
            continue;
        };
        for s in series.iter_mut() {
            s.clear();
            s.resize(range.hours(), 0);
        }
        counts.fill_each(tweet, types, range.start, &mut series);
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
            GroupBy::EngagementDay | GroupBy::EngagementWeek | GroupBy::EngagementMonth => {
                let periods = self.calendar.periods(*level);
                self.periods(periods, hours)
                    .map(|(p, run)| (periods.keys[p].clone(), self.build(rest, types, run)))
                    .collect()
            }
            GroupBy::EngagementHour => {
                // One run of hours whose hours of day count up by one, with no hour skipped
                // or repeated by a change of offset: each hour is its own key.
                let hour_of_day = &self.calendar.hour_of_day;
                let one_each = hours.len() <= 24
                    && hours.windows(2).all(|w| {
                        w[1] == w[0] + 1 && hour_of_day[w[1] as usize] == hour_of_day[w[0] as usize] + 1
                    });
                if one_each {
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

    /// `hours` cut by `periods` (days, weeks or months): each period's number and its hours.
    fn periods<'h>(
        &self,
        periods: &'h Periods,
        hours: &'h [u32],
    ) -> Box<dyn Iterator<Item = (usize, &'h [u32])> + 'h> {
        let Some(run) = contiguous(hours) else {
            return Box::new(
                hours
                    .chunk_by(|a, b| periods.of[*a as usize] == periods.of[*b as usize])
                    .map(|run| (periods.of[run[0] as usize] as usize, run)),
            );
        };
        // One run of hours: its periods' bounds are known without looking at each hour.
        let (first, last) = (periods.of[run.start] as usize, periods.of[run.end - 1] as usize);
        Box::new((first..=last).map(move |p| {
            let from = (periods.start[p] as usize).max(run.start) - run.start;
            let to = (periods.start[p + 1] as usize).min(run.end) - run.start;
            (p, &hours[from..to])
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
    use chrono::{Datelike, Duration, Timelike};
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
            &Zone::Utc,
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
            &Zone::Utc,
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
            &Zone::Utc,
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
            &Zone::Utc,
            &Formula,
        );
        assert_eq!(out["g"].get("22"), Some(&tree(json!({"2015-01-01": 22, "2015-01-02": 22}))));
        assert_eq!(out["g"].get("23"), Some(&tree(json!({"2015-01-01": 23}))));
        let totals = render(
            &[TweetId(1), TweetId(2)],
            &[EngagementType::Retweets],
            &g(&[G::EngagementType]),
            range("2015-01-01T00:00:00Z", "2015-01-01T02:00:00Z"),
            &Zone::Utc,
            &Formula,
        );
        // Retweets is index 3: per hour 300 + hour + 1000 × tweet; hours 0,1; tweets 1,2.
        assert_eq!(totals["g"], tree(json!({"retweets": 2 * 300 + 1 + 2 * 300 + 1 + 2000 + 4000})));
    }

    #[test]
    fn a_repeated_hour_adds_up_under_its_one_key_and_a_skipped_hour_has_none() {
        let ny = Zone::parse("America/New_York").unwrap();
        let one = [TweetId(0)];
        let imp = [EngagementType::Impressions];
        // 2026-11-01 in New York: 00:00 EDT (04:00Z) to 06:00 EST (11:00Z), 7 hours; 01 twice.
        let back = range("2026-11-01T04:00:00Z", "2026-11-01T11:00:00Z");
        // Formula counts the UTC hour: 01 EDT is 05Z, 01 EST is 06Z.
        for levels in [&[G::EngagementHour][..], &[G::EngagementDay, G::EngagementHour]] {
            let out = render(&one, &imp, &g(levels), back, &ny, &Formula);
            let hours = match levels.len() {
                1 => out["g"].clone(),
                _ => out["g"].get("2026-11-01").unwrap().clone(),
            };
            assert_eq!(
                hours,
                tree(json!({"00": 4, "01": 5 + 6, "02": 7, "03": 8, "04": 9, "05": 10})),
                "{levels:?}"
            );
        }
        // 2026-03-08: 00:00 EST (05:00Z) to 05:00 EDT (09:00Z); 02 is skipped.
        let forward = range("2026-03-08T05:00:00Z", "2026-03-08T09:00:00Z");
        let out = render(&one, &imp, &g(&[G::EngagementHour]), forward, &ny, &Formula);
        assert_eq!(out["g"], tree(json!({"00": 5, "01": 6, "03": 7, "04": 8})));
    }

    /// Every grouping's tree, counted hour by hour into nested maps: what [`render`] must
    /// give, by the plainest means.
    fn by_hand(
        tweets: &[TweetId],
        types: &[EngagementType],
        levels: &[GroupBy],
        r: TimeRange,
        zone: &Zone,
    ) -> serde_json::Value {
        let mut out = serde_json::Map::new();
        for &tweet in tweets {
            for &ty in types {
                let mut one = [0u64];
                for i in 0..r.hours() {
                    let t = r.start + Duration::hours(i as i64);
                    Formula.fill(tweet, ty, t, &mut one);
                    let local = zone.local(t);
                    let monday = local.date() - Duration::days(local.weekday().num_days_from_monday().into());
                    let path: Vec<String> = levels
                        .iter()
                        .map(|level| match level {
                            GroupBy::TweetId => tweet.to_string(),
                            GroupBy::EngagementType => ty.name().to_string(),
                            GroupBy::EngagementDay => local.format("%Y-%m-%d").to_string(),
                            GroupBy::EngagementHour => format!("{:02}", local.hour()),
                            GroupBy::EngagementWeek => monday.format("%Y-%m-%d").to_string(),
                            GroupBy::EngagementMonth => local.format("%Y-%m").to_string(),
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
            base in proptest::sample::select(vec!["2015-03-07", "2015-10-31", "2015-04-04", "2015-10-03", "2015-02-26"]),
            zone in proptest::sample::select(vec!["UTC", "America/New_York", "Australia/Sydney", "+02:00", "-03:00"]),
            start in 0i64..72,
            hours in proptest::prop_oneof![1i64..30, 1i64..400],
            levels in proptest::sample::subsequence(
                vec![G::TweetId, G::EngagementType, G::EngagementMonth, G::EngagementWeek, G::EngagementDay, G::EngagementHour], 1..=4),
            swap in proptest::bool::ANY,
        ) {
            let mut levels = levels;
            if swap && levels.len() >= 2 {
                levels.swap(0, 1);
            }
            let zone = Zone::parse(zone).unwrap();
            let from = parse_instant(base).unwrap() + Duration::hours(start);
            let r = TimeRange { start: from, end: from + Duration::hours(hours) };
            let (tweets, types) = ([TweetId(1), TweetId(2)], [EngagementType::Impressions, EngagementType::Favorites]);
            let out = render(&tweets, &types, &g(&levels), r, &zone, &Formula);
            let rendered = serde_json::to_value(&out["g"]).unwrap();
            proptest::prop_assert_eq!(rendered, by_hand(&tweets, &types, &levels, r, &zone));
        }
    }
}

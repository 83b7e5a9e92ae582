//! The laws of ARCHITECTURE.md, as properties over random questions.

#![allow(clippy::unwrap_used)]

use chrono::{DateTime, Duration, Utc};
use engagement::render::HourlyCounts;
use engagement::time::floor_hour;
use engagement::vocabulary::MAX_WINDOW_HOURS;
use engagement::{EngagementType, GroupBy, Grouping, Response, TimeRange, TweetId, Zone, render};
use proptest::prelude::*;
use stitch::{hourly_grouping, merge, plan, rebucket, synthesize};

/// Counts that are zero before a Tweet's creation hour and a hash after it.
struct Fake;

impl HourlyCounts for Fake {
    fn fill(&self, tweet: TweetId, ty: EngagementType, start: DateTime<Utc>, out: &mut [u64]) {
        let born = floor_hour(tweet.created_at()).timestamp() / 3600;
        let first = start.timestamp() / 3600;
        for (i, c) in out.iter_mut().enumerate() {
            let h = first + i as i64;
            let x = tweet.0 ^ (ty.index() as u64) << 50 ^ (h as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
            *c = if h < born { 0 } else { x.wrapping_mul(0xBF58_476D_1CE4_E5B9) >> 58 };
        }
    }
}

fn base() -> DateTime<Utc> {
    engagement::parse_instant("2016-03-01T00:00:00Z").unwrap()
}

fn arb_range(max_hours: i64) -> impl Strategy<Value = TimeRange> {
    (0i64..24 * 700, 1i64..=max_hours).prop_map(|(offset, len)| {
        let start = base() + Duration::hours(offset);
        TimeRange { start, end: start + Duration::hours(len) }
    })
}

fn arb_ids(max: usize) -> impl Strategy<Value = Vec<TweetId>> {
    prop::collection::vec((0i64..24 * 900, 0u64..1000), 1..=max).prop_map(|v| {
        v.into_iter()
            .map(|(hours, salt)| {
                TweetId(TweetId::minted_at(base() - Duration::days(60) + Duration::hours(hours)).0 + salt)
            })
            .collect()
    })
}

const SHAPES: [&[GroupBy]; 8] = [
    &[GroupBy::EngagementType],
    &[GroupBy::TweetId, GroupBy::EngagementType],
    &[GroupBy::EngagementHour],
    &[GroupBy::EngagementDay],
    &[GroupBy::EngagementType, GroupBy::EngagementDay, GroupBy::TweetId],
    &[GroupBy::TweetId, GroupBy::EngagementType, GroupBy::EngagementDay, GroupBy::EngagementHour],
    &[GroupBy::EngagementType, GroupBy::TweetId, GroupBy::EngagementDay, GroupBy::EngagementHour],
    &[GroupBy::EngagementHour, GroupBy::EngagementType],
];

fn arb_question() -> impl Strategy<Value = (Vec<TweetId>, Vec<EngagementType>, Vec<Grouping>, TimeRange)> {
    (
        arb_ids(40),
        prop::sample::subsequence(EngagementType::ALL.to_vec(), 1..=3),
        prop::sample::subsequence((0..SHAPES.len()).collect::<Vec<_>>(), 1..=2),
        arb_range(24 * 100),
    )
        .prop_map(|(ids, types, shapes, range)| {
            let groupings = shapes
                .into_iter()
                .map(|s| Grouping { name: format!("g{s}"), group_by: SHAPES[s].to_vec() })
                .collect();
            (ids, types, groupings, range)
        })
}

/// What one unlimited call answers.
fn whole(ids: &[TweetId], types: &[EngagementType], groupings: &[Grouping], range: TimeRange) -> Response {
    whole_in(ids, types, groupings, range, &Zone::Utc)
}

/// What one unlimited call would answer if the API counted in `zone` and knew weeks and months.
fn whole_in(
    ids: &[TweetId],
    types: &[EngagementType],
    groupings: &[Grouping],
    range: TimeRange,
    zone: &Zone,
) -> Response {
    let mut ids = ids.to_vec();
    ids.sort();
    ids.dedup();
    Response {
        start: Some(engagement::time::format_instant(range.start)),
        end: Some(engagement::time::format_instant(range.end)),
        groupings: render(&ids, types, groupings, range, zone, &Fake),
        ..Response::default()
    }
}

/// The stitched answer in `zone`: each real slice asked hourly and cut again into the
/// groupings, zeros synthesized in the zone's buckets, merged in order.
fn stitched_in(
    ids: &[TweetId],
    types: &[EngagementType],
    groupings: &[Grouping],
    range: TimeRange,
    zone: &Zone,
) -> Response {
    let p = plan(ids, range, 25);
    let mut parts: Vec<Response> = p
        .fetched
        .iter()
        .map(|s| {
            let batch = &p.batches[s.batch];
            let hourly = whole(batch, types, &[hourly_grouping()], s.window);
            rebucket(hourly, batch, types, groupings, s.window, zone)
        })
        .collect();
    for (b, zeros) in p.synthesized.iter().enumerate() {
        if let Some(z) = zeros {
            parts.push(synthesize(&p.batches[b], types, groupings, *z, zone));
        }
    }
    parts.into_iter().reduce(|a, b| merge(a, b).unwrap()).unwrap()
}

/// The stitched answer: real slices rendered one by one, zeros synthesized, merged in the
/// order given by `shuffle`.
fn stitched(
    ids: &[TweetId],
    types: &[EngagementType],
    groupings: &[Grouping],
    range: TimeRange,
    shuffle: u64,
) -> Response {
    let p = plan(ids, range, 25);
    let mut parts: Vec<Response> =
        p.fetched.iter().map(|s| whole(&p.batches[s.batch], types, groupings, s.window)).collect();
    for (b, zeros) in p.synthesized.iter().enumerate() {
        if let Some(z) = zeros {
            parts.push(synthesize(&p.batches[b], types, groupings, *z, &Zone::Utc));
        }
    }
    let n = parts.len() as u64;
    parts.rotate_left((shuffle % n) as usize);
    if shuffle % 2 == 1 {
        parts.reverse();
    }
    parts.into_iter().reduce(|a, b| merge(a, b).unwrap()).unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn plans_cover_the_range_and_every_id_once(ids in arb_ids(120), range in arb_range(24 * 2000)) {
        let p = plan(&ids, range, 25);
        let mut cursor = range.start;
        for w in &p.windows {
            prop_assert_eq!(w.start, cursor, "disjoint and without gaps");
            prop_assert!(w.start < w.end && w.hours() as i64 <= MAX_WINDOW_HOURS);
            prop_assert!(engagement::time::is_hour_aligned(w.start) && engagement::time::is_hour_aligned(w.end));
            cursor = w.end;
        }
        prop_assert_eq!(cursor, range.end);
        let mut seen: Vec<TweetId> = p.batches.iter().flatten().copied().collect();
        prop_assert!(p.batches.iter().all(|b| !b.is_empty() && b.len() <= 25));
        let total = seen.len();
        seen.sort();
        seen.dedup();
        prop_assert_eq!(total, seen.len(), "no ID in two batches");
        let mut distinct = ids.clone();
        distinct.sort();
        distinct.dedup();
        prop_assert_eq!(seen, distinct);
        // Every batch has at least one real call, and fetched + synthesized = planned.
        for b in 0..p.batches.len() {
            prop_assert!(p.fetched.iter().any(|s| s.batch == b));
            let zero_hours = p.synthesized[b].map_or(0, |z| z.hours());
            let real_hours: usize = p.fetched.iter().filter(|s| s.batch == b).map(|s| s.window.hours()).sum();
            prop_assert_eq!(zero_hours + real_hours, range.hours());
        }
    }

    #[test]
    fn the_stitched_answer_equals_one_unlimited_call((ids, types, groupings, range) in arb_question(), shuffle in any::<u64>()) {
        let expected = whole(&ids, &types, &groupings, range);
        let got = stitched(&ids, &types, &groupings, range, shuffle);
        prop_assert_eq!(serde_json::to_value(&got).unwrap(), serde_json::to_value(&expected).unwrap());
    }

    #[test]
    fn hourly_answers_cut_again_equal_one_unlimited_call_in_any_zone(
        (ids, types, _, range) in arb_question(),
        zone in prop::sample::select(vec!["America/New_York", "Australia/Sydney", "+02:00", "UTC"]),
        levels in prop::sample::subsequence(
            vec![GroupBy::TweetId, GroupBy::EngagementMonth, GroupBy::EngagementWeek, GroupBy::EngagementDay, GroupBy::EngagementHour], 1..=3),
    ) {
        let zone = Zone::parse(zone).unwrap();
        let groupings = [Grouping { name: "g".into(), group_by: levels }];
        let expected = whole_in(&ids, &types, &groupings, range, &zone);
        let got = stitched_in(&ids, &types, &groupings, range, &zone);
        prop_assert_eq!(serde_json::to_value(&got).unwrap(), serde_json::to_value(&expected).unwrap());
    }

    #[test]
    fn stitching_adjacent_ranges_is_merging_their_answers((ids, types, groupings, range) in arb_question(), cut in 1usize..1000) {
        prop_assume!(range.hours() > 1);
        let mid = range.start + Duration::hours((cut % (range.hours() - 1) + 1) as i64);
        let a = TimeRange { start: range.start, end: mid };
        let b = TimeRange { start: mid, end: range.end };
        let whole_range = stitched(&ids, &types, &groupings, range, 0);
        let halves = merge(stitched(&ids, &types, &groupings, a, 1), stitched(&ids, &types, &groupings, b, 2)).unwrap();
        prop_assert_eq!(whole_range, halves);
    }

    #[test]
    fn merge_is_associative_and_commutative(parts in prop::collection::vec(arb_response(), 3)) {
        let [a, b, c] = <[Response; 3]>::try_from(parts).unwrap();
        let left = merge(merge(a.clone(), b.clone()).unwrap(), c.clone()).unwrap();
        let right = merge(a.clone(), merge(b.clone(), c.clone()).unwrap()).unwrap();
        prop_assert_eq!(&left, &right);
        prop_assert_eq!(merge(a.clone(), b.clone()).unwrap(), merge(b, a).unwrap());
    }
}

/// Small random answers of one shape (type → day → count), with special members.
fn arb_response() -> impl Strategy<Value = Response> {
    let leaf = prop::collection::btree_map(
        prop::sample::select(vec!["2015-01-01", "2015-01-02", "2015-01-03"]),
        0u64..1000,
        0..3,
    );
    let tree =
        prop::collection::btree_map(prop::sample::select(vec!["impressions", "favorites"]), leaf, 0..3);
    (
        tree,
        prop::collection::vec(0u64..6, 0..3),
        prop::collection::vec(prop::sample::select(vec!["a", "b", "1 Tweet ID(s) are unavailable"]), 0..2),
        prop::sample::select(vec!["2015-01-01T00:00:00Z", "2015-01-02T00:00:00Z"]),
    )
        .prop_map(|(tree, unavailable, errors, start)| {
            let mut r: Response = serde_json::from_value(serde_json::json!({ "g": tree })).unwrap();
            r.unavailable_tweet_ids = unavailable.into_iter().map(TweetId).collect();
            r.unavailable_tweet_ids.sort();
            r.unavailable_tweet_ids.dedup();
            r.errors = errors.into_iter().map(String::from).collect();
            r.start = Some(start.to_string());
            // Normalize as a merge would, so the starting points are answers a merge makes.
            merge(Response::default(), r).unwrap()
        })
}

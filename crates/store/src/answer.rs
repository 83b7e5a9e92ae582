//! A call's answer read straight from its text into [`CallFacts`]: each count goes from the
//! JSON into its Tweet's row of hours, with no tree of counts in between. A 28-day hourly
//! answer for 25 Tweets holds hundreds of thousands of counts; building a tree of them only
//! to walk it once cost most of a cold question's CPU.

use std::collections::HashMap;
use std::fmt;

use chrono::NaiveDate;
use engagement::{EngagementType, TimeRange, TweetId};
use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, Visitor};

use crate::facts::{CallFacts, Shape, hour_of};
use crate::row::{Hour, SLOTS, slot, types_mask};

impl CallFacts {
    /// The facts of an answer's `body` to a call for `tweets` over `window` asking `types`,
    /// grouped `tweet.id, engagement.type, engagement.day, engagement.hour` under
    /// `grouping`. Hours where any type is missing are left out (not held), never taken as
    /// zeros; of a key sent twice, the later count is taken.
    pub fn read_hourly(
        tweets: &[TweetId],
        types: &[EngagementType],
        window: TimeRange,
        body: &[u8],
        grouping: &str,
    ) -> Result<CallFacts, Shape> {
        let mut out = CallFacts { window: Some(window), tweets: tweets.to_vec(), ..CallFacts::default() };
        let all = types_mask(types);
        out.slots = all;
        let hours = Hours { first: hour_of(window.start), len: window.hours(), all };
        let mut found = false;
        let top = Top {
            grouping: Some(grouping),
            hours,
            deleted: &mut out.deleted,
            found: &mut found,
            by_tweet: &mut out.hours,
        };
        read(body, top)?;
        if !found {
            return Err(Shape(format!("no grouping {grouping:?}")));
        }
        Ok(out)
    }

    /// Only what an answer's `body` to a call for `tweets` says of their status (a call for
    /// one hour and one type): which are deleted.
    pub fn read_status(tweets: &[TweetId], body: &[u8]) -> Result<CallFacts, Shape> {
        let mut out = CallFacts { tweets: tweets.to_vec(), ..CallFacts::default() };
        let mut found = false;
        let hours = Hours { first: 0, len: 0, all: 0 };
        let top = Top {
            grouping: None,
            hours,
            deleted: &mut out.deleted,
            found: &mut found,
            by_tweet: &mut out.hours,
        };
        read(body, top)?;
        Ok(out)
    }
}

/// Reads the whole of `body` as `top` says.
fn read(body: &[u8], top: Top<'_>) -> Result<(), Shape> {
    let mut text = serde_json::Deserializer::from_slice(body);
    top.deserialize(&mut text).and_then(|()| text.end()).map_err(|e| Shape(e.to_string()))
}

/// The hours of the call's window: the first's number, how many, and the slots asked.
#[derive(Debug, Clone, Copy)]
struct Hours {
    first: i64,
    len: usize,
    all: u32,
}

/// The answer's top level: `unavailable_tweet_ids`, and `grouping` (none: only the status
/// is read); every other member is skipped.
struct Top<'a> {
    grouping: Option<&'a str>,
    hours: Hours,
    deleted: &'a mut Vec<TweetId>,
    found: &'a mut bool,
    by_tweet: &'a mut HashMap<TweetId, Vec<(i64, Hour)>>,
}

/// What a top-level member is.
enum Member {
    Unavailable,
    Grouping,
    Other,
}

impl<'de> DeserializeSeed<'de> for Top<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for Top<'_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an Engagement API answer (an object)")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<(), A::Error> {
        while let Some(member) = access.next_key_seed(Text(|name: &str| {
            Ok(match name {
                "unavailable_tweet_ids" => Member::Unavailable,
                _ if Some(name) == self.grouping => Member::Grouping,
                _ => Member::Other,
            })
        }))? {
            match member {
                Member::Unavailable => *self.deleted = access.next_value()?,
                Member::Grouping => {
                    access.next_value_seed(ByTweet { hours: self.hours, out: &mut *self.by_tweet })?;
                    *self.found = true;
                }
                Member::Other => {
                    access.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(())
    }
}

/// A key read as `read` makes of its text, without keeping the text.
struct Text<F>(F);

impl<'de, T, F: FnOnce(&str) -> Result<T, String>> DeserializeSeed<'de> for Text<F> {
    type Value = T;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<T, D::Error> {
        d.deserialize_str(self)
    }
}

impl<T, F: FnOnce(&str) -> Result<T, String>> Visitor<'_> for Text<F> {
    type Value = T;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a key")
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<T, E> {
        (self.0)(v).map_err(E::custom)
    }
}

/// The grouping: Tweet → type → day → hour → count.
struct ByTweet<'a> {
    hours: Hours,
    out: &'a mut HashMap<TweetId, Vec<(i64, Hour)>>,
}

impl<'de> DeserializeSeed<'de> for ByTweet<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for ByTweet<'_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Tweets, each an object of types")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<(), A::Error> {
        let Hours { first, len, all } = self.hours;
        while let Some(tweet) = access
            .next_key_seed(Text(|id: &str| TweetId::parse(id).ok_or_else(|| format!("Tweet key {id:?}"))))?
        {
            let mut tweet_hours =
                TweetHours { counts: vec![[0; SLOTS]; len], seen: vec![0; len], first, all };
            access.next_value_seed(ByType(&mut tweet_hours))?;
            let complete = tweet_hours
                .counts
                .into_iter()
                .zip(tweet_hours.seen)
                .enumerate()
                .filter(|(_, (_, seen))| *seen == all)
                .map(|(i, (hour, _))| (first + i as i64, hour))
                .collect();
            self.out.insert(tweet, complete);
        }
        Ok(())
    }
}

/// One Tweet's hours of the window as they are read: counts, and the slots seen of each.
struct TweetHours {
    counts: Vec<Hour>,
    seen: Vec<u32>,
    first: i64,
    all: u32,
}

/// One Tweet's types.
struct ByType<'a>(&'a mut TweetHours);

impl<'de> DeserializeSeed<'de> for ByType<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for ByType<'_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("types, each an object of days")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<(), A::Error> {
        let all = self.0.all;
        while let Some(s) = access.next_key_seed(Text(|name: &str| {
            name.parse::<EngagementType>()
                .ok()
                .and_then(slot)
                .filter(|s| all & (1 << s) != 0)
                .ok_or_else(|| format!("type {name:?}"))
        }))? {
            access.next_value_seed(ByDay { hours: &mut *self.0, slot: s })?;
        }
        Ok(())
    }
}

/// One type's days.
struct ByDay<'a> {
    hours: &'a mut TweetHours,
    slot: usize,
}

impl<'de> DeserializeSeed<'de> for ByDay<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for ByDay<'_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("days, each an object of hours")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<(), A::Error> {
        while let Some(midnight) = access.next_key_seed(Text(|day: &str| {
            date(day)
                .and_then(|d| d.and_hms_opt(0, 0, 0))
                .map(|t| hour_of(t.and_utc()))
                .ok_or_else(|| format!("day {day:?}"))
        }))? {
            access.next_value_seed(ByHour { hours: &mut *self.hours, slot: self.slot, midnight })?;
        }
        Ok(())
    }
}

/// A day `YYYY-MM-DD`.
fn date(day: &str) -> Option<NaiveDate> {
    let b = day.as_bytes();
    let digits = |r: std::ops::Range<usize>| -> Option<u32> {
        b[r].iter().try_fold(0u32, |n, &c| c.is_ascii_digit().then(|| n * 10 + u32::from(c - b'0')))
    };
    if b.len() == 10 && b[4] == b'-' && b[7] == b'-' {
        NaiveDate::from_ymd_opt(i32::try_from(digits(0..4)?).ok()?, digits(5..7)?, digits(8..10)?)
    } else {
        NaiveDate::parse_from_str(day, "%Y-%m-%d").ok()
    }
}

/// One day's hours of one type: hours outside the window (or not 0 to 23) are skipped.
struct ByHour<'a> {
    hours: &'a mut TweetHours,
    slot: usize,
    midnight: i64,
}

impl<'de> DeserializeSeed<'de> for ByHour<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for ByHour<'_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("hours, each a count")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<(), A::Error> {
        let TweetHours { counts, seen, first, .. } = self.hours;
        let len = counts.len() as i64;
        while let Some(h) =
            access.next_key_seed(Text(|h: &str| h.parse::<i64>().map_err(|_| format!("hour {h:?}"))))?
        {
            let count = access.next_value_seed(Count)?;
            let i = self.midnight + h - *first;
            if (0..len).contains(&i) && (0..24).contains(&h) {
                counts[i as usize][self.slot] = count;
                seen[i as usize] |= 1 << self.slot;
            }
        }
        Ok(())
    }
}

/// A count: a decimal string or a non-negative integer, as the answer's tree reads it.
struct Count;

impl<'de> DeserializeSeed<'de> for Count {
    type Value = u64;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<u64, D::Error> {
        d.deserialize_any(self)
    }
}

impl Visitor<'_> for Count {
    type Value = u64;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a count (a decimal string or a non-negative integer)")
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<u64, E> {
        Ok(v)
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<u64, E> {
        u64::try_from(v).map_err(|_| E::custom(format!("negative count {v}")))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<u64, E> {
        engagement::tree::parse_count(v)
            .ok_or_else(|| E::custom(format!("\"{v}\" is not a count (decimal digits that fit in 64 bits)")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use engagement::parse_instant;
    use engagement::tree::Node;
    use proptest::prelude::*;
    use serde_json::{Value, json};

    fn window(start: &str, end: &str) -> TimeRange {
        TimeRange { start: parse_instant(start).unwrap(), end: parse_instant(end).unwrap() }
    }

    fn read(body: &Value, types: &[EngagementType], window: TimeRange) -> Result<CallFacts, Shape> {
        let body = serde_json::to_vec(body).unwrap();
        CallFacts::read_hourly(&[TweetId(9), TweetId(12)], types, window, &body, "h")
    }

    #[test]
    fn hourly_answers_become_complete_hours_only() {
        let mut by_type = serde_json::Map::new();
        for ty in crate::row::slot_types() {
            by_type.insert(ty.name().into(), json!({"2020-01-01": {"22": "5", "23": "7"}}));
        }
        // One type lacks hour 23: that hour is not held.
        by_type.insert("favorites".into(), json!({"2020-01-01": {"22": 1}}));
        let body =
            json!({"start": "x", "unavailable_tweet_ids": ["9"], "other": {"1": "2"}, "h": {"12": by_type}});
        let window = window("2020-01-01T22:00:00Z", "2020-01-02T00:00:00Z");
        let facts = read(&body, &crate::row::slot_types(), window).unwrap();
        assert_eq!(facts.deleted, [TweetId(9)]);
        assert_eq!(facts.tweets, [TweetId(9), TweetId(12)]);
        let hours = &facts.hours[&TweetId(12)];
        assert_eq!(hours.len(), 1);
        assert_eq!(hours[0].0, hour_of(window.start));
        assert_eq!(hours[0].1[slot(EngagementType::Favorites).unwrap()], 1);
        assert_eq!(hours[0].1[slot(EngagementType::Impressions).unwrap()], 5);
    }

    #[test]
    fn what_is_not_the_hourly_shape_asked_for_is_an_error_naming_it() {
        let types = [EngagementType::Impressions];
        let w = window("2020-01-01T00:00:00Z", "2020-01-02T00:00:00Z");
        let with = |tree: Value| read(&json!({"h": tree}), &types, w).map(|_| ()).map_err(|e| e.to_string());
        assert!(with(json!({"12": {"impressions": {"2020-01-01": {"00": "1"}}}})).is_ok());
        for (bad, says) in [
            (json!({"x12": {}}), "Tweet key"),
            (json!({"12": "5"}), "types"),
            (json!({"12": {"favorites": {}}}), "type \"favorites\""),
            (json!({"12": {"impressions": {"2020-13-01": {}}}}), "day"),
            (json!({"12": {"impressions": {"2020-01-01": {"x": "1"}}}}), "hour"),
            (json!({"12": {"impressions": {"2020-01-01": {"00": "-1"}}}}), "count"),
            (json!({"12": {"impressions": {"2020-01-01": {"00": -1}}}}), "negative"),
            (json!({"12": {"impressions": {"2020-01-01": {"00": 1.5}}}}), "count"),
            (json!({"12": {"impressions": {"2020-01-01": {"00": {"a": "1"}}}}}), "count"),
        ] {
            let e = with(bad.clone()).unwrap_err();
            assert!(e.contains(says), "{bad}: {e}");
        }
        let missing = read(&json!({"g": {}}), &types, w).unwrap_err().to_string();
        assert!(missing.contains("no grouping \"h\""), "{missing}");
        let cut = CallFacts::read_hourly(&[], &types, w, br#"{"h": {"12": {"impr"#, "h");
        assert!(cut.is_err());
        let trailing = CallFacts::read_hourly(&[], &types, w, br#"{"h": {}} x"#, "h");
        assert!(trailing.is_err());
    }

    #[test]
    fn a_status_call_reads_only_which_tweets_are_deleted() {
        let body = br#"{"unavailable_tweet_ids": ["9"], "h": {"12": {"favorites": "3"}}, "errors": ["1 Tweet ID(s) are unavailable"]}"#;
        let facts = CallFacts::read_status(&[TweetId(9), TweetId(12)], body).unwrap();
        assert_eq!(facts.deleted, [TweetId(9)]);
        assert!(facts.hours.is_empty());
        assert!(CallFacts::read_status(&[], b"[1]").is_err());
    }

    /// Per Tweet, per hour number, the counts the answer's tree holds of the types asked,
    /// and which types it holds: the same answer read the long way.
    fn through_the_tree(
        body: &Value,
        types: &[EngagementType],
        window: TimeRange,
    ) -> HashMap<TweetId, Vec<(i64, Hour)>> {
        let response: engagement::Response = serde_json::from_value(body.clone()).unwrap();
        let all = types_mask(types);
        let mut held: HashMap<(TweetId, i64), (Hour, u32)> = HashMap::new();
        let mut tweets = Vec::new();
        let Some(Node::Branch(by_tweet)) = response.groupings.get("h") else { panic!("no grouping") };
        for (id, node) in by_tweet.iter() {
            let tweet = TweetId::parse(id).unwrap();
            tweets.push(tweet);
            node.for_each_count(&mut |path, count| {
                let s = slot(path[0].parse().unwrap()).unwrap();
                let day = NaiveDate::parse_from_str(path[1], "%Y-%m-%d").unwrap();
                let h: i64 = path[2].parse().unwrap();
                let hour = hour_of(day.and_hms_opt(0, 0, 0).unwrap().and_utc()) + h;
                if (hour_of(window.start)..hour_of(window.end)).contains(&hour) {
                    let entry = held.entry((tweet, hour)).or_insert(([0; SLOTS], 0));
                    entry.0[s] = count;
                    entry.1 |= 1 << s;
                }
            });
        }
        tweets
            .into_iter()
            .map(|tweet| {
                let mut hours: Vec<(i64, Hour)> = held
                    .iter()
                    .filter(|((t, _), (_, seen))| *t == tweet && *seen == all)
                    .map(|((_, hour), (counts, _))| (*hour, *counts))
                    .collect();
                hours.sort_by_key(|(hour, _)| *hour);
                (tweet, hours)
            })
            .collect()
    }

    proptest! {
        #[test]
        fn reading_straight_into_rows_gives_what_the_tree_holds(
            tweets in proptest::collection::btree_map(1u64..50, proptest::collection::vec(
                (0usize..3, 0i64..3, 0i64..24, any::<u32>(), any::<bool>()), 0..40), 0..6),
            asked in 1usize..4,
        ) {
            let names = ["impressions", "engagements", "favorites"];
            let types: Vec<EngagementType> = names[..asked].iter().map(|n| n.parse().unwrap()).collect();
            let mut by_tweet = serde_json::Map::new();
            for (id, counts) in &tweets {
                let mut tree = json!({});
                for &(ty, day, h, count, as_text) in counts {
                    let name = names[ty % asked];
                    let day = format!("2020-01-0{}", day + 1);
                    let count = if as_text { json!(count.to_string()) } else { json!(count) };
                    tree[name][day][format!("{h:02}")] = count;
                }
                by_tweet.insert(id.to_string(), tree);
            }
            let body = json!({"h": by_tweet});
            // The window cuts the days the answer holds: hours outside it are not read.
            let window = window("2020-01-01T05:00:00Z", "2020-01-03T07:00:00Z");
            let facts = read(&body, &types, window).unwrap();
            let mut read_hours = facts.hours.clone();
            for hours in read_hours.values_mut() {
                hours.sort_by_key(|(hour, _)| *hour);
            }
            prop_assert_eq!(read_hours, through_the_tree(&body, &types, window));
        }
    }
}

//! A call's answer read straight from its text into [`CallFacts`]: each count goes from the
//! JSON into its Tweet's row of hours, with no tree of counts in between. A 28-day hourly
//! answer for 25 Tweets holds hundreds of thousands of counts; building a tree of them only
//! to walk it once cost most of a cold question's CPU.
//!
//! The text is read by a scanner made for the answers the API sends (objects, plain
//! strings, whole numbers). Anything else it meets (an escape, a float, a bad key), it
//! gives up on, and the whole text is read again by serde_json, which reads any JSON and
//! says exactly what is wrong. Both hand every key and count to the same [`Reading`], so
//! what a key means is decided once.

use std::collections::HashMap;
use std::fmt;

use chrono::NaiveDate;
use engagement::{EngagementType, TimeRange, TweetId};
use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, Visitor};

use crate::facts::{CallFacts, Hours, Shape, hour_of};
use crate::row::{slot, types_mask};

impl CallFacts {
    /// The facts of an answer's `body` to a call for `tweets` over `window` asking `types`,
    /// grouped `tweet.id, engagement.type, engagement.day, engagement.hour` under
    /// `grouping`. Hours where any type is missing are left out (not held), never taken as
    /// zeros; of an hour sent twice, the later count is taken, and of a Tweet sent twice,
    /// the later Tweet.
    pub fn read_hourly(
        tweets: &[TweetId],
        types: &[EngagementType],
        window: TimeRange,
        body: &[u8],
        grouping: &str,
    ) -> Result<CallFacts, Shape> {
        let all = types_mask(types);
        let asked = Window { first: hour_of(window.start), len: window.hours(), all };
        let read = |how: How| {
            let mut reading = Reading::new(Some(grouping), asked);
            how(body, &mut reading).map(|()| reading)
        };
        let reading = match read(scan::read) {
            Ok(reading) => reading,
            Err(_) => read(read_with_serde)?,
        };
        if !reading.found {
            return Err(Shape(format!("no grouping {grouping:?}")));
        }
        Ok(CallFacts {
            window: Some(window),
            tweets: tweets.to_vec(),
            deleted: reading.deleted,
            slots: all,
            hours: reading.by_tweet,
        })
    }

    /// Only what an answer's `body` to a call for `tweets` says of their status (a call for
    /// one hour and one type): which are deleted.
    pub fn read_status(tweets: &[TweetId], body: &[u8]) -> Result<CallFacts, Shape> {
        let mut reading = Reading::new(None, Window { first: 0, len: 0, all: 0 });
        read_with_serde(body, &mut reading)?;
        Ok(CallFacts { tweets: tweets.to_vec(), deleted: reading.deleted, ..CallFacts::default() })
    }
}

/// A way of reading a whole answer's text into a [`Reading`].
type How = fn(&[u8], &mut Reading<'_>) -> Result<(), Shape>;

/// The hours of the call's window: the first's number, how many, and the slots asked.
#[derive(Debug, Clone, Copy)]
struct Window {
    first: i64,
    len: usize,
    all: u32,
}

/// What is read so far, and where the reading is: what every key and count means.
struct Reading<'g> {
    /// The grouping read (none: only the status is).
    grouping: Option<&'g str>,
    window: Window,
    /// Counts per hour: one per slot asked.
    width: usize,
    found: bool,
    deleted: Vec<TweetId>,
    by_tweet: HashMap<TweetId, Hours>,
    tweet: Option<TweetRead>,
    /// The type read last: its slot, and where among the slots asked its counts go.
    slot: usize,
    at: usize,
    midnight: i64,
}

/// The Tweet being read, and its hours so far: every hour of the window with its counts
/// (laid out as [`Hours`] lays them), and the slots seen of each.
struct TweetRead {
    tweet: TweetId,
    counts: Vec<u64>,
    seen: Vec<u32>,
}

/// What a top-level member is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Member {
    Unavailable,
    Grouping,
    Other,
}

impl<'g> Reading<'g> {
    fn new(grouping: Option<&'g str>, window: Window) -> Reading<'g> {
        Reading {
            grouping,
            window,
            width: window.all.count_ones() as usize,
            found: false,
            deleted: Vec::new(),
            by_tweet: HashMap::new(),
            tweet: None,
            slot: 0,
            at: 0,
            midnight: 0,
        }
    }

    fn member(&self, name: &str) -> Member {
        match name {
            "unavailable_tweet_ids" => Member::Unavailable,
            _ if Some(name) == self.grouping => Member::Grouping,
            _ => Member::Other,
        }
    }

    /// A Tweet's key: the Tweet before it is done.
    fn tweet(&mut self, id: &str) -> Result<(), String> {
        self.tweet_done();
        let tweet = TweetId::parse(id).ok_or_else(|| format!("Tweet key {id:?}"))?;
        let len = self.window.len;
        self.tweet = Some(TweetRead { tweet, counts: vec![0; len * self.width], seen: vec![0; len] });
        Ok(())
    }

    /// Keeps the Tweet read last: its complete hours.
    fn tweet_done(&mut self) {
        let Some(TweetRead { tweet, counts, seen }) = self.tweet.take() else { return };
        let Window { first, all, .. } = self.window;
        let numbers = (first..).take(seen.len()).collect();
        let mut hours = Hours::from_parts(all, numbers, counts);
        // Commonly every hour is complete, and nothing moves.
        if seen.iter().any(|s| *s != all) {
            // Only what is held stays allocated, however many Tweets an answer names.
            hours.retain(|hour| seen[(hour - first) as usize] == all);
        }
        self.by_tweet.insert(tweet, hours);
    }

    /// A type's key, under the Tweet read last.
    fn kind(&mut self, name: &str) -> Result<(), String> {
        let all = self.window.all;
        self.slot = name
            .parse::<EngagementType>()
            .ok()
            .and_then(slot)
            .filter(|s| all & (1 << s) != 0)
            .ok_or_else(|| format!("type {name:?}"))?;
        self.at = (all & ((1 << self.slot) - 1)).count_ones() as usize;
        Ok(())
    }

    /// A day's key, under the type read last.
    fn day(&mut self, day: &str) -> Result<(), String> {
        self.midnight = date(day)
            .and_then(|d| d.and_hms_opt(0, 0, 0))
            .map(|t| hour_of(t.and_utc()))
            .ok_or_else(|| format!("day {day:?}"))?;
        Ok(())
    }

    /// An hour's key, under the day read last, and its count. Hours outside the window
    /// (or not 0 to 23) are skipped.
    fn hour(&mut self, h: &str, count: u64) -> Result<(), String> {
        let h = h.parse::<i64>().map_err(|_| format!("hour {h:?}"))?;
        self.hour_of_day(h, count);
        Ok(())
    }

    /// Hour `h` of the day read last, and its count; skipped outside the window (or 0..24).
    #[inline]
    fn hour_of_day(&mut self, h: i64, count: u64) {
        let Some(TweetRead { counts, seen, .. }) = &mut self.tweet else { return };
        let i = self.midnight + h - self.window.first;
        if (0..seen.len() as i64).contains(&i) && (0..24).contains(&h) {
            counts[i as usize * self.width + self.at] = count;
            seen[i as usize] |= 1 << self.slot;
        }
    }
}

/// A day `YYYY-MM-DD`.
fn date(day: &str) -> Option<NaiveDate> {
    let b = day.as_bytes();
    let digits = |r: std::ops::Range<usize>| -> Option<u32> {
        b[r].iter().try_fold(0u32, |n, &c| c.is_ascii_digit().then(|| n * 10 + u32::from(c - b'0')))
    };
    let plain = || {
        let year = i32::try_from(digits(0..4)?).ok()?;
        NaiveDate::from_ymd_opt(year, digits(5..7)?, digits(8..10)?)
    };
    // Anything else chrono reads as such a day (padding with spaces, a signed year) is one.
    (b.len() == 10 && b[4] == b'-' && b[7] == b'-')
        .then(plain)
        .flatten()
        .or_else(|| NaiveDate::parse_from_str(day, "%Y-%m-%d").ok())
}

/// The answer's text read by serde_json: any JSON, and an exact account of what is wrong.
fn read_with_serde(body: &[u8], reading: &mut Reading<'_>) -> Result<(), Shape> {
    let mut text = serde_json::Deserializer::from_slice(body);
    Top(reading).deserialize(&mut text).and_then(|()| text.end()).map_err(|e| Shape(e.to_string()))?;
    reading.tweet_done();
    Ok(())
}

/// The answer's top level: `unavailable_tweet_ids`, and the grouping; every other member is
/// skipped.
struct Top<'r, 'g>(&'r mut Reading<'g>);

impl<'de> DeserializeSeed<'de> for Top<'_, '_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for Top<'_, '_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an Engagement API answer (an object)")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<(), A::Error> {
        let reading = self.0;
        while let Some(member) = access.next_key_seed(Text(|name: &str| Ok(reading.member(name))))? {
            match member {
                Member::Unavailable => reading.deleted = access.next_value()?,
                Member::Grouping => {
                    access.next_value_seed(Level { reading: &mut *reading, depth: 0 })?;
                    reading.found = true;
                }
                Member::Other => {
                    access.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(())
    }
}

/// A key handed to `read`, without keeping its text.
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

/// One level of the grouping: Tweets (depth 0), types (1), days (2) or hours (3).
struct Level<'r, 'g> {
    reading: &'r mut Reading<'g>,
    depth: u8,
}

impl<'de> DeserializeSeed<'de> for Level<'_, '_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for Level<'_, '_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self.depth {
            0 => "Tweets, each an object of types",
            1 => "types, each an object of days",
            2 => "days, each an object of hours",
            _ => "hours, each a count",
        })
    }
    fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<(), A::Error> {
        let (reading, depth) = (self.reading, self.depth);
        if depth == 3 {
            while let Some(h) = access.next_key_seed(Text(|h: &str| Ok(h.to_owned())))? {
                let count = access.next_value_seed(Count)?;
                reading.hour(&h, count).map_err(de::Error::custom)?;
            }
            return Ok(());
        }
        while access
            .next_key_seed(Text(|key: &str| match depth {
                0 => reading.tweet(key),
                1 => reading.kind(key),
                _ => reading.day(key),
            }))?
            .is_some()
        {
            access.next_value_seed(Level { reading: &mut *reading, depth: depth + 1 })?;
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

/// The scanner for answers as the API writes them.
mod scan {
    use super::{Member, Reading, Shape};

    /// Gave up: the text is read again by serde_json.
    pub(super) struct GaveUp;

    impl From<GaveUp> for Shape {
        fn from(_: GaveUp) -> Shape {
            Shape("the scanner gave up".into())
        }
    }

    impl From<String> for GaveUp {
        fn from(_: String) -> GaveUp {
            GaveUp
        }
    }

    /// Reads `body` into `reading`, or gives up.
    pub(super) fn read(body: &[u8], reading: &mut Reading<'_>) -> Result<(), Shape> {
        let mut text = Scanner { b: body, at: 0 };
        text.top(reading)?;
        text.space();
        if text.at != body.len() {
            return Err(GaveUp.into());
        }
        reading.tweet_done();
        Ok(())
    }

    /// How deep a skipped value may nest before the scanner leaves it to serde_json.
    const DEEPEST: usize = 32;

    struct Scanner<'a> {
        b: &'a [u8],
        at: usize,
    }

    impl<'a> Scanner<'a> {
        fn space(&mut self) {
            while let Some(b' ' | b'\n' | b'\r' | b'\t') = self.b.get(self.at) {
                self.at += 1;
            }
        }

        /// The next byte past any space, taken.
        fn next(&mut self) -> Result<u8, GaveUp> {
            self.space();
            let c = *self.b.get(self.at).ok_or(GaveUp)?;
            self.at += 1;
            Ok(c)
        }

        fn expect(&mut self, c: u8) -> Result<(), GaveUp> {
            if self.next()? == c { Ok(()) } else { Err(GaveUp) }
        }

        /// A string's text, past its opening quote: ASCII with no escape, or it gives up.
        fn string_rest(&mut self) -> Result<&'a str, GaveUp> {
            let from = self.at;
            let len = self.b[from..].iter().position(|&c| c == b'"').ok_or(GaveUp)?;
            let text = &self.b[from..from + len];
            if !text.iter().all(|&c| (0x20..0x80).contains(&c) && c != b'\\') {
                return Err(GaveUp);
            }
            self.at = from + len + 1;
            // ASCII throughout.
            std::str::from_utf8(text).map_err(|_| GaveUp)
        }

        fn string(&mut self) -> Result<&'a str, GaveUp> {
            self.expect(b'"')?;
            self.string_rest()
        }

        /// An object, `each` reading each member's value after its key.
        fn object(
            &mut self,
            mut each: impl FnMut(&mut Self, &'a str) -> Result<(), GaveUp>,
        ) -> Result<(), GaveUp> {
            self.expect(b'{')?;
            self.space();
            if self.b.get(self.at) == Some(&b'}') {
                self.at += 1;
                return Ok(());
            }
            loop {
                let key = self.string()?;
                self.expect(b':')?;
                each(self, key)?;
                match self.next()? {
                    b',' => {}
                    b'}' => return Ok(()),
                    _ => return Err(GaveUp),
                }
            }
        }

        /// A count: digits, quoted or not, that fit in 64 bits.
        fn count(&mut self) -> Result<u64, GaveUp> {
            self.space();
            let quoted = self.b.get(self.at) == Some(&b'"');
            if quoted {
                self.at += 1;
            }
            let from = self.at;
            let mut n: u64 = 0;
            while let Some(&c @ b'0'..=b'9') = self.b.get(self.at) {
                n = n.checked_mul(10).and_then(|n| n.checked_add(u64::from(c - b'0'))).ok_or(GaveUp)?;
                self.at += 1;
            }
            let digits = self.at - from;
            // A leading zero is no JSON number; a quoted "007" is a count, as serde_json reads it.
            if digits == 0 || (!quoted && digits > 1 && self.b[from] == b'0') {
                return Err(GaveUp);
            }
            if quoted {
                self.expect_here(b'"')?;
            } else if let Some(b'.' | b'e' | b'E') = self.b.get(self.at) {
                return Err(GaveUp);
            }
            Ok(n)
        }

        fn expect_here(&mut self, c: u8) -> Result<(), GaveUp> {
            if self.b.get(self.at) == Some(&c) {
                self.at += 1;
                Ok(())
            } else {
                Err(GaveUp)
            }
        }

        /// Any value, skipped: strings with no escape, and no numbers but whole ones, nested
        /// at most [`DEEPEST`] deep below `depth` (serde_json skips deeper ones without
        /// recursing, so a hostile answer cannot exhaust the stack).
        fn skip(&mut self, depth: usize) -> Result<(), GaveUp> {
            if depth > DEEPEST {
                return Err(GaveUp);
            }
            self.space();
            match self.b.get(self.at) {
                Some(b'{') => self.object(|s, _| s.skip(depth + 1)),
                Some(b'[') => self.array(|s| s.skip(depth + 1)),
                Some(b'"') => self.string().map(|_| ()),
                Some(b'0'..=b'9') => self.count().map(|_| ()),
                _ => {
                    for word in [&b"true"[..], b"false", b"null"] {
                        if self.b[self.at..].starts_with(word) {
                            self.at += word.len();
                            return Ok(());
                        }
                    }
                    Err(GaveUp)
                }
            }
        }

        fn array(&mut self, mut each: impl FnMut(&mut Self) -> Result<(), GaveUp>) -> Result<(), GaveUp> {
            self.expect(b'[')?;
            self.space();
            if self.b.get(self.at) == Some(&b']') {
                self.at += 1;
                return Ok(());
            }
            loop {
                each(self)?;
                match self.next()? {
                    b',' => {}
                    b']' => return Ok(()),
                    _ => return Err(GaveUp),
                }
            }
        }

        /// A day's hours as the API writes them, `{"00":"5","01":"0",...}` with no space,
        /// each key two digits and each count at most 19 digits (so it cannot overflow), read
        /// with no string in between; anything else gives up here (the caller reads the
        /// object again the general way, which says what is wrong).
        fn dense_hours(&mut self, reading: &mut Reading<'_>) -> Result<(), GaveUp> {
            self.expect(b'{')?;
            let b = self.b;
            let mut at = self.at;
            loop {
                let head = b.get(at..at + 6).ok_or(GaveUp)?;
                let (tens, units) = (head[1].wrapping_sub(b'0'), head[2].wrapping_sub(b'0'));
                if head[0] != b'"' || head[3] != b'"' || head[4] != b':' || tens > 9 || units > 9 {
                    return Err(GaveUp);
                }
                let quoted = head[5] == b'"';
                at += 5 + usize::from(quoted);
                let from = at;
                let mut count: u64 = 0;
                while let Some(digit) = b.get(at).map(|c| c.wrapping_sub(b'0')).filter(|d| *d <= 9) {
                    if at - from == 19 {
                        return Err(GaveUp);
                    }
                    count = count * 10 + u64::from(digit);
                    at += 1;
                }
                let digits = at - from;
                // A leading zero is no JSON number; a quoted "007" is a count, as serde_json
                // reads it.
                if digits == 0 || (!quoted && digits > 1 && b[from] == b'0') {
                    return Err(GaveUp);
                }
                if quoted {
                    if b.get(at) != Some(&b'"') {
                        return Err(GaveUp);
                    }
                    at += 1;
                }
                reading.hour_of_day(i64::from(tens * 10 + units), count);
                match b.get(at) {
                    Some(b',') => at += 1,
                    Some(b'}') => {
                        self.at = at + 1;
                        return Ok(());
                    }
                    _ => return Err(GaveUp),
                }
            }
        }

        fn top(&mut self, reading: &mut Reading<'_>) -> Result<(), GaveUp> {
            self.object(|s, name| match reading.member(name) {
                Member::Unavailable => {
                    reading.deleted.clear();
                    s.array(|s| {
                        let id = engagement::TweetId::parse(s.string()?).ok_or(GaveUp)?;
                        reading.deleted.push(id);
                        Ok(())
                    })
                }
                Member::Grouping => {
                    s.grouping(reading)?;
                    reading.found = true;
                    Ok(())
                }
                Member::Other => s.skip(0),
            })
        }

        fn grouping(&mut self, reading: &mut Reading<'_>) -> Result<(), GaveUp> {
            self.object(|s, tweet| {
                reading.tweet(tweet)?;
                s.object(|s, kind| {
                    reading.kind(kind)?;
                    s.object(|s, day| {
                        reading.day(day)?;
                        let from = s.at;
                        if s.dense_hours(reading).is_err() {
                            // Not as the API writes a day: read again, member by member.
                            s.at = from;
                            s.object(|s, hour| Ok(reading.hour(hour, s.count()?)?))?;
                        }
                        Ok(())
                    })
                })
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::row::{Hour, SLOTS};
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
        let held = &facts.hours[&TweetId(12)];
        let hours = held.full(facts.slots);
        assert_eq!(hours.len(), 1);
        assert_eq!(hours[0].0, hour_of(window.start));
        assert_eq!(hours[0].1[slot(EngagementType::Favorites).unwrap()], 1);
        assert_eq!(hours[0].1[slot(EngagementType::Impressions).unwrap()], 5);
        // Only the hours held stay allocated, however many an answer names.
        assert_eq!(held.capacity(), 1);
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
        // A member nested deeper than the scanner goes is left to serde_json, which skips
        // it without recursing: read, where recursing this deep would overflow the stack.
        for depth in [100, 100_000] {
            let deep = format!(r#"{{"x": {}{}, "h": {{}}}}"#, "[".repeat(depth), "]".repeat(depth));
            assert!(CallFacts::read_hourly(&[], &types, w, deep.as_bytes(), "h").is_ok(), "{depth} deep");
        }
        let unclosed = format!(r#"{{"x": {}"#, "[".repeat(100_000));
        assert!(CallFacts::read_hourly(&[], &types, w, unclosed.as_bytes(), "h").is_err());
        // A day chrono reads, written unusually.
        assert!(with(json!({"12": {"impressions": {"2020- 1-01": {"00": "1"}}}})).is_ok());
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
            let body = json!({"start": "2020-01-01T00:00:00Z", "unavailable_tweet_ids": ["7"], "errors": ["1 Tweet ID(s) are unavailable"], "other": {"x": [1, true, null]}, "h": by_tweet});
            // The window cuts the days the answer holds: hours outside it are not read.
            let window = window("2020-01-01T05:00:00Z", "2020-01-03T07:00:00Z");
            // The tree reads every other member as a grouping: the oracle is given none.
            let mut plain = body.clone();
            plain.as_object_mut().unwrap().remove("other");
            let expected = through_the_tree(&plain, &types, window);
            let compact = serde_json::to_string(&body).unwrap();
            let pretty = serde_json::to_string_pretty(&body).unwrap();
            // An escaped key is JSON the scanner leaves to serde_json.
            let escaped = compact.replacen("\"00\"", "\"\\u0030\\u0030\"", 1);
            for text in [&compact, &pretty, &escaped] {
                let facts = CallFacts::read_hourly(&[], &types, window, text.as_bytes(), "h").unwrap();
                prop_assert_eq!(&facts.deleted, &[TweetId(7)]);
                let mut read_hours: HashMap<TweetId, Vec<(i64, Hour)>> =
                    facts.hours.iter().map(|(t, hours)| (*t, hours.full(facts.slots))).collect();
                for hours in read_hours.values_mut() {
                    hours.sort_by_key(|(hour, _)| *hour);
                }
                prop_assert_eq!(&read_hours, &expected);
            }
            // The scanner reads what the API writes, whitespace or not, without giving up.
            let asked = Window { first: hour_of(window.start), len: window.hours(), all: types_mask(&types) };
            for text in [&compact, &pretty] {
                let mut reading = Reading::new(Some("h"), asked);
                prop_assert!(scan::read(text.as_bytes(), &mut reading).is_ok());
            }
        }
    }
}

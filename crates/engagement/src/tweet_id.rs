//! Tweet IDs: unsigned 64-bit integers that encode their creation time.

use std::fmt;

use chrono::{DateTime, TimeZone, Utc};
use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A Tweet ID. On the wire it is a decimal string; bare JSON integers are accepted too, and
/// never go through `f64` (IDs exceed 2^53).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TweetId(pub u64);

/// The first ID minted by the time-based scheme (November 2010).
pub const FIRST_SNOWFLAKE: u64 = 29_700_859_247;
/// The scheme's epoch in Unix milliseconds.
pub const SNOWFLAKE_EPOCH_MS: i64 = 1_288_834_974_657;

impl TweetId {
    /// The largest Tweet ID that can exist at `now`: IDs embed the instant they were minted,
    /// and one minted after the hour in progress cannot have been (the hour, not the second,
    /// so that other clocks a little ahead of this one are no matter, and the bound moves once
    /// an hour: the OpenAPI document states it).
    pub fn newest(now: chrono::DateTime<chrono::Utc>) -> TweetId {
        let end_of_hour = crate::time::floor_hour(now) + chrono::Duration::hours(1);
        TweetId(TweetId::minted_at(end_of_hour).0 - 1)
    }

    /// Whether the API reports this Tweet's `video_views` to a call made at `now`: not once
    /// it is older than [`VIDEO_VIEWS_MAX_AGE_DAYS`](crate::vocabulary::VIDEO_VIEWS_MAX_AGE_DAYS).
    pub fn reports_video_views_at(self, now: DateTime<Utc>) -> bool {
        now - self.created_at() <= chrono::Duration::days(crate::vocabulary::VIDEO_VIEWS_MAX_AGE_DAYS)
    }

    /// When the Tweet was created. IDs older than the time-based scheme decode to its epoch,
    /// which is before any instant the API can be asked about.
    pub fn created_at(self) -> DateTime<Utc> {
        let ms = if self.0 >= FIRST_SNOWFLAKE {
            (self.0 >> 22) as i64 + SNOWFLAKE_EPOCH_MS
        } else {
            SNOWFLAKE_EPOCH_MS
        };
        Utc.timestamp_millis_opt(ms).single().unwrap_or_default()
    }

    /// The smallest ID minted at `at` (for making Tweets of a given age in tests and tools).
    pub fn minted_at(at: DateTime<Utc>) -> TweetId {
        let ms = (at.timestamp_millis() - SNOWFLAKE_EPOCH_MS).max(0) as u64;
        TweetId((ms << 22).max(FIRST_SNOWFLAKE))
    }

    /// Parses a decimal string: digits only, no sign, no spaces, fits in 64 bits.
    pub fn parse(s: &str) -> Option<TweetId> {
        if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        s.parse().ok().map(TweetId)
    }
}

impl fmt::Display for TweetId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl Serialize for TweetId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for TweetId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct IdVisitor;
        impl Visitor<'_> for IdVisitor {
            type Value = TweetId;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a Tweet ID as a decimal string or a non-negative integer")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<TweetId, E> {
                Ok(TweetId(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<TweetId, E> {
                u64::try_from(v).map(TweetId).map_err(|_| E::custom("a Tweet ID cannot be negative"))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<TweetId, E> {
                TweetId::parse(v).ok_or_else(|| {
                    E::custom(format!("\"{v}\" is not a Tweet ID (decimal digits that fit in 64 bits)"))
                })
            }
        }
        d.deserialize_any(IdVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn creation_time_from_a_known_id() {
        // 1060976163948904448 is a Tweet of 2018-11-09; (id >> 22) + epoch is its millisecond.
        let at = TweetId(1_060_976_163_948_904_448).created_at();
        assert_eq!(at.timestamp_millis(), (1_060_976_163_948_904_448u64 >> 22) as i64 + SNOWFLAKE_EPOCH_MS);
        assert_eq!(at.format("%Y-%m-%d").to_string(), "2018-11-09");
    }

    #[test]
    fn pre_snowflake_ids_are_older_than_everything() {
        let old = TweetId(20).created_at();
        assert_eq!(old.timestamp_millis(), SNOWFLAKE_EPOCH_MS);
        assert_eq!(TweetId(FIRST_SNOWFLAKE - 1).created_at(), old);
    }

    #[test]
    fn minted_at_round_trips_to_the_millisecond() {
        let at = Utc.with_ymd_and_hms(2020, 3, 4, 5, 6, 7).unwrap();
        assert_eq!(TweetId::minted_at(at).created_at(), at);
    }

    #[test]
    fn ids_parse_from_strings_and_integers_without_f64() {
        let ids: Vec<TweetId> =
            serde_json::from_str(r#"["18446744073709551615", 1060976163948904449]"#).unwrap();
        assert_eq!(ids, vec![TweetId(u64::MAX), TweetId(1_060_976_163_948_904_449)]);
        for bad in [r#""""#, r#""12a""#, r#""-1""#, "-1", "1.5", r#""18446744073709551616""#, r#"" 1""#] {
            assert!(serde_json::from_str::<TweetId>(bad).is_err(), "{bad} parsed");
        }
    }
}

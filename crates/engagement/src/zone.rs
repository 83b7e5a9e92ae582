//! The time zone a question is answered in: UTC (the API's own days), a zone of the IANA
//! database, or a fixed offset. The API counts whole UTC hours, so a zone can cut its days
//! and hours exactly only while its offset is a whole number of hours.

use std::fmt;

use chrono::{DateTime, Duration, NaiveDate, NaiveDateTime, Offset, TimeZone, Utc};
use chrono_tz::Tz;

/// The most a fixed offset may be, either way: 18 hours, as ISO 8601's offsets are bounded.
const MAX_OFFSET_SECS: i32 = 18 * 3600;

/// A time zone to count local days and hours in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Zone {
    /// The API's own calendar.
    #[default]
    Utc,
    /// A zone of the IANA database, such as `America/New_York`.
    Named(Tz),
    /// A fixed offset east of UTC, in seconds (`+02:00` is 7200).
    Fixed(i32),
}

impl Zone {
    /// Reads `UTC`, an IANA name or an offset `+HH:MM` / `-HH:MM`.
    pub fn parse(text: &str) -> Result<Zone, String> {
        if matches!(text, "UTC" | "Z") {
            return Ok(Zone::Utc);
        }
        if let Some(offset) = parse_offset(text) {
            return match offset {
                0 => Ok(Zone::Utc),
                o if o.abs() <= MAX_OFFSET_SECS => Ok(Zone::Fixed(o)),
                _ => Err(format!("time_zone \"{text}\" is an offset of more than 18 hours")),
            };
        }
        text.parse::<Tz>().map(Zone::Named).map_err(|_| {
            format!(
                "time_zone \"{text}\" is not a time zone: give an IANA name such as \"America/New_York\" (letters as the database spells them), an offset such as \"+02:00\", or \"UTC\""
            )
        })
    }

    /// Whether this is UTC, the API's own calendar.
    pub fn is_utc(&self) -> bool {
        *self == Zone::Utc
    }

    /// The offset east of UTC at `t`, in seconds.
    pub fn offset_at(&self, t: DateTime<Utc>) -> i32 {
        match self {
            Zone::Utc => 0,
            Zone::Fixed(secs) => *secs,
            Zone::Named(tz) => tz.offset_from_utc_datetime(&t.naive_utc()).fix().local_minus_utc(),
        }
    }

    /// The wall-clock time at `t`.
    pub fn local(&self, t: DateTime<Utc>) -> NaiveDateTime {
        t.naive_utc() + Duration::seconds(self.offset_at(t).into())
    }

    /// The first instant of the local date `date`: its midnight, or where a change of offset
    /// skips midnight, the first instant the day has.
    pub fn start_of_day(&self, date: NaiveDate) -> DateTime<Utc> {
        let midnight = date.and_time(chrono::NaiveTime::MIN);
        match self {
            Zone::Utc => Utc.from_utc_datetime(&midnight),
            Zone::Fixed(secs) => Utc.from_utc_datetime(&(midnight - Duration::seconds((*secs).into()))),
            Zone::Named(tz) => {
                // A gap is at most a few hours; the day starts where the gap ends.
                (0..=24 * 4)
                    .find_map(|quarter| {
                        tz.from_local_datetime(&(midnight + Duration::minutes(15 * quarter))).earliest()
                    })
                    .map_or_else(|| Utc.from_utc_datetime(&midnight), |t| t.with_timezone(&Utc))
            }
        }
    }

    /// `t` as the local instant with its offset: `2026-03-08T00:00:00-05:00`.
    pub fn format_local(&self, t: DateTime<Utc>) -> String {
        let offset = self.offset_at(t);
        format!("{}{}", self.local(t).format("%Y-%m-%dT%H:%M:%S"), format_offset(offset))
    }

    /// The first offset from `start` to `end` (hour by hour) that is not a whole number of
    /// hours, if any: where it holds, local days and hours begin inside the API's UTC hours.
    pub fn uneven_offset(&self, start: DateTime<Utc>, end: DateTime<Utc>) -> Option<i32> {
        match self {
            Zone::Utc => None,
            Zone::Fixed(secs) => (secs % 3600 != 0).then_some(*secs),
            Zone::Named(_) => std::iter::successors(Some(start), |t| Some(*t + Duration::hours(1)))
                .take_while(|t| *t < end)
                .map(|t| self.offset_at(t))
                .find(|offset| offset % 3600 != 0),
        }
    }
}

impl fmt::Display for Zone {
    /// As a question names it: `UTC`, `America/New_York`, `+02:00`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Zone::Utc => f.write_str("UTC"),
            Zone::Named(tz) => f.write_str(tz.name()),
            Zone::Fixed(secs) => f.write_str(&format_offset(*secs)),
        }
    }
}

/// `+05:30`, `-05:00`; `Z` for none.
pub fn format_offset(secs: i32) -> String {
    if secs == 0 {
        return "Z".into();
    }
    let sign = if secs < 0 { '-' } else { '+' };
    let minutes = secs.abs() / 60;
    format!("{sign}{:02}:{:02}", minutes / 60, minutes % 60)
}

/// `UTC+05:30`, for messages.
pub fn describe_offset(secs: i32) -> String {
    match secs {
        0 => "UTC".into(),
        s => format!("UTC{}", format_offset(s)),
    }
}

/// `+HH:MM` or `-HH:MM` as seconds east of UTC.
fn parse_offset(text: &str) -> Option<i32> {
    let bytes = text.as_bytes();
    if bytes.len() != 6 || bytes[3] != b':' {
        return None;
    }
    let sign = match bytes[0] {
        b'+' => 1,
        b'-' => -1,
        _ => return None,
    };
    let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit()).then(|| s.parse::<i32>().ok()).flatten();
    let (hours, minutes) = (digits(&text[1..3])?, digits(&text[4..6])?);
    (minutes < 60).then_some(sign * (hours * 3600 + minutes * 60))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::time::parse_instant;

    fn at(s: &str) -> DateTime<Utc> {
        parse_instant(s).unwrap()
    }

    #[test]
    fn names_offsets_and_utc_are_read_and_said_back() {
        for (text, said) in [
            ("UTC", "UTC"),
            ("+00:00", "UTC"),
            ("America/New_York", "America/New_York"),
            ("+02:00", "+02:00"),
            ("-05:30", "-05:30"),
        ] {
            assert_eq!(Zone::parse(text).unwrap().to_string(), said, "{text}");
        }
        for bad in ["america/new_york", "Mars/Olympus", "+2:00", "+02:60", "+19:00", "", "02:00"] {
            assert!(Zone::parse(bad).is_err(), "{bad}");
        }
        assert!(Zone::parse("Nowhere").unwrap_err().contains("IANA name"));
    }

    #[test]
    fn offsets_follow_the_zones_rules() {
        let ny = Zone::parse("America/New_York").unwrap();
        assert_eq!(ny.offset_at(at("2026-03-08T06:59:59Z")), -5 * 3600);
        assert_eq!(ny.offset_at(at("2026-03-08T07:00:00Z")), -4 * 3600);
        assert_eq!(ny.offset_at(at("2026-11-01T05:59:59Z")), -4 * 3600);
        assert_eq!(ny.offset_at(at("2026-11-01T06:00:00Z")), -5 * 3600);
        assert_eq!(ny.format_local(at("2026-03-08T05:00:00Z")), "2026-03-08T00:00:00-05:00");
        assert_eq!(Zone::Fixed(7200).format_local(at("2026-01-01T00:00:00Z")), "2026-01-01T02:00:00+02:00");
        assert_eq!(Zone::Utc.format_local(at("2026-01-01T00:00:00Z")), "2026-01-01T00:00:00Z");
    }

    #[test]
    fn a_day_starts_at_its_local_midnight_or_where_a_skipped_midnight_ends() {
        let day = |s: &str| NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap();
        let ny = Zone::parse("America/New_York").unwrap();
        assert_eq!(ny.start_of_day(day("2026-03-08")), at("2026-03-08T05:00:00Z"));
        assert_eq!(ny.start_of_day(day("2026-03-09")), at("2026-03-09T04:00:00Z"));
        assert_eq!(Zone::Fixed(7200).start_of_day(day("2026-01-01")), at("2025-12-31T22:00:00Z"));
        // Santiago's clocks went from 24:00 to 01:00 on 2022-09-11: that day began at 01:00 local.
        let santiago = Zone::parse("America/Santiago").unwrap();
        assert_eq!(santiago.start_of_day(day("2022-09-11")), at("2022-09-11T04:00:00Z"));
    }

    #[test]
    fn offsets_of_part_of_an_hour_are_found_anywhere_in_the_range() {
        let (start, end) = (at("2026-01-01"), at("2026-12-01"));
        assert_eq!(Zone::parse("Asia/Kolkata").unwrap().uneven_offset(start, end), Some(5 * 3600 + 1800));
        assert_eq!(Zone::parse("Asia/Kathmandu").unwrap().uneven_offset(start, end), Some(5 * 3600 + 2700));
        assert!(Zone::parse("Australia/Adelaide").unwrap().uneven_offset(start, end).is_some());
        assert_eq!(Zone::parse("America/New_York").unwrap().uneven_offset(start, end), None);
        assert_eq!(Zone::Fixed(7200).uneven_offset(start, end), None);
        assert_eq!(describe_offset(5 * 3600 + 1800), "UTC+05:30");
    }
}

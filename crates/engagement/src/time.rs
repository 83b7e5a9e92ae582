//! Instants and hour-aligned half-open ranges, as the API reads them.

use chrono::{DateTime, Duration, NaiveDate, TimeZone, Timelike, Utc};

use crate::error::ApiError;
use crate::zone::Zone;

/// One hour.
pub const HOUR: Duration = Duration::hours(1);

/// Parses `YYYY-MM-DD` (midnight UTC) or an RFC 3339 timestamp (any offset, converted to UTC).
pub fn parse_instant(s: &str) -> Option<DateTime<Utc>> {
    parse_instant_in(s, &Zone::Utc)
}

/// Parses `YYYY-MM-DD` (the first instant of that date in `zone`: its midnight) or an RFC
/// 3339 timestamp (that instant, whatever the zone).
pub fn parse_instant_in(s: &str, zone: &Zone) -> Option<DateTime<Utc>> {
    if s.len() == 10 {
        let date = NaiveDate::parse_from_str(s, "%Y-%m-%d").ok()?;
        return match zone {
            Zone::Utc => Some(Utc.from_utc_datetime(&date.and_hms_opt(0, 0, 0)?)),
            zone => Some(zone.start_of_day(date)),
        };
    }
    DateTime::parse_from_rfc3339(s).ok().map(|t| t.with_timezone(&Utc))
}

/// The number of the hour that holds `t`: hours since the Unix epoch. Every crate numbers
/// hours this way.
pub fn hour_number(t: DateTime<Utc>) -> i64 {
    t.timestamp().div_euclid(3600)
}

/// The start of the hour that holds `t`.
pub fn floor_hour(t: DateTime<Utc>) -> DateTime<Utc> {
    let secs = hour_number(t) * 3600;
    Utc.timestamp_opt(secs, 0).single().unwrap_or(t)
}

/// The first hour boundary at or after `t`.
pub fn ceil_hour(t: DateTime<Utc>) -> DateTime<Utc> {
    let floor = floor_hour(t);
    if floor == t { t } else { floor + HOUR }
}

/// Formats an instant as the API echoes it: `2015-08-01T00:00:00Z`.
pub fn format_instant(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// A half-open, hour-aligned UTC range `[start, end)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TimeRange {
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
}

impl TimeRange {
    /// Whether the two ranges share an instant (half-open: touching ends do not).
    pub fn overlaps(&self, other: &TimeRange) -> bool {
        self.start < other.end && other.start < self.end
    }

    /// A range from two instants: start floored and end ceiled to the hour.
    pub fn covering(start: DateTime<Utc>, end: DateTime<Utc>) -> TimeRange {
        TimeRange { start: floor_hour(start), end: ceil_hour(end) }
    }

    /// Reads `start`/`end` as a request gives them, with the default of the 28 days up to
    /// `now` for what is absent: a missing end is the end of the hour in progress, a missing
    /// start is 28 days before the end. Checks nothing but the formats and the order.
    pub fn from_request(
        start: Option<&str>,
        end: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<TimeRange, ApiError> {
        Self::from_request_in(start, end, now, &Zone::Utc, |_, _| Ok(()))
    }

    /// Like [`TimeRange::from_request`], a date-only `start` or `end` being that date's
    /// midnight in `zone`; `check` sees each end as given (`"start"` or `"end"`, before it
    /// is rounded to the hour) and may refuse it.
    pub fn from_request_in(
        start: Option<&str>,
        end: Option<&str>,
        now: DateTime<Utc>,
        zone: &Zone,
        check: impl Fn(&str, DateTime<Utc>) -> Result<(), String>,
    ) -> Result<TimeRange, ApiError> {
        let parse = |field: &str, value: &str| {
            let t = parse_instant_in(value, zone).ok_or_else(|| {
                ApiError::new(match zone {
                    Zone::Utc => format!(
                        "{field} \"{value}\" is not a date: use YYYY-MM-DD or YYYY-MM-DDTHH:MM:SSZ (UTC)"
                    ),
                    zone => format!(
                        "{field} \"{value}\" is not a date: use YYYY-MM-DD (midnight in {zone}) or an instant such as 2015-08-01T00:00:00Z or 2015-08-01T00:00:00-05:00"
                    ),
                })
            })?;
            check(field, t).map_err(ApiError::new)?;
            Ok::<_, ApiError>(t)
        };
        let end = match end {
            Some(e) => ceil_hour(parse("end", e)?),
            None => ceil_hour(now),
        };
        let start = match start {
            Some(s) => floor_hour(parse("start", s)?),
            None => end - Duration::hours(crate::vocabulary::MAX_WINDOW_HOURS),
        };
        if start >= end {
            return Err(ApiError::new(format!(
                "start ({}) must be before end ({}) once both are rounded to the hour",
                format_instant(start),
                format_instant(end)
            )));
        }
        Ok(TimeRange { start, end })
    }

    /// The number of whole hours in the range.
    pub fn hours(&self) -> usize {
        ((self.end - self.start).num_hours()).max(0) as usize
    }

    /// The start of each hour in the range.
    pub fn hour_starts(&self) -> impl Iterator<Item = DateTime<Utc>> + '_ {
        (0..self.hours() as i64).map(|i| self.start + Duration::hours(i))
    }

    /// `2015-08-01T00:00:00Z/2015-08-29T00:00:00Z`, for messages.
    pub fn describe(&self) -> String {
        format!("{}/{}", format_instant(self.start), format_instant(self.end))
    }
}

/// Whether `t` is exactly on an hour boundary.
pub fn is_hour_aligned(t: DateTime<Utc>) -> bool {
    t.minute() == 0 && t.second() == 0 && t.nanosecond() == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        parse_instant(s).unwrap()
    }

    #[test]
    fn dates_and_timestamps_parse_to_utc() {
        assert_eq!(format_instant(at("2015-08-01")), "2015-08-01T00:00:00Z");
        assert_eq!(format_instant(at("2015-08-01T10:30:00+02:00")), "2015-08-01T08:30:00Z");
        for bad in ["2015-8-1", "2015-02-30", "yesterday", "2015-08-01 10:00:00", ""] {
            assert!(parse_instant(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn start_floors_and_end_ceils_to_the_hour() {
        let now = at("2020-01-01");
        let r =
            TimeRange::from_request(Some("2015-11-17T22:59:59Z"), Some("2015-11-19T02:27:50Z"), now).unwrap();
        assert_eq!(format_instant(r.start), "2015-11-17T22:00:00Z");
        assert_eq!(format_instant(r.end), "2015-11-19T03:00:00Z");
        assert_eq!(r.hours(), 29);
        // An end already on the hour stays: its last bucket is the hour before.
        let r =
            TimeRange::from_request(Some("2015-09-14T17:00:00Z"), Some("2015-09-14T22:00:00Z"), now).unwrap();
        assert_eq!(r.hour_starts().last().map(|h| h.hour()), Some(21));
    }

    #[test]
    fn absent_start_and_end_mean_the_last_28_days() {
        let now = at("2020-03-10T12:34:00Z");
        let r = TimeRange::from_request(None, None, now).unwrap();
        assert_eq!(format_instant(r.end), "2020-03-10T13:00:00Z");
        assert_eq!(r.hours(), 28 * 24);
    }

    #[test]
    fn start_at_or_after_end_is_refused_after_rounding() {
        let now = at("2020-01-01");
        assert!(TimeRange::from_request(Some("2015-08-02"), Some("2015-08-01"), now).is_err());
        // 10:10 to 10:20 rounds to 10:00-11:00, a valid hour.
        assert!(
            TimeRange::from_request(Some("2015-08-01T10:10:00Z"), Some("2015-08-01T10:20:00Z"), now).is_ok()
        );
        let err = TimeRange::from_request(Some("2015-08-01"), Some("2015-08-01"), now).unwrap_err();
        assert!(err.errors[0].contains("must be before end"));
    }
}

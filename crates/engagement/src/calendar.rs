//! The calendar of a range in a time zone: for each of its UTC hours, the local day, week
//! and month it falls in and its local hour of day. Answers are cut into buckets by it.

use std::collections::BTreeMap;

use chrono::{Datelike, Duration, NaiveDate};

use crate::time::TimeRange;
use crate::tree::{Key, day_key};
use crate::vocabulary::{GroupBy, Grouping};
use crate::zone::Zone;

/// The three periods a range can be cut into, in [`Calendar::periods`]' order.
const PERIODS: [GroupBy; 3] = [GroupBy::EngagementDay, GroupBy::EngagementWeek, GroupBy::EngagementMonth];

/// One kind of period over a range: which period each hour is in, where each begins, and
/// each one's key.
#[derive(Debug, Default)]
pub(crate) struct Periods {
    /// For each hour of the range, the number of its period (counted from 0).
    pub of: Vec<u32>,
    /// The first hour of each period, and after the last the number of hours.
    pub start: Vec<u32>,
    pub keys: Vec<Key>,
}

impl Periods {
    fn open(&mut self, hour: usize, key: Key) {
        self.start.push(hour as u32);
        self.keys.push(key);
    }
}

/// The calendar of a range in a zone.
#[derive(Debug)]
pub(crate) struct Calendar {
    /// Every hour's index, `0..hours`: the selection the trees start from.
    pub hours: Vec<u32>,
    /// Days, weeks and months.
    pub periods: [Periods; 3],
    /// Each hour's local hour of day.
    pub hour_of_day: Vec<u8>,
}

impl Calendar {
    /// The calendar of `range` in `zone`: only the periods `levels` name are kept.
    pub fn new(range: TimeRange, zone: &Zone, levels: &[GroupBy]) -> Calendar {
        let hours = range.hours();
        let wanted = PERIODS.map(|p| levels.contains(&p));
        let mut periods: [Periods; 3] = Default::default();
        for (p, kept) in periods.iter_mut().zip(wanted) {
            if kept {
                p.of.reserve(hours);
            }
        }
        let mut hour_of_day = Vec::with_capacity(hours);
        let mut offset = zone.offset_at(range.start);
        let mut last: Option<(i64, NaiveDate)> = None;
        for i in 0..hours {
            let t = range.start + Duration::hours(i as i64);
            // A zone with rules may change its offset at any hour; a fixed one never does.
            if matches!(zone, Zone::Named(_)) {
                offset = zone.offset_at(t);
            }
            let local = t.timestamp() + i64::from(offset);
            let day_number = local.div_euclid(86_400);
            hour_of_day.push((local.rem_euclid(86_400) / 3600) as u8);
            if last.is_none_or(|(n, _)| n != day_number) {
                let date = date_of(day_number);
                open_periods(&mut periods, wanted, i, date, last.map(|(_, d)| d));
                last = Some((day_number, date));
            }
            for (p, kept) in periods.iter_mut().zip(wanted) {
                if kept {
                    p.of.push((p.keys.len() - 1) as u32);
                }
            }
        }
        for (p, kept) in periods.iter_mut().zip(wanted) {
            if kept {
                p.start.push(hours as u32);
            }
        }
        Calendar { hours: (0..hours as u32).collect(), periods, hour_of_day }
    }

    /// The periods of `level` (a day, week or month).
    pub fn periods(&self, level: GroupBy) -> &Periods {
        let i = PERIODS.iter().position(|p| *p == level).unwrap_or(0);
        &self.periods[i]
    }

    /// How many keys the time levels of `levels` (in their order; other levels are left
    /// out) take together over the range: the leaves one Tweet's one type has. Needs the
    /// periods of `levels` kept. The periods' keys run over hours in a row, so the keys are
    /// counted run by run: one a run, or with an hour level, the hours of day in it.
    pub fn time_keys(&self, levels: &[GroupBy]) -> u64 {
        if !levels.iter().any(|l| l.is_time()) {
            return 1;
        }
        let periods: Vec<&Periods> =
            levels.iter().filter(|l| l.is_period()).map(|l| self.periods(*l)).collect();
        let by_hour = levels.contains(&GroupBy::EngagementHour);
        let (mut keys, mut run) = (0, 0u32);
        for h in 0..self.hours.len() {
            if h > 0 && periods.iter().any(|p| p.of[h] != p.of[h - 1]) {
                keys += u64::from(run.count_ones());
                run = 0;
            }
            run |= if by_hour { 1 << self.hour_of_day[h] } else { 1 };
        }
        keys + u64::from(run.count_ones())
    }
}

/// Opens the periods that begin with local date `date` at hour `i` (`previous`: the local
/// date of the hour before, if any).
fn open_periods(
    periods: &mut [Periods; 3],
    wanted: [bool; 3],
    i: usize,
    date: NaiveDate,
    previous: Option<NaiveDate>,
) {
    for ((p, kept), level) in periods.iter_mut().zip(wanted).zip(PERIODS) {
        let first = first_of_period(level, date);
        if kept && previous.is_none_or(|before| first_of_period(level, before) != first) {
            p.open(i, day_key(&period_key(level, date)));
        }
    }
}

/// The date `n` days after 1970-01-01.
fn date_of(n: i64) -> NaiveDate {
    NaiveDate::default() + Duration::days(n)
}

/// The Monday of `date`'s ISO week.
fn monday_of(date: NaiveDate) -> NaiveDate {
    date - Duration::days(date.weekday().num_days_from_monday().into())
}

/// The key of the period of `level` that holds local date `date`.
pub fn period_key(level: GroupBy, date: NaiveDate) -> String {
    match level {
        GroupBy::EngagementWeek => monday_of(date).format("%Y-%m-%d").to_string(),
        GroupBy::EngagementMonth => date.format("%Y-%m").to_string(),
        _ => date.format("%Y-%m-%d").to_string(),
    }
}

/// The local date after the period of `level` that holds `date`.
fn next_period(level: GroupBy, date: NaiveDate) -> NaiveDate {
    match level {
        GroupBy::EngagementWeek => monday_of(date) + Duration::days(7),
        GroupBy::EngagementMonth => {
            let (y, m) =
                if date.month() == 12 { (date.year() + 1, 1) } else { (date.year(), date.month() + 1) };
            NaiveDate::from_ymd_opt(y, m, 1).unwrap_or(date)
        }
        _ => date + Duration::days(1),
    }
}

/// The first local date of the period of `level` that holds `date`.
fn first_of_period(level: GroupBy, date: NaiveDate) -> NaiveDate {
    match level {
        GroupBy::EngagementWeek => monday_of(date),
        GroupBy::EngagementMonth => date.with_day(1).unwrap_or(date),
        _ => date,
    }
}

/// The weeks and months of the groupings' levels that the range cuts, in `zone`: for each
/// such level, the keys of its first and last periods if the range does not hold them
/// whole (their counts are of the range's hours alone).
pub fn partial_buckets(
    range: TimeRange,
    zone: &Zone,
    groupings: &[Grouping],
) -> BTreeMap<String, Vec<String>> {
    let mut out = BTreeMap::new();
    for level in GroupBy::NATIVE {
        if !groupings.iter().any(|g| g.group_by.contains(&level)) {
            continue;
        }
        let first = zone.local(range.start).date();
        let last = zone.local(range.end - Duration::hours(1)).date();
        let mut cut = Vec::new();
        if zone.start_of_day(first_of_period(level, first)) != range.start {
            cut.push(period_key(level, first));
        }
        if zone.start_of_day(next_period(level, last)) != range.end {
            cut.push(period_key(level, last));
        }
        cut.dedup();
        if !cut.is_empty() {
            out.insert(level.name().to_string(), cut);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::time::parse_instant;

    fn range(a: &str, b: &str) -> TimeRange {
        TimeRange { start: parse_instant(a).unwrap(), end: parse_instant(b).unwrap() }
    }

    fn keys(p: &Periods) -> Vec<&str> {
        p.keys.iter().map(|k| k.as_ref()).collect()
    }

    const ALL: [GroupBy; 3] = PERIODS;

    #[test]
    fn days_around_a_change_of_offset_have_23_and_25_hours() {
        let ny = Zone::parse("America/New_York").unwrap();
        // 2026-03-07 00:00 EST to 2026-03-10 00:00 EDT.
        let c = Calendar::new(range("2026-03-07T05:00:00Z", "2026-03-10T04:00:00Z"), &ny, &ALL);
        let days = c.periods(GroupBy::EngagementDay);
        assert_eq!(keys(days), ["2026-03-07", "2026-03-08", "2026-03-09"]);
        let lengths: Vec<u32> = days.start.windows(2).map(|w| w[1] - w[0]).collect();
        assert_eq!(lengths, [24, 23, 24]);
        // On 2026-03-08 the hour after 01 is 03.
        let eighth = &c.hour_of_day[24..47];
        assert_eq!(&eighth[..4], &[0, 1, 3, 4]);
        let c = Calendar::new(range("2026-10-31T04:00:00Z", "2026-11-02T05:00:00Z"), &ny, &ALL);
        let days = c.periods(GroupBy::EngagementDay);
        let lengths: Vec<u32> = days.start.windows(2).map(|w| w[1] - w[0]).collect();
        assert_eq!(lengths, [24, 25]);
        assert_eq!(&c.hour_of_day[24..28], &[0, 1, 1, 2], "the repeated hour");
    }

    #[test]
    fn weeks_start_on_monday_and_months_on_the_first() {
        let c = Calendar::new(range("2026-02-26", "2026-03-10"), &Zone::Utc, &ALL);
        assert_eq!(keys(c.periods(GroupBy::EngagementWeek)), ["2026-02-23", "2026-03-02", "2026-03-09"]);
        assert_eq!(keys(c.periods(GroupBy::EngagementMonth)), ["2026-02", "2026-03"]);
        assert_eq!(c.periods(GroupBy::EngagementWeek).start, [0, 4 * 24, 11 * 24, 12 * 24]);
        let (week, month, day, hour) = (
            GroupBy::EngagementWeek,
            GroupBy::EngagementMonth,
            GroupBy::EngagementDay,
            GroupBy::EngagementHour,
        );
        let r = range("2026-02-26", "2026-03-10");
        let c = Calendar::new(r, &Zone::Utc, &ALL);
        assert_eq!(c.time_keys(&[week]), 3);
        assert_eq!(c.time_keys(&[month]), 2);
        assert_eq!(c.time_keys(&[day]), 12);
        assert_eq!(c.time_keys(&[month, week]), 4, "the week of February 23 is in February and March");
        assert_eq!(c.time_keys(&[week, hour]), 3 * 24);
        assert_eq!(c.time_keys(&[day, hour]), 12 * 24);
        assert_eq!(c.time_keys(&[GroupBy::TweetId, hour]), 24);
        // At +02:00 the range starts at 02:00 on the 26th and ends at 02:00 on the 10th.
        assert_eq!(Calendar::new(r, &Zone::Fixed(7200), &ALL).time_keys(&[day]), 13);
        // New York's day of 25 hours has 24 keys of hour.
        let ny = Zone::parse("America/New_York").unwrap();
        let back = Calendar::new(range("2026-11-01T04:00:00Z", "2026-11-02T05:00:00Z"), &ny, &ALL);
        assert_eq!(back.time_keys(&[day, hour]), 24);
    }

    #[test]
    fn the_weeks_and_months_a_range_cuts_are_named() {
        let g = |levels: &[GroupBy]| vec![Grouping { name: "g".into(), group_by: levels.to_vec() }];
        let both = g(&[GroupBy::EngagementWeek, GroupBy::EngagementMonth]);
        let cut = partial_buckets(range("2026-02-26", "2026-03-10"), &Zone::Utc, &both);
        assert_eq!(cut["engagement.week"], ["2026-02-23", "2026-03-09"]);
        assert_eq!(cut["engagement.month"], ["2026-02", "2026-03"]);
        let whole = partial_buckets(range("2026-03-02", "2026-03-30"), &Zone::Utc, &both);
        assert_eq!(whole.get("engagement.week"), None);
        assert_eq!(whole["engagement.month"], ["2026-03"]);
        let ny = Zone::parse("America/New_York").unwrap();
        let march = partial_buckets(range("2026-03-01T05:00:00Z", "2026-04-01T04:00:00Z"), &ny, &both);
        assert_eq!(march.get("engagement.month"), None, "all of March in New York");
        assert!(
            partial_buckets(range("2026-02-26", "2026-03-10"), &Zone::Utc, &g(&[GroupBy::EngagementDay]))
                .is_empty()
        );
    }
}

//! Covering the hours a store lacks with the fewest calls. Once facts are kept per hour,
//! windows need not follow a grid: each batch needs only its missing hours, and the fewest
//! windows of at most 28 days that cover them is what a greedy sweep gives.

use chrono::Duration;
use engagement::TimeRange;
use engagement::vocabulary::MAX_WINDOW_HOURS;

/// The runs of `true` in `missing` (one flag per hour of `range`), as ranges.
pub fn runs(range: TimeRange, missing: &[bool]) -> Vec<TimeRange> {
    let at = |i: usize| range.start + Duration::hours(i as i64);
    let mut out = Vec::new();
    let mut open: Option<usize> = None;
    for (i, &m) in missing.iter().enumerate() {
        match (m, open) {
            (true, None) => open = Some(i),
            (false, Some(s)) => {
                out.push(TimeRange { start: at(s), end: at(i) });
                open = None;
            }
            _ => {}
        }
    }
    if let Some(s) = open {
        out.push(TimeRange { start: at(s), end: at(missing.len()) });
    }
    out
}

/// The fewest windows of at most 28 days covering every hour of `gaps` (sorted, disjoint,
/// hour-aligned). Each window starts at the first hour not yet covered and ends at the last
/// missing hour it reaches, so no window asks for more than it must.
pub fn cover(gaps: &[TimeRange]) -> Vec<TimeRange> {
    let longest = Duration::hours(MAX_WINDOW_HOURS);
    let mut out: Vec<TimeRange> = Vec::new();
    for gap in gaps {
        let mut from = gap.start;
        while from < gap.end {
            match out.last_mut() {
                // The open window still reaches this hour: stretch it.
                Some(w) if from < w.start + longest => {
                    w.end = gap.end.min(w.start + longest);
                    from = w.end;
                }
                _ => {
                    let end = gap.end.min(from + longest);
                    out.push(TimeRange { start: from, end });
                    from = end;
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use engagement::parse_instant;

    fn range(a: &str, b: &str) -> TimeRange {
        TimeRange { start: parse_instant(a).unwrap(), end: parse_instant(b).unwrap() }
    }

    #[test]
    fn runs_are_the_stretches_of_missing_hours() {
        let r = range("2020-01-01T00:00:00Z", "2020-01-01T06:00:00Z");
        let found = runs(r, &[true, true, false, false, true, true]);
        assert_eq!(
            found,
            [
                range("2020-01-01T00:00:00Z", "2020-01-01T02:00:00Z"),
                range("2020-01-01T04:00:00Z", "2020-01-01T06:00:00Z")
            ]
        );
        assert!(runs(r, &[false; 6]).is_empty());
    }

    #[test]
    fn one_window_spans_gaps_within_28_days() {
        let gaps = [
            range("2020-01-01T00:00:00Z", "2020-01-02T00:00:00Z"),
            range("2020-01-20T00:00:00Z", "2020-01-21T00:00:00Z"),
        ];
        assert_eq!(cover(&gaps), [range("2020-01-01T00:00:00Z", "2020-01-21T00:00:00Z")]);
    }

    #[test]
    fn long_gaps_take_ceil_of_hours_over_672_windows() {
        for days in [7i64, 27, 28, 29, 54, 90, 365] {
            let start = parse_instant("2021-03-05T07:00:00Z").unwrap();
            let gap = TimeRange { start, end: start + Duration::days(days) };
            let windows = cover(&[gap]);
            assert_eq!(windows.len() as i64, (days * 24 + 671) / 672, "{days} days");
            assert!(windows.iter().all(|w| w.hours() <= 672));
            assert_eq!(windows.first().unwrap().start, gap.start);
            assert_eq!(windows.last().unwrap().end, gap.end);
            assert!(windows.windows(2).all(|p| p[0].end == p[1].start));
        }
    }

    #[test]
    fn a_gap_past_the_open_window_starts_a_new_one() {
        let gaps = [
            range("2020-01-01T00:00:00Z", "2020-01-02T00:00:00Z"),
            range("2020-01-28T12:00:00Z", "2020-02-03T00:00:00Z"),
        ];
        // The first window reaches 2020-01-29T00: it takes the second gap's first 12 hours.
        assert_eq!(
            cover(&gaps),
            [
                range("2020-01-01T00:00:00Z", "2020-01-29T00:00:00Z"),
                range("2020-01-29T00:00:00Z", "2020-02-03T00:00:00Z"),
            ]
        );
    }
}

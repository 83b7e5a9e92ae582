//! Answers of the API's hourly grouping, cut again into a question's own groupings: local
//! days, weeks, months and hours of a zone, which the API cannot count. A slice's hourly
//! answer is re-rendered over its window alone, so answers of disjoint slices still add up.

use chrono::{DateTime, Duration, Utc};
use engagement::render::HourlyCounts;
use engagement::tree::{HOUR_KEYS, Node};
use engagement::{EngagementType, GroupBy, Grouping, Response, TimeRange, TweetId, Zone, render};

/// The grouping a slice is asked with when its answer is to be cut again: every level the
/// API knows, so the answer holds each Tweet's count of each type in each UTC hour.
pub fn hourly_grouping() -> Grouping {
    Grouping { name: HOURLY.into(), group_by: GroupBy::ALL.to_vec() }
}

/// The name of [`hourly_grouping`] in a call and its answer.
pub const HOURLY: &str = "hourly";

/// `answer` (of a call for `tweets` over `window`, grouped by [`hourly_grouping`]) as the
/// question asks it: `groupings` for `types`, with the periods and hours of `zone`. The
/// Tweets the answer reports deleted are left out, as the API leaves them out.
pub fn rebucket(
    mut answer: Response,
    tweets: &[TweetId],
    types: &[EngagementType],
    groupings: &[Grouping],
    window: TimeRange,
    zone: &Zone,
) -> Response {
    let hours = answer.groupings.remove(HOURLY).unwrap_or_else(Node::branch);
    let shown: Vec<TweetId> =
        tweets.iter().copied().filter(|t| !answer.unavailable_tweet_ids.contains(t)).collect();
    answer.groupings = render(&shown, types, groupings, window, zone, &TreeHours(&hours));
    answer
}

/// Hourly counts read from a tree of tweet → type → day → hour.
struct TreeHours<'a>(&'a Node);

impl HourlyCounts for TreeHours<'_> {
    fn fill(&self, tweet: TweetId, ty: EngagementType, start: DateTime<Utc>, out: &mut [u64]) {
        out.fill(0);
        let Some(types) = self.0.get(&tweet.to_string()) else { return };
        let Some(days) = types.get(ty.name()) else { return };
        let mut day: Option<(chrono::NaiveDate, Option<&Node>)> = None;
        for (i, count) in out.iter_mut().enumerate() {
            let t = start + Duration::hours(i as i64);
            let date = t.date_naive();
            if day.is_none_or(|(d, _)| d != date) {
                day = Some((date, days.get(&date.format("%Y-%m-%d").to_string())));
            }
            let hour = HOUR_KEYS[chrono::Timelike::hour(&t) as usize];
            if let Some((_, Some(hours))) = day
                && let Some(Node::Count(c)) = hours.get(hour)
            {
                *count = *c;
            }
        }
    }
}

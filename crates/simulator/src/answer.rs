//! The API's rules once a call is authenticated: validation, ownership, protected and
//! deleted Tweets, video-view age, and the answer itself. The oracle is the same code with
//! no limit on span or IDs.

use chrono::{DateTime, Duration, Utc};
use engagement::render::render_each;
use engagement::time::{TimeRange, ceil_hour, floor_hour, format_instant};
use engagement::tree::unavailable_error;
use engagement::vocabulary::TOTALS_IMPRESSIONS_MAX_AGE_DAYS;
use engagement::{
    ApiError, Endpoint, EngagementType, HourlyCounts, Limits, Query, Response, TweetId, render,
};
use serde_json::Value;

use crate::config::Config;
use crate::model::Model;

/// A call the API refuses: its status and messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub status: u16,
    pub error: ApiError,
}

impl Refusal {
    fn bad_request(error: ApiError) -> Refusal {
        Refusal { status: 400, error }
    }
}

fn listed(ids: &[TweetId], set: &std::collections::HashSet<TweetId>) -> Vec<TweetId> {
    let mut found: Vec<TweetId> = ids.iter().copied().filter(|id| set.contains(id)).collect();
    found.sort();
    found
}

fn join(ids: &[TweetId]) -> String {
    ids.iter().map(|id| id.to_string()).collect::<Vec<_>>().join(", ")
}

/// Answers one call to `endpoint` as the API would, within `limits`.
pub fn answer(
    config: &Config,
    model: &Model,
    endpoint: Endpoint,
    body: &Value,
    limits: &Limits,
) -> Result<Response, Refusal> {
    let query = Query::from_json(endpoint, body, limits, model.now).map_err(Refusal::bad_request)?;
    let foreign = listed(&query.tweet_ids, &config.foreign_ids);
    if !foreign.is_empty() {
        return Err(Refusal {
            status: 403,
            error: ApiError::new(format!("Forbidden to access tweets: {}", join(&foreign))),
        });
    }
    let protected = listed(&query.tweet_ids, &config.protected_ids);
    if !protected.is_empty() {
        return Err(Refusal::bad_request(ApiError::new(format!(
            "Tweet ID(s) are unavailable: {}",
            join(&protected)
        ))));
    }
    let mut unavailable: Vec<TweetId> =
        query.tweet_ids.iter().copied().filter(|id| config.deleted(*id, model.now)).collect();
    unavailable.sort_unstable();
    let mut response = Response { unavailable_tweet_ids: unavailable, ..Response::default() };
    if !response.unavailable_tweet_ids.is_empty() {
        response.errors.push(unavailable_error(response.unavailable_tweet_ids.len()));
    }
    let shown: Vec<TweetId> =
        query.tweet_ids.iter().copied().filter(|id| !config.deleted(*id, model.now)).collect();
    if query.types.contains(&EngagementType::VideoViews) {
        response.unsupported_for_video_views_tweet_ids =
            shown.iter().copied().filter(|id| !model.video_views_supported(*id)).collect();
        response.unsupported_for_video_views_tweet_ids.sort();
    }
    match query.range {
        Some(range) => {
            response.start = Some(format_instant(range.start));
            response.end = Some(format_instant(range.end));
            response.groupings = render(&shown, &query.types, &query.groupings, range, &query.zone, model);
        }
        None => {
            let lifetime = Lifetime { model, now: model.now };
            if query
                .types
                .iter()
                .any(|t| matches!(t, EngagementType::Impressions | EngagementType::Engagements))
            {
                response.unsupported_for_impressions_engagements_tweet_ids =
                    shown.iter().copied().filter(|id| lifetime.too_old(*id)).collect();
                response.unsupported_for_impressions_engagements_tweet_ids.sort();
            }
            response.groupings =
                render_each(&shown, &query.types, &query.groupings, |id| lifetime.range(id), &lifetime);
        }
    }
    Ok(response)
}

/// The answer one call with no limit on span or IDs would give to a `/historical` question.
pub fn oracle(config: &Config, model: &Model, body: &Value) -> Result<Response, Refusal> {
    let unlimited = Limits { max_tweet_ids: usize::MAX, max_span_hours: None, clamp_future_end: false };
    answer(config, model, Endpoint::Historical, body, &unlimited)
}

/// Lifetime counts for `/totals`: impressions and engagements only for Tweets younger than
/// 90 days.
struct Lifetime<'a> {
    model: &'a Model,
    now: DateTime<Utc>,
}

impl Lifetime<'_> {
    fn too_old(&self, id: TweetId) -> bool {
        self.now - id.created_at() > Duration::days(TOTALS_IMPRESSIONS_MAX_AGE_DAYS)
    }

    fn range(&self, id: TweetId) -> TimeRange {
        let end = ceil_hour(self.now);
        let start = floor_hour(id.created_at()).min(end - Duration::hours(1));
        TimeRange { start, end }
    }
}

impl HourlyCounts for Lifetime<'_> {
    fn fill(&self, tweet: TweetId, ty: EngagementType, start: DateTime<Utc>, out: &mut [u64]) {
        let hidden =
            matches!(ty, EngagementType::Impressions | EngagementType::Engagements) && self.too_old(tweet);
        if hidden {
            out.fill(0);
        } else {
            self.model.fill(tweet, ty, start, out);
        }
    }
}

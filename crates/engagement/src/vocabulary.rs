//! Engagement types, `group_by` values, groupings and endpoints, with the API's rules.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, TimeZone, Utc};

use crate::error::ApiError;

/// The headers with which the API reports its per-minute limit on every answer.
pub mod rate_headers {
    /// Calls allowed per minute.
    pub const LIMIT: &str = "x-per-minute-limit";
    /// Calls left this minute.
    pub const REMAINING: &str = "x-per-minute-remaining";
    /// When the minute's count starts again, in Unix seconds.
    pub const RESET: &str = "x-per-minute-reset";
}

/// One metric the API counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum EngagementType {
    Impressions,
    Engagements,
    Favorites,
    Retweets,
    QuoteTweets,
    Replies,
    VideoViews,
    MediaViews,
    MediaEngagements,
    UrlClicks,
    HashtagClicks,
    DetailExpands,
    PermalinkClicks,
    AppInstallAttempts,
    AppOpens,
    EmailTweet,
    UserFollows,
    UserProfileClicks,
}

impl EngagementType {
    /// Every type the API knows, in its documentation's order.
    pub const ALL: [EngagementType; 18] = [
        Self::Impressions,
        Self::Engagements,
        Self::Favorites,
        Self::Retweets,
        Self::QuoteTweets,
        Self::Replies,
        Self::VideoViews,
        Self::MediaViews,
        Self::MediaEngagements,
        Self::UrlClicks,
        Self::HashtagClicks,
        Self::DetailExpands,
        Self::PermalinkClicks,
        Self::AppInstallAttempts,
        Self::AppOpens,
        Self::EmailTweet,
        Self::UserFollows,
        Self::UserProfileClicks,
    ];

    /// The name the API uses on the wire.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Impressions => "impressions",
            Self::Engagements => "engagements",
            Self::Favorites => "favorites",
            Self::Retweets => "retweets",
            Self::QuoteTweets => "quote_tweets",
            Self::Replies => "replies",
            Self::VideoViews => "video_views",
            Self::MediaViews => "media_views",
            Self::MediaEngagements => "media_engagements",
            Self::UrlClicks => "url_clicks",
            Self::HashtagClicks => "hashtag_clicks",
            Self::DetailExpands => "detail_expands",
            Self::PermalinkClicks => "permalink_clicks",
            Self::AppInstallAttempts => "app_install_attempts",
            Self::AppOpens => "app_opens",
            Self::EmailTweet => "email_tweet",
            Self::UserFollows => "user_follows",
            Self::UserProfileClicks => "user_profile_clicks",
        }
    }

    /// A dense index in `0..18`, for tables indexed by type.
    pub const fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for EngagementType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for EngagementType {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        Self::ALL.into_iter().find(|t| t.name() == s).ok_or(())
    }
}

/// One level of a grouping.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum GroupBy {
    TweetId,
    EngagementType,
    EngagementDay,
    EngagementHour,
    /// An ISO 8601 week, Monday first, keyed by its Monday's date: the service's own level.
    EngagementWeek,
    /// A calendar month, keyed `YYYY-MM`: the service's own level.
    EngagementMonth,
}

impl GroupBy {
    /// Every level the API knows, in the order of its documentation.
    pub const ALL: [GroupBy; 4] =
        [Self::TweetId, Self::EngagementType, Self::EngagementDay, Self::EngagementHour];

    /// The levels only the service's native answer knows.
    pub const NATIVE: [GroupBy; 2] = [Self::EngagementWeek, Self::EngagementMonth];

    /// The name used on the wire.
    pub const fn name(self) -> &'static str {
        match self {
            Self::TweetId => "tweet.id",
            Self::EngagementType => "engagement.type",
            Self::EngagementDay => "engagement.day",
            Self::EngagementHour => "engagement.hour",
            Self::EngagementWeek => "engagement.week",
            Self::EngagementMonth => "engagement.month",
        }
    }

    /// Whether this level cuts time (a day, hour, week or month).
    pub const fn is_time(self) -> bool {
        !matches!(self, Self::TweetId | Self::EngagementType)
    }

    /// Whether this level is a period of the calendar (a day, week or month).
    pub const fn is_period(self) -> bool {
        matches!(self, Self::EngagementDay | Self::EngagementWeek | Self::EngagementMonth)
    }

    /// Whether only the service's native answer knows this level.
    pub const fn is_native(self) -> bool {
        matches!(self, Self::EngagementWeek | Self::EngagementMonth)
    }
}

impl FromStr for GroupBy {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        Self::ALL.into_iter().chain(Self::NATIVE).find(|g| g.name() == s).ok_or(())
    }
}

/// A named grouping: the response nests its counts in `group_by` order under `name`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Grouping {
    pub name: String,
    pub group_by: Vec<GroupBy>,
}

/// The two orders in which a grouping may use all four levels.
const FOUR_LEVEL_ORDERS: [[GroupBy; 4]; 2] = [
    [GroupBy::TweetId, GroupBy::EngagementType, GroupBy::EngagementDay, GroupBy::EngagementHour],
    [GroupBy::EngagementType, GroupBy::TweetId, GroupBy::EngagementDay, GroupBy::EngagementHour],
];

/// At most this many groupings in one request.
pub const MAX_GROUPINGS: usize = 3;

/// Checks a set of groupings against the API's rules for `endpoint`.
pub fn check_groupings(endpoint: Endpoint, groupings: &[Grouping]) -> Result<(), ApiError> {
    if groupings.is_empty() {
        return Err(ApiError::new(
            "groupings must name at least one grouping, e.g. {\"by tweet\": {\"group_by\": [\"tweet.id\", \"engagement.type\"]}}",
        ));
    }
    if groupings.len() > MAX_GROUPINGS {
        return Err(ApiError::new(format!(
            "too many groupings: {} given, at most {MAX_GROUPINGS} are allowed",
            groupings.len()
        )));
    }
    let mut four_level = 0;
    for g in groupings {
        let levels = &g.group_by;
        if levels.is_empty() || levels.len() > 4 {
            return Err(ApiError::new(format!(
                "grouping \"{}\": group_by must list 1 to 4 values, {} given",
                g.name,
                levels.len()
            )));
        }
        for (i, level) in levels.iter().enumerate() {
            if levels[..i].contains(level) {
                return Err(ApiError::new(format!(
                    "grouping \"{}\": {} is listed twice in group_by",
                    g.name,
                    level.name()
                )));
            }
        }
        if !endpoint.allows_time_groupings() {
            let unsupported: Vec<&str> = levels.iter().filter(|l| l.is_time()).map(|l| l.name()).collect();
            if !unsupported.is_empty() {
                return Err(ApiError::new(format!(
                    "One or more of the groupBys you have specified are not supported: ({}). The {} endpoint supports tweet.id and engagement.type only.",
                    unsupported.join(", "),
                    endpoint.name()
                )));
            }
        }
        if levels.len() == 4 {
            // Where the API allows engagement.day, a week or a month may stand instead.
            let as_day = |l: &GroupBy| if l.is_native() { GroupBy::EngagementDay } else { *l };
            let api_levels: Vec<GroupBy> = levels.iter().map(as_day).collect();
            if !FOUR_LEVEL_ORDERS.iter().any(|order| order.as_slice() == api_levels.as_slice()) {
                return Err(ApiError::new(format!(
                    "grouping \"{}\": a group_by of 4 values must be [tweet.id, engagement.type, engagement.day, engagement.hour] or [engagement.type, tweet.id, engagement.day, engagement.hour]{}",
                    g.name,
                    if levels.iter().any(|l| l.is_native()) {
                        " (engagement.week or engagement.month may stand for engagement.day)"
                    } else {
                        ""
                    }
                )));
            }
            four_level += 1;
        }
    }
    if four_level > 1 {
        return Err(ApiError::new("only one grouping with 4 group_by values is allowed per request"));
    }
    Ok(())
}

/// One of the API's three endpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Endpoint {
    Totals,
    Hr28,
    Historical,
}

impl Endpoint {
    /// The last path segment: `totals`, `28hr`, `historical`.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Totals => "totals",
            Self::Hr28 => "28hr",
            Self::Historical => "historical",
        }
    }

    /// The request path.
    pub const fn path(self) -> &'static str {
        match self {
            Self::Totals => "/insights/engagement/totals",
            Self::Hr28 => "/insights/engagement/28hr",
            Self::Historical => "/insights/engagement/historical",
        }
    }

    /// How many Tweet IDs one call may carry.
    pub const fn max_tweet_ids(self) -> usize {
        match self {
            Self::Totals => 250,
            Self::Hr28 | Self::Historical => 25,
        }
    }

    /// Whether `engagement.day` and `engagement.hour` may be used.
    pub const fn allows_time_groupings(self) -> bool {
        !matches!(self, Self::Totals)
    }

    /// Whether this endpoint answers for `ty`.
    pub fn allows_type(self, ty: EngagementType) -> bool {
        use EngagementType as T;
        match self {
            Self::Totals => matches!(
                ty,
                T::Impressions
                    | T::Engagements
                    | T::Favorites
                    | T::Retweets
                    | T::QuoteTweets
                    | T::Replies
                    | T::VideoViews
            ),
            Self::Hr28 | Self::Historical => ty != T::QuoteTweets,
        }
    }

    /// The types this endpoint answers for.
    pub fn types(self) -> impl Iterator<Item = EngagementType> {
        EngagementType::ALL.into_iter().filter(move |t| self.allows_type(*t))
    }
}

/// The longest window one `/historical` call may cover, in hours (28 days).
pub const MAX_WINDOW_HOURS: i64 = 28 * 24;

/// The earliest instant `/historical` can be asked about.
pub fn earliest_start() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2014, 9, 1, 0, 0, 0).single().unwrap_or_default()
}

/// Tweets older than this (at request time) get no `video_views`.
pub const VIDEO_VIEWS_MAX_AGE_DAYS: i64 = 1800;

/// `/totals` gives impressions and engagements only for Tweets younger than this.
pub const TOTALS_IMPRESSIONS_MAX_AGE_DAYS: i64 = 90;

#[cfg(test)]
mod tests {
    use super::*;

    fn grouping(levels: &[GroupBy]) -> Grouping {
        Grouping { name: "g".into(), group_by: levels.to_vec() }
    }

    #[test]
    fn eighteen_types_round_trip_by_name() {
        assert_eq!(EngagementType::ALL.len(), 18);
        for t in EngagementType::ALL {
            assert_eq!(t.name().parse::<EngagementType>(), Ok(t));
            assert_eq!(EngagementType::ALL[t.index()], t);
        }
        assert!("media_clicks".parse::<EngagementType>().is_err());
    }

    #[test]
    fn endpoints_allow_their_documented_types() {
        assert_eq!(Endpoint::Totals.types().count(), 7);
        assert_eq!(Endpoint::Historical.types().count(), 17);
        assert_eq!(Endpoint::Hr28.types().count(), 17);
        assert!(!Endpoint::Historical.allows_type(EngagementType::QuoteTweets));
        assert!(!Endpoint::Totals.allows_type(EngagementType::UrlClicks));
    }

    #[test]
    fn four_levels_only_in_the_two_documented_orders() {
        use GroupBy::*;
        let ok1 = grouping(&[TweetId, EngagementType, EngagementDay, EngagementHour]);
        let ok2 = grouping(&[EngagementType, TweetId, EngagementDay, EngagementHour]);
        let bad = grouping(&[EngagementDay, TweetId, EngagementType, EngagementHour]);
        assert!(check_groupings(Endpoint::Historical, std::slice::from_ref(&ok1)).is_ok());
        assert!(check_groupings(Endpoint::Historical, std::slice::from_ref(&ok2)).is_ok());
        assert!(check_groupings(Endpoint::Historical, &[bad]).is_err());
        let two = [ok1, Grouping { name: "h".into(), ..ok2 }];
        let err = check_groupings(Endpoint::Historical, &two).unwrap_err();
        assert!(err.errors[0].contains("only one grouping with 4"));
    }

    #[test]
    fn short_groupings_in_any_order_and_no_time_on_totals() {
        use GroupBy::*;
        for levels in [
            vec![EngagementHour],
            vec![EngagementHour, EngagementDay],
            vec![EngagementDay, TweetId, EngagementType],
        ] {
            assert!(check_groupings(Endpoint::Historical, &[grouping(&levels)]).is_ok());
        }
        let err = check_groupings(Endpoint::Totals, &[grouping(&[TweetId, EngagementHour])]).unwrap_err();
        assert!(err.errors[0].contains("not supported: (engagement.hour)"), "{err}");
        let err = check_groupings(Endpoint::Historical, &[grouping(&[TweetId, TweetId])]).unwrap_err();
        assert!(err.errors[0].contains("twice"));
        let four = vec![grouping(&[TweetId]); 4];
        assert!(check_groupings(Endpoint::Historical, &four).unwrap_err().errors[0].contains("at most 3"));
    }
}

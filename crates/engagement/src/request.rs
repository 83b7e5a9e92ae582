//! Reading and validating a question, with the API's field names and messages.

use chrono::{DateTime, Duration, Utc};
use serde::Deserialize;
use serde_json::Value;

use crate::calendar::Calendar;
use crate::error::ApiError;
use crate::time::{TimeRange, ceil_hour, format_instant, is_hour_aligned};
use crate::tree::RESERVED_MEMBERS;
use crate::tweet_id::TweetId;
use crate::vocabulary::{
    Endpoint, EngagementType, GroupBy, Grouping, MAX_WINDOW_HOURS, check_groupings, earliest_start,
};
use crate::zone::{Zone, describe_offset};

/// What may be asked in one question. The API's own limits come from [`Limits::of`]; the
/// service relaxes them, since it stitches many calls into one answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// The most distinct Tweet IDs.
    pub max_tweet_ids: usize,
    /// The longest range in hours, if any.
    pub max_span_hours: Option<i64>,
    /// Whether an end past the hour in progress is refused (the API) or clamped to it.
    pub clamp_future_end: bool,
}

impl Limits {
    /// The limits of one call to `endpoint`.
    pub fn of(endpoint: Endpoint) -> Limits {
        Limits {
            max_tweet_ids: endpoint.max_tweet_ids(),
            max_span_hours: (endpoint == Endpoint::Historical).then_some(MAX_WINDOW_HOURS),
            clamp_future_end: false,
        }
    }
}

/// What the service's native answer reads beyond the API's question: the zone its days and
/// hours are counted in, and the week and month levels. The API reads neither.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Native {
    /// The zone local days, weeks, months and hours are counted in; UTC is the API's own.
    pub zone: Zone,
    /// Whether `engagement.week` and `engagement.month` are levels.
    pub periods: bool,
}

impl Native {
    /// The native answer's reading, in `zone`.
    pub fn in_zone(zone: Zone) -> Native {
        Native { zone, periods: true }
    }
}

/// The body of a request as the API spells it.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct RawRequest {
    pub tweet_ids: Vec<String>,
    pub engagement_types: Vec<String>,
    pub groupings: serde_json::Map<String, Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub start: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub end: Option<String>,
}

/// A validated question.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Query {
    pub endpoint: Endpoint,
    /// Distinct IDs, in the order first given.
    pub tweet_ids: Vec<TweetId>,
    /// Distinct types, in the order first given.
    pub types: Vec<EngagementType>,
    pub groupings: Vec<Grouping>,
    /// The normalized range; `None` for `/totals`, which counts a Tweet's whole life.
    pub range: Option<TimeRange>,
    /// Whether the end asked for was in the future and was clamped to the hour in progress.
    pub end_clamped: bool,
    /// The zone days, weeks, months and hours are counted in (UTC: the API's own).
    pub zone: Zone,
}

/// What a client sent for one member of a body: nothing, the shape asked for, or something
/// else, kept so the message can show it. Every member is read this way, so all of a body's
/// problems are reported at once, each in words about its own field.
#[derive(Debug, Clone, Default, PartialEq)]
pub enum Sent<T> {
    #[default]
    Absent,
    Given(T),
    Other(Value),
}

impl<'de, T: serde::de::DeserializeOwned> serde::Deserialize<'de> for Sent<T> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let value = Value::deserialize(d)?;
        Ok(match T::deserialize(&value) {
            Ok(given) => Sent::Given(given),
            Err(_) => Sent::Other(value),
        })
    }
}

impl<T> Sent<T> {
    /// What was given, or `None` (absent, or another shape).
    pub fn given(&self) -> Option<&T> {
        match self {
            Sent::Given(t) => Some(t),
            _ => None,
        }
    }
}

impl<T: serde::Serialize> std::fmt::Display for Sent<T> {
    /// As JSON, the way the client wrote it.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Sent::Absent => f.write_str("nothing"),
            Sent::Given(t) => f.write_str(&serde_json::to_string(t).map_err(|_| std::fmt::Error)?),
            Sent::Other(v) => write!(f, "{v}"),
        }
    }
}

/// A Tweet ID as clients send it: a decimal string, or a bare integer (a JSON number with
/// a zero fraction, such as `5150.0`, is an integer too).
#[derive(Debug, Clone, PartialEq, serde::Deserialize, serde::Serialize)]
#[serde(untagged)]
pub enum IdText {
    Decimal(String),
    Integer(u64),
    Number(f64),
}

/// The least number a JSON parser may read with a digit lost: from here on, a number with a
/// fraction part is read as the nearest double, which need not be the ID that was sent.
const EXACT_BELOW: f64 = 9_007_199_254_740_992.0;

impl IdText {
    /// The ID this is, if it is one: digits that fit in 64 bits, or an integral number read
    /// exactly.
    fn id(&self) -> Option<TweetId> {
        match self {
            IdText::Decimal(s) => TweetId::parse(s),
            IdText::Integer(n) => Some(TweetId(*n)),
            IdText::Number(x) if x.fract() == 0.0 && (0.0..EXACT_BELOW).contains(x) => {
                Some(TweetId(*x as u64))
            }
            IdText::Number(_) => None,
        }
    }
}

// Read by validation and described by the OpenAPI document alike, so the two cannot differ.
/// A question, in the Engagement API's own body.
#[derive(Debug, Clone, Default, PartialEq, serde::Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema), schema(as = Question, example = json!({
    "tweet_ids": ["1790000000000000000", "1850000000000000000"],
    "engagement_types": ["impressions", "engagements"],
    "groupings": {"per tweet": {"group_by": ["tweet.id", "engagement.type"]}},
    "start": "2024-05-01", "end": "2025-03-01"
})))]
pub struct QuestionBody {
    /// Tweet IDs as decimal strings (bare integers are read too); up to
    /// `server.max_tweet_ids` distinct. An ID no Tweet can have (0, 2^63 or more, or minted
    /// after now) is refused.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(schema_with = crate::openapi::tweet_ids, required = true))]
    pub tweet_ids: Sent<Vec<Sent<IdText>>>,
    /// Types of the historical endpoint: impressions, engagements, favorites, retweets,
    /// replies, video_views, media_views, media_engagements, url_clicks, hashtag_clicks,
    /// detail_expands, permalink_clicks, app_install_attempts, app_opens, email_tweet,
    /// user_follows, user_profile_clicks.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(schema_with = crate::openapi::engagement_types, required = true))]
    pub engagement_types: Sent<Vec<Sent<String>>>,
    /// Up to 3 named groupings; each name is a top-level key of the answer. Only one may
    /// have 4 levels (the API's rule, which a schema cannot say).
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(schema_with = crate::openapi::groupings, required = true))]
    pub groupings: Sent<std::collections::BTreeMap<String, Sent<GroupingBody>>>,
    /// `YYYY-MM-DD` or RFC 3339, UTC; floored to the hour; from 2014-09-01 on. Absent with
    /// `end`: the last 28 days.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>))]
    pub start: Sent<Option<String>>,
    /// `YYYY-MM-DD` or RFC 3339, UTC; ceiled to the hour; a future end is clamped to the
    /// end of the hour in progress.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>))]
    pub end: Sent<Option<String>>,
}

/// One grouping.
#[derive(Debug, Clone, Default, PartialEq, serde::Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema), schema(as = GroupingSpec))]
pub struct GroupingBody {
    /// 1 to 4 of tweet.id, engagement.type, engagement.day, engagement.hour; 4 only as
    /// [tweet.id, engagement.type, engagement.day, engagement.hour] or
    /// [engagement.type, tweet.id, engagement.day, engagement.hour].
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(schema_with = crate::openapi::group_by, required = true))]
    pub group_by: Sent<Vec<Sent<String>>>,
}

/// Reads a request body into `T` (a [`QuestionBody`], or one holding it), refusing what
/// is not a JSON object and what a JSON value would silently lose: a grouping named twice.
pub fn read_body<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    read_body_with(bytes, None)
}

/// Like [`read_body`], refusing first a body that names a member nobody reads: at its top
/// level one not in `members`, in a grouping or in `top` one not theirs
/// ([`crate::members::unknown`]). Every such member is named at once.
pub fn read_strict_body<T: serde::de::DeserializeOwned>(
    bytes: &[u8],
    members: &[&str],
) -> Result<T, ApiError> {
    read_body_with(bytes, Some(members))
}

fn read_body_with<T: serde::de::DeserializeOwned>(
    bytes: &[u8],
    strict: Option<&[&str]>,
) -> Result<T, ApiError> {
    let value = parse_body(bytes)?;
    if !value.is_object() {
        return Err(ApiError::new(NOT_AN_OBJECT));
    }
    if let Some(members) = strict {
        let unknown = crate::members::unknown(&value, members);
        if !unknown.is_empty() {
            return Err(ApiError { errors: unknown });
        }
    }
    T::deserialize(&value).map_err(|e| ApiError::new(format!("the request body could not be read: {e}")))
}

const NOT_AN_OBJECT: &str =
    "the request body must be a JSON object with tweet_ids, engagement_types and groupings";

/// Reads a request body as JSON, refusing what a JSON value would silently lose: a
/// grouping named twice (the last would win).
fn parse_body(bytes: &[u8]) -> Result<Value, ApiError> {
    let value: Value = serde_json::from_slice(bytes)
        .map_err(|e| ApiError::new(format!("the request body is not valid JSON: {e}")))?;
    if let Some(Value::Object(groupings)) = value.get("groupings") {
        let named: GroupingNames = serde_json::from_slice(bytes)
            .map_err(|e| ApiError::new(format!("the request body is not valid JSON: {e}")))?;
        if named.groupings.map_or(0, |n| n.0) != groupings.len() {
            return Err(ApiError::new("groupings names a grouping twice; give each grouping its own name"));
        }
    }
    Ok(value)
}

/// The `groupings` member of a body, as the number of names it gives, duplicates counted.
#[derive(serde::Deserialize)]
struct GroupingNames {
    groupings: Option<NameCount>,
}

struct NameCount(usize);

impl<'de> serde::Deserialize<'de> for NameCount {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Count;
        impl<'de> serde::de::Visitor<'de> for Count {
            type Value = NameCount;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an object of named groupings")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<NameCount, A::Error> {
                let mut n = 0;
                while map.next_entry::<serde::de::IgnoredAny, serde::de::IgnoredAny>()?.is_some() {
                    n += 1;
                }
                Ok(NameCount(n))
            }
        }
        d.deserialize_map(Count)
    }
}

/// The largest Tweet ID that can exist at `now` ([`TweetId::newest`]).
pub fn newest_tweet_id(now: DateTime<Utc>) -> TweetId {
    TweetId::newest(now)
}

impl Query {
    /// Reads and checks a JSON body against `limits`, at instant `now`: see [`Query::from_body`].
    pub fn from_json(
        endpoint: Endpoint,
        body: &Value,
        limits: &Limits,
        now: DateTime<Utc>,
    ) -> Result<Query, ApiError> {
        if !body.is_object() {
            return Err(ApiError::new(NOT_AN_OBJECT));
        }
        let body = QuestionBody::deserialize(body)
            .map_err(|e| ApiError::new(format!("the request body could not be read: {e}")))?;
        Query::from_body(endpoint, &body, limits, now)
    }

    /// Checks a body against `limits`, at instant `now`, as the API reads it. Every problem
    /// found is reported, one message per field.
    pub fn from_body(
        endpoint: Endpoint,
        body: &QuestionBody,
        limits: &Limits,
        now: DateTime<Utc>,
    ) -> Result<Query, ApiError> {
        Query::from_body_with(endpoint, body, limits, now, &Native::default())
    }

    /// Like [`Query::from_body`], with what the native answer reads beyond the API's
    /// question (`native`): a zone whose offset is not a whole number of hours anywhere in
    /// the range is refused for groupings with time levels, and for ends inside a UTC hour.
    pub fn from_body_with(
        endpoint: Endpoint,
        body: &QuestionBody,
        limits: &Limits,
        now: DateTime<Utc>,
        native: &Native,
    ) -> Result<Query, ApiError> {
        let mut errors = Vec::new();
        let tweet_ids =
            read_tweet_ids(&body.tweet_ids, limits, now).map_err(|e| errors.push(e)).unwrap_or_default();
        let types =
            read_types(endpoint, &body.engagement_types).map_err(|e| errors.push(e)).unwrap_or_default();
        let groupings = read_groupings(endpoint, &body.groupings, native.periods)
            .map_err(|e| errors.push(e))
            .unwrap_or_default();
        let zone = native.zone;
        let mut end_clamped = false;
        let range = match endpoint {
            Endpoint::Totals => None,
            Endpoint::Hr28 => {
                let end = ceil_hour(now);
                Some(TimeRange { start: end - Duration::hours(28), end })
            }
            Endpoint::Historical => match read_range(body, limits, now, &zone) {
                Ok((range, clamped)) => {
                    end_clamped = clamped;
                    Some(range)
                }
                Err(e) => {
                    errors.push(e);
                    None
                }
            },
        };
        if let Some(range) = range
            && let Err(e) = whole_hours(&zone, range, &groupings)
        {
            errors.push(e);
        }
        if !errors.is_empty() {
            return Err(ApiError { errors });
        }
        Ok(Query { endpoint, tweet_ids, types, groupings, range, end_clamped, zone })
    }

    /// How many counts (leaves) the answer holds: for each grouping, its Tweets × types ×
    /// the keys its time levels take together over the range, in its zone
    /// ([`Calendar::time_keys`]). An upper bound when Tweets are deleted.
    pub fn answer_counts(&self) -> u64 {
        let levels: Vec<GroupBy> = self.groupings.iter().flat_map(|g| g.group_by.iter().copied()).collect();
        let calendar = match self.range {
            Some(range) if levels.iter().any(|l| l.is_time()) => {
                Some(Calendar::new(range, &self.zone, &levels))
            }
            _ => None,
        };
        self.groupings
            .iter()
            .map(|g| {
                let time = calendar.as_ref().map_or(1, |c| c.time_keys(&g.group_by));
                g.group_by
                    .iter()
                    .map(|level| match level {
                        GroupBy::TweetId => self.tweet_ids.len() as u64,
                        GroupBy::EngagementType => self.types.len() as u64,
                        _ => 1,
                    })
                    .fold(time, u64::saturating_mul)
            })
            .fold(0, u64::saturating_add)
    }

    /// Whether the API's own groupings cannot answer this question: a level cuts time in a
    /// zone other than UTC, or by weeks or months. Its calls ask for every hour, and the
    /// answers are cut again into its groupings.
    pub fn needs_hours(&self) -> bool {
        self.groupings
            .iter()
            .flat_map(|g| &g.group_by)
            .any(|l| l.is_native() || (l.is_time() && !self.zone.is_utc()))
    }

    /// The body that asks this question of the API.
    pub fn to_raw(&self) -> RawRequest {
        RawRequest {
            tweet_ids: self.tweet_ids.iter().map(|id| id.to_string()).collect(),
            engagement_types: self.types.iter().map(|t| t.name().to_string()).collect(),
            groupings: self
                .groupings
                .iter()
                .map(|g| {
                    let levels: Vec<&str> = g.group_by.iter().map(|l| l.name()).collect();
                    (g.name.clone(), serde_json::json!({ "group_by": levels }))
                })
                .collect(),
            start: self.range.map(|r| format_instant(r.start)),
            end: self.range.map(|r| format_instant(r.end)),
        }
    }
}

/// The Tweets and the `/historical` types a body names, read as a question's are: at most
/// `max_tweet_ids` distinct Tweets that can exist at `now`. Every problem is reported.
pub fn read_tweets_and_types(
    tweet_ids: &Sent<Vec<Sent<IdText>>>,
    types: &Sent<Vec<Sent<String>>>,
    max_tweet_ids: usize,
    now: DateTime<Utc>,
) -> Result<(Vec<TweetId>, Vec<EngagementType>), ApiError> {
    let limits = Limits { max_tweet_ids, max_span_hours: None, clamp_future_end: true };
    match (read_tweet_ids(tweet_ids, &limits, now), read_types(Endpoint::Historical, types)) {
        (Ok(ids), Ok(types)) => Ok((ids, types)),
        (ids, types) => Err(ApiError { errors: [ids.err(), types.err()].into_iter().flatten().collect() }),
    }
}

fn read_tweet_ids(
    sent: &Sent<Vec<Sent<IdText>>>,
    limits: &Limits,
    now: DateTime<Utc>,
) -> Result<Vec<TweetId>, String> {
    const SHAPE: &str =
        "tweet_ids must be a non-empty array of Tweet IDs as decimal strings, e.g. [\"1060976163948904448\"]";
    let Some(items) = sent.given().filter(|items| !items.is_empty()) else {
        return Err(SHAPE.into());
    };
    let mut ids = Vec::with_capacity(items.len());
    let mut bad = Vec::new();
    for item in items {
        let id = item.given().and_then(IdText::id);
        match id {
            Some(id) => ids.push(id),
            None if bad.len() < 5 => bad.push(item.to_string()),
            None => {}
        }
    }
    if !bad.is_empty() {
        return Err(format!(
            "tweet_ids holds values that are not Tweet IDs (decimal digits that fit in 64 bits, best sent as strings: a number of 2^53 or more written with a fraction or exponent, such as 1.79e18, loses digits): {}",
            bad.join(", ")
        ));
    }
    let newest = newest_tweet_id(now);
    let impossible: Vec<String> =
        ids.iter().filter(|id| id.0 == 0 || **id > newest).take(5).map(ToString::to_string).collect();
    if !impossible.is_empty() {
        return Err(format!(
            "tweet_ids holds IDs no Tweet can have (0, or minted after the hour in progress, {newest} at most): {}",
            impossible.join(", ")
        ));
    }
    let mut seen = std::collections::HashSet::with_capacity(ids.len());
    ids.retain(|id| seen.insert(*id));
    if ids.len() > limits.max_tweet_ids {
        return Err(format!(
            "too many tweet_ids: {} distinct IDs given, at most {} are allowed per request",
            ids.len(),
            limits.max_tweet_ids
        ));
    }
    Ok(ids)
}

fn read_types(endpoint: Endpoint, sent: &Sent<Vec<Sent<String>>>) -> Result<Vec<EngagementType>, String> {
    let valid = || endpoint.types().map(|t| t.name()).collect::<Vec<_>>().join(", ");
    let Some(items) = sent.given().filter(|items| !items.is_empty()) else {
        return Err(format!(
            "engagement_types must be a non-empty array of type names; the {} endpoint knows: {}",
            endpoint.name(),
            valid()
        ));
    };
    let mut types = Vec::with_capacity(items.len());
    for item in items {
        let Some(name) = item.given() else {
            return Err(format!("engagement_types must hold strings, not {item}"));
        };
        match name.parse::<EngagementType>() {
            Ok(t) if endpoint.allows_type(t) => {
                if !types.contains(&t) {
                    types.push(t);
                }
            }
            Ok(t) => {
                return Err(format!(
                    "engagement type \"{t}\" is not available on the {} endpoint; it knows: {}",
                    endpoint.name(),
                    valid()
                ));
            }
            Err(()) => {
                return Err(format!(
                    "unknown engagement type \"{name}\"; the {} endpoint knows: {}",
                    endpoint.name(),
                    valid()
                ));
            }
        }
    }
    Ok(types)
}

fn read_groupings(
    endpoint: Endpoint,
    sent: &Sent<std::collections::BTreeMap<String, Sent<GroupingBody>>>,
    periods: bool,
) -> Result<Vec<Grouping>, String> {
    let Some(map) = sent.given() else {
        return Err("groupings must be an object of named groupings, e.g. {\"by tweet\": {\"group_by\": [\"tweet.id\", \"engagement.type\"]}}".into());
    };
    let mut groupings = Vec::with_capacity(map.len());
    for (name, spec) in map {
        if RESERVED_MEMBERS.contains(&name.as_str()) {
            return Err(format!(
                "grouping name \"{name}\" is reserved for a member of the response; pick another name"
            ));
        }
        let Some(levels) = spec.given().and_then(|spec| spec.group_by.given()) else {
            return Err(format!(
                "grouping \"{name}\" must be an object with a group_by array, e.g. {{\"group_by\": [\"tweet.id\"]}}"
            ));
        };
        let mut group_by = Vec::with_capacity(levels.len());
        for level in levels {
            match level.given().and_then(|s| s.parse::<GroupBy>().ok()) {
                Some(l) if periods || !l.is_native() => group_by.push(l),
                _ => {
                    let known = if periods {
                        "tweet.id, engagement.type, engagement.day, engagement.hour, engagement.week or engagement.month"
                    } else {
                        "tweet.id, engagement.type, engagement.day or engagement.hour"
                    };
                    return Err(format!("grouping \"{name}\": {level} is not a group_by value; use {known}"));
                }
            }
        }
        groupings.push(Grouping { name: name.clone(), group_by });
    }
    check_groupings(endpoint, &groupings).map_err(|e| e.errors.join("; "))?;
    Ok(groupings)
}

fn read_range(
    body: &QuestionBody,
    limits: &Limits,
    now: DateTime<Utc>,
    zone: &Zone,
) -> Result<(TimeRange, bool), String> {
    let text = |field: &str, sent: &'_ Sent<Option<String>>| match sent {
        Sent::Absent => Ok(None),
        Sent::Given(s) => Ok(s.clone()),
        Sent::Other(other) => Err(format!(
            "{field} must be a string such as \"2015-08-01\" or \"2015-08-01T00:00:00Z\", not {other}"
        )),
    };
    let (start, end) = (text("start", &body.start)?, text("end", &body.end)?);
    // In a zone of part-hour offsets, an end inside a UTC hour could only be rounded to
    // hours the question did not ask for.
    let on_whole_hours = |field: &str, t: DateTime<Utc>| {
        let offset = zone.offset_at(t);
        if offset % 3600 == 0 || is_hour_aligned(t) {
            return Ok(());
        }
        Err(format!(
            "{field} is {} in {zone} ({}), inside a UTC hour; the API counts whole UTC hours, so in this zone give start and end as instants on whole UTC hours, such as {}",
            format_instant(t),
            describe_offset(offset),
            format_instant(crate::time::floor_hour(t))
        ))
    };
    let mut range = TimeRange::from_request_in(start.as_deref(), end.as_deref(), now, zone, on_whole_hours)
        .map_err(|e| e.errors.join("; "))?;
    let earliest = earliest_start();
    if range.start < earliest {
        return Err(format!(
            "start {} is before {}, the earliest instant the historical endpoint can answer for",
            format_instant(range.start),
            format_instant(earliest)
        ));
    }
    let latest = ceil_hour(now);
    let mut clamped = false;
    if range.end > latest {
        if !limits.clamp_future_end {
            return Err(format!(
                "end {} is in the future; the latest end allowed now is {}",
                format_instant(range.end),
                format_instant(latest)
            ));
        }
        if range.start >= latest {
            return Err(format!(
                "start {} is in the future; nothing can be counted yet",
                format_instant(range.start)
            ));
        }
        range.end = latest;
        clamped = true;
    }
    if let Some(max) = limits.max_span_hours {
        let hours = range.hours() as i64;
        if hours > max {
            return Err(format!(
                "the range {} spans {hours} hours ({:.1} days); at most {max} hours ({} days) are allowed per request",
                range.describe(),
                hours as f64 / 24.0,
                max / 24
            ));
        }
    }
    Ok((range, clamped))
}

/// Refuses groupings with time levels in a zone whose offset, somewhere in `range`, is not
/// a whole number of hours: its local days and hours begin inside the API's UTC hours.
fn whole_hours(zone: &Zone, range: TimeRange, groupings: &[Grouping]) -> Result<(), String> {
    let Some(offset) = zone.uneven_offset(range.start, range.end) else { return Ok(()) };
    let mut named: Vec<&str> =
        groupings.iter().flat_map(|g| g.group_by.iter().filter(|l| l.is_time()).map(|l| l.name())).collect();
    if named.is_empty() {
        return Ok(());
    }
    named.sort_unstable();
    named.dedup();
    Err(format!(
        "time_zone {zone} is {} within this range, not a whole number of hours from UTC: its days and hours begin inside the API's UTC hours, so {} cannot be counted exactly in it; group by tweet.id and engagement.type only, or use a zone whose offset is a whole number of hours",
        describe_offset(offset),
        named.join(", ")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn now() -> DateTime<Utc> {
        crate::time::parse_instant("2020-06-15T10:20:00Z").unwrap()
    }

    fn historical(body: Value) -> Result<Query, ApiError> {
        Query::from_json(Endpoint::Historical, &body, &Limits::of(Endpoint::Historical), now())
    }

    fn base() -> Value {
        json!({
            "tweet_ids": ["1060976163948904448", 1045709644067471360u64, "1060976163948904448"],
            "engagement_types": ["impressions", "engagements", "impressions"],
            "groupings": {"g": {"group_by": ["tweet.id", "engagement.type"]}},
            "start": "2020-05-01",
            "end": "2020-05-15T06:30:00Z"
        })
    }

    #[test]
    fn a_good_request_is_read_deduplicated_and_normalized() {
        let q = historical(base()).unwrap();
        assert_eq!(q.tweet_ids, vec![TweetId(1060976163948904448), TweetId(1045709644067471360)]);
        assert_eq!(q.types, vec![EngagementType::Impressions, EngagementType::Engagements]);
        let range = q.range.unwrap();
        assert_eq!(format_instant(range.end), "2020-05-15T07:00:00Z");
        assert_eq!(q.to_raw().end.as_deref(), Some("2020-05-15T07:00:00Z"));
    }

    fn rejected(patch: Value) -> String {
        let mut body = base();
        for (k, v) in patch.as_object().unwrap() {
            body[k] = v.clone();
        }
        historical(body).unwrap_err().errors.join(" | ")
    }

    #[test]
    fn ids_no_tweet_can_have_are_refused() {
        let future = TweetId::minted_at(now() + Duration::hours(1)).to_string();
        let skewed = TweetId::minted_at(now() + Duration::minutes(1)).to_string();
        for bad in
            [json!(["0"]), json!([0]), json!(["9223372036854775808"]), json!([u64::MAX]), json!([future])]
        {
            let message = rejected(json!({ "tweet_ids": bad }));
            assert!(message.contains("IDs no Tweet can have"), "{bad}: {message}");
        }
        let mut body = base();
        body["tweet_ids"] = json!([skewed]);
        assert!(historical(body).is_ok(), "an ID minted a minute ahead of this clock is another clock's");
    }

    #[test]
    fn integral_numbers_are_ids_when_they_are_read_exactly() {
        let mut body = base();
        body["tweet_ids"] = json!([5150.0, 5151]);
        assert_eq!(historical(body).unwrap().tweet_ids, [TweetId(5150), TweetId(5151)]);
        // 2^53 + 1 as a double is 2^53: the ID sent cannot be known.
        for bad in [json!([5150.5]), json!([1.79e18]), json!([9007199254740992.0]), json!([-1.0])] {
            let message = rejected(json!({ "tweet_ids": bad }));
            assert!(message.contains("not Tweet IDs") && message.contains("strings"), "{bad}: {message}");
        }
    }

    #[test]
    fn a_grouping_named_twice_is_refused_and_one_named_once_is_read() {
        let twice =
            br#"{"groupings": {"g": {"group_by": ["tweet.id"]}, "g": {"group_by": ["engagement.type"]}}}"#;
        let err = parse_body(twice).unwrap_err();
        assert!(err.errors[0].contains("names a grouping twice"), "{err:?}");
        let once =
            br#"{"groupings": {"g": {"group_by": ["tweet.id"]}, "h": {"group_by": ["engagement.type"]}}}"#;
        assert_eq!(parse_body(once).unwrap()["groupings"].as_object().unwrap().len(), 2);
        assert!(parse_body(b"{\"groupings\": 3}").is_ok(), "the shape is validation's to refuse");
        assert!(parse_body(b"{").unwrap_err().errors[0].contains("not valid JSON"));
    }

    #[test]
    fn each_rule_has_its_message() {
        assert!(rejected(json!({"tweet_ids": []})).contains("non-empty array"));
        assert!(
            rejected(json!({"tweet_ids": ["12x"]}))
                .contains("not Tweet IDs (decimal digits that fit in 64 bits, best sent as strings")
        );
        let many: Vec<String> = (1..=26).map(|i| i.to_string()).collect();
        assert!(rejected(json!({"tweet_ids": many})).contains("26 distinct IDs given, at most 25"));
        assert!(
            rejected(json!({"engagement_types": ["media_clicks"]}))
                .contains("unknown engagement type \"media_clicks\"")
        );
        assert!(
            rejected(json!({"engagement_types": ["quote_tweets"]}))
                .contains("not available on the historical endpoint")
        );
        assert!(rejected(json!({"start": "2014-08-31"})).contains("before 2014-09-01T00:00:00Z"));
        assert!(rejected(json!({"end": "2020-06-15T11:00:01Z"})).contains("in the future"));
        assert!(rejected(json!({"start": "2020-04-01"})).contains("at most 672 hours"));
        assert!(rejected(json!({"start": 20200401})).contains("must be a string"));
        assert!(rejected(json!({"groupings": {"start": {"group_by": ["tweet.id"]}}})).contains("reserved"));
        assert!(
            rejected(json!({"groupings": {"g": {"group_by": ["tweet.day"]}}}))
                .contains("not a group_by value")
        );
        assert!(historical(json!([1, 2])).unwrap_err().errors[0].contains("JSON object"));
    }

    #[test]
    fn answer_counts_multiply_the_levels() {
        // 2 Tweets, 2 types, 2020-05-01T00 to 2020-05-15T07: 15 days touched, 343 hours.
        let mut q = historical(base()).unwrap();
        let g = |levels: &[GroupBy]| Grouping { name: "g".into(), group_by: levels.to_vec() };
        let cases: [(&[GroupBy], u64); 5] = [
            (&[GroupBy::TweetId, GroupBy::EngagementType], 4),
            (&[GroupBy::EngagementDay], 15),
            (&[GroupBy::EngagementHour], 24),
            (
                &[GroupBy::TweetId, GroupBy::EngagementType, GroupBy::EngagementDay, GroupBy::EngagementHour],
                4 * 343,
            ),
            (&[GroupBy::EngagementHour, GroupBy::EngagementDay], 343),
        ];
        for (levels, expected) in cases {
            q.groupings = vec![g(levels)];
            assert_eq!(q.answer_counts(), expected, "{levels:?}");
        }
        q.groupings = vec![g(&[GroupBy::TweetId]), g(&[GroupBy::EngagementDay])];
        assert_eq!(q.answer_counts(), 2 + 15);
    }

    #[test]
    fn every_field_is_reported_at_once() {
        let err =
            historical(json!({"tweet_ids": "1", "engagement_types": [], "groupings": {}, "start": "x"}))
                .unwrap_err();
        assert_eq!(err.errors.len(), 4, "{err:?}");
    }

    #[test]
    fn a_member_of_another_shape_is_shown_as_it_was_sent() {
        let err = historical(json!({
            "tweet_ids": [true, "12x", 5.5, 7],
            "engagement_types": ["impressions", 3],
            "groupings": {"g": {"group_by": ["tweet.id", {"level": 1}]}},
            "start": 20200101,
        }))
        .unwrap_err();
        assert_eq!(
            err.errors,
            [
                "tweet_ids holds values that are not Tweet IDs (decimal digits that fit in 64 bits, best sent as strings: a number of 2^53 or more written with a fraction or exponent, such as 1.79e18, loses digits): true, \"12x\", 5.5",
                "engagement_types must hold strings, not 3",
                "grouping \"g\": {\"level\":1} is not a group_by value; use tweet.id, engagement.type, engagement.day or engagement.hour",
                "start must be a string such as \"2015-08-01\" or \"2015-08-01T00:00:00Z\", not 20200101",
            ]
        );
    }

    #[test]
    fn a_body_is_read_only_from_a_json_object() {
        let read = |text: &str| read_body::<QuestionBody>(text.as_bytes()).map_err(|e| e.errors.join("; "));
        assert_eq!(read("[1, 2, 3]"), Err(NOT_AN_OBJECT.to_string()), "not read field by position");
        assert!(
            read("{\"tweet_ids\": [\"1\"]").unwrap_err().starts_with("the request body is not valid JSON")
        );
        let body = read(r#"{"tweet_ids": ["1", 2], "start": null}"#).unwrap();
        assert_eq!(
            body.tweet_ids,
            Sent::Given(vec![Sent::Given(IdText::Decimal("1".into())), Sent::Given(IdText::Integer(2))])
        );
        assert_eq!((body.start, body.end), (Sent::Given(None), Sent::Absent));
    }

    #[test]
    fn the_end_of_the_hour_in_progress_is_not_the_future() {
        let mut body = base();
        body["start"] = json!("2020-06-01");
        body["end"] = json!("2020-06-15T11:00:00Z");
        assert!(historical(body.clone()).is_ok());
        let relaxed = Limits { max_tweet_ids: 10_000, max_span_hours: None, clamp_future_end: true };
        body["end"] = json!("2030-01-01");
        let q = Query::from_json(Endpoint::Historical, &body, &relaxed, now()).unwrap();
        assert!(q.end_clamped);
        assert_eq!(format_instant(q.range.unwrap().end), "2020-06-15T11:00:00Z");
    }
}

//! How a question is read: the API's members, and on the service's own endpoints its
//! members too (`partial`, `derive`, `top`), refusing there any member nobody reads; then
//! checked into a [`Question`] whose range is not optional.

use chrono::{DateTime, Utc};
use engagement::derive::Derivations;
use engagement::request::{Native, QuestionBody, Sent};
use engagement::{ApiError, Endpoint, GroupBy, Limits, Query, TimeRange, Zone};

// The drop-in endpoint's body is read this way too, to say that `partial` is not for it.
/// A question to the native endpoint.
#[derive(Debug, serde::Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct NativeQuestion {
    #[serde(flatten)]
    pub question: QuestionBody,
    /// The zone days, weeks, months and hours are counted in: an IANA name
    /// (`America/New_York`) or an offset (`+02:00`); absent or `UTC`, the API's own UTC days.
    /// A date-only `start` or `end` is that date's local midnight. A zone whose offset is not
    /// a whole number of hours (`Asia/Kolkata`) is refused for groupings with time levels.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>, example = "America/New_York"))]
    pub time_zone: Sent<Option<String>>,
    /// List slices that failed after retries under `meta.incomplete` and answer the rest,
    /// instead of failing the question.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<bool>))]
    pub partial: Sent<Option<bool>>,
    /// Numbers to derive from the answer: `["engagement_rate"]` (engagements / impressions
    /// over the range, per Tweet and overall; both types must be asked for).
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Vec<String>>, example = json!(["engagement_rate"])))]
    pub derive: Sent<Option<Vec<Sent<String>>>>,
    /// The Top Tweets: the `n` Tweets with the most of type `by` over the range, ties by
    /// Tweet ID ascending; `by` must be one of the question's types.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<engagement::derive::TopBody>))]
    pub top: Sent<Option<engagement::derive::TopBody>>,
}

impl NativeQuestion {
    /// Reads a question's body as `reading` says (the native members `partial`, `derive`
    /// and `top`, or not; members nobody reads refused, or not).
    pub fn read(body: &[u8], reading: Reading) -> Result<NativeQuestion, ApiError> {
        if reading.strict {
            engagement::request::read_strict_body(body, engagement::members::QUESTION)
        } else {
            engagement::request::read_body(body)
        }
    }

    /// The members only the native answer reads (`time_zone`, `partial`, `derive`, `top`)
    /// that this body gives: not absent, not `null`, and not `"partial": false`.
    pub fn native_members(&self) -> Vec<&'static str> {
        // `"partial": false` asks for what the API's shape gives anyway.
        let given = [
            ("time_zone", !matches!(self.time_zone, Sent::Absent | Sent::Given(None))),
            ("partial", !matches!(self.partial, Sent::Absent | Sent::Given(None | Some(false)))),
            ("derive", !matches!(self.derive, Sent::Absent | Sent::Given(None))),
            ("top", !matches!(self.top, Sent::Absent | Sent::Given(None))),
        ];
        given.into_iter().filter_map(|(name, given)| given.then_some(name)).collect()
    }

    /// The levels only the native answer knows (`engagement.week`, `engagement.month`) that
    /// this body's groupings name.
    fn native_levels(&self) -> Vec<&'static str> {
        let Some(groupings) = self.question.groupings.given() else { return Vec::new() };
        let named = |level: GroupBy| {
            groupings
                .values()
                .filter_map(|g| g.given()?.group_by.given())
                .flatten()
                .any(|l| l.given().is_some_and(|name| name == level.name()))
        };
        GroupBy::NATIVE.into_iter().filter(|l| named(*l)).map(GroupBy::name).collect()
    }

    /// The zone the body names, UTC if none.
    fn zone(&self) -> Result<Zone, ApiError> {
        match &self.time_zone {
            Sent::Absent | Sent::Given(None) => Ok(Zone::Utc),
            Sent::Given(Some(name)) => Zone::parse(name).map_err(ApiError::new),
            Sent::Other(other) => Err(ApiError::new(format!(
                "time_zone must be a string such as \"America/New_York\" or \"+02:00\", not {other}"
            ))),
        }
    }

    /// The `/totals` or `/28hr` question (`endpoint`, asked at `path`) this body asks, at
    /// `now`: such a question has no range, partial answers or derived numbers, and says
    /// so rather than dropping them.
    pub fn current(
        &self,
        endpoint: Endpoint,
        path: &str,
        limits: &Limits,
        now: DateTime<Utc>,
    ) -> Result<Query, ApiError> {
        let range = [("start", &self.question.start), ("end", &self.question.end)];
        let mut not_here: Vec<&str> = range
            .into_iter()
            .filter(|(_, sent)| !matches!(sent, Sent::Absent))
            .map(|(name, _)| name)
            .collect();
        not_here.extend(self.native_members());
        if !not_here.is_empty() {
            let span = match endpoint {
                Endpoint::Totals => "counts each Tweet's whole life so far",
                _ => "counts the last 28 hours",
            };
            return Err(ApiError::new(format!(
                "{path} {span} and takes no {}: ask /v1/historical for a range, partial answers or derived numbers",
                not_here.join(", ")
            )));
        }
        Query::from_body(endpoint, &self.question, limits, now)
    }

    /// The historical question this body asks, read as `reading` says, at `now`.
    pub fn historical(
        &self,
        reading: Reading,
        limits: &Limits,
        now: DateTime<Utc>,
    ) -> Result<Question, ApiError> {
        let mut named = Vec::new();
        if !reading.native {
            named = self.native_members();
            named.extend(self.native_levels());
        }
        if !named.is_empty() {
            let list: Vec<String> = named.iter().map(|m| format!("\"{m}\"")).collect();
            let verb = if named.len() == 1 { "is" } else { "are" };
            return Err(ApiError::new(format!(
                "{} {verb} only for the native answer (/v1/historical, /v1/jobs, stitcher query --native); the API's own shape counts UTC days and answers in full, with no place for them",
                list.join(", ")
            )));
        }
        let partial = match &self.partial {
            Sent::Absent | Sent::Given(None) => false,
            Sent::Given(Some(b)) => *b,
            Sent::Other(other) => {
                return Err(ApiError::new(format!("\"partial\" must be true or false, not {other}")));
            }
        };
        let native = if reading.native { Native::in_zone(self.zone()?) } else { Native::default() };
        let query = Query::from_body_with(Endpoint::Historical, &self.question, limits, now, &native)?;
        let derive = Derivations::read(&self.derive, &self.top, &query.types)?;
        let range = query.range.ok_or_else(|| ApiError::new("a historical question needs a range"))?;
        Ok(Question { query, range, partial, derive })
    }
}

/// How a question's body is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reading {
    /// `partial`, `derive` and `top` are read (the native answer has room for them).
    pub native: bool,
    /// A member nobody reads is refused, not ignored as the API ignores it.
    pub strict: bool,
}

impl Reading {
    /// The drop-in endpoint: the API's body, as leniently as the API reads it.
    pub const DROP_IN: Reading = Reading { native: false, strict: false };
    /// The service's own endpoints: its members too, and nothing else.
    pub const NATIVE: Reading = Reading { native: true, strict: true };
}

/// A validated historical question.
#[derive(Debug, Clone)]
pub struct Question {
    pub query: Query,
    /// The normalized range (a historical question always has one).
    pub range: TimeRange,
    /// List the slices that failed under `incomplete` instead of failing the question.
    pub partial: bool,
    /// Numbers to derive from the answer (the engagement rate, the Top Tweets).
    pub derive: Derivations,
}

impl Question {
    /// Its plan: its Tweets in batches of 25 over the grid's windows of its range.
    pub(crate) fn plan(&self) -> stitch::Plan {
        stitch::plan(&self.query.tweet_ids, self.range, Endpoint::Historical.max_tweet_ids())
    }

    /// The same Tweets and range, per Tweet and type, for the types `derive` reads.
    pub(crate) fn per_tweet(&self) -> Question {
        let mut query = self.query.clone();
        query.types = self.derive.types();
        query.groupings = vec![engagement::Grouping {
            name: "per tweet".into(),
            group_by: vec![engagement::GroupBy::TweetId, engagement::GroupBy::EngagementType],
        }];
        Question { query, range: self.range, partial: self.partial, derive: Derivations::default() }
    }
}

//! The documentation types of the OpenAPI document: what the routes write (answers,
//! errors, probes) and the bodies of `/totals` and `/28hr`, beside the types questions are
//! read into. Routes use them in their `utoipa::path`s; the document gathers them.

use std::collections::BTreeMap;

use serde::Serialize;
use utoipa::ToSchema;

use crate::error::FailedSlice;
use engine::Meta;

/// The Engagement API's answer: `start`, `end`, the special members, and one tree per
/// grouping whose leaves are counts as decimal strings.
#[derive(Debug, Serialize, ToSchema)]
pub struct DropInAnswer {
    pub start: String,
    pub end: String,
    pub unavailable_tweet_ids: Option<Vec<String>>,
    pub unsupported_for_video_views_tweet_ids: Option<Vec<String>>,
    pub unsupported_for_impressions_engagements_tweet_ids: Option<Vec<String>>,
    pub errors: Option<Vec<String>>,
    /// One tree per grouping, under the grouping's name.
    #[serde(flatten)]
    #[schema(value_type = BTreeMap<String, Object>)]
    pub groupings: BTreeMap<String, serde_json::Value>,
}

/// The native answer: the same tree with integer counts, and how it was made.
#[derive(Debug, Serialize, ToSchema)]
pub struct NativeAnswer {
    #[schema(value_type = Object)]
    pub data: serde_json::Value,
    pub meta: NativeMetaDoc,
    /// With `"derive"`: the derived numbers asked for.
    pub derived: Option<engagement::derive::Numbers>,
    /// With `"top"`: the Tweets with the most of its type, most first, ties by Tweet ID.
    pub top: Option<Vec<engagement::derive::Ranked>>,
}

// The bodies of `/totals` and `/28hr` are read as `QuestionBody`, by their endpoint's
// rules; these say what those rules allow, with the same member schemas.
/// A `/totals` question: lifetime counts, so no range; its own types, and no time levels.
#[derive(Debug, ToSchema)]
pub struct TotalsQuestion {
    #[schema(schema_with = engagement::openapi::tweet_ids, required = true)]
    pub tweet_ids: serde_json::Value,
    /// impressions, engagements, favorites, retweets, quote_tweets, replies, video_views.
    #[schema(schema_with = engagement::openapi::totals_engagement_types, required = true)]
    pub engagement_types: serde_json::Value,
    #[schema(schema_with = engagement::openapi::totals_groupings, required = true)]
    pub groupings: serde_json::Value,
}

/// A `/28hr` question: the last 28 hours, so no range; the types and groupings of
/// `/historical`.
#[derive(Debug, ToSchema)]
pub struct Hr28Question {
    #[schema(schema_with = engagement::openapi::tweet_ids, required = true)]
    pub tweet_ids: serde_json::Value,
    #[schema(schema_with = engagement::openapi::engagement_types, required = true)]
    pub engagement_types: serde_json::Value,
    #[schema(schema_with = engagement::openapi::groupings, required = true)]
    pub groupings: serde_json::Value,
}

/// `/v1/totals`' question: `/totals`' body, naming nothing else (see `openapi::Strict`).
#[derive(Debug, ToSchema)]
pub struct NativeTotalsQuestion(pub TotalsQuestion);

/// `/v1/28hr`'s question: `/28hr`'s body, naming nothing else (see `openapi::Strict`).
#[derive(Debug, ToSchema)]
pub struct NativeHr28Question(pub Hr28Question);

/// The API's `/totals` or `/28hr` answer: as `/historical`'s, with `start` and `end` only
/// for `/28hr`.
#[derive(Debug, Serialize, ToSchema)]
pub struct NowDropInAnswer {
    pub start: Option<String>,
    pub end: Option<String>,
    pub unavailable_tweet_ids: Option<Vec<String>>,
    pub unsupported_for_video_views_tweet_ids: Option<Vec<String>>,
    pub unsupported_for_impressions_engagements_tweet_ids: Option<Vec<String>>,
    pub errors: Option<Vec<String>>,
    /// One tree per grouping, under the grouping's name.
    #[serde(flatten)]
    #[schema(value_type = BTreeMap<String, Object>)]
    pub groupings: BTreeMap<String, serde_json::Value>,
}

/// The native `/v1/totals` and `/v1/28hr` answer: the tree with integer counts, and how
/// it was made.
#[derive(Debug, Serialize, ToSchema)]
pub struct NowNativeAnswer {
    #[schema(value_type = Object)]
    pub data: serde_json::Value,
    pub meta: engine::NowMeta,
}

/// `meta` of a native answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct NativeMetaDoc {
    #[serde(flatten)]
    pub meta: Meta,
    /// Slices that failed, when `partial` was asked for.
    pub incomplete: Option<Vec<FailedSlice>>,
}

/// How a native answer is written.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum AnswerFormat {
    Json,
    Csv,
}

/// Every error: the API's shape, with the request's ID and the slices that failed.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    pub errors: Vec<String>,
    pub request_id: Option<String>,
    pub failed_slices: Option<Vec<FailedSlice>>,
}

/// The errors a question can get, each with an [`ErrorBody`].
#[derive(Debug, utoipa::IntoResponses)]
pub enum QuestionErrors {
    #[response(
        status = 400,
        description = "A bad question, or one the upstream's per-minute budget can never carry before the deadline; before any upstream call"
    )]
    BadRequest(ErrorBody),
    #[response(status = 401, description = "No or unknown API key, or a bad OAuth signature")]
    Unauthorized(ErrorBody),
    #[response(status = 403, description = "Handle not granted to the key, or Tweets of another handle")]
    Forbidden(ErrorBody),
    #[response(status = 405, description = "A method the route does not answer (Allow names those it does)")]
    MethodNotAllowed(ErrorBody),
    #[response(status = 408, description = "The body did not arrive within server.header_timeout_secs")]
    RequestTimeout(ErrorBody),
    #[response(
        status = 413,
        description = "Body over server.max_body_bytes (refused from Content-Length, before it is read)"
    )]
    PayloadTooLarge(ErrorBody),
    #[response(status = 415, description = "A body that is not JSON, or a Content-Encoding other than gzip")]
    UnsupportedMediaType(ErrorBody),
    #[response(
        status = 429,
        description = "The per-minute budget is busy with other questions; Retry-After is the wait until this one fits"
    )]
    RateBudget(ErrorBody),
    #[response(status = 502, description = "Upstream failures outlasted the retries")]
    UpstreamFailed(ErrorBody),
    #[response(
        status = 503,
        description = "Too many questions in flight, shutting down, or cut off by shutdown after the grace period (Retry-After)"
    )]
    Unavailable(ErrorBody),
    #[response(status = 504, description = "The deadline passed")]
    DeadlineExceeded(ErrorBody),
}

/// What any route answers to a method it does not serve.
#[derive(Debug, utoipa::IntoResponses)]
pub enum RouteErrors {
    #[response(status = 405, description = "A method the route does not answer (Allow names those it does)")]
    MethodNotAllowed(ErrorBody),
}

/// A probe's answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct Status {
    pub status: String,
    /// With `redis.url` set: whether Redis is reached.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redis: Option<String>,
    /// `/readyz`: whether the Engagement API could be reached when last tried (at start, and
    /// by every call since): `reachable`, `not tried yet`, or `unreachable: ` and why.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upstream: Option<String>,
}

//! The OpenAPI description of the service, served at `GET /openapi.json`. Bodies are read
//! from JSON by hand (to give the API's messages), so the request and answer shapes here
//! are documentation types that mirror what the routes accept and write.

use std::collections::BTreeMap;

use axum::Json;
use serde::Serialize;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi, ToSchema};

use crate::engine::Meta;
use crate::error::FailedSlice;

/// A question, in the Engagement API's own body.
#[derive(Debug, Serialize, ToSchema)]
#[schema(example = json!({
    "tweet_ids": ["1790000000000000000", "1850000000000000000"],
    "engagement_types": ["impressions", "engagements"],
    "groupings": {"per tweet": {"group_by": ["tweet.id", "engagement.type"]}},
    "start": "2024-05-01", "end": "2025-03-01"
}))]
pub struct Question {
    /// Tweet IDs as decimal strings (bare integers are read too); up to
    /// `server.max_tweet_ids` distinct.
    pub tweet_ids: Vec<String>,
    /// Types of the historical endpoint: impressions, engagements, favorites, retweets,
    /// replies, video_views, media_views, media_engagements, url_clicks, hashtag_clicks,
    /// detail_expands, permalink_clicks, app_install_attempts, app_opens, email_tweet,
    /// user_follows, user_profile_clicks.
    pub engagement_types: Vec<String>,
    /// Up to 3 named groupings; each name is a top-level key of the answer.
    pub groupings: BTreeMap<String, GroupingSpec>,
    /// `YYYY-MM-DD` or RFC 3339, UTC; floored to the hour; from 2014-09-01 on. Absent with
    /// `end`: the last 28 days.
    pub start: Option<String>,
    /// `YYYY-MM-DD` or RFC 3339, UTC; ceiled to the hour; a future end is clamped to the
    /// end of the hour in progress.
    pub end: Option<String>,
}

/// One grouping.
#[derive(Debug, Serialize, ToSchema)]
pub struct GroupingSpec {
    /// 1 to 4 of tweet.id, engagement.type, engagement.day, engagement.hour; 4 only as
    /// [tweet.id, engagement.type, engagement.day, engagement.hour] or
    /// [engagement.type, tweet.id, engagement.day, engagement.hour].
    pub group_by: Vec<String>,
}

/// A question to the native endpoint.
#[derive(Debug, Serialize, ToSchema)]
pub struct NativeQuestion {
    #[serde(flatten)]
    pub question: Question,
    /// List slices that failed after retries under `meta.incomplete` and answer the rest,
    /// instead of failing the question.
    pub partial: Option<bool>,
}

/// The Engagement API's answer: `start`, `end`, the special members, and one tree per
/// grouping whose leaves are counts as decimal strings.
#[derive(Debug, Serialize, ToSchema)]
pub struct DropInAnswer {
    pub start: String,
    pub end: String,
    pub unavailable_tweet_ids: Option<Vec<String>>,
    pub unsupported_for_video_views_tweet_ids: Option<Vec<String>>,
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
}

/// `meta` of a native answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct NativeMetaDoc {
    #[serde(flatten)]
    pub meta: Meta,
    /// Slices that failed, when `partial` was asked for.
    pub incomplete: Option<Vec<FailedSlice>>,
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
}

struct Security;

impl Modify for Security {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
        components.add_security_scheme(
            "oauth1",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                "Authorization",
                "OAuth 1.0a HMAC-SHA1 with the app's consumer key and a configured handle's access token, signed over the URL the client sees",
            ))),
        );
    }
}

/// The service's OpenAPI document.
#[derive(Debug, OpenApi)]
#[openapi(
    info(title = "stitcher", description = "Engagement API /historical questions over any range and any number of Tweets, stitched from the calls the API allows."),
    paths(crate::routes::drop_in, crate::routes::native, crate::jobs_api::submit, crate::jobs_api::status, crate::jobs_api::result, crate::jobs_api::cancel, crate::routes::livez, crate::routes::readyz, crate::metrics::serve, serve),
    components(schemas(Question, GroupingSpec, NativeQuestion, DropInAnswer, NativeAnswer, NativeMetaDoc, Meta, FailedSlice, ErrorBody, Status, crate::jobs::JobStatus, crate::jobs::JobState, crate::jobs::JobError, crate::engine::ProgressSnapshot)),
    modifiers(&Security)
)]
pub struct ApiDoc;

/// `GET /openapi.json`.
#[utoipa::path(get, path = "/openapi.json", tag = "operations", responses((status = 200, description = "This document", content_type = "application/json"), RouteErrors))]
pub async fn serve() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}

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
    /// `server.max_tweet_ids` distinct. An ID no Tweet can have (0, 2^63 or more, or minted
    /// after now) is refused.
    #[schema(schema_with = tweet_ids_schema)]
    pub tweet_ids: Vec<String>,
    /// Types of the historical endpoint: impressions, engagements, favorites, retweets,
    /// replies, video_views, media_views, media_engagements, url_clicks, hashtag_clicks,
    /// detail_expands, permalink_clicks, app_install_attempts, app_opens, email_tweet,
    /// user_follows, user_profile_clicks.
    #[schema(schema_with = engagement_types_schema)]
    pub engagement_types: Vec<String>,
    /// Up to 3 named groupings; each name is a top-level key of the answer. Only one may
    /// have 4 levels (the API's rule, which a schema cannot say).
    #[schema(schema_with = groupings_schema)]
    pub groupings: BTreeMap<String, GroupingSpec>,
    /// `YYYY-MM-DD` or RFC 3339, UTC; floored to the hour; from 2014-09-01 on. Absent with
    /// `end`: the last 28 days.
    pub start: Option<String>,
    /// `YYYY-MM-DD` or RFC 3339, UTC; ceiled to the hour; a future end is clamped to the
    /// end of the hour in progress.
    pub end: Option<String>,
}

/// At least one Tweet ID, as a decimal string or an integer, from 1 to the newest ID that
/// can exist now (minted before the end of the hour in progress; the document is made
/// afresh for each request, so its bound moves as the service's does).
fn tweet_ids_schema() -> utoipa::openapi::Array {
    use utoipa::openapi::schema::{ArrayBuilder, ObjectBuilder, OneOfBuilder, Type};
    let newest = engagement::request::newest_tweet_id(chrono::Utc::now()).0;
    let as_text = ObjectBuilder::new()
        .schema_type(Type::String)
        .pattern(Some(format!("^({})$", decimal_at_most(newest))))
        .examples([serde_json::json!("1790000000000000000")]);
    let as_number = ObjectBuilder::new()
        .schema_type(Type::Integer)
        .format(Some(utoipa::openapi::SchemaFormat::KnownFormat(utoipa::openapi::KnownFormat::Int64)))
        .minimum(Some(1))
        .maximum(Some(newest));
    ArrayBuilder::new().items(OneOfBuilder::new().item(as_text).item(as_number)).min_items(Some(1)).build()
}

/// A regular expression (alternatives, without anchors) for the decimal numbers from 1 to
/// `n` without leading zeros.
fn decimal_at_most(n: u64) -> String {
    let digits: Vec<u8> = n.to_string().bytes().map(|b| b - b'0').collect();
    let k = digits.len();
    let mut alternatives = Vec::new();
    // Fewer digits than n.
    if k > 1 {
        alternatives.push(format!("[1-9][0-9]{{0,{}}}", k - 2));
    }
    // As many digits: n's first i digits, then a smaller one, then any.
    for i in 0..k {
        let low = if i == 0 { 1 } else { 0 };
        if digits[i] > low {
            let prefix: String = digits[..i].iter().map(|d| char::from(b'0' + d)).collect();
            let rest = k - i - 1;
            alternatives.push(format!("{prefix}[{low}-{}][0-9]{{{rest}}}", digits[i] - 1));
        }
    }
    alternatives.push(n.to_string());
    alternatives.join("|")
}

/// The names of a historical question's types, for its schema.
fn type_names() -> Vec<&'static str> {
    engagement::Endpoint::Historical.types().map(|t| t.name()).collect()
}

fn engagement_types_schema() -> utoipa::openapi::Array {
    use utoipa::openapi::schema::{ArrayBuilder, ObjectBuilder, Type};
    let name = ObjectBuilder::new().schema_type(Type::String).enum_values(Some(type_names()));
    ArrayBuilder::new().items(name).min_items(Some(1)).build()
}

/// 1 to 3 named groupings; a name may not be one of the answer's own members.
fn groupings_schema() -> utoipa::openapi::Object {
    use utoipa::openapi::schema::{ObjectBuilder, Type};
    let reserved = engagement::tree::RESERVED_MEMBERS.join("|");
    let name = ObjectBuilder::new().schema_type(Type::String).pattern(Some(format!("^(?!({reserved})$)")));
    ObjectBuilder::new()
        .schema_type(Type::Object)
        .additional_properties(Some(utoipa::openapi::Ref::from_schema_name("GroupingSpec")))
        .property_names(Some(name))
        .min_properties(Some(1))
        .max_properties(Some(engagement::vocabulary::MAX_GROUPINGS))
        .build()
}

/// 1 to 3 distinct levels, or all 4 in one of the two orders the API allows.
fn group_by_schema() -> utoipa::openapi::schema::Schema {
    use utoipa::openapi::schema::{ArrayBuilder, ObjectBuilder, OneOfBuilder, Type};
    let level =
        |names: &[&str]| ObjectBuilder::new().schema_type(Type::String).enum_values(Some(names.to_vec()));
    let all = ["tweet.id", "engagement.type", "engagement.day", "engagement.hour"];
    let few = ArrayBuilder::new().items(level(&all)).min_items(Some(1)).max_items(Some(3)).unique_items(true);
    let mut choices = OneOfBuilder::new().item(few);
    for first in [["tweet.id", "engagement.type"], ["engagement.type", "tweet.id"]] {
        let order = [first[0], first[1], "engagement.day", "engagement.hour"];
        let fixed = ArrayBuilder::new()
            .prefix_items(order.iter().map(|name| level(&[name])))
            .items(utoipa::openapi::schema::ArrayItems::False)
            .min_items(Some(4));
        choices = choices.item(fixed);
    }
    utoipa::openapi::schema::Schema::OneOf(choices.build())
}

/// One grouping.
#[derive(Debug, Serialize, ToSchema)]
pub struct GroupingSpec {
    /// 1 to 4 of tweet.id, engagement.type, engagement.day, engagement.hour; 4 only as
    /// [tweet.id, engagement.type, engagement.day, engagement.hour] or
    /// [engagement.type, tweet.id, engagement.day, engagement.hour].
    #[schema(schema_with = group_by_schema)]
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
    paths(crate::routes::drop_in, crate::routes::native, crate::jobs_api::submit, crate::jobs_api::status, crate::jobs_api::result, crate::jobs_api::cancel, crate::usage::usage, crate::routes::livez, crate::routes::readyz, crate::metrics::serve, serve),
    components(schemas(Question, GroupingSpec, NativeQuestion, DropInAnswer, NativeAnswer, NativeMetaDoc, Meta, FailedSlice, ErrorBody, Status, crate::jobs::JobStatus, crate::jobs::JobState, crate::jobs::JobError, crate::engine::ProgressSnapshot, crate::usage::Usage, crate::usage::UsedHandle, crate::settings::CapPolicy)),
    modifiers(&Security)
)]
pub struct ApiDoc;

/// `GET /openapi.json`.
#[utoipa::path(get, path = "/openapi.json", tag = "operations", responses((status = 200, description = "This document", content_type = "application/json"), RouteErrors))]
pub async fn serve() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimals_at_most_n_are_every_shorter_number_then_each_smaller_prefix() {
        assert_eq!(decimal_at_most(7), "[1-6][0-9]{0}|7");
        assert_eq!(decimal_at_most(1790), "[1-9][0-9]{0,2}|1[0-6][0-9]{2}|17[0-8][0-9]{1}|1790");
        assert_eq!(decimal_at_most(20), "[1-9][0-9]{0,0}|[1-1][0-9]{1}|20");
    }
}

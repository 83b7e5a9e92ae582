//! The OpenAPI description of the service, served at `GET /openapi.json`. A question's body
//! is described by the types it is read into ([`QuestionBody`], [`NativeQuestion`]); the
//! answers here are documentation types that mirror what the routes write.

use axum::Json;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use engagement::request::{GroupingBody, QuestionBody};

use crate::error::FailedSlice;
use crate::schemas::*;
use engine::Meta;
use engine::NativeQuestion;

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

/// The service's own endpoints read no member they do not name: their bodies say
/// `additionalProperties: false`, in groupings and `top` too. The drop-in endpoints take
/// what the API takes. Written on the document itself, as the native question is the API's
/// body with more members (which JSON Schema cannot close when they come from `allOf`).
struct Strict;

impl Strict {
    /// `schema` closed: its properties only.
    fn closed(mut schema: serde_json::Value) -> serde_json::Value {
        schema["additionalProperties"] = serde_json::Value::Bool(false);
        schema
    }

    /// `schema` (an object) closed, its groupings each a closed grouping.
    fn closed_question(schema: serde_json::Value, grouping: serde_json::Value) -> serde_json::Value {
        let mut schema = Self::closed(schema);
        if let Some(groupings) = schema.pointer_mut("/properties/groupings") {
            groupings["additionalProperties"] = grouping;
        }
        schema
    }

    fn apply(doc: &mut serde_json::Value) -> Option<()> {
        let schemas = doc.pointer_mut("/components/schemas")?.as_object_mut()?;
        let grouping = Self::closed(schemas.get("GroupingSpec")?.clone());
        // A native historical question's levels: weeks and months too.
        let mut historical_grouping = grouping.clone();
        *historical_grouping.pointer_mut("/properties/group_by")? =
            serde_json::to_value(engagement::openapi::native_group_by()).ok()?;
        schemas.insert("NativeGroupingSpec".into(), grouping);
        schemas.insert("NativeHistoricalGroupingSpec".into(), historical_grouping);
        let native_grouping = serde_json::json!({"$ref": "#/components/schemas/NativeGroupingSpec"});
        let historical_grouping =
            serde_json::json!({"$ref": "#/components/schemas/NativeHistoricalGroupingSpec"});
        let top = Self::closed(schemas.get("TopSpec")?.clone());
        schemas.insert("TopSpec".into(), top);

        // The API's question and the native members, as one closed object.
        let question = schemas.get("Question")?.clone();
        let native = schemas.get("NativeQuestion")?.clone();
        let mut merged = question.clone();
        let more = native.pointer("/allOf/1/properties")?.as_object()?.clone();
        merged.get_mut("properties")?.as_object_mut()?.extend(more);
        if let Some(described) = native.get("description") {
            merged["description"] = described.clone();
        }
        schemas.insert("NativeQuestion".into(), Self::closed_question(merged, historical_grouping));

        let totals = schemas.get("TotalsQuestion")?.clone();
        let totals_grouping =
            Self::closed(totals.pointer("/properties/groupings/additionalProperties")?.clone());
        schemas.insert("NativeTotalsQuestion".into(), Self::closed_question(totals, totals_grouping));
        let hr28 = schemas.get("Hr28Question")?.clone();
        schemas.insert("NativeHr28Question".into(), Self::closed_question(hr28, native_grouping));
        let watch = Self::closed(schemas.get("WatchBody")?.clone());
        schemas.insert("WatchBody".into(), watch);
        Some(())
    }
}

impl Modify for Strict {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        edit_as_json(openapi, Self::apply);
    }
}

/// Edits `openapi` as its JSON with `apply`; left as it was if `apply` finds the document
/// not as it expects (`None`).
fn edit_as_json(openapi: &mut utoipa::openapi::OpenApi, apply: fn(&mut serde_json::Value) -> Option<()>) {
    let Ok(mut doc) = serde_json::to_value(&*openapi) else { return };
    if apply(&mut doc).is_none() {
        return;
    }
    if let Ok(edited) = serde_json::from_value(doc) {
        *openapi = edited;
    }
}

/// The answers that can be reused say so: their `200` carries the caching headers of
/// [`crate::caching`], and a `304` answers an entity tag the client holds. Written once on
/// the document for every such route.
struct Cacheable;

impl Cacheable {
    const PATHS: [&'static str; 3] =
        ["/v1/historical", "/insights/engagement/historical", "/v1/jobs/{id}/result"];

    fn apply(doc: &mut serde_json::Value) -> Option<()> {
        let header =
            |description: &str| serde_json::json!({"schema": {"type": "string"}, "description": description});
        let headers = serde_json::json!({
            "etag": header("A weak entity tag of the answer's content in this shape; send it back in If-None-Match to get 304 while the answer is the same"),
            "cache-control": header("private, max-age: while every hour is settled, until a Tweet's status may be asked again (store.status_ttl_secs); else store.fresh_ttl_secs"),
            "stitcher-result": header("calls=N, from_store=N, fetched=N, synthesized=N, shared=N: upstream calls made, grid slices held, fetched and synthesized, and calls joined from other questions"),
            "server-timing": header("budget, upstream and render: milliseconds waiting for the per-minute budget, calling, and rendering"),
        });
        for path in Self::PATHS {
            let operation = doc.pointer_mut(&format!("/paths/{}", path.replace('/', "~1")))?;
            let responses = operation.as_object_mut()?.values_mut().next()?.get_mut("responses")?;
            responses.get_mut("200")?["headers"] = headers.clone();
            responses["304"] = serde_json::json!({"description": "Not Modified: If-None-Match named this answer's entity tag; no body", "headers": headers.clone()});
        }
        Some(())
    }
}

impl Modify for Cacheable {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        edit_as_json(openapi, Self::apply);
    }
}

/// The service's OpenAPI document.
#[derive(Debug, OpenApi)]
#[openapi(
    info(title = "stitcher", description = "Engagement API /historical questions over any range and any number of Tweets, stitched from the calls the API allows."),
    paths(crate::historical::drop_in, crate::historical::native, crate::estimate::estimate, crate::current::totals, crate::current::hr28, crate::current::native_totals, crate::current::native_28hr, crate::jobs::submit, crate::jobs::status, crate::jobs::result, crate::jobs::cancel, crate::usage::usage, crate::watches::create, crate::watches::list, crate::watches::status, crate::watches::delete, crate::probes::livez, crate::probes::readyz, crate::probes::metrics, serve),
    components(schemas(QuestionBody, GroupingBody, NativeQuestion, engine::Estimate, engagement::derive::TopBody, engagement::derive::Numbers, engagement::derive::EngagementRate, engagement::derive::Ranked, DropInAnswer, NativeAnswer, NativeMetaDoc, Meta, NowNativeAnswer, engine::NowMeta, TotalsQuestion, Hr28Question, NativeTotalsQuestion, NativeHr28Question, NowDropInAnswer, AnswerFormat, FailedSlice, ErrorBody, Status, crate::jobs::JobStatus, engine::jobs::JobState, crate::jobs::JobError, engine::ProgressSnapshot, engine::Stage, crate::usage::Usage, crate::usage::UsedHandle, crate::usage::ClientUsage, crate::settings::CapPolicy, engine::watches::Watch, engine::watches::WatchBody, engine::watches::WatchState)),
    modifiers(&Security, &Strict, &Cacheable)
)]
pub struct ApiDoc;

/// `GET /openapi.json`.
#[utoipa::path(get, path = "/openapi.json", tag = "operations", responses((status = 200, description = "This document", content_type = "application/json"), RouteErrors))]
pub async fn serve() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}

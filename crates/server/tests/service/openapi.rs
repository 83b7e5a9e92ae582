//! The OpenAPI document describes every route, body and error, and changes only on purpose:
//! it is compared with `tests/service/openapi.snapshot.json` (rewrite it with
//! `UPDATE_SNAPSHOTS=1 cargo test -p server --test service openapi` after a deliberate change).

#![allow(clippy::unwrap_used)]

use serde_json::Value;
use server::openapi::ApiDoc;
use utoipa::OpenApi;

#[test]
fn every_route_body_and_error_is_described() {
    let doc: Value = serde_json::to_value(ApiDoc::openapi()).unwrap();
    let paths = doc["paths"].as_object().unwrap();
    for route in [
        "/insights/engagement/historical",
        "/v1/historical",
        "/livez",
        "/readyz",
        "/metrics",
        "/openapi.json",
    ] {
        assert!(paths.contains_key(route), "{route} is not described");
    }
    for route in ["/insights/engagement/historical", "/v1/historical"] {
        let post = &paths[route]["post"];
        assert!(
            post["requestBody"]["content"]["application/json"]["schema"]["$ref"].is_string(),
            "{route} body"
        );
        for status in ["200", "400", "401", "403", "413", "429", "502", "503", "504"] {
            assert!(post["responses"][status].is_object(), "{route} does not describe {status}");
        }
        assert_eq!(
            post["responses"]["400"]["content"]["application/json"]["schema"]["$ref"],
            "#/components/schemas/ErrorBody"
        );
    }
    let schemes = doc["components"]["securitySchemes"].as_object().unwrap();
    assert!(schemes.contains_key("bearer") && schemes.contains_key("oauth1"));
    let question = &doc["components"]["schemas"]["Question"]["properties"];
    for field in ["tweet_ids", "engagement_types", "groupings", "start", "end"] {
        assert!(question[field].is_object(), "Question.{field}");
    }
}

/// The document with the bound on Tweet IDs, which moves every hour, written as `NEWEST`.
fn with_fixed_id_bound() -> String {
    let mut doc = serde_json::to_value(ApiDoc::openapi()).unwrap();
    // Every body with Tweet IDs (the questions of /historical, /totals and /28hr).
    for schema in doc["components"]["schemas"].as_object_mut().unwrap().values_mut() {
        if let Some(ids) = schema.pointer_mut("/properties/tweet_ids/items/oneOf") {
            ids[0]["pattern"] = Value::from("NEWEST");
            ids[1]["maximum"] = Value::from("NEWEST");
        }
    }
    serde_json::to_string_pretty(&doc).unwrap() + "\n"
}

#[test]
fn tweet_ids_are_bounded_by_the_newest_that_can_exist() {
    let doc: Value = serde_json::to_value(ApiDoc::openapi()).unwrap();
    let ids = &doc["components"]["schemas"]["Question"]["properties"]["tweet_ids"];
    assert_eq!(ids["minItems"], 1);
    let newest = engagement::request::newest_tweet_id(chrono::Utc::now()).0;
    assert_eq!(ids["items"]["oneOf"][1]["maximum"].as_u64(), Some(newest));
    let pattern = ids["items"]["oneOf"][0]["pattern"].as_str().unwrap();
    assert!(pattern.ends_with(&format!("|{newest})$")), "{pattern}");
}

#[test]
fn the_document_matches_its_snapshot() {
    let doc = with_fixed_id_bound();
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/service/openapi.snapshot.json");
    if std::env::var_os("UPDATE_SNAPSHOTS").is_some() {
        std::fs::write(path, &doc).unwrap();
    }
    let snapshot = std::fs::read_to_string(path).unwrap_or_default();
    assert!(
        snapshot == doc,
        "the OpenAPI document changed; review it and rewrite the snapshot with UPDATE_SNAPSHOTS=1"
    );
}

#[test]
fn the_native_bodies_are_closed_and_name_what_the_service_reads() {
    let doc = serde_json::to_value(ApiDoc::openapi()).unwrap();
    let schemas = &doc["components"]["schemas"];
    let mut named: Vec<&str> =
        schemas["NativeQuestion"]["properties"].as_object().unwrap().keys().map(String::as_str).collect();
    let mut read = engagement::members::QUESTION.to_vec();
    named.sort_unstable();
    read.sort_unstable();
    assert_eq!(named, read, "the members the native endpoints read are the ones documented");
    for schema in
        ["NativeQuestion", "NativeTotalsQuestion", "NativeHr28Question", "NativeGroupingSpec", "TopSpec"]
    {
        assert_eq!(schemas[schema]["additionalProperties"], false, "{schema}");
    }
    for schema in ["Question", "TotalsQuestion", "Hr28Question", "GroupingSpec"] {
        assert!(schemas[schema].get("additionalProperties").is_none(), "{schema} takes what the API takes");
    }
}

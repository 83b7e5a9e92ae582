//! Metrics, request IDs and logs, as an operator sees them.

#![allow(clippy::unwrap_used)]

use chrono::Duration;
use end_to_end::{World, tweet};
use engagement::time::format_instant;
use serde_json::{Value, json};
use simulator::Config;

#[tokio::test]
async fn metrics_count_requests_upstream_calls_and_slices() {
    let world = World::start(Config::default(), &[]).await;
    let now = world.now;
    let body = json!({
        "tweet_ids": [tweet(now, 100.0, 0).to_string()],
        "engagement_types": ["impressions"],
        "groupings": {"g": {"group_by": ["tweet.id"]}},
        "start": format_instant(now - Duration::days(200)), "end": format_instant(now - Duration::days(1)),
    });
    assert_eq!(world.ask("/v1/historical", &body).await.0, 200);
    assert_eq!(world.ask_as("/v1/historical", &body, None).await.0, 401);
    let text = world.http.get(format!("{}/metrics", world.url)).send().await.unwrap().text().await.unwrap();
    for expected in [
        r#"stitcher_requests_total{route="/v1/historical",status="200"}"#,
        r#"stitcher_requests_total{route="/v1/historical",status="401"}"#,
        "stitcher_request_duration_seconds_bucket{route=\"/v1/historical\",le=\"0.005\"}",
        r#"stitcher_upstream_calls_total{status="200"}"#,
        r#"stitcher_slices_total{kind="planned"}"#,
        r#"stitcher_slices_total{kind="synthesized"}"#,
        "stitcher_upstream_retries_total",
        "stitcher_upstream_in_flight",
        "stitcher_rate_limit_wait_seconds",
    ] {
        assert!(text.contains(expected), "{expected} missing from:\n{text}");
    }
}

#[tokio::test]
async fn request_ids_are_made_or_kept_and_named_in_errors() {
    let world = World::start(Config::default(), &[]).await;
    let bad = json!({"tweet_ids": []});
    let resp = world
        .http
        .post(format!("{}/v1/historical", world.url))
        .bearer_auth("demo-key")
        .json(&bad)
        .send()
        .await
        .unwrap();
    let made = resp.headers()["x-request-id"].to_str().unwrap().to_owned();
    assert!(made.len() >= 16, "{made}");
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["request_id"], made);
    let resp = world
        .http
        .post(format!("{}/insights/engagement/historical", world.url))
        .header("x-request-id", "client-chosen-42")
        .json(&bad)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers()["x-request-id"], "client-chosen-42");
    assert_eq!(resp.status().as_u16(), 401);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["request_id"], "client-chosen-42");
}

#[tokio::test]
async fn the_openapi_document_is_served() {
    let world = World::start(Config::default(), &[]).await;
    let doc: Value =
        world.http.get(format!("{}/openapi.json", world.url)).send().await.unwrap().json().await.unwrap();
    let expected = serde_json::to_value(<server::openapi::ApiDoc as utoipa::OpenApi>::openapi()).unwrap();
    assert_eq!(doc, expected);
}

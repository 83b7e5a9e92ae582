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
    // The tests of this binary share one recorder: what this one did is the change across it.
    let series = [
        r#"stitcher_requests_total{route="/v1/historical",status="200"}"#,
        r#"stitcher_requests_total{route="/v1/historical",status="401"}"#,
        r#"stitcher_request_duration_seconds_count{route="/v1/historical"}"#,
        r#"stitcher_upstream_calls_total{status="200"}"#,
        r#"stitcher_slices_total{kind="planned"}"#,
        r#"stitcher_slices_total{kind="fetched"}"#,
        r#"stitcher_slices_total{kind="synthesized"}"#,
    ];
    let mut before = Vec::new();
    for name in series {
        before.push(world.metric(name).await);
    }
    let (status, answer) = world.ask("/v1/historical", &body).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(world.ask_as("/v1/historical", &body, None).await.0, 401);
    let mut grew = Vec::new();
    for (name, was) in series.iter().zip(before) {
        grew.push(world.metric(name).await - was);
    }
    let meta = &answer["meta"];
    // At least: other tests of this process may be counted in between.
    assert!(grew[0] >= 1.0 && grew[1] >= 1.0, "requests by status: {grew:?}");
    assert!(grew[2] >= 2.0, "each /v1/historical request is timed: {grew:?}");
    assert!(grew[3] >= meta["upstream_calls"].as_f64().unwrap(), "{grew:?} {meta}");
    assert!(grew[4] >= meta["slices_planned"].as_f64().unwrap(), "{grew:?} {meta}");
    assert!(grew[5] >= meta["slices_fetched"].as_f64().unwrap(), "{grew:?} {meta}");
    // The Tweet is 100 days old over a 200-day range: the slices before it are synthesized.
    assert!(meta["slices_synthesized"].as_u64().unwrap() >= 1, "{meta}");
    assert!(grew[6] >= meta["slices_synthesized"].as_f64().unwrap(), "{grew:?} {meta}");
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

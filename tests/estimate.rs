//! The estimate: `POST /v1/estimate` makes no call, and asking the same question right
//! after it makes exactly the calls it said: cold, half held and fully held, with the store
//! on and off.

#![allow(clippy::unwrap_used)]

use chrono::Duration;
use end_to_end::{World, tweet};
use engagement::TweetId;
use engagement::time::format_instant;
use serde_json::{Value, json};
use simulator::Config;

fn question(
    ids: &[TweetId],
    start: chrono::DateTime<chrono::Utc>,
    end: chrono::DateTime<chrono::Utc>,
) -> Value {
    json!({
        "tweet_ids": ids.iter().map(ToString::to_string).collect::<Vec<_>>(),
        "engagement_types": ["impressions", "engagements"],
        "groupings": {"weekly": {"group_by": ["tweet.id", "engagement.week"]}},
        "start": format_instant(start), "end": format_instant(end),
        "time_zone": "Europe/Berlin",
    })
}

/// The estimate for `body` (checking it made no call and that its count of the answer's
/// leaves is the answer's), then the calls asking it made.
async fn estimate_then_ask(world: &World, body: &Value) -> (Value, u64) {
    let before = world.upstream_calls();
    let (status, estimate) = world.ask("/v1/estimate", body).await;
    assert_eq!(status, 200, "{estimate}");
    assert_eq!(world.upstream_calls(), before, "an estimate makes no call");
    let (status, answer) = world.ask("/v1/historical", body).await;
    assert_eq!(status, 200, "{answer}");
    fn leaves(v: &Value) -> u64 {
        v.as_object().map_or(1, |m| m.values().map(leaves).sum())
    }
    assert_eq!(estimate["counts"], leaves(&answer["data"]["weekly"]), "{estimate}");
    (estimate, world.upstream_calls() - before)
}

async fn the_estimate_is_the_calls_then_made(store: bool) {
    let env: &[(&str, &str)] = if store { &[] } else { &[("STITCHER__STORE__ENABLED", "false")] };
    let world = World::start(Config::default(), env).await;
    let ids: Vec<TweetId> = (0..60).map(|k| tweet(world.now, 400.0 + k as f64, k)).collect();
    let end = engagement::time::floor_hour(world.now - Duration::days(10));
    let whole = question(&ids, end - Duration::days(120), end);

    // Half the Tweets first: cold.
    let half = question(&ids[..30], end - Duration::days(120), end);
    let (estimate, calls) = estimate_then_ask(&world, &half).await;
    assert!(calls > 0);
    assert_eq!(estimate["upstream_calls"], calls, "cold: {estimate}");
    assert_eq!(estimate["handle_newly_counted"], true, "{estimate}");
    assert_eq!(estimate["handle"], "demo");
    assert_eq!(estimate["fits_request"], true);
    assert!(estimate["eta_secs"].as_f64().unwrap() > 0.0);

    // All of them: half held with the store.
    let (estimate, calls) = estimate_then_ask(&world, &whole).await;
    assert_eq!(estimate["upstream_calls"], calls, "half held: {estimate}");
    assert_eq!(estimate["handle_newly_counted"], false, "counted by the first question");
    let planned = estimate["slices_planned"].as_u64().unwrap();
    let held = estimate["slices_from_store"].as_u64().unwrap();
    if store {
        assert!(held > 0 && held < planned, "{estimate}");
    } else {
        assert_eq!(held, 0);
    }

    // Again: fully held with the store.
    let (estimate, calls) = estimate_then_ask(&world, &whole).await;
    assert_eq!(estimate["upstream_calls"], calls, "fully held: {estimate}");
    if store {
        assert_eq!(calls, 0);
        assert_eq!(estimate["eta_secs"], 0.0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_estimate_is_the_calls_then_made_with_the_store() {
    the_estimate_is_the_calls_then_made(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_estimate_is_the_calls_then_made_without_the_store() {
    the_estimate_is_the_calls_then_made(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_estimate_refuses_what_the_question_would_refuse() {
    let world = World::start(Config::default(), &[]).await;
    let (status, answer) = world
        .ask(
            "/v1/estimate",
            &json!({"tweet_ids": ["1"], "engagement_types": ["impressions"], "groupings": {}}),
        )
        .await;
    assert_eq!(status, 400, "{answer}");
    assert!(answer["errors"].to_string().contains("groupings"), "{answer}");
}

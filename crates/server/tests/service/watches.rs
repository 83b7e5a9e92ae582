//! Watches on the real binary: a watch outlives a restart (it is kept in the store), and
//! two replicas on one Redis both see a watch and refresh it once between them.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use serde_json::{Value, json};
use simulator::Config;

use crate::support::{self, Stitcher, get, post};

fn redis_url() -> String {
    std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

/// `n` Tweets created about 2 years ago.
fn watch_body(n: u64, lookback_days: u32) -> Value {
    let ids: Vec<String> = (0..n).map(|k| support::tweet(700, k).to_string()).collect();
    json!({"tweet_ids": ids, "engagement_types": ["impressions"], "lookback_days": lookback_days, "refresh_secs": 3600})
}

/// The watch at `location` of `stitcher` once its first fill has ended.
async fn filled(stitcher: &Stitcher, location: &str) -> Value {
    until(stitcher, location, |watch| !watch["last_refresh"].is_null() && watch["state"] != "refreshing")
        .await
}

/// The watch at `location` of `stitcher` once `done` says it is as awaited.
async fn until(stitcher: &Stitcher, location: &str, done: impl Fn(&Value) -> bool) -> Value {
    for _ in 0..600 {
        let (status, watch) = get(stitcher, location).await;
        assert_eq!(status, 200, "{watch}");
        if done(&watch) {
            return watch;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the watch was not filled: {}", stitcher.logs());
}

async fn make(stitcher: &Stitcher, body: &Value) -> String {
    let made = post(stitcher, "/v1/watches", body).await;
    assert_eq!(made.status().as_u16(), 201);
    made.headers()["location"].to_str().unwrap().to_string()
}

#[tokio::test]
async fn a_watch_outlives_a_restart() {
    let (sim, sim_url) = support::simulator(Config::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().display().to_string();
    let env = [("STITCHER__UPSTREAM__BASE_URL", sim_url.as_str()), ("STITCHER__STORE__PATH", path.as_str())];

    let mut first = Stitcher::start(&env).await;
    let location = make(&first, &watch_body(30, 40)).await;
    let before = filled(&first, &location).await;
    assert_eq!(before["state"], "warm", "{before}");
    // Two batches; 40 days and today in two windows each.
    assert_eq!(before["calls_spent"], 4, "{before}");
    assert_eq!(sim.stats().requests_total, 4);
    first.terminate();
    assert!(first.exited(Duration::from_secs(10)).await.unwrap().success());

    let second = Stitcher::start(&env).await;
    let (status, after) = get(&second, &location).await;
    assert_eq!(status, 200, "{after}");
    assert_eq!(after, before, "the watch as it was, refresh times and all");
    let (_, listed) = get(&second, "/v1/watches").await;
    assert_eq!(listed, json!([before]));
    // Not due for an hour: the restarted service makes no call for it.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(sim.stats().requests_total, 4);
}

#[tokio::test]
async fn a_fill_stopped_by_shutdown_goes_on_after_the_restart_from_where_it_was() {
    let faults = simulator::faults::Faults { latency: Duration::from_millis(200), ..Default::default() };
    let (sim, sim_url) = support::simulator(Config { faults, ..Config::default() }).await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().display().to_string();
    let env = [
        ("STITCHER__UPSTREAM__BASE_URL", sim_url.as_str()),
        ("STITCHER__STORE__PATH", path.as_str()),
        ("STITCHER__UPSTREAM__MAX_IN_FLIGHT", "1"),
    ];
    // Two batches; 300 days and today in eleven windows each: 22 calls, one at a time.
    let mut first = Stitcher::start(&env).await;
    let location = make(&first, &watch_body(30, 300)).await;
    while sim.stats().requests_total < 4 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    first.terminate();
    let exited = first.exited(Duration::from_secs(10)).await;
    assert!(exited.is_some_and(|s| s.success()), "a refresh does not hold shutdown up: {}", first.logs());
    let made_before = sim.stats().requests_total;
    assert!(made_before < 22, "stopped part way: {made_before} calls");

    let second = Stitcher::start(&env).await;
    let after = until(&second, &location, |watch| watch["state"] == "warm").await;
    assert!(after["next_refresh"].as_str() > after["last_refresh"].as_str(), "{after}");
    let made_after = sim.stats().requests_total - made_before;
    assert!(made_after < 22, "the fill went on from what was kept: {made_after} calls after the restart");
    assert!(made_before + made_after >= 22, "every window was fetched once at least");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_see_a_watch_and_refresh_it_once() {
    // A slow fill (8 calls one at a time), so each replica looks for watches due while it runs.
    let faults = simulator::faults::Faults { latency: Duration::from_millis(300), ..Default::default() };
    let (sim, sim_url) = support::simulator(Config { faults, ..Config::default() }).await;
    let prefix =
        format!("stitcher-test:{}:{}:watches:", std::process::id(), chrono::Utc::now().timestamp_micros());
    let redis = redis_url();
    let env = [
        ("STITCHER__UPSTREAM__BASE_URL", sim_url.as_str()),
        ("STITCHER__REDIS__URL", redis.as_str()),
        ("STITCHER__REDIS__KEY_PREFIX", prefix.as_str()),
        ("STITCHER__UPSTREAM__MAX_IN_FLIGHT", "1"),
    ];
    let (a, b) = (Stitcher::start(&env).await, Stitcher::start(&env).await);
    let location = make(&a, &watch_body(30, 100)).await;
    let seen_at_b = filled(&b, &location).await;
    assert_eq!(seen_at_b["state"], "warm", "{seen_at_b}");
    // Two batches; 100 days and today in four windows each.
    assert_eq!(seen_at_b["calls_spent"], 8, "{seen_at_b}");
    // Both replicas look for watches due every second: give them a few looks.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(sim.stats().requests_total, 8, "one fill between the two replicas");
    let refreshes = [&a, &b].map(|s| s.logs().matches("watch refreshed").count());
    assert_eq!(refreshes.iter().sum::<usize>(), 1, "one refresh between them: {refreshes:?}");

    let deleted =
        reqwest::Client::new().delete(format!("{}{location}", b.url)).bearer_auth("demo-key").send();
    assert_eq!(deleted.await.unwrap().status().as_u16(), 200);
    let (status, _) = get(&a, &location).await;
    assert_eq!(status, 404, "deleted at one replica, gone at the other");
}

//! Jobs: long questions answered in the background, watched, fetched, cancelled, and kept
//! to the client that made them.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use chrono::Duration as Span;
use end_to_end::{World, counts_as_strings, tweet};
use engagement::time::format_instant;
use serde_json::{Value, json};
use simulator::Config;
use simulator::faults::Faults;

const OTHER_KEY: &str = "other-client-key";

/// A simulator answering each call in 200 ms, and a service with 2 calls in flight and two
/// clients: the demo one and another.
async fn world() -> World {
    let demo = server::auth::key_hash("demo-key");
    let other = server::auth::key_hash(OTHER_KEY);
    let config = Config {
        faults: Faults { latency: Duration::from_millis(200), ..Faults::default() },
        ..Config::default()
    };
    World::start(
        config,
        &[
            ("STITCHER__UPSTREAM__MAX_IN_FLIGHT", "2"),
            ("STITCHER__CLIENTS__DASH__KEY_SHA256", &demo),
            ("STITCHER__CLIENTS__DASH__HANDLES", "demo"),
            ("STITCHER__CLIENTS__OTHER__KEY_SHA256", &other),
            ("STITCHER__CLIENTS__OTHER__HANDLES", "demo"),
        ],
    )
    .await
}

/// A question of `windows` calls for 10 Tweets older than its range.
fn question(world: &World, windows: i64) -> Value {
    let end = engagement::time::floor_hour(world.now - Span::days(1));
    let ids: Vec<String> = (0..10).map(|n| tweet(world.now, 3000.0, n).to_string()).collect();
    let range = stitch::windows(engagement::TimeRange::covering(end - Span::days(28 * windows), end));
    json!({
        "tweet_ids": ids,
        "engagement_types": ["impressions", "engagements"],
        "groupings": {"per tweet": {"group_by": ["tweet.id", "engagement.type"]}, "daily": {"group_by": ["engagement.day"]}},
        "start": format_instant(range[1].start),
        "end": format_instant(end),
    })
}

async fn get(world: &World, path: &str, key: &str) -> (u16, Value) {
    let r = world.http.get(format!("{}{path}", world.url)).bearer_auth(key).send().await.unwrap();
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

async fn submit(world: &World, body: &Value) -> String {
    let r = world
        .http
        .post(format!("{}/v1/jobs", world.url))
        .bearer_auth("demo-key")
        .json(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 202);
    let location = r.headers()["location"].to_str().unwrap().to_owned();
    let status: Value = r.json().await.unwrap();
    assert_eq!(location, format!("/v1/jobs/{}", status["id"].as_str().unwrap()));
    assert!(["queued", "running"].contains(&status["state"].as_str().unwrap()), "{status}");
    location
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_moves_to_done_and_its_result_equals_the_oracle() {
    let world = world().await;
    let body = question(&world, 12);
    let job = submit(&world, &body).await;
    let (status, early) = get(&world, &format!("{job}/result"), "demo-key").await;
    assert_eq!(status, 409, "no result yet: {early}");

    let mut done_before = 0;
    let mut saw_eta = false;
    let finished = loop {
        let (status, s) = get(&world, &job, "demo-key").await;
        assert_eq!(status, 200);
        let done = s["progress"]["slices_done"].as_u64().unwrap();
        assert!(done >= done_before, "progress moves forward: {done} after {done_before}");
        done_before = done;
        saw_eta |= s["eta_secs"].is_u64();
        match s["state"].as_str().unwrap() {
            "queued" | "running" => tokio::time::sleep(Duration::from_millis(100)).await,
            _ => break s,
        }
    };
    assert_eq!(finished["state"], "done", "{finished}");
    assert_eq!(finished["progress"]["slices_done"], finished["progress"]["slices_total"]);
    assert!(finished["finished_at"].is_string());
    assert!(saw_eta, "a running job estimates its time left");

    let (status, answer) = get(&world, &format!("{job}/result"), "demo-key").await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(counts_as_strings(answer["data"].clone()), world.oracle(&body).await);
    assert_eq!(answer["meta"]["slices_fetched"], 12);

    let (status, _) = get(&world, &job, OTHER_KEY).await;
    assert_eq!(status, 404, "another client does not see it");
    let (status, _) = get(&world, &format!("{job}/result"), OTHER_KEY).await;
    assert_eq!(status, 404);
    let (status, _) = get(&world, "/v1/jobs/0123456789abcdef0123456789abcdef", "demo-key").await;
    assert_eq!(status, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_job_makes_no_more_calls() {
    let world = world().await;
    let job = submit(&world, &question(&world, 40)).await;
    tokio::time::sleep(Duration::from_millis(700)).await;
    let r = world.http.delete(format!("{}{job}", world.url)).bearer_auth(OTHER_KEY).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 404, "only its client may cancel it");
    let r = world.http.delete(format!("{}{job}", world.url)).bearer_auth("demo-key").send().await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let s: Value = r.json().await.unwrap();
    assert_eq!(s["state"], "cancelled");
    // Calls already sent may still be answered; none starts after.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let settled = world.upstream_calls();
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_eq!(world.upstream_calls(), settled, "no upstream call after the cancel");
    assert!(settled < 40, "the job was cut short: {settled} of 40 calls");
    let (status, _) = get(&world, &job, "demo-key").await;
    assert_eq!(status, 404, "a deleted job is gone");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_event_stream_sends_progress_and_a_final_event() {
    let world = world().await;
    let job = submit(&world, &question(&world, 6)).await;
    let r = world
        .http
        .get(format!("{}{job}", world.url))
        .bearer_auth("demo-key")
        .header("accept", "text/event-stream")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert!(r.headers()["content-type"].to_str().unwrap().starts_with("text/event-stream"));
    let text = tokio::time::timeout(Duration::from_secs(30), r.text()).await.unwrap().unwrap();
    let events: Vec<(&str, Value)> = text
        .split("\n\n")
        .filter_map(|block| {
            let name = block.lines().find_map(|l| l.strip_prefix("event: "))?;
            let data = block.lines().find_map(|l| l.strip_prefix("data: "))?;
            Some((name, serde_json::from_str(data).unwrap()))
        })
        .collect();
    assert!(events.iter().any(|(name, _)| *name == "progress"), "{text}");
    let (last, status) = events.last().unwrap();
    assert_eq!(*last, "done", "{text}");
    assert_eq!(status["progress"]["slices_done"], 6);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_job_is_400_and_no_job() {
    let world = world().await;
    let mut body = question(&world, 1);
    body["tweet_ids"] = json!([]);
    let r = world
        .http
        .post(format!("{}/v1/jobs", world.url))
        .bearer_auth("demo-key")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 400);
    let r =
        world.http.post(format!("{}/v1/jobs", world.url)).json(&question(&world, 1)).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 401);
    assert_eq!(world.upstream_calls(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_finished_jobs_result_is_kept_its_time_then_let_go() {
    let world = World::start(Config::default(), &[("STITCHER__JOBS__RESULT_TTL_SECS", "600")]).await;
    let job = submit(&world, &question(&world, 1)).await;
    let finished = loop {
        let (status, s) = get(&world, &job, "demo-key").await;
        assert_eq!(status, 200, "{s}");
        match s["state"].as_str().unwrap() {
            "queued" | "running" => tokio::time::sleep(Duration::from_millis(20)).await,
            _ => break s,
        }
    };
    assert_eq!(finished["state"], "done", "{finished}");

    world.clock.advance(Duration::from_secs(590));
    let (status, answer) = get(&world, &format!("{job}/result"), "demo-key").await;
    assert_eq!(status, 200, "within its time: {answer}");
    world.clock.advance(Duration::from_secs(20));
    let (status, _) = get(&world, &format!("{job}/result"), "demo-key").await;
    assert_eq!(status, 404, "past jobs.result_ttl_secs the result is let go");
    let (status, _) = get(&world, &job, "demo-key").await;
    assert_eq!(status, 404, "and the job with it");
}

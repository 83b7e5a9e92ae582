//! Watched Tweets: a watch is its client's alone; its first fill and every refresh fetch only
//! what the store lacks; a question's calls go before a refresh's; and a dashboard's
//! question about watched Tweets then costs no call and equals the oracle.

#![allow(clippy::unwrap_used)]

use std::time::Duration as Wait;

use chrono::{DateTime, Duration, Utc};
use end_to_end::{World, counts_as_strings, tweet};
use engagement::TweetId;
use engagement::time::format_instant;
use engine::ports::Clock as _;
use serde_json::{Value, json};
use server::settings::key_hash;
use simulator::Config;
use simulator::faults::Faults;

/// Settings for a second client, `other` (key `other-key`), of the demo handle, and `extra`.
fn with_other(extra: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut env = vec![
        ("STITCHER__CLIENTS__DEMO__KEY_SHA256".to_string(), key_hash("demo-key")),
        ("STITCHER__CLIENTS__DEMO__HANDLES".into(), "demo".into()),
        ("STITCHER__CLIENTS__OTHER__KEY_SHA256".into(), key_hash("other-key")),
        ("STITCHER__CLIENTS__OTHER__HANDLES".into(), "demo".into()),
    ];
    env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    env
}

/// A world whose simulator's clock stands still at the service's time now (not at the top
/// of the hour): a watch keeps the hour in progress warm, which the simulator refuses to
/// count before it has begun by its own clock.
async fn start(config: Config, env: &[(String, String)]) -> World {
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let now = chrono::SubsecRound::trunc_subsecs(Utc::now(), 0);
    World::start_with_clock(Config { clock: simulator::Clock::Fixed(now), ..config }, &env).await
}

/// `n` Tweets created `days` days before `now` (and a few hours apart), numbered from `first`.
fn tweets(now: DateTime<Utc>, days: f64, first: u64, n: u64) -> Vec<TweetId> {
    (0..n).map(|k| tweet(now, days + k as f64 / 24.0, first + k)).collect()
}

fn watch_body(ids: &[TweetId], lookback_days: u32, refresh_secs: u64) -> Value {
    json!({
        "tweet_ids": ids.iter().map(ToString::to_string).collect::<Vec<_>>(),
        "engagement_types": ["impressions", "favorites"],
        "lookback_days": lookback_days,
        "refresh_secs": refresh_secs,
    })
}

/// `method` on `path` with `key`, and `body` if given: the status, the JSON answer and the
/// `Location` header.
async fn send(
    world: &World,
    method: &str,
    path: &str,
    key: &str,
    body: Option<&Value>,
) -> (u16, Value, String) {
    let url = format!("{}{path}", world.url);
    let mut req = world.http.request(method.parse().unwrap(), url).bearer_auth(key);
    if let Some(body) = body {
        req = req.json(body);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let location =
        resp.headers().get("location").map(|l| l.to_str().unwrap().to_string()).unwrap_or_default();
    (status, resp.json().await.unwrap_or(Value::Null), location)
}

/// The watch at `location` once a refresh begun at or after `since` has ended.
async fn refreshed(world: &World, location: &str, since: DateTime<Utc>) -> Value {
    for _ in 0..1200 {
        let (status, watch, _) = send(world, "GET", location, "demo-key", None).await;
        assert_eq!(status, 200, "{watch}");
        let began = watch["last_refresh"].as_str().map(|t| engagement::parse_instant(t).unwrap());
        if began.is_some_and(|t| t >= since) && watch["state"] != "refreshing" {
            return watch;
        }
        tokio::time::sleep(Wait::from_millis(50)).await;
    }
    panic!("the watch at {location} was not refreshed");
}

/// The dashboard's question: the watched Tweets' last `days` days, daily, to the end of the hour in
/// progress.
fn dashboard(ids: &[TweetId], now: DateTime<Utc>, days: i64) -> Value {
    let today = now.date_naive();
    json!({
        "tweet_ids": ids.iter().map(ToString::to_string).collect::<Vec<_>>(),
        "engagement_types": ["impressions", "favorites"],
        "groupings": {"daily": {"group_by": ["tweet.id", "engagement.type", "engagement.day"]}},
        "start": (today - chrono::Days::new(days as u64)).to_string(),
        "end": format_instant(engagement::time::ceil_hour(now)),
    })
}

#[tokio::test]
async fn a_watch_is_made_listed_and_seen_by_its_owner_alone() {
    let world = start(Config::default(), &with_other(&[])).await;
    let ids = tweets(world.now, 100.0, 0, 3);
    let (status, made, location) =
        send(&world, "POST", "/v1/watches", "demo-key", Some(&watch_body(&ids, 30, 600))).await;
    assert_eq!(status, 201, "{made}");
    let id = made["id"].as_str().unwrap();
    assert_eq!(location, format!("/v1/watches/{id}"));
    assert_eq!(made["handle"], "demo");
    assert_eq!(made["tweet_ids"].as_array().unwrap().len(), 3);
    assert_eq!(made["lookback_days"], 30);
    assert_eq!(made["refresh_secs"], 600);
    assert!(made["last_refresh"].is_null());
    for member in ["next_refresh", "tweet_hours_held", "calls_spent", "state"] {
        assert!(!made[member].is_null(), "{member} in {made}");
    }

    let (status, mine, _) = send(&world, "GET", "/v1/watches", "demo-key", None).await;
    assert_eq!(status, 200);
    assert_eq!(mine.as_array().unwrap().len(), 1);
    assert_eq!(mine[0]["id"], id);
    let (status, theirs, _) = send(&world, "GET", "/v1/watches", "other-key", None).await;
    assert_eq!((status, theirs), (200, json!([])), "another client sees none of them");
    for method in ["GET", "DELETE"] {
        let (status, body, _) = send(&world, method, &location, "other-key", None).await;
        assert_eq!(status, 404, "{method} by another client: {body}");
    }
    let (status, _, _) = send(&world, "GET", &location, "no-such-key", None).await;
    assert_eq!(status, 401);

    let (status, gone, _) = send(&world, "DELETE", &location, "demo-key", None).await;
    assert_eq!((status, gone["id"].as_str()), (200, Some(id)));
    let (status, _, _) = send(&world, "GET", &location, "demo-key", None).await;
    assert_eq!(status, 404, "a deleted watch is forgotten");
}

#[tokio::test]
async fn a_bad_watch_is_refused_with_every_reason() {
    let world = start(Config::default(), &with_other(&[("STITCHER__WATCHES__MAX_PER_CLIENT", "1")])).await;
    let bad =
        json!({"tweet_ids": ["x"], "engagement_types": ["nope"], "lookback_days": 1801, "refresh_secs": 59});
    let (status, body, _) = send(&world, "POST", "/v1/watches", "demo-key", Some(&bad)).await;
    assert_eq!(status, 400, "{body}");
    let said = body["errors"].to_string();
    for named in ["tweet_ids", "engagement type", "lookback_days", "1800", "refresh_secs", "60"] {
        assert!(said.contains(named), "{named} in {said}");
    }
    let forever = json!({"tweet_ids": ["20"], "engagement_types": ["impressions"], "lookback_days": 1, "refresh_secs": 9_223_372_036_854_775_808_u64});
    let (status, body, _) = send(&world, "POST", "/v1/watches", "demo-key", Some(&forever)).await;
    assert_eq!(status, 400, "a refresh never due: {body}");
    assert!(body["errors"][0].as_str().unwrap().contains("a year"), "{body}");
    let extra = json!({"tweet_ids": ["20"], "engagement_types": ["impressions"], "lookback_days": 1, "refresh_secs": 60, "groupings": {}});
    let (status, body, _) = send(&world, "POST", "/v1/watches", "demo-key", Some(&extra)).await;
    assert_eq!(status, 400, "a member nobody reads: {body}");

    let ids = tweets(world.now, 100.0, 0, 2);
    let (status, _, _) =
        send(&world, "POST", "/v1/watches", "demo-key", Some(&watch_body(&ids, 1, 60))).await;
    assert_eq!(status, 201);
    let (status, body, _) =
        send(&world, "POST", "/v1/watches", "demo-key", Some(&watch_body(&ids, 1, 60))).await;
    assert_eq!(status, 403, "past watches.max_per_client: {body}");
    assert!(body["errors"][0].as_str().unwrap().contains("watches.max_per_client"), "{body}");
    let (status, _, _) =
        send(&world, "POST", "/v1/watches", "other-key", Some(&watch_body(&ids, 1, 60))).await;
    assert_eq!(status, 201, "the limit is per client");
}

#[tokio::test]
async fn with_watches_off_every_route_says_so() {
    let world = start(Config::default(), &with_other(&[("STITCHER__WATCHES__ENABLED", "false")])).await;
    let ids = tweets(world.now, 100.0, 0, 2);
    let made = send(&world, "POST", "/v1/watches", "demo-key", Some(&watch_body(&ids, 5, 60))).await;
    let listed = send(&world, "GET", "/v1/watches", "demo-key", None).await;
    let one = send(&world, "GET", "/v1/watches/abc", "demo-key", None).await;
    for (status, body, _) in [made, listed, one] {
        assert_eq!(status, 403, "{body}");
        assert!(body["errors"][0].as_str().unwrap().contains("watches.enabled"), "{body}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watches_made_at_once_keep_within_the_clients_limit() {
    let world = start(Config::default(), &with_other(&[("STITCHER__WATCHES__MAX_PER_CLIENT", "3")])).await;
    let ids = tweets(world.now, 100.0, 0, 2);
    let body = watch_body(&ids, 1, 3600);
    let made = futures::future::join_all(
        (0..12).map(|_| send(&world, "POST", "/v1/watches", "demo-key", Some(&body))),
    )
    .await;
    let statuses: Vec<u16> = made.iter().map(|(status, _, _)| *status).collect();
    assert_eq!(statuses.iter().filter(|s| **s == 201).count(), 3, "{statuses:?}");
    assert_eq!(statuses.iter().filter(|s| **s == 403).count(), 9, "{statuses:?}");
}

#[tokio::test]
async fn a_watch_needs_the_store() {
    let world = start(Config::default(), &with_other(&[("STITCHER__STORE__ENABLED", "false")])).await;
    let ids = tweets(world.now, 100.0, 0, 2);
    let (status, body, _) =
        send(&world, "POST", "/v1/watches", "demo-key", Some(&watch_body(&ids, 5, 60))).await;
    assert_eq!(status, 403, "{body}");
    assert!(body["errors"][0].as_str().unwrap().contains("store.enabled"), "{body}");
}

#[tokio::test]
async fn a_watch_past_the_months_handle_cap_is_refused() {
    let world = start(Config::default(), &with_other(&[("STITCHER__LEDGER__HANDLE_CAP", "0")])).await;
    let ids = tweets(world.now, 100.0, 0, 2);
    let (status, body, _) =
        send(&world, "POST", "/v1/watches", "demo-key", Some(&watch_body(&ids, 5, 60))).await;
    assert_eq!(status, 403, "{body}");
    assert!(body["errors"][0].as_str().unwrap().contains("ledger.handle_cap"), "{body}");
    assert_eq!(world.upstream_calls(), 0);
}

#[tokio::test]
async fn a_refresh_after_the_clock_moves_fetches_only_what_moved_and_the_dashboard_costs_no_call() {
    let world = start(Config::default(), &[]).await;
    // Two batches of 25, created long before the lookback.
    let ids = tweets(world.now, 400.0, 0, 30);
    let made_at = world.clock.now();
    let (status, made, location) =
        send(&world, "POST", "/v1/watches", "demo-key", Some(&watch_body(&ids, 60, 60))).await;
    assert_eq!(status, 201, "{made}");
    let filled = refreshed(&world, &location, engagement::time::floor_hour(made_at)).await;
    assert_eq!(filled["state"], "warm", "{filled}");
    // From the start of the day 60 days back to the end of this hour: just over 60 days, so
    // three windows of at most 28 days for each of the two batches.
    let range_hours = 60 * 24 + i64::from(chrono::Timelike::hour(&made_at)) + 1;
    assert_eq!(filled["calls_spent"], 6, "{filled}");
    assert_eq!(world.upstream_calls(), 6);
    assert_eq!(filled["tweet_hours_held"], 30 * range_hours, "{filled}");

    // Twelve hours later, by both clocks.
    let before = world.upstream_calls();
    let arrived = world.sim.stats().arrivals.len();
    world.clock.advance(Wait::from_secs(12 * 3600));
    let later = world.now + Duration::hours(12);
    world.move_upstream_clock(later).await;
    let moved = refreshed(&world, &location, world.clock.now() - Duration::seconds(5)).await;
    assert_eq!(moved["state"], "warm", "{moved}");
    let calls = world.upstream_calls() - before;
    assert_eq!(calls, 2, "one window per batch: the new hours and the unsettled ones");
    assert_eq!(moved["calls_spent"], 8);
    // Hours before the settling line (settle_after_hours = 72) were settled when fetched.
    let settled_before = engagement::time::floor_hour(world.now) - Duration::hours(72);
    for call in world.sim.stats().arrivals.iter().skip(arrived) {
        let start = engagement::parse_instant(call.start.as_deref().unwrap()).unwrap();
        assert!(start >= settled_before, "a refresh asked again for settled hours from {start}");
    }

    // The dashboard, now: no call, and the oracle's answer.
    let q = dashboard(&ids, later, 60);
    let before = world.upstream_calls();
    let (status, body) = world.ask("/v1/historical", &q).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(world.upstream_calls() - before, 0, "{}", body["meta"]);
    assert_eq!(counts_as_strings(body["data"].clone()), world.oracle(&q).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_question_asked_during_a_refresh_makes_its_calls_first() {
    let faults = Faults { latency: Wait::from_millis(100), ..Faults::default() };
    let world = start(
        Config { faults, ..Config::default() },
        &with_other(&[("STITCHER__UPSTREAM__MAX_IN_FLIGHT", "2")]),
    )
    .await;
    // A long fill: 50 Tweets over 1,000 days, about 36 windows for each of 2 batches.
    let watched = tweets(world.now, 1100.0, 0, 50);
    let (status, made, _) =
        send(&world, "POST", "/v1/watches", "demo-key", Some(&watch_body(&watched, 1000, 3600))).await;
    assert_eq!(status, 201, "{made}");
    while world.sim.stats().arrivals.len() < 6 {
        tokio::time::sleep(Wait::from_millis(20)).await;
    }
    // Two batches over three windows: 6 calls.
    let asked = tweets(world.now, 400.0, 5000, 40);
    let asked_ids: Vec<String> = asked.iter().map(ToString::to_string).collect();
    let start = world.now - Duration::days(84);
    let q = json!({
        "tweet_ids": asked_ids,
        "engagement_types": ["impressions"],
        "groupings": {"g": {"group_by": ["tweet.id"]}},
        "start": format_instant(start), "end": format_instant(start + Duration::days(80)),
    });
    let before = world.sim.stats().arrivals.len();
    let (status, body) = world.ask_as("/v1/historical", &q, Some("other-key")).await;
    assert_eq!(status, 200, "{body}");
    tokio::time::sleep(Wait::from_millis(500)).await;
    let arrivals: Vec<bool> = world
        .sim
        .stats()
        .arrivals
        .iter()
        .skip(before)
        .map(|a| a.tweet_ids.first().is_some_and(|t| asked_ids.contains(t)))
        .collect();
    let ours: Vec<usize> = arrivals.iter().enumerate().filter(|(_, q)| **q).map(|(i, _)| i).collect();
    assert_eq!(ours.len(), 6, "the question's calls: {arrivals:?}");
    // Its first call waits for no more than the refresh's calls already on their way (2 in
    // flight, one ending every 50 ms while the question is read and planned).
    assert!(ours[0] <= 4, "the refresh went first {} times: {arrivals:?}", ours[0]);
    // Then its calls take every turn. (Taking turns with the refresh, a refresh call would
    // come between each two of them; one may slip in while the question's calls are being
    // queued.)
    let between = ours.last().unwrap() - ours[0] + 1 - ours.len();
    assert!(between <= 1, "{between} refresh calls between the question's: {arrivals:?}");
    let refresh_after = arrivals.len() - ours.last().unwrap() - 1;
    assert!(refresh_after > 0, "the refresh went on after the question: {arrivals:?}");
}

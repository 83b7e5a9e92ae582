//! Per-client shares of the upstream's calls: a client with many jobs gets no more turns
//! than its share while another client waits, and a cap of a client's own holds. Counts of
//! calls are asserted, not times.

#![allow(clippy::unwrap_used)]

use std::time::Duration as Wait;

use chrono::Duration;
use end_to_end::{World, tweet};
use engagement::TweetId;
use engagement::time::format_instant;
use serde_json::{Value, json};
use server::settings::key_hash;
use simulator::Config;
use simulator::faults::Faults;

/// Clients of the demo handle named `names` (each with the key `NAME-key`; the tests of
/// this binary share one metrics recorder, so each test names clients no other test of it
/// names), and
/// `extra` settings.
fn clients(names: &[&str], extra: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut env = vec![
        // Without the store every question costs its calls, however often it is asked.
        ("STITCHER__STORE__ENABLED".to_string(), "false".to_string()),
        // The budget is the scarce thing, with the default 8 calls in flight racing for it.
        ("STITCHER__UPSTREAM__REQUESTS_PER_MINUTE".into(), "1200".into()),
    ];
    for name in names {
        let upper = name.to_ascii_uppercase();
        env.push((format!("STITCHER__CLIENTS__{upper}__KEY_SHA256"), key_hash(&format!("{name}-key"))));
        env.push((format!("STITCHER__CLIENTS__{upper}__HANDLES"), "demo".into()));
    }
    env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    env
}

/// A question of `tweets` Tweets over `windows` windows of the grid: ceil(tweets / 25) ×
/// windows calls without the store.
fn question(world: &World, tweets: u64, windows: i64, salt: u64) -> Value {
    // Created before the range, so every window is a call.
    let before = (world.now - engagement::parse_instant("2021-06-01").unwrap()).num_days() as f64;
    let ids: Vec<TweetId> =
        (0..tweets).map(|k| tweet(world.now, before + k as f64 / 24.0, salt * 1000 + k)).collect();
    // 2022-01-10 is a line of the grid (2014-09-01 + 96 × 28 days).
    let start = engagement::parse_instant("2022-01-10").unwrap();
    json!({
        "tweet_ids": ids.iter().map(ToString::to_string).collect::<Vec<_>>(),
        "engagement_types": ["impressions"],
        "groupings": {"g": {"group_by": ["tweet.id"]}},
        "start": format_instant(start), "end": format_instant(start + Duration::days(28 * windows)),
    })
}

async fn calls_of(world: &World, client: &str) -> f64 {
    world.metric(&format!("stitcher_client_upstream_calls_total{{client=\"{client}\"}}")).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_client_with_many_jobs_takes_no_more_than_its_share_while_another_waits() {
    let faults = Faults { latency: Wait::from_millis(15), ..Faults::default() };
    let env = clients(&["bulk", "viewer"], &[]);
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let world = World::start(Config { faults, ..Config::default() }, &env).await;
    let (bulk0, viewer0) = (calls_of(&world, "bulk").await, calls_of(&world, "viewer").await);

    // bulk: 4 jobs of 100 calls (4 batches × 25 windows).
    let mut jobs = Vec::new();
    for j in 0..4 {
        let r = world
            .http
            .post(format!("{}/v1/jobs", world.url))
            .bearer_auth("bulk-key")
            .json(&question(&world, 100, 25, j))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 202);
        jobs.push(r.headers()["location"].to_str().unwrap().to_owned());
    }
    while calls_of(&world, "bulk").await - bulk0 < 8.0 {
        tokio::time::sleep(Wait::from_millis(10)).await;
    }
    // viewer: one question of 10 calls at a time, again and again, while bulk runs.
    let bulk_before = calls_of(&world, "bulk").await;
    for q in 0..5 {
        let (status, answer) =
            world.ask_as("/v1/historical", &question(&world, 1, 10, 10 + q), Some("viewer-key")).await;
        assert_eq!(status, 200, "{answer}");
    }
    let bulk_during = calls_of(&world, "bulk").await - bulk_before;
    let viewer = calls_of(&world, "viewer").await - viewer0;
    assert_eq!(viewer, 50.0);
    let share = viewer / (viewer + bulk_during);
    assert!(share >= 0.4, "viewer took {viewer} of {} calls while both waited", viewer + bulk_during);

    // Without viewer, bulk has every turn: its jobs finish with all their calls.
    for job in jobs {
        loop {
            let r =
                world.http.get(format!("{}{job}", world.url)).bearer_auth("bulk-key").send().await.unwrap();
            let status: Value = r.json().await.unwrap();
            if status["state"] == "done" {
                break;
            }
            assert!(status["state"] == "running" || status["state"] == "queued", "{status}");
            tokio::time::sleep(Wait::from_millis(50)).await;
        }
    }
    assert_eq!(calls_of(&world, "bulk").await - bulk0, 400.0);

    // /v1/usage tells each client its own.
    let r = world.http.get(format!("{}/v1/usage", world.url)).bearer_auth("viewer-key").send().await.unwrap();
    let usage: Value = r.json().await.unwrap();
    assert_eq!(usage["client"]["name"], "viewer");
    assert_eq!(usage["client"]["share"], 1.0);
    assert_eq!(usage["client"]["calls_this_month"], 50, "{usage}");
    assert!(usage["client"]["max_calls_per_minute"].is_null());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_client_s_own_cap_holds_and_others_go_on() {
    let env = clients(
        &["capped", "free"],
        &[("STITCHER__CLIENTS__CAPPED__MAX_CALLS_PER_MINUTE", "3"), ("STITCHER__UPSTREAM__RATE_BURST", "3")],
    );
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let world = World::start(Config::default(), &env).await;
    // At 3 calls a minute, 10 calls can never be made within a request: refused at once.
    let (status, answer) =
        world.ask_as("/v1/historical", &question(&world, 1, 10, 1), Some("capped-key")).await;
    assert_eq!(status, 400, "{answer}");
    assert!(answer["errors"].to_string().contains("clients.capped.max_calls_per_minute"), "{answer}");
    assert_eq!(calls_of(&world, "capped").await, 0.0, "no call for a refused question");
    // 3 calls go at once (the burst); 3 more must wait for the minute.
    let (status, answer) =
        world.ask_as("/v1/historical", &question(&world, 1, 3, 2), Some("capped-key")).await;
    assert_eq!(status, 200, "{answer}");
    let ask = world.http.post(format!("{}/v1/historical", world.url)).bearer_auth("capped-key");
    let held = tokio::time::timeout(Wait::from_secs(2), ask.json(&question(&world, 1, 3, 3)).send()).await;
    assert!(held.is_err(), "past its cap, capped waits");
    let capped = calls_of(&world, "capped").await;
    assert_eq!(capped, 3.0, "no call past the cap");
    // free is not held by capped's cap.
    let (status, answer) =
        world.ask_as("/v1/historical", &question(&world, 1, 10, 4), Some("free-key")).await;
    assert_eq!(status, 200, "{answer}");
    let r = world.http.get(format!("{}/v1/usage", world.url)).bearer_auth("capped-key").send().await.unwrap();
    let usage: Value = r.json().await.unwrap();
    assert_eq!(usage["client"]["max_calls_per_minute"], 3);
    assert_eq!(usage["client"]["calls_this_minute"], 3, "{usage}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn under_the_upstreams_own_window_a_dashboard_gets_its_share_and_alone_the_jobs_use_it_all() {
    // The upstream's budget: 40 calls a 2-second window, which the service learns from its
    // headers (no pace of its own; `Retry-After` is in whole seconds, so a window is two).
    // `nightly` is the batch client, `board` the dashboard.
    const LIMIT: u64 = 40;
    let faults = Faults { latency: Wait::from_millis(15), ..Faults::default() };
    let sim =
        Config { rate_limit_per_minute: LIMIT as u32, rate_window_secs: 2, faults, ..Config::default() };
    let env = clients(&["nightly", "board"], &[("STITCHER__UPSTREAM__REQUESTS_PER_MINUTE", "0")]);
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let world = World::start(sim, &env).await;
    let nightly0 = calls_of(&world, "nightly").await;

    // nightly: 4 jobs of 75 calls (3 batches × 25 windows).
    let mut jobs = Vec::new();
    for j in 0..4 {
        let job = world.http.post(format!("{}/v1/jobs", world.url)).bearer_auth("nightly-key");
        let r = job.json(&question(&world, 75, 25, 20 + j)).send().await.unwrap();
        assert_eq!(r.status().as_u16(), 202);
        jobs.push(r.headers()["location"].to_str().unwrap().to_owned());
    }
    while calls_of(&world, "nightly").await - nightly0 < 8.0 {
        tokio::time::sleep(Wait::from_millis(10)).await;
    }
    // board: one question of 10 calls at a time while nightly runs.
    let asked: Vec<Value> = (0..4).map(|q| question(&world, 1, 10, 30 + q)).collect();
    for q in &asked {
        let (status, answer) = world.ask_as("/v1/historical", q, Some("board-key")).await;
        assert_eq!(status, 200, "{answer}");
    }
    let alone_from = chrono::Utc::now().timestamp() + 2;
    // While a question of board's waits (from its first call to its last, in the order the
    // upstream saw them, 429s and all), it takes its share of the calls.
    let arrivals = world.sim.stats().arrivals;
    let (mut board, mut both) = (0, 0);
    for q in &asked {
        let at: Vec<usize> = arrivals
            .iter()
            .enumerate()
            .filter(|(_, a)| a.tweet_ids.first().is_some_and(|t| q["tweet_ids"][0] == *t))
            .map(|(i, _)| i)
            .collect();
        assert!(at.len() >= 10, "{at:?}");
        board += at.len();
        both += at.last().unwrap() - at[0] + 1;
    }
    assert!(board * 10 >= both * 4, "board took {board} of the {both} calls made while it waited");

    // Alone, nightly takes every call each window allows, until its jobs are done.
    for job in jobs {
        loop {
            let r = world
                .http
                .get(format!("{}{job}", world.url))
                .bearer_auth("nightly-key")
                .send()
                .await
                .unwrap();
            let status: Value = r.json().await.unwrap();
            if status["state"] == "done" {
                break;
            }
            assert!(status["state"] == "running" || status["state"] == "queued", "{status}");
            tokio::time::sleep(Wait::from_millis(50)).await;
        }
    }
    let windows = world.sim.stats().allowed_by_window;
    let last = *windows.keys().next_back().unwrap();
    // The windows that began once board was done, but the last (the jobs' last calls).
    let alone: Vec<(i64, u64)> =
        windows.into_iter().filter(|(end, _)| end - 2 >= alone_from && *end < last).collect();
    assert!(alone.len() >= 3, "nightly ran alone for a few windows: {alone:?}");
    assert!(alone.iter().all(|(_, allowed)| *allowed == LIMIT), "every window used whole: {alone:?}");
}

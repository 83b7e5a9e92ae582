//! Concurrent questions against a rate-limited simulator, and overload: the rate budget
//! is shared by all questions, and a full service says so at once.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use chrono::Duration as Span;
use end_to_end::{World, tweet};
use engagement::time::format_instant;
use serde_json::{Value, json};
use simulator::Config;
use simulator::faults::Faults;

/// Three questions of 8, 10 and 12 calls (25 Tweets each, older than the range).
fn questions(world: &World) -> Vec<Value> {
    let end = world.now - Span::days(1);
    [8i64, 10, 12]
        .iter()
        .enumerate()
        .map(|(q, windows)| {
            let ids: Vec<String> =
                (0..25).map(|n| tweet(world.now, 2000.0, q as u64 * 100 + n).to_string()).collect();
            let range = stitch::windows(engagement::TimeRange::covering(end - Span::days(28 * windows), end));
            json!({
                "tweet_ids": ids,
                "engagement_types": ["impressions"],
                "groupings": {"g": {"group_by": ["tweet.id", "engagement.type"]}},
                "start": format_instant(range[1].start),
                "end": format_instant(end),
            })
        })
        .collect()
}

/// Asks the three questions at once and checks every answer against the oracle; returns
/// the simulator's statistics.
async fn ask_all_exactly(world: &World) -> simulator::stats::Snapshot {
    let bodies = questions(world);
    let asks = bodies.iter().map(|b| world.ask("/insights/engagement/historical", b));
    let answers = futures::future::join_all(asks).await;
    for ((status, answer), body) in answers.iter().zip(&bodies) {
        assert_eq!(*status, 200, "{answer}");
        assert_eq!(*answer, world.oracle(body).await);
    }
    world.sim.stats()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_budget_at_the_upstreams_limit_draws_no_429() {
    // The simulator allows 30 calls per 2-second window (900 a minute); the service spends
    // 600 a minute, spaced evenly, across all questions together.
    let config = Config { rate_limit_per_minute: 30, rate_window_secs: 2, ..Config::default() };
    let world = World::start(config, &[("STITCHER__UPSTREAM__REQUESTS_PER_MINUTE", "600")]).await;
    let stats = ask_all_exactly(&world).await;
    assert_eq!(stats.by_status.get("429"), None, "{stats:?}");
    assert_eq!(stats.requests_total, 30);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_budget_above_the_limit_slows_down_by_the_headers_and_stays_exact() {
    // 6 calls per 2-second window upstream; the service has no budget of its own and 8
    // calls in flight, so only the x-per-minute-* headers and 429s can slow it.
    let config = Config { rate_limit_per_minute: 6, rate_window_secs: 2, ..Config::default() };
    let world = World::start(config, &[("STITCHER__UPSTREAM__MAX_ATTEMPTS", "10")]).await;
    let stats = ask_all_exactly(&world).await;
    let refused = stats.by_status.get("429").copied().unwrap_or(0);
    // Each window, the calls already in flight when the window is spent may be refused
    // (at most 8); pausing on the headers keeps it far from retrying blindly.
    let windows = (stats.requests_total - refused).div_ceil(6);
    assert!(refused <= 8 * windows, "{refused} refusals over {windows} windows: {stats:?}");
    assert_eq!(stats.requests_total - refused, 30, "every slice answered once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_max_concurrent_requests_the_answer_is_503_at_once() {
    let config = Config {
        faults: Faults { latency: Duration::from_millis(1500), ..Faults::default() },
        ..Config::default()
    };
    let world = World::start(config, &[("STITCHER__SERVER__MAX_CONCURRENT_REQUESTS", "1")]).await;
    let bodies = questions(&world);
    let slow = {
        let (http, url, body) = (world.http.clone(), world.url.clone(), bodies[0].clone());
        tokio::spawn(async move {
            http.post(format!("{url}/insights/engagement/historical"))
                .bearer_auth("demo-key")
                .json(&body)
                .send()
                .await
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (status, answer) = world.ask("/insights/engagement/historical", &bodies[1]).await;
    assert_eq!(status, 503, "{answer}");
    assert!(answer["errors"][0].as_str().unwrap().contains("retry in"));
    assert!(!slow.is_finished(), "the refusal came while the first question was still running");
    assert_eq!(slow.await.unwrap().unwrap().status().as_u16(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_small_question_goes_between_a_big_ones_calls_and_a_disconnect_cancels() {
    let latency = Duration::from_millis(40);
    let config = Config { faults: Faults { latency, ..Faults::default() }, ..Config::default() };
    let world = World::start(config, &[("STITCHER__UPSTREAM__MAX_IN_FLIGHT", "2")]).await;
    let now = world.now;
    // 1,000 Tweets over 5 years: 40 batches × 66 windows, far more calls than this test waits for.
    let big_ids: Vec<String> = (0..1000).map(|n| tweet(now, 2200.0, n).to_string()).collect();
    let big = json!({
        "tweet_ids": big_ids, "engagement_types": ["impressions"],
        "groupings": {"g": {"group_by": ["tweet.id", "engagement.type"]}},
        "start": format_instant(now - Span::days(5 * 365)), "end": format_instant(now - Span::days(1)),
    });
    let small_ids: Vec<String> = (0..10).map(|n| tweet(now, 60.0, 5000 + n).to_string()).collect();
    let end = now - Span::days(1);
    let one_window = stitch::windows(engagement::TimeRange::covering(end - Span::days(10), end));
    let small = json!({
        "tweet_ids": small_ids, "engagement_types": ["impressions"],
        "groupings": {"g": {"group_by": ["tweet.id", "engagement.type"]}},
        "start": format_instant(one_window.last().unwrap().start), "end": format_instant(end),
    });
    let running = {
        let (http, url) = (world.http.clone(), world.url.clone());
        tokio::spawn(async move {
            http.post(format!("{url}/insights/engagement/historical"))
                .bearer_auth("demo-key")
                .json(&big)
                .send()
                .await
        })
    };
    while world.upstream_calls() < 10 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let before = world.upstream_calls();
    let (status, answer) = world.ask("/insights/engagement/historical", &small).await;
    let after = world.upstream_calls();
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer, world.oracle(&small).await);
    // The small question's one call waited for the calls already in flight (2) and about
    // one turn of the big question (a couple more if releases raced its arrival), not for
    // the big question's thousands of queued calls.
    assert!(
        after - before <= 8,
        "{} upstream calls were answered while the small question waited",
        after - before
    );
    assert!(!running.is_finished());

    // The client of the big question goes away: its remaining calls are cancelled.
    running.abort();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let settled = world.upstream_calls();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(world.upstream_calls(), settled, "no more upstream calls after the client left");
    assert!(settled < 200, "the big question was cut short: {settled} calls of 2,640");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_in_flight_share_a_bounded_number_of_counts() {
    let config = Config {
        faults: Faults { latency: Duration::from_millis(800), ..Faults::default() },
        ..Config::default()
    };
    let world = World::start(config, &[("STITCHER__SERVER__MAX_COUNTS_IN_FLIGHT", "1000")]).await;
    let end = (world.now - Span::days(2)).date_naive().and_hms_opt(0, 0, 0).unwrap().and_utc();
    let daily = |days: i64, salt: u64| {
        let ids: Vec<String> = (0..25).map(|n| tweet(world.now, 400.0, salt + n).to_string()).collect();
        json!({
            "tweet_ids": ids, "engagement_types": ["impressions"],
            "groupings": {"g": {"group_by": ["tweet.id", "engagement.type", "engagement.day"]}},
            "start": format_instant(end - Span::days(days)), "end": format_instant(end),
        })
    };
    // 25 Tweets × 1 type × 100 days = 2,500 counts: never answerable here.
    let (status, answer) = world.ask("/v1/historical", &daily(100, 0)).await;
    assert_eq!(status, 400);
    assert!(answer["errors"][0].as_str().unwrap().contains("would hold 2500 counts"), "{answer}");
    // 600 counts each: the first holds its room while it runs, the second does not fit.
    let first = {
        let (http, url, body) = (world.http.clone(), world.url.clone(), daily(24, 100));
        tokio::spawn(async move {
            http.post(format!("{url}/v1/historical")).bearer_auth("demo-key").json(&body).send().await
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (status, answer) = world.ask("/v1/historical", &daily(24, 200)).await;
    assert_eq!(status, 503, "{answer}");
    let first = first.await.unwrap().unwrap();
    assert_eq!(first.status().as_u16(), 200);
    // Once the first is answered (its body written to the end), its room is free again;
    // the server lets go of it just after the last byte leaves, so allow it a moment.
    first.bytes().await.unwrap();
    let mut status = 0;
    for _ in 0..50 {
        status = world.ask("/v1/historical", &daily(24, 200)).await.0;
        if status != 503 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(status, 200);
}

//! The service against the simulator over HTTP: answers equal the oracle's, failures map
//! as ARCHITECTURE.md says, bad requests never reach the upstream.

#![allow(clippy::unwrap_used)]

use std::collections::HashSet;

use chrono::Duration;
use end_to_end::{Dice, World, counts_as_strings, tweet};
use engagement::time::format_instant;
use engagement::{Endpoint, TweetId};
use serde_json::{Value, json};
use simulator::Config;
use simulator::faults::Faults;

const SHAPES: [&[&str]; 10] = [
    &["engagement.type"],
    &["tweet.id"],
    &["tweet.id", "engagement.type"],
    &["engagement.type", "tweet.id"],
    &["engagement.hour"],
    &["engagement.day", "engagement.type"],
    &["tweet.id", "engagement.hour"],
    &["engagement.hour", "engagement.day"],
    &["tweet.id", "engagement.type", "engagement.day", "engagement.hour"],
    &["engagement.type", "tweet.id", "engagement.day", "engagement.hour"],
];

/// A seeded random question: ranges up to 6 years, up to 300 Tweets created over the last
/// 3 years, every grouping shape; sizes kept so the answers stay a few MB.
fn random_question(dice: &mut Dice, now: chrono::DateTime<chrono::Utc>) -> Value {
    let hours = match dice.below(10) {
        0..=3 => dice.between(1, 28 * 24),
        4..=6 => dice.between(28 * 24, 365 * 24),
        _ => dice.between(365 * 24, 6 * 365 * 24),
    };
    let types: Vec<&str> = Endpoint::Historical.types().map(|t| t.name()).collect();
    let chosen: Vec<&str> = (0..dice.between(1, 3)).map(|_| *dice.pick(&types)).collect();
    let mut shapes: Vec<&[&str]> = vec![*dice.pick(&SHAPES)];
    if dice.below(3) == 0 {
        let second = *dice.pick(&SHAPES[..8]);
        if second != shapes[0] {
            shapes.push(second);
        }
    }
    let hourly = shapes.iter().any(|s| s.contains(&"engagement.day") && s.contains(&"engagement.hour"));
    let budget = if hourly { 60_000 } else { 1_500_000 };
    let max_ids = (budget / (hours * chosen.len() as u64)).clamp(1, 300);
    let ids: Vec<String> = (0..dice.between(1, max_ids))
        .map(|k| tweet(now, dice.between(0, 3 * 365 * 24) as f64 / 24.0, k).to_string())
        .collect();
    let end =
        now - Duration::hours(dice.between(24, 24 * 90) as i64) - Duration::minutes(dice.below(60) as i64);
    let start = end - Duration::hours(hours as i64);
    let stamp = |t: chrono::DateTime<chrono::Utc>, dice: &mut Dice| {
        if dice.below(4) == 0 {
            t.format("%Y-%m-%d").to_string()
        } else {
            t.format("%Y-%m-%dT%H:%M:00Z").to_string()
        }
    };
    let groupings: serde_json::Map<String, Value> =
        shapes.iter().enumerate().map(|(i, s)| (format!("grouping {i}"), json!({ "group_by": s }))).collect();
    json!({
        "tweet_ids": ids,
        "engagement_types": chosen,
        "groupings": groupings,
        "start": stamp(start, dice),
        "end": stamp(end, dice),
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_random_questions_equal_the_oracle() {
    let world = World::start(Config::default(), &[("STITCHER__UPSTREAM__MAX_IN_FLIGHT", "16")]).await;
    let mut dice = Dice::new(20261126);
    for case in 0..200 {
        let body = random_question(&mut dice, world.now);
        let expected = world.oracle(&body).await;
        if case % 2 == 0 {
            let (status, got) = world.ask("/insights/engagement/historical", &body).await;
            assert_eq!(status, 200, "case {case}: {got}");
            assert!(got == expected, "case {case} differs from the oracle: {body}");
        } else {
            let (status, got) = world.ask("/v1/historical", &body).await;
            assert_eq!(status, 200, "case {case}: {got}");
            assert!(
                counts_as_strings(got["data"].clone()) == expected,
                "case {case} differs from the oracle: {body}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_stay_exact_through_503s_latency_and_429_bursts() {
    let faults = Faults {
        error_rate: 0.3,
        latency: std::time::Duration::from_millis(2),
        jitter: std::time::Duration::from_millis(8),
        burst_every: 400,
        burst_length: 3,
        ..Faults::default()
    };
    let world = World::start(
        Config { faults, seed: 5, ..Config::default() },
        &[("STITCHER__UPSTREAM__MAX_ATTEMPTS", "8")],
    )
    .await;
    let mut dice = Dice::new(7);
    let mut exact = 0;
    for case in 0..200 {
        let body = random_question(&mut dice, world.now);
        let expected = world.oracle(&body).await;
        let (status, got) = world.ask("/insights/engagement/historical", &body).await;
        match status {
            200 => {
                assert!(got == expected, "case {case}: a 200 that differs from the oracle: {body}");
                exact += 1;
            }
            429 | 502 | 504 => {
                assert!(got["failed_slices"].as_array().is_some_and(|f| !f.is_empty()), "case {case}: {got}")
            }
            other => panic!("case {case}: unexpected status {other}: {got}"),
        }
    }
    assert!(exact >= 190, "only {exact} of 200 answered: retries are not doing their job");
    let stats = world.sim.stats();
    assert!(
        stats.by_status.get("503").copied().unwrap_or(0) > 0
            && stats.by_status.get("429").copied().unwrap_or(0) > 0,
        "{stats:?}"
    );
}

fn question(ids: &[TweetId], start: &str, end: &str) -> Value {
    json!({
        "tweet_ids": ids.iter().map(ToString::to_string).collect::<Vec<_>>(),
        "engagement_types": ["impressions", "engagements"],
        "groupings": {"per tweet": {"group_by": ["tweet.id", "engagement.type"]}, "daily": {"group_by": ["engagement.day"]}},
        "start": start, "end": end
    })
}

fn day(now: chrono::DateTime<chrono::Utc>, days_ago: i64) -> String {
    format_instant(engagement::time::floor_hour(now - Duration::days(days_ago)))
}

#[tokio::test]
async fn a_foreign_tweet_is_403_naming_it_and_a_deleted_one_is_listed() {
    let now = end_to_end::test_now();
    let (mine, foreign, deleted) = (tweet(now, 200.0, 0), tweet(now, 200.0, 1), tweet(now, 100.0, 2));
    let config = Config {
        foreign_ids: HashSet::from([foreign]),
        deleted_ids: HashSet::from([deleted]),
        ..Config::default()
    };
    let world = World::start(config, &[]).await;
    let (status, body) = world
        .ask("/insights/engagement/historical", &question(&[mine, foreign], &day(now, 300), &day(now, 10)))
        .await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["errors"][0], format!("Forbidden to access tweets: {foreign}"));
    assert!(body["failed_slices"][0]["tweet_ids"].as_array().unwrap().contains(&json!(foreign.to_string())));

    let q = question(&[mine, deleted], &day(now, 300), &day(now, 10));
    let (status, body) = world.ask("/insights/engagement/historical", &q).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["unavailable_tweet_ids"], json!([deleted.to_string()]));
    assert!(body["per tweet"].get(deleted.to_string()).is_none());
    assert_eq!(body, world.oracle(&q).await);
}

#[tokio::test]
async fn partial_answers_list_the_window_that_keeps_failing() {
    let now = end_to_end::test_now();
    let ids: Vec<TweetId> = (0..30).map(|n| tweet(now, 400.0 + n as f64, n)).collect();
    let range = engagement::TimeRange::covering(now - Duration::days(200), now - Duration::days(10));
    let windows = stitch::windows(range);
    let broken = windows[2];
    let faults = Faults { failing_window_starts: vec![broken.start], ..Faults::default() };
    // Without the store, calls follow the fixed grid (tests/store.rs has the same with it).
    let world = World::start(
        Config { faults, ..Config::default() },
        &[("STITCHER__UPSTREAM__MAX_ATTEMPTS", "3"), ("STITCHER__STORE__ENABLED", "false")],
    )
    .await;
    let mut q = question(&ids, &format_instant(range.start), &format_instant(range.end));

    let (status, strict) = world.ask("/v1/historical", &q).await;
    assert_eq!(status, 502, "{strict}");
    assert_eq!(strict["failed_slices"][0]["start"], format_instant(broken.start));

    q["partial"] = json!(true);
    let (status, body) = world.ask("/v1/historical", &q).await;
    assert_eq!(status, 200, "{body}");
    let incomplete = body["meta"]["incomplete"].as_array().unwrap();
    assert_eq!(incomplete.len(), 2, "the broken window, once per batch of 25: {incomplete:?}");
    for slice in incomplete {
        assert_eq!(
            (slice["start"].clone(), slice["end"].clone()),
            (json!(format_instant(broken.start)), json!(format_instant(broken.end)))
        );
        assert_eq!(slice["status"], 503);
    }
    // Everything else is exact: the oracle over the windows before and after the broken one.
    let before = question(&ids, &format_instant(range.start), &format_instant(broken.start));
    let after = question(&ids, &format_instant(broken.end), &format_instant(range.end));
    let (a, b) = (world.oracle(&before).await, world.oracle(&after).await);
    let expected =
        stitch::merge(serde_json::from_value(a).unwrap(), serde_json::from_value(b).unwrap()).unwrap();
    let got: engagement::Response = serde_json::from_value(counts_as_strings(body["data"].clone())).unwrap();
    assert_eq!(got.groupings, expected.groupings);
}

#[tokio::test]
async fn upstream_calls_are_the_plans_and_skip_windows_before_creation() {
    let now = end_to_end::test_now();
    // 60 Tweets in three age groups over a 2-year range: the young ones need few windows.
    let ids: Vec<TweetId> = (0..60u64)
        .map(|n| tweet(now, [700.0, 300.0, 40.0][(n / 20) as usize] - n as f64 * 0.01, n))
        .collect();
    let range = engagement::TimeRange::covering(now - Duration::days(730), now - Duration::days(1));
    // Without the store, the plan's grid (tests/store.rs counts the calls with it).
    let world = World::start(Config::default(), &[("STITCHER__STORE__ENABLED", "false")]).await;
    let q = question(&ids, &format_instant(range.start), &format_instant(range.end));
    let (status, body) = world.ask("/v1/historical", &q).await;
    assert_eq!(status, 200, "{body}");
    let plan = stitch::plan(&ids, range, 25);
    assert_eq!(
        world.upstream_calls(),
        plan.fetched.len() as u64,
        "one call per planned slice, no duplicates"
    );
    assert!(plan.fetched.len() < plan.windows.len() * plan.batches.len());
    assert_eq!(body["meta"]["upstream_calls"], plan.fetched.len());
    assert_eq!(body["meta"]["slices_synthesized"], plan.planned() - plan.fetched.len());
    // No call asked for a window that ended before its batch's oldest Tweet.
    for s in &plan.fetched {
        let oldest = plan.batches[s.batch][0].created_at();
        assert!(s.window.end > oldest || plan.fetched.iter().filter(|f| f.batch == s.batch).count() == 1);
    }
    assert_eq!(counts_as_strings(body["data"].clone()), world.oracle(&q).await);
}

#[tokio::test]
async fn bad_requests_are_4xx_with_a_message_and_never_reach_the_upstream() {
    let now = end_to_end::test_now();
    let world = World::start(
        Config::default(),
        &[("STITCHER__SERVER__MAX_TWEET_IDS", "50"), ("STITCHER__SERVER__MAX_BODY_BYTES", "4096")],
    )
    .await;
    let good = question(&[tweet(now, 30.0, 0)], &day(now, 20), &day(now, 2));
    let with = |patch: Value| {
        let mut b = good.clone();
        for (k, v) in patch.as_object().unwrap() {
            b[k] = v.clone();
        }
        b
    };
    let many: Vec<String> = (0..51).map(|n| tweet(now, 30.0, n).to_string()).collect();
    let huge: Vec<String> = (0..400).map(|n| format!("{}", 1_000_000_000_000_000_000u64 + n)).collect();
    let cases: Vec<(Value, &str, u16)> = vec![
        (with(json!({"start": "2024-13-01"})), "is not a date", 400),
        (with(json!({"start": "yesterday"})), "is not a date", 400),
        (with(json!({"end": "2024-02-30"})), "is not a date", 400),
        (with(json!({"start": "2024-01-01 00:00"})), "is not a date", 400),
        (with(json!({"start": day(now, 2), "end": day(now, 20)})), "must be before end", 400),
        (with(json!({"start": day(now, 5), "end": day(now, 5)})), "must be before end", 400),
        (with(json!({"start": "2014-08-31", "end": "2014-10-01"})), "before 2014-09-01", 400),
        (with(json!({"start": "2030-01-01", "end": "2030-02-01"})), "in the future", 400),
        (with(json!({"start": 20240101})), "must be a string", 400),
        (with(json!({"engagement_types": ["likes"]})), "unknown engagement type \"likes\"", 400),
        (with(json!({"engagement_types": ["media_clicks"]})), "unknown engagement type", 400),
        (
            with(json!({"engagement_types": ["quote_tweets"]})),
            "not available on the historical endpoint",
            400,
        ),
        (with(json!({"engagement_types": []})), "non-empty array", 400),
        (with(json!({"engagement_types": "impressions"})), "non-empty array", 400),
        (with(json!({"engagement_types": [1]})), "must hold strings", 400),
        (with(json!({"groupings": {}})), "at least one grouping", 400),
        (
            with(
                json!({"groupings": {"g": {"group_by": ["tweet.id", "engagement.type", "engagement.hour", "engagement.day"]}}}),
            ),
            "4 values must be",
            400,
        ),
        (
            with(
                json!({"groupings": {"a": {"group_by": ["tweet.id", "engagement.type", "engagement.day", "engagement.hour"]}, "b": {"group_by": ["engagement.type", "tweet.id", "engagement.day", "engagement.hour"]}}}),
            ),
            "only one grouping with 4",
            400,
        ),
        (
            with(
                json!({"groupings": {"a": {"group_by": ["tweet.id"]}, "b": {"group_by": ["tweet.id"]}, "c": {"group_by": ["tweet.id"]}, "d": {"group_by": ["tweet.id"]}}}),
            ),
            "at most 3",
            400,
        ),
        (with(json!({"groupings": {"g": {"group_by": ["tweet.id", "tweet.id"]}}})), "twice", 400),
        (with(json!({"groupings": {"g": {"group_by": ["engagement.minute"]}}})), "not a group_by value", 400),
        (with(json!({"groupings": {"g": ["tweet.id"]}})), "must be an object with a group_by array", 400),
        (with(json!({"groupings": {"errors": {"group_by": ["tweet.id"]}}})), "reserved", 400),
        (with(json!({"tweet_ids": ["abc"]})), "not Tweet IDs", 400),
        (with(json!({"tweet_ids": ["-5"]})), "not Tweet IDs", 400),
        (with(json!({"tweet_ids": [1.5]})), "not Tweet IDs", 400),
        (with(json!({"tweet_ids": []})), "non-empty array", 400),
        (with(json!({"tweet_ids": "123"})), "non-empty array", 400),
        (with(json!({"tweet_ids": ["18446744073709551616"]})), "not Tweet IDs", 400),
        (with(json!({"tweet_ids": many})), "at most 50", 400),
        (with(json!({"partial": true})), "only for the native answer", 400),
        (json!(["not", "an", "object"]), "must be a JSON object", 400),
        (with(json!({"tweet_ids": huge})), "larger than 4096 bytes", 413),
    ];
    assert!(cases.len() >= 30);
    for (body, expected, status) in &cases {
        let (got, answer) = world.ask("/insights/engagement/historical", body).await;
        assert_eq!(got, *status, "{body}: {answer}");
        let message = answer["errors"]
            .as_array()
            .map(|e| e.iter().map(|m| m.as_str().unwrap_or("")).collect::<Vec<_>>().join(" | "))
            .unwrap_or_default();
        assert!(message.contains(expected), "{body}: expected \"{expected}\" in {message}");
    }
    // Not JSON at all.
    let resp = world
        .http
        .post(format!("{}/v1/historical", world.url))
        .bearer_auth("demo-key")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 400);
    assert!(resp.text().await.unwrap().contains("not valid JSON"));
    // Keys and handles.
    let (status, body) = world.ask_as("/insights/engagement/historical", &good, None).await;
    assert_eq!(status, 401);
    assert!(body["errors"][0].as_str().unwrap().contains("Authorization: Bearer"));
    assert_eq!(world.ask_as("/insights/engagement/historical", &good, Some("wrong-key")).await.0, 401);
    let resp = world
        .http
        .post(format!("{}/insights/engagement/historical", world.url))
        .bearer_auth("demo-key")
        .header("x-handle", "someone-else")
        .json(&good)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 403);
    assert!(resp.text().await.unwrap().contains("not granted"));
    assert_eq!(world.upstream_calls(), 0, "no bad request reached the upstream");
    // And the good one does.
    assert_eq!(world.ask("/insights/engagement/historical", &good).await.0, 200);
    assert!(world.upstream_calls() > 0);
}

#[tokio::test]
async fn a_future_end_is_clamped_and_said_so() {
    let now = end_to_end::test_now();
    // Both clocks live: the service clamps to the end of the hour in progress, which the
    // simulator accepts.
    let world = World::start_with_clock(Config::default(), &[]).await;
    let q = question(&[tweet(now, 10.0, 0)], &day(now, 3), "2099-01-01");
    let (status, body) = world.ask("/v1/historical", &q).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["meta"]["end_clamped"], true);
    let end = engagement::parse_instant(body["meta"]["end"].as_str().unwrap()).unwrap();
    assert!(end >= now && end <= now + Duration::hours(2));
    assert_eq!(body["data"]["end"], body["meta"]["end"]);
}

#[tokio::test]
async fn demo_mode_serves_the_demo_key_with_no_setup() {
    let store = tempfile::tempdir().unwrap();
    let settings = server::Settings::load_with(
        None,
        Some(
            [
                ("STITCHER__SERVER__LISTEN".to_string(), "127.0.0.1:0".to_string()),
                ("STITCHER__STORE__PATH".to_string(), store.path().display().to_string()),
            ]
            .into(),
        ),
    )
    .unwrap();
    let app = server::Application::build(settings).await.unwrap();
    assert!(app.upstream_url().starts_with("http://127.0.0.1:"));
    let url = format!("http://{}", app.local_addr().unwrap());
    tokio::spawn(app.run());
    let body = json!({
        "tweet_ids": ["1800000000000000000", "1850000000000000000"],
        "engagement_types": ["impressions", "engagements"],
        "groupings": {"by tweet": {"group_by": ["tweet.id", "engagement.type"]}},
        "start": "2024-07-01", "end": "2025-01-01"
    });
    let resp = reqwest::Client::new()
        .post(format!("{url}/insights/engagement/historical"))
        .bearer_auth("demo-key")
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let answer: Value = resp.json().await.unwrap();
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["start"], "2024-07-01T00:00:00Z");
    let impressions = answer["by tweet"]["1800000000000000000"]["impressions"].as_str().unwrap();
    assert!(impressions.parse::<u64>().unwrap() > 0);
    let ready = reqwest::get(format!("{url}/readyz")).await.unwrap();
    assert_eq!(ready.status().as_u16(), 200);
}

#[tokio::test]
async fn a_question_past_its_deadline_is_504_naming_what_was_not_done() {
    let now = end_to_end::test_now();
    let config = Config {
        faults: Faults { latency: std::time::Duration::from_secs(3), ..Faults::default() },
        ..Config::default()
    };
    let world = World::start(config, &[("STITCHER__SERVER__REQUEST_TIMEOUT_SECS", "1")]).await;
    let q = question(&[tweet(now, 400.0, 0)], &day(now, 100), &day(now, 2));
    let (status, body) = world.ask("/v1/historical", &q).await;
    assert_eq!(status, 504, "{body}");
    assert!(body["errors"][0].as_str().unwrap().contains("not answered within 1 s"), "{body}");
    let failed = body["failed_slices"].as_array().unwrap();
    let plan = stitch::plan(
        &[tweet(now, 400.0, 0)],
        engagement::TimeRange::covering(now - Duration::days(100), now - Duration::days(2)),
        25,
    );
    assert_eq!(failed.len(), plan.fetched.len(), "every slice not done is named");
}

//! `/totals` and `/28hr` without their limit on Tweets: the service's answer equals the
//! simulator's answers per batch of 250 or 25, merged (and what one call with no limit
//! would give), made in as many calls; identical questions at once share their calls.

#![allow(clippy::unwrap_used)]

use std::collections::HashSet;
use std::time::Duration;

use end_to_end::{World, counts_as_strings, tweet};
use engagement::{Endpoint, Limits, TweetId};
use serde_json::{Value, json};
use simulator::Config;
use simulator::faults::Faults;

/// `n` Tweets created over the last 200 days (so some are past `/totals`' 90 days for
/// impressions), the tenth of them deleted.
fn tweets(world_now: chrono::DateTime<chrono::Utc>, n: u64) -> (Vec<TweetId>, HashSet<TweetId>) {
    let ids: Vec<TweetId> = (0..n).map(|k| tweet(world_now, 1.0 + (k * 199 / n.max(1)) as f64, k)).collect();
    let deleted = ids.iter().copied().step_by(10).collect();
    (ids, deleted)
}

fn question(endpoint: Endpoint, ids: &[TweetId]) -> Value {
    let (types, mut groupings) = match endpoint {
        Endpoint::Totals => (
            json!(["impressions", "engagements", "favorites", "quote_tweets", "video_views"]),
            json!({"per tweet": {"group_by": ["tweet.id", "engagement.type"]}}),
        ),
        _ => (
            json!(["impressions", "engagements", "url_clicks"]),
            json!({
                "per tweet": {"group_by": ["tweet.id", "engagement.type"]},
                "hourly": {"group_by": ["engagement.type", "tweet.id", "engagement.day", "engagement.hour"]},
            }),
        ),
    };
    groupings["all"] = json!({"group_by": ["engagement.type"]});
    json!({
        "tweet_ids": ids.iter().map(ToString::to_string).collect::<Vec<_>>(),
        "engagement_types": types,
        "groupings": groupings,
    })
}

/// What one call to `endpoint` with no limit on Tweets answers, by the simulator's own rules.
fn unlimited(world: &World, endpoint: Endpoint, body: &Value) -> Value {
    let limits = Limits { max_tweet_ids: usize::MAX, ..Limits::of(endpoint) };
    let answer = simulator::answer(&world.sim.config, &world.sim.model(), endpoint, body, &limits).unwrap();
    serde_json::to_value(&answer).unwrap()
}

/// The simulator's answers to `body` asked in the API's own batches (250 or 25 Tweets,
/// within its limits), merged.
fn per_batch(world: &World, endpoint: Endpoint, ids: &[TweetId], body: &Value) -> Value {
    let model = world.sim.model();
    let mut merged = engagement::Response::default();
    for batch in stitch::plan::batches(ids, endpoint.max_tweet_ids()) {
        let mut asked = body.clone();
        asked["tweet_ids"] = json!(batch.iter().map(ToString::to_string).collect::<Vec<_>>());
        let answer =
            simulator::answer(&world.sim.config, &model, endpoint, &asked, &Limits::of(endpoint)).unwrap();
        stitch::merge::absorb(&mut merged, answer).unwrap();
    }
    serde_json::to_value(&merged).unwrap()
}

fn calls_to(world: &World, endpoint: Endpoint) -> u64 {
    world.sim.stats().by_endpoint.get(endpoint.name()).copied().unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn totals_and_28hr_for_600_and_80_tweets_equal_one_unlimited_call() {
    let now = end_to_end::test_now();
    let (ids, deleted) = tweets(now, 600);
    let world = World::start(Config { deleted_ids: deleted, ..Config::default() }, &[]).await;
    for (endpoint, drop_in, native) in [
        (Endpoint::Totals, "/insights/engagement/totals", "/v1/totals"),
        (Endpoint::Hr28, "/insights/engagement/28hr", "/v1/28hr"),
    ] {
        for n in [600usize, 80] {
            let body = question(endpoint, &ids[..n]);
            let expected = unlimited(&world, endpoint, &body);
            assert_eq!(
                per_batch(&world, endpoint, &ids[..n], &body),
                expected,
                "{endpoint:?} per batch, merged"
            );
            assert!(!expected["unavailable_tweet_ids"].as_array().unwrap().is_empty());
            let batches = n.div_ceil(endpoint.max_tweet_ids()) as u64;

            let before = calls_to(&world, endpoint);
            let (status, got) = world.ask(drop_in, &body).await;
            assert_eq!(status, 200, "{endpoint:?} {n}: {got}");
            assert_eq!(got, expected, "{endpoint:?} for {n} Tweets");
            assert_eq!(calls_to(&world, endpoint) - before, batches, "{endpoint:?} for {n} Tweets");

            let (status, got) = world.ask(native, &body).await;
            assert_eq!(status, 200, "{endpoint:?} {n}: {got}");
            assert_eq!(counts_as_strings(got["data"].clone()), expected, "{endpoint:?} native for {n}");
            assert!(got["data"]["all"]["impressions"].is_u64());
            let meta = &got["meta"];
            assert_eq!(meta["tweets"], n);
            assert_eq!(meta["batches"], batches);
            assert_eq!(
                meta["upstream_calls"].as_u64().unwrap() + meta["shared_calls"].as_u64().unwrap(),
                batches
            );
        }
    }
    // The counts for 600 Tweets were made in calls of at most 250 and 25 Tweets, and the
    // deleted Tweets were counted once in the merged answer.
    let body = question(Endpoint::Totals, &ids);
    let (_, got) = world.ask("/insights/engagement/totals", &body).await;
    assert_eq!(got["errors"], json!(["60 Tweet ID(s) are unavailable"]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bad_questions_are_refused_before_any_call() {
    let now = end_to_end::test_now();
    let (ids, _) = tweets(now, 30);
    let world = World::start(Config::default(), &[]).await;
    let mut body = question(Endpoint::Totals, &ids);
    body["engagement_types"] = json!(["url_clicks"]);
    body["groupings"] = json!({"by day": {"group_by": ["engagement.day"]}});
    let (status, got) = world.ask("/insights/engagement/totals", &body).await;
    assert_eq!(status, 400, "{got}");
    let said = got["errors"].to_string();
    assert!(said.contains("url_clicks") && said.contains("engagement.day"), "{said}");
    let mut body = question(Endpoint::Hr28, &ids);
    body["engagement_types"] = json!(["quote_tweets"]);
    let (status, got) = world.ask("/v1/28hr", &body).await;
    assert_eq!(status, 400, "{got}");
    // What only /historical takes is refused, not ignored.
    for (member, value) in [
        ("start", json!("2024-01-01")),
        ("partial", json!(true)),
        ("top", json!({"by": "impressions", "n": 3})),
    ] {
        let mut body = question(Endpoint::Totals, &ids);
        body[member] = value;
        let (status, got) = world.ask("/v1/totals", &body).await;
        assert_eq!(status, 400, "{member}: {got}");
        assert!(got["errors"][0].as_str().unwrap().contains(&format!("takes no {member}")), "{got}");
    }
    let (status, got) =
        world.ask("/insights/engagement/28hr?format=csv", &question(Endpoint::Hr28, &ids)).await;
    assert_eq!(status, 400, "{got}");
    assert!(got["errors"][0].as_str().unwrap().contains("JSON only"), "{got}");
    assert_eq!(world.upstream_calls(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn identical_questions_at_once_share_their_calls() {
    let now = end_to_end::test_now();
    let (ids, _) = tweets(now, 100);
    // Calls slow enough that the second question comes while the first's are in flight.
    let slow = Faults { latency: Duration::from_millis(1000), ..Faults::default() };
    let world = World::start(Config { faults: slow, ..Config::default() }, &[]).await;
    let body = question(Endpoint::Hr28, &ids);
    let (a, b) = tokio::join!(world.ask("/v1/28hr", &body), world.ask("/v1/28hr", &body));
    assert_eq!((a.0, b.0), (200, 200));
    assert_eq!(a.1["data"], b.1["data"]);
    // Four batches of 25, asked once between the two questions.
    assert_eq!(calls_to(&world, Endpoint::Hr28), 4);
    let shared =
        a.1["meta"]["shared_calls"].as_u64().unwrap() + b.1["meta"]["shared_calls"].as_u64().unwrap();
    assert_eq!(shared, 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn batches_answered_either_side_of_an_hour_are_asked_again() {
    let now = end_to_end::test_now();
    let (ids, _) = tweets(now, 100);
    let slow = Faults { latency: Duration::from_millis(300), ..Faults::default() };
    // Two calls at a time: the first two batches are answered before the hour turns, the
    // last two after.
    let world = World::start(
        Config { faults: slow, ..Config::default() },
        &[("STITCHER__UPSTREAM__MAX_IN_FLIGHT", "2")],
    )
    .await;
    let body = question(Endpoint::Hr28, &ids);
    // The hour turns once the first two are answered; the other two are then on their way
    // (the simulator answers after its latency, by its clock then).
    let turn = async {
        while calls_to(&world, Endpoint::Hr28) < 2 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        world.sim.set_clock(simulator::Clock::Fixed(now + chrono::Duration::hours(1)));
    };
    let ((status, got), ()) = tokio::join!(world.ask("/v1/28hr", &body), turn);
    assert_eq!(status, 200, "{got}");
    let expected = unlimited(&world, Endpoint::Hr28, &body);
    assert_eq!(counts_as_strings(got["data"].clone()), expected, "one 28-hour span, the new one");
    assert_eq!(got["meta"]["upstream_calls"], 8, "four batches, twice");
}

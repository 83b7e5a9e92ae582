//! The store of facts end to end: what is held is not fetched again, whatever the grouping
//! or subset; what is missing takes the fewest calls; recent hours are fetched again once
//! their short life is over; identical calls in flight are made once; and the handle
//! ledger counts, refuses and warns. Every answer is compared with the simulator's oracle.

#![allow(clippy::unwrap_used)]

use chrono::{DateTime, Duration, Utc};
use end_to_end::{World, counts_as_strings, tweet};
use engagement::time::format_instant;
use engagement::{TimeRange, TweetId};
use serde_json::{Value, json};
use simulator::faults::Faults;
use simulator::{Config, Credentials, Handle};

fn question(ids: &[TweetId], range: TimeRange, types: &[&str], groupings: Value) -> Value {
    json!({
        "tweet_ids": ids.iter().map(ToString::to_string).collect::<Vec<_>>(),
        "engagement_types": types,
        "groupings": groupings,
        "start": format_instant(range.start),
        "end": format_instant(range.end),
    })
}

fn daily() -> Value {
    json!({"daily": {"group_by": ["tweet.id", "engagement.type", "engagement.day"]}})
}

fn hour_of_day() -> Value {
    json!({"by hour of day": {"group_by": ["engagement.hour"]}, "totals": {"group_by": ["engagement.type"]}})
}

/// `n` Tweets created about a year before `now`.
fn tweets(now: DateTime<Utc>, n: u64) -> Vec<TweetId> {
    (0..n).map(|k| tweet(now, 400.0 + k as f64 * 0.1, k)).collect()
}

/// `days` days ending `ago` days before `now`, from a time of day off every grid line.
fn days_back(now: DateTime<Utc>, days: i64, ago: i64) -> TimeRange {
    let end = now - Duration::days(ago) - Duration::hours(5);
    TimeRange { start: end - Duration::days(days), end }
}

/// Asks `/v1/historical`; the answer must equal the oracle's. Returns its `meta` and the
/// upstream calls it took.
async fn ask_exact(world: &World, q: &Value) -> (Value, u64) {
    let before = world.upstream_calls();
    let (status, body) = world.ask("/v1/historical", q).await;
    assert_eq!(status, 200, "{body}");
    let calls = world.upstream_calls() - before;
    assert_eq!(counts_as_strings(body["data"].clone()), world.oracle(q).await, "equals the oracle");
    let meta = &body["meta"];
    let slices = |k: &str| meta[k].as_u64().unwrap();
    assert_eq!(
        slices("slices_fetched") + slices("slices_from_store") + slices("slices_synthesized"),
        slices("slices_planned"),
        "every slice of the plan is fetched, held or synthesized: {meta}"
    );
    (body["meta"].clone(), calls)
}

#[tokio::test]
async fn repeats_other_groupings_and_subsets_over_settled_time_cost_no_call() {
    let world = World::start(Config::default(), &[]).await;
    let ids = tweets(world.now, 50);
    let range = days_back(world.now, 60, 5);
    let types = ["impressions", "engagements", "favorites"];
    let (meta, cold) = ask_exact(&world, &question(&ids, range, &types, daily())).await;
    assert_eq!(cold, 2 * 3, "2 batches × ceil(1440 h / 672 h) windows");
    assert_eq!(meta["slices_from_store"], 0);

    let (meta, calls) = ask_exact(&world, &question(&ids, range, &types, daily())).await;
    assert_eq!(calls, 0, "a repeat");
    assert_eq!(meta["upstream_calls"], 0);
    assert_eq!(meta["slices_from_store"], meta["slices_planned"], "{meta}");

    let (_, calls) = ask_exact(&world, &question(&ids, range, &types, hour_of_day())).await;
    assert_eq!(calls, 0, "another grouping");
    let hourly =
        json!({"h": {"group_by": ["engagement.type", "tweet.id", "engagement.day", "engagement.hour"]}});
    let (_, calls) = ask_exact(&world, &question(&ids, range, &types, hourly)).await;
    assert_eq!(calls, 0, "the finest grouping");

    let subset: Vec<TweetId> = ids.iter().copied().step_by(7).collect();
    let inner = TimeRange { start: range.start + Duration::hours(30), end: range.end - Duration::days(3) };
    let (_, calls) = ask_exact(&world, &question(&subset, inner, &["favorites"], daily())).await;
    assert_eq!(calls, 0, "a subset of the Tweets, of the types and of the range");

    // A type not held yet is fetched, for the hours it lacks.
    let (_, calls) = ask_exact(&world, &question(&subset, inner, &["retweets"], daily())).await;
    assert!(calls > 0, "retweets were never fetched");
}

#[tokio::test]
async fn cold_ranges_take_the_fewest_calls_never_more_than_the_published_client() {
    let world = World::start(Config::default(), &[]).await;
    for (k, days) in [7i64, 27, 28, 54, 90, 365].into_iter().enumerate() {
        // Other Tweets each time, so every question is cold.
        let ids: Vec<TweetId> =
            (0..50).map(|n| tweet(world.now, 800.0 + n as f64 * 0.1, 1000 * k as u64 + n)).collect();
        let range = days_back(world.now, days, 3);
        let (_, calls) = ask_exact(
            &world,
            &question(&ids, range, &["impressions"], json!({"t": {"group_by": ["tweet.id"]}})),
        )
        .await;
        let fewest = 2 * (days as u64 * 24).div_ceil(672);
        let published_client = 2 * (days as u64).div_ceil(27);
        assert_eq!(calls, fewest, "{days} days");
        assert!(
            calls <= published_client,
            "{days} days: {calls} calls, the published client {published_client}"
        );
    }
}

#[tokio::test]
async fn a_dashboard_six_simulated_hours_later_equals_the_oracle() {
    // Counts keep growing for 48 hours; the store takes hours older than 72 as final.
    let world = World::start(
        Config { settle_hours: 48, ..Config::default() },
        &[("STITCHER__STORE__FRESH_TTL_SECS", "1")],
    )
    .await;
    let ids: Vec<TweetId> = (0..30).map(|k| tweet(world.now, 6.0 + k as f64 * 0.05, k)).collect();
    let range = TimeRange { start: world.now - Duration::days(5), end: world.now };
    let q = question(&ids, range, &["impressions", "engagements"], daily());
    let (_, cold) = ask_exact(&world, &q).await;
    assert!(cold > 0);
    let (_, calls) = ask_exact(&world, &q).await;
    assert_eq!(calls, 0, "viewers reloading within the fresh TTL share what was fetched");
    let earlier = world.oracle(&q).await;

    world.move_upstream_clock(world.now + Duration::hours(6)).await;
    assert_ne!(world.oracle(&q).await, earlier, "recent hours moved with the clock");
    world.clock.advance(std::time::Duration::from_millis(1500));
    let (_, calls) = ask_exact(&world, &q).await;
    assert!(calls > 0, "unsettled hours are fetched again, not served stale");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identical_cold_questions_at_once_make_about_one_questions_calls() {
    let faults = Faults { latency: std::time::Duration::from_millis(300), ..Faults::default() };
    let world = World::start(Config { faults, ..Config::default() }, &[]).await;
    let ids = tweets(world.now, 50);
    let range = days_back(world.now, 60, 5);
    let types = ["impressions", "url_clicks"];
    let coalesced = world.metric("stitcher_upstream_calls_coalesced_total").await;
    let asks: Vec<_> = (0..16)
        .map(|i| {
            let q = question(&ids, range, &types, if i % 2 == 0 { daily() } else { hour_of_day() });
            let (http, url) = (world.http.clone(), world.url.clone());
            tokio::spawn(async move {
                let resp =
                    http.post(format!("{url}/v1/historical")).bearer_auth("demo-key").json(&q).send().await;
                let resp = resp.unwrap();
                (resp.status().as_u16(), resp.json::<Value>().await.unwrap(), q)
            })
        })
        .collect();
    for ask in asks {
        let (status, body, q) = ask.await.unwrap();
        assert_eq!(status, 200, "{body}");
        assert_eq!(counts_as_strings(body["data"].clone()), world.oracle(&q).await);
    }
    let one_question = 2 * 3;
    assert!(
        world.upstream_calls() <= one_question + 2,
        "16 questions made {} calls; one alone makes {one_question}",
        world.upstream_calls()
    );
    // Questions that came while a call was in flight joined it.
    let joined = world.metric("stitcher_upstream_calls_coalesced_total").await - coalesced;
    assert!(joined >= 1.0, "{joined} calls were joined");
}

#[tokio::test]
async fn a_deleted_tweet_is_remembered_and_the_status_is_refreshed_by_one_small_call() {
    let now = end_to_end::test_now();
    let ids = tweets(now, 30);
    let config = Config { deleted_ids: [ids[3]].into(), ..Config::default() };
    let world = World::start(config, &[("STITCHER__STORE__STATUS_TTL_SECS", "2")]).await;
    let range = days_back(now, 20, 5);
    let q = question(&ids, range, &["video_views", "impressions"], daily());
    let (_, cold) = ask_exact(&world, &q).await;
    assert_eq!(cold, 2);
    let (_, calls) = ask_exact(&world, &question(&ids[..10], range, &["impressions"], hour_of_day())).await;
    assert_eq!(calls, 0, "the deleted Tweet is known without a call while its status is fresh");
    world.clock.advance(std::time::Duration::from_millis(2500));
    let before = world.upstream_calls();
    let (meta, calls) = ask_exact(&world, &q).await;
    assert_eq!(calls, 2, "one call per batch of 25 refreshes what is known of the Tweets: {meta}");
    assert_eq!(world.upstream_calls() - before, 2);
}

#[tokio::test]
async fn a_refused_tweet_is_remembered_and_refused_alike_without_a_call() {
    let now = end_to_end::test_now();
    let ids = tweets(now, 6);
    let (protected, foreign) = (ids[4], ids[5]);
    let config =
        Config { protected_ids: [protected].into(), foreign_ids: [foreign].into(), ..Config::default() };
    let world = World::start(config, &[("STITCHER__STORE__STATUS_TTL_SECS", "3")]).await;
    let range = days_back(now, 20, 5);
    let ask = |ids: &[TweetId], groupings: Value| {
        let q = question(ids, range, &["impressions"], groupings);
        let world = &world;
        async move {
            let before = world.upstream_calls();
            let (status, body) = world.ask("/v1/historical", &q).await;
            (status, body["errors"].clone(), world.upstream_calls() - before)
        }
    };

    let (status, errors, calls) = ask(&ids[..5], daily()).await;
    assert_eq!((status, calls), (400, 1), "{errors}");
    assert_eq!(errors, json!([format!("Tweet ID(s) are unavailable: {protected}")]));
    assert_eq!(ask(&ids[..5], daily()).await, (400, errors.clone(), 0), "a repeat");
    assert_eq!(
        ask(&[ids[1], protected], hour_of_day()).await,
        (400, errors.clone(), 0),
        "a subset holding the protected Tweet, by another grouping"
    );

    // Whether the new Tweet is the handle's is not known: the upstream judges that first.
    let (status, foreign_errors, calls) = ask(&[ids[0], foreign, protected], daily()).await;
    assert_eq!((status, calls), (403, 1), "{foreign_errors}");
    assert_eq!(foreign_errors, json!([format!("Forbidden to access tweets: {foreign}")]));
    assert_eq!(
        ask(&[protected, foreign], daily()).await,
        (403, foreign_errors, 0),
        "not the handle's comes before protected, as the upstream judges them"
    );

    // Without the refused Tweet the others are answered (they were never fetched).
    let (_, calls) = ask_exact(&world, &question(&ids[..4], range, &["impressions"], daily())).await;
    assert_eq!(calls, 1);
    // A partial answer leaves the batch out, saying why, still without a call.
    let mut q = question(&ids[..5], range, &["impressions"], daily());
    q["partial"] = json!(true);
    let before = world.upstream_calls();
    let (status, body) = world.ask("/v1/historical", &q).await;
    assert_eq!((status, world.upstream_calls() - before), (200, 0), "{body}");
    let incomplete = &body["meta"]["incomplete"];
    assert_eq!(incomplete[0]["status"], 400, "{incomplete}");
    assert_eq!(incomplete[0]["errors"], errors);
    assert_eq!(incomplete[0]["tweet_ids"].as_array().map(Vec::len), Some(5), "{incomplete}");

    world.clock.advance(std::time::Duration::from_millis(3500));
    assert_eq!(ask(&ids[..5], daily()).await, (400, errors, 1), "past the status TTL, asked again");
}

#[tokio::test]
async fn a_partial_answer_leaves_out_only_the_window_that_keeps_failing() {
    let now = end_to_end::test_now();
    let ids = tweets(now, 30);
    let range = days_back(now, 100, 10);
    let windows = stitch::cover(&[range]);
    let broken = windows[1];
    let faults = Faults { failing_window_starts: vec![broken.start], ..Faults::default() };
    let world =
        World::start(Config { faults, ..Config::default() }, &[("STITCHER__UPSTREAM__MAX_ATTEMPTS", "2")])
            .await;
    let mut q = question(&ids, range, &["impressions"], json!({"per tweet": {"group_by": ["tweet.id"]}}));
    q["partial"] = json!(true);
    let (status, body) = world.ask("/v1/historical", &q).await;
    assert_eq!(status, 200, "{body}");
    let incomplete = body["meta"]["incomplete"].as_array().unwrap();
    assert_eq!(incomplete.len(), 2, "the broken window, once per batch: {incomplete:?}");
    for slice in incomplete {
        assert_eq!(slice["start"], format_instant(broken.start));
        assert_eq!(slice["end"], format_instant(broken.end));
    }
    let before = question(
        &ids,
        TimeRange { start: range.start, end: broken.start },
        &["impressions"],
        q["groupings"].clone(),
    );
    let after = question(
        &ids,
        TimeRange { start: broken.end, end: range.end },
        &["impressions"],
        q["groupings"].clone(),
    );
    let expected = stitch::merge(
        serde_json::from_value(world.oracle(&before).await).unwrap(),
        serde_json::from_value(world.oracle(&after).await).unwrap(),
    )
    .unwrap();
    let got: engagement::Response = serde_json::from_value(counts_as_strings(body["data"].clone())).unwrap();
    assert_eq!(got.groupings, expected.groupings, "the rest is exact, the hole is not zeros");
}

/// A world with two handles, `demo` and `brand`, both granted to the key `dash-key`.
async fn two_handles(env: &[(&str, &str)]) -> World {
    let credentials = Credentials {
        handles: vec![
            Handle {
                name: "demo".into(),
                token: "demo-token".into(),
                token_secret: "demo-token-secret".into(),
            },
            Handle { name: "brand".into(), token: "brand-token".into(), token_secret: "brand-secret".into() },
        ],
        ..Credentials::default()
    };
    let key = server::auth::key_hash("dash-key");
    let mut vars = vec![
        ("STITCHER__HANDLES__DEMO__TOKEN", "demo-token"),
        ("STITCHER__HANDLES__DEMO__TOKEN_SECRET", "demo-token-secret"),
        ("STITCHER__HANDLES__BRAND__TOKEN", "brand-token"),
        ("STITCHER__HANDLES__BRAND__TOKEN_SECRET", "brand-secret"),
        ("STITCHER__CLIENTS__DASH__KEY_SHA256", key.as_str()),
        ("STITCHER__CLIENTS__DASH__HANDLES", "demo,brand"),
    ];
    vars.extend_from_slice(env);
    World::start(Config { credentials, ..Config::default() }, &vars).await
}

async fn ask_as_handle(world: &World, handle: &str, q: &Value) -> (u16, Value) {
    let resp = world
        .http
        .post(format!("{}/v1/historical", world.url))
        .bearer_auth("dash-key")
        .header("x-handle", handle)
        .json(q)
        .send()
        .await
        .unwrap();
    (resp.status().as_u16(), resp.json().await.unwrap())
}

async fn usage(world: &World) -> Value {
    let resp =
        world.http.get(format!("{}/v1/usage", world.url)).bearer_auth("dash-key").send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    resp.json().await.unwrap()
}

#[tokio::test]
async fn the_ledger_refuses_a_handle_past_the_cap_before_any_call() {
    let world = two_handles(&[("STITCHER__LEDGER__HANDLE_CAP", "1")]).await;
    let ids = tweets(world.now, 5);
    let q = question(&ids, days_back(world.now, 10, 5), &["impressions"], daily());
    let (status, body) = ask_as_handle(&world, "demo", &q).await;
    assert_eq!(status, 200, "{body}");
    let month = world.now.format("%Y-%m").to_string();

    let before = world.upstream_calls();
    let other = question(&ids, days_back(world.now, 12, 30), &["impressions"], daily());
    let (status, body) = ask_as_handle(&world, "brand", &other).await;
    assert_eq!(status, 403, "{body}");
    let message = body["errors"][0].as_str().unwrap();
    assert!(message.contains("cap of 1") && message.contains(&month), "{message}");
    assert_eq!(world.upstream_calls(), before, "refused before any call");

    let (status, _) = ask_as_handle(&world, "demo", &other).await;
    assert_eq!(status, 200, "a handle already counted this month is never refused");
    let used = usage(&world).await;
    assert_eq!(used["month"], month);
    assert_eq!(used["handles_used"], 1);
    assert_eq!(used["handle_cap"], 1);
    assert_eq!(used["policy"], "refuse");
    assert_eq!(used["handles"].as_array().unwrap().len(), 1);
    assert_eq!(used["handles"][0]["handle"], "demo");
    assert!(used["handles"][0]["first_call"].as_str().unwrap().starts_with(&month));
    let resp = world.http.get(format!("{}/v1/usage", world.url)).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 401, "usage is for callers with a key");
}

#[tokio::test]
async fn under_warn_a_handle_past_the_cap_is_answered_and_counted() {
    let world =
        two_handles(&[("STITCHER__LEDGER__HANDLE_CAP", "1"), ("STITCHER__LEDGER__POLICY", "warn")]).await;
    let ids = tweets(world.now, 5);
    let q = question(&ids, days_back(world.now, 10, 5), &["impressions"], daily());
    let over = world.metric("stitcher_ledger_handles_total{cap=\"over\"}").await;
    for handle in ["demo", "brand"] {
        let (status, body) = ask_as_handle(&world, handle, &q).await;
        assert_eq!(status, 200, "{body}");
    }
    let used = usage(&world).await;
    assert_eq!(used["handles_used"], 2);
    assert_eq!(used["policy"], "warn");
    let names: Vec<&str> =
        used["handles"].as_array().unwrap().iter().map(|h| h["handle"].as_str().unwrap()).collect();
    assert_eq!(names, ["brand", "demo"]);
    assert!(world.metric("stitcher_ledger_handles_total{cap=\"over\"}").await - over >= 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn questions_that_go_away_leave_no_call_slot_taken() {
    let faults = Faults { latency: std::time::Duration::from_millis(400), ..Faults::default() };
    let world = World::start(
        Config { faults, ..Config::default() },
        &[("STITCHER__UPSTREAM__MAX_IN_FLIGHT", "2"), ("STITCHER__SERVER__REQUEST_TIMEOUT_SECS", "10")],
    )
    .await;
    let range = days_back(world.now, 60, 5);
    // Clients that give up while their calls hold both slots.
    for k in 0..4u64 {
        let ids: Vec<TweetId> = (0..30).map(|n| tweet(world.now, 500.0, 100 * k + n)).collect();
        let gave_up = world
            .http
            .post(format!("{}/v1/historical", world.url))
            .bearer_auth("demo-key")
            .timeout(std::time::Duration::from_millis(150))
            .json(&question(&ids, range, &["impressions"], daily()))
            .send()
            .await;
        assert!(gave_up.is_err(), "the client went away");
    }
    let ids = tweets(world.now, 10);
    let (meta, calls) = ask_exact(&world, &question(&ids, range, &["impressions"], daily())).await;
    assert_eq!(calls, meta["upstream_calls"].as_u64().unwrap(), "only this question's calls: {meta}");
}

#[tokio::test]
async fn exact_repeats_read_the_same_in_both_shapes() {
    let world = World::start(Config::default(), &[]).await;
    let ids = tweets(world.now, 40);
    let q = question(&ids, days_back(world.now, 30, 5), &["impressions", "replies"], daily());
    let expected = world.oracle(&q).await;
    for round in 0..3 {
        let (meta, calls) = ask_exact(&world, &q).await;
        assert_eq!(meta["tweets"], 40, "round {round}: {meta}");
        if round > 0 {
            assert_eq!(calls, 0);
        }
        let (status, drop_in) = world.ask("/insights/engagement/historical", &q).await;
        assert_eq!(status, 200);
        assert_eq!(drop_in, expected, "round {round}: the drop-in shape");
    }
}

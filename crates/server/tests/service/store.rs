//! The store across processes, with the real binary: facts and the month's ledger survive a
//! restart, and a `kill -9` in the middle of a question leaves a store that opens and
//! answers exactly.

#![allow(clippy::unwrap_used)]

use crate::support;

use std::time::Duration;

use crate::support::{PER_TWEET, Stitcher, as_strings, metric, oracle, question};
use serde_json::Value;
use simulator::Config;
use simulator::faults::Faults;

/// Asks `body`, which must be answered `200`; the answer.
async fn answered(stitcher: &Stitcher, body: &Value) -> Value {
    let (status, answer) = support::ask(stitcher, body).await;
    assert_eq!(status, 200, "{answer}");
    answer
}

/// The month's ledger as `GET /v1/usage` shows it.
async fn usage(stitcher: &Stitcher) -> Value {
    let (status, usage) = support::get(stitcher, "/v1/usage").await;
    assert_eq!(status, 200, "{usage}");
    usage
}

#[tokio::test]
async fn facts_and_the_ledger_survive_a_restart() {
    let (sim, sim_url) = support::simulator(Config::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().display().to_string();
    let env = [("STITCHER__UPSTREAM__BASE_URL", sim_url.as_str()), ("STITCHER__STORE__PATH", path.as_str())];
    let body = question(30, 3, &["impressions", "engagements"], PER_TWEET);

    let mut first = Stitcher::start(&env).await;
    let cold = answered(&first, &body).await;
    let calls = sim.stats().requests_total;
    assert_eq!(calls, 2 * 3);
    let before = usage(&first).await;
    assert_eq!(before["handles"][0]["handle"], "demo");
    first.terminate();
    assert!(first.exited(Duration::from_secs(10)).await.unwrap().success());

    let second = Stitcher::start(&env).await;
    let warm = answered(&second, &body).await;
    assert_eq!(sim.stats().requests_total, calls, "no call after the restart");
    assert_eq!(warm["meta"]["upstream_calls"], 0);
    assert_eq!(warm["data"], cold["data"]);
    assert_eq!(as_strings(warm["data"].clone()), oracle(&sim_url, &body).await);
    let again = usage(&second).await;
    assert_eq!(again["handles"], before["handles"], "the month's ledger, first call and all");
    assert_eq!(again["handles_used"], 1);
}

#[tokio::test]
async fn a_kill_in_the_middle_of_a_question_leaves_a_store_that_answers_exactly() {
    let faults = Faults { latency: Duration::from_millis(40), ..Faults::default() };
    let (sim, sim_url) = support::simulator(Config { faults, ..Config::default() }).await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().display().to_string();
    let env = [("STITCHER__UPSTREAM__BASE_URL", sim_url.as_str()), ("STITCHER__STORE__PATH", path.as_str())];
    // 8 batches × 20 windows: 160 calls, each kept as it comes.
    let body = question(200, 20, &["impressions", "favorites"], PER_TWEET);

    let mut doomed = Stitcher::start(&env).await;
    let url = doomed.url.clone();
    let asking = {
        let body = body.clone();
        tokio::spawn(async move {
            reqwest::Client::new()
                .post(format!("{url}/v1/historical"))
                .bearer_auth("demo-key")
                .json(&body)
                .send()
                .await
        })
    };
    while sim.stats().requests_total < 40 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    doomed.child.kill().unwrap();
    doomed.child.wait().unwrap();
    assert!(asking.await.unwrap().is_err(), "the question died with the process");
    let before = sim.stats().requests_total;
    assert!(before < 160, "killed before the question was done ({before} calls)");

    let revived = Stitcher::start(&env).await;
    let answer = answered(&revived, &body).await;
    assert_eq!(as_strings(answer["data"].clone()), oracle(&sim_url, &body).await);
    let after = sim.stats().requests_total - before;
    assert!(after < 160, "what was kept before the kill was not fetched again ({after} calls)");
}

/// A question for `tweets` from `from` to `to` ago, per Tweet and type.
fn between(tweets: &[u64], types: &[&str], from: chrono::Duration, to: chrono::Duration) -> Value {
    let now = chrono::Utc::now();
    serde_json::json!({
        "tweet_ids": tweets.iter().map(ToString::to_string).collect::<Vec<_>>(),
        "engagement_types": types,
        "groupings": {"g": {"group_by": ["tweet.id", "engagement.type"]}},
        "start": engagement::time::format_instant(now - from),
        "end": engagement::time::format_instant(now - to),
    })
}

/// Asks `body` of the drop-in endpoint: the answer must be the oracle's (counts or
/// refusal). The calls it took.
async fn as_oracle(stitcher: &Stitcher, sim: &simulator::Simulator, sim_url: &str, body: &Value) -> u64 {
    let before = sim.stats().requests_total;
    let answer = support::post(stitcher, "/insights/engagement/historical", body).await;
    let status = answer.status().as_u16();
    let said: Value = answer.json().await.unwrap();
    let (expected, oracle) = support::oracle_says(sim_url, body).await;
    assert_eq!(status, expected, "{said}");
    if status == 200 {
        assert_eq!(said, oracle);
    } else {
        assert_eq!(said["errors"], oracle["errors"]);
    }
    sim.stats().requests_total - before
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_a_call_told_of_deleted_and_refused_tweets_is_refreshed_with_one_hour() {
    let tweet = |n| support::tweet(800, n);
    let (deleted, x, foreign) = (tweet(1), tweet(2), tweet(3));
    let config = Config {
        deleted_ids: [engagement::TweetId(deleted)].into(),
        foreign_ids: [engagement::TweetId(foreign)].into(),
        ..Config::default()
    };
    let (sim, sim_url) = support::simulator(config).await;
    let stitcher = Stitcher::start(&[
        ("STITCHER__UPSTREAM__BASE_URL", sim_url.as_str()),
        ("STITCHER__STORE__STATUS_TTL_SECS", "3"),
    ])
    .await;
    let days = chrono::Duration::days;
    let two_years = between(&[deleted, x], &["impressions"], days(730), days(10));
    let mut thirty: Vec<u64> = (10..39).map(tweet).collect();
    thirty.push(deleted);
    let thirty = between(&thirty, &["impressions"], days(60), days(10));
    let not_ours = between(&[foreign, tweet(4)], &["impressions"], days(60), days(10));
    let ttl = Duration::from_millis(3500);

    let cold = as_oracle(&stitcher, &sim, &sim_url, &two_years).await;
    let hours = (chrono::Duration::days(720).num_hours() + 1) as u64;
    assert!(cold == hours / 672 || cold == hours.div_ceil(672), "{cold} calls for 720 days");
    as_oracle(&stitcher, &sim, &sim_url, &thirty).await;
    as_oracle(&stitcher, &sim, &sim_url, &not_ours).await;
    for body in [&two_years, &thirty, &not_ours] {
        assert_eq!(as_oracle(&stitcher, &sim, &sim_url, body).await, 0, "a repeat");
    }
    tokio::time::sleep(ttl).await;
    assert_eq!(as_oracle(&stitcher, &sim, &sim_url, &two_years).await, 1, "after the TTL");
    assert_eq!(as_oracle(&stitcher, &sim, &sim_url, &thirty).await, 2, "one hour per batch");
    assert_eq!(as_oracle(&stitcher, &sim, &sim_url, &not_ours).await, 1, "a refusal, asked again");
    tokio::time::sleep(ttl).await;
    let x_alone = between(&[x], &["impressions"], days(730), days(10));
    assert_eq!(as_oracle(&stitcher, &sim, &sim_url, &x_alone).await, 1);
    assert_eq!(as_oracle(&stitcher, &sim, &sim_url, &two_years).await, 1, "after the TTL again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recent_hours_keep_every_type_fetched_while_each_is_fresh() {
    let (sim, sim_url) = support::simulator(Config::default()).await;
    let stitcher = Stitcher::start(&[("STITCHER__UPSTREAM__BASE_URL", sim_url.as_str())]).await;
    let tweet = support::tweet(30, 1);
    let (days, hours) = (chrono::Duration::days, chrono::Duration::hours);
    let ask = |types: &[&str]| between(&[tweet], types, days(10), hours(5));
    let impressions = ask(&["impressions"]);
    assert_eq!(as_oracle(&stitcher, &sim, &sim_url, &impressions).await, 1, "cold");
    assert_eq!(as_oracle(&stitcher, &sim, &sim_url, &impressions).await, 0, "a repeat");
    assert_eq!(as_oracle(&stitcher, &sim, &sim_url, &ask(&["favorites"])).await, 1, "another type");
    assert_eq!(as_oracle(&stitcher, &sim, &sim_url, &impressions).await, 0, "the first type is still fresh");
    assert_eq!(as_oracle(&stitcher, &sim, &sim_url, &ask(&["favorites", "impressions"])).await, 0, "both");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn once_its_question_ends_the_store_is_back_within_its_bound() {
    let (_sim, sim_url) = support::simulator(Config::default()).await;
    let cap = 300_000.0;
    let stitcher = Stitcher::start(&[
        ("STITCHER__UPSTREAM__BASE_URL", sim_url.as_str()),
        ("STITCHER__STORE__MAX_BYTES", "300000"),
    ])
    .await;
    // 100 Tweets over 168 days, two types: more than the bound, all pinned while it runs.
    answered(&stitcher, &question(100, 6, &["impressions", "favorites"], PER_TWEET)).await;
    let mut held = metric(&stitcher, "stitcher_store_bytes").await;
    for _ in 0..100 {
        if held <= cap {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        held = metric(&stitcher, "stitcher_store_bytes").await;
    }
    assert!(held <= cap, "{held} bytes held, bound {cap}");
    assert!(metric(&stitcher, "stitcher_store_evictions_total").await > 0.0);
}

//! The store across processes, with the real binary: facts and the month's ledger survive a
//! restart, and a `kill -9` in the middle of a question leaves a store that opens and
//! answers exactly.

#![allow(clippy::unwrap_used)]

mod support;

use std::time::Duration;

use serde_json::Value;
use simulator::Config;
use simulator::faults::Faults;
use support::{PER_TWEET, Stitcher, as_strings, oracle, question};

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

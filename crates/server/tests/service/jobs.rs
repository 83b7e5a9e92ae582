//! Jobs with the real binary: a kept result holds no counts of the questions being answered
//! and has its own bound, the queue says when it is full, shutdown ends every job with a
//! final event, and progress counts what the result's `meta` counts.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::support;

use std::time::{Duration, Instant};

use crate::support::{Stitcher, against};
use serde_json::{Value, json};
use simulator::Config;
use simulator::faults::Faults;

/// A question of `tweets` Tweets created 2014-01-01 (told apart by `first`) over `windows`
/// 28-day cells of the grid, daily per Tweet: `tweets × 28 × windows` counts.
fn daily(first: u64, tweets: u64, windows: i64) -> Value {
    let mut body = support::question(tweets, windows, &["impressions"], &["tweet.id", "engagement.day"]);
    let base =
        engagement::TweetId::minted_at(engagement::parse_instant("2014-01-01").unwrap()).0 + 1000 * first;
    body["tweet_ids"] = json!((base..base + tweets).map(|t| t.to_string()).collect::<Vec<_>>());
    body
}

/// `POST /v1/jobs`: the response.
async fn submit(stitcher: &Stitcher, body: &Value) -> reqwest::Response {
    support::post(stitcher, "/v1/jobs", body).await
}

/// Submits `body`, which must be accepted; the job's ID.
async fn accepted(stitcher: &Stitcher, body: &Value) -> String {
    let response = submit(stitcher, body).await;
    assert_eq!(response.status().as_u16(), 202);
    let job: Value = response.json().await.unwrap();
    job["id"].as_str().unwrap().to_owned()
}

/// Waits for job `id` to end; its last status.
async fn ended(stitcher: &Stitcher, id: &str) -> Value {
    for _ in 0..1200 {
        let (status, job) = support::get(stitcher, &format!("/v1/jobs/{id}")).await;
        assert_eq!(status, 200, "{job}");
        if ["done", "failed", "cancelled"].contains(&job["state"].as_str().unwrap()) {
            return job;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("job {id} did not end");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kept_result_holds_no_counts_of_the_questions_being_answered() {
    let (_sim, stitcher) =
        against(Config::default(), &[("STITCHER__SERVER__MAX_COUNTS_IN_FLIGHT", "5000")]).await;
    // 10 Tweets × 392 days: 3,920 counts.
    let job = accepted(&stitcher, &daily(1, 10, 14)).await;
    assert_eq!(ended(&stitcher, &job).await["state"], "done");
    // 2,000 counts would not fit beside a result holding its 3,920.
    let (status, answer) = support::ask(&stitcher, &daily(2, 5, 14)).await;
    assert_eq!(status, 200, "{answer}");
    let (status, _) = support::get(&stitcher, &format!("/v1/jobs/{job}/result")).await;
    assert_eq!(status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kept_results_keep_within_their_own_bound_oldest_let_go_first() {
    let (_sim, stitcher) =
        against(Config::default(), &[("STITCHER__JOBS__MAX_RESULT_BYTES", "200000")]).await;
    // 3,920 counts each, about 190 kB: one fits, two do not.
    let first = accepted(&stitcher, &daily(1, 10, 14)).await;
    assert_eq!(ended(&stitcher, &first).await["state"], "done");
    let (status, _) = support::get(&stitcher, &format!("/v1/jobs/{first}/result")).await;
    assert_eq!(status, 200);
    let second = accepted(&stitcher, &daily(3, 10, 14)).await;
    assert_eq!(ended(&stitcher, &second).await["state"], "done");
    let (status, gone) = support::get(&stitcher, &format!("/v1/jobs/{first}/result")).await;
    assert_eq!(status, 410, "{gone}");
    assert!(gone["errors"][0].as_str().unwrap().contains("jobs.max_result_bytes"), "{gone}");
    let (status, _) = support::get(&stitcher, &format!("/v1/jobs/{second}/result")).await;
    assert_eq!(status, 200);

    // One whose answer alone could never be kept (4,704 counts) is refused before it starts.
    let too_big = submit(&stitcher, &daily(4, 12, 14)).await;
    assert_eq!(too_big.status().as_u16(), 400);
    let said: Value = too_big.json().await.unwrap();
    assert!(said["errors"][0].as_str().unwrap().contains("jobs.max_result_bytes"), "{said}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_no_queue_jobs_run_up_to_the_limit_and_a_full_queue_says_so() {
    let slow = Config {
        faults: Faults { latency: Duration::from_millis(200), ..Faults::default() },
        ..Config::default()
    };
    let (_sim, stitcher) = against(
        slow,
        &[
            ("STITCHER__UPSTREAM__MAX_IN_FLIGHT", "1"),
            ("STITCHER__JOBS__MAX_RUNNING", "2"),
            ("STITCHER__JOBS__MAX_QUEUED", "0"),
        ],
    )
    .await;
    // Each job makes 10 calls of 200 ms, one at a time.
    let mut statuses = Vec::new();
    let mut refusals = Vec::new();
    for n in 0..5 {
        let response = submit(&stitcher, &daily(10 + n, 1, 10)).await;
        statuses.push(response.status().as_u16());
        if response.status().as_u16() == 503 {
            let wait: u64 = response.headers()["retry-after"].to_str().unwrap().parse().unwrap();
            assert!(wait >= 1);
            refusals.push(response.json::<Value>().await.unwrap()["errors"][0].as_str().unwrap().to_owned());
        }
    }
    assert_eq!(statuses, [202, 202, 503, 503, 503]);
    for said in &refusals {
        assert!(said.starts_with("job queue full: "), "{said}");
        let counts: Vec<usize> = said
            .trim_start_matches("job queue full: ")
            .split(|c: char| !c.is_ascii_digit())
            .filter_map(|n| n.parse().ok())
            .take(2)
            .collect();
        assert_eq!(counts.iter().sum::<usize>(), 2, "two jobs run or wait: {said}");
    }
}

/// The events of a job's stream until it closes: (name, data).
async fn events(response: reqwest::Response, limit: Duration) -> Vec<(String, Value)> {
    let mut text = String::new();
    let mut response = response;
    let deadline = tokio::time::Instant::now() + limit;
    while let Ok(Ok(Some(chunk))) = tokio::time::timeout_at(deadline, response.chunk()).await {
        text.push_str(&String::from_utf8_lossy(&chunk));
    }
    text.split("\n\n")
        .filter_map(|event| {
            let field = |name: &str| {
                event.lines().find_map(|l| l.strip_prefix(name).map(|v| v.trim_start().to_owned()))
            };
            Some((field("event:")?, serde_json::from_str(&field("data:")?).ok()?))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_shutdown_a_running_job_ends_with_a_failed_event_and_the_process_exits_zero() {
    let slow = Config {
        faults: Faults { latency: Duration::from_millis(300), ..Faults::default() },
        ..Config::default()
    };
    let (_sim, mut stitcher) = against(
        slow,
        &[("STITCHER__UPSTREAM__MAX_IN_FLIGHT", "1"), ("STITCHER__SERVER__SHUTDOWN_GRACE_SECS", "3")],
    )
    .await;
    // 30 calls of 300 ms, one at a time: longer than the grace period.
    let id = accepted(&stitcher, &daily(20, 1, 30)).await;
    let watching = reqwest::Client::new()
        .get(format!("{}/v1/jobs/{id}", stitcher.url))
        .bearer_auth("demo-key")
        .header("accept", "text/event-stream")
        .send()
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(800)).await;
    stitcher.terminate();
    let seen = events(watching, Duration::from_secs(15)).await;
    let (name, last) = seen.last().expect("events came");
    assert_eq!(name, "failed", "{seen:?}");
    assert_eq!(last["error"]["status"], 503, "{last}");
    assert!(last["error"]["errors"][0].as_str().unwrap().contains("shut down"), "{last}");
    assert!(!last["error"]["failed_slices"].as_array().unwrap().is_empty(), "{last}");
    let status = stitcher.exited(Duration::from_secs(10)).await.expect("it exits");
    assert!(status.success(), "{status:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn progress_counts_what_meta_counts_and_budget_waits_count_once() {
    let (_sim, stitcher) = against(
        Config::default(),
        &[("STITCHER__UPSTREAM__REQUESTS_PER_MINUTE", "120"), ("STITCHER__UPSTREAM__MAX_IN_FLIGHT", "8")],
    )
    .await;
    // One Tweet created 150 days ago, over the 280 days before the last 10: the cells before
    // it are synthesized, the rest (about 6) fetched at one call each 0.5 s, all waiting at once.
    let tweet = support::tweet(150, 7);
    let ago = |days: i64| engagement::time::format_instant(chrono::Utc::now() - chrono::Duration::days(days));
    let body = json!({
        "tweet_ids": [tweet.to_string()], "engagement_types": ["impressions"],
        "groupings": {"daily": {"group_by": ["engagement.day"]}},
        "start": ago(290), "end": ago(10),
    });
    for (asking, from_store) in [("cold", false), ("from the store", true)] {
        let started = Instant::now();
        let id = accepted(&stitcher, &body).await;
        let job = ended(&stitcher, &id).await;
        let took = started.elapsed();
        assert_eq!(job["state"], "done", "{job}");
        let (status, result) = support::get(&stitcher, &format!("/v1/jobs/{id}/result")).await;
        assert_eq!(status, 200);
        let (progress, meta) = (&job["progress"], &result["meta"]);
        assert_eq!(progress["slices_total"], meta["slices_planned"], "{asking}: {progress} {meta}");
        assert_eq!(progress["slices_done"], meta["slices_fetched"], "{asking}: {progress} {meta}");
        assert_eq!(progress["slices_synthesized"], meta["slices_synthesized"], "{asking}");
        assert_eq!(progress["slices_from_store"], meta["slices_from_store"], "{asking}");
        assert!(meta["slices_synthesized"].as_u64().unwrap() > 0, "{meta}");
        assert_eq!(meta["slices_from_store"].as_u64().unwrap() > 0, from_store, "{meta}");
        let waited = progress["budget_wait_ms"].as_u64().unwrap();
        assert!(waited <= took.as_millis() as u64, "{asking}: waited {waited} ms in {took:?}");
        if !from_store {
            assert!(waited > 0, "the calls were paced");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_jobs_log_lines_name_its_client_as_a_questions_do() {
    let (_sim, stitcher) = against(Config::default(), &[]).await;
    let (status, answer) = support::ask(&stitcher, &daily(1, 3, 1)).await;
    assert_eq!(status, 200, "{answer}");
    let job = accepted(&stitcher, &daily(2, 3, 1)).await;
    assert_eq!(ended(&stitcher, &job).await["state"], "done");
    // Each "question answered" line, with the client of the span it was logged under.
    let answered: Vec<Option<String>> = stitcher
        .logs()
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|line| line["fields"]["message"] == "question answered")
        .map(|line| {
            (line["span"]["name"] == "question")
                .then(|| line["span"]["client"].as_str().unwrap_or("").to_owned())
        })
        .collect();
    assert_eq!(answered.len(), 2, "one for the question, one for the job: {}", stitcher.logs());
    assert!(answered[0].as_ref().is_some_and(|c| !c.is_empty()), "{answered:?}");
    assert_eq!(answered[0], answered[1], "the job's line names the same client");
}

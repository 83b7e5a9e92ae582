//! `stitcher query`, the real binary: its answers equal the oracle's in every shape, and
//! what it cannot answer is said on standard error with a non-zero exit, nothing on
//! standard output.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::support;

use std::io::Write;
use std::process::{Command, Output, Stdio};

use crate::support::{PER_TWEET, as_strings, oracle, question, simulator};
use serde_json::{Value, json};
use simulator::Config;

/// Runs `stitcher query` with `args` against the simulator at `sim_url` (the embedded one
/// when `None`), `stdin` on its standard input.
fn query(sim_url: Option<&str>, store: &std::path::Path, args: &[&str], stdin: &[u8]) -> Output {
    let mut command = Command::new(support::binary());
    command
        .arg("query")
        .args(args)
        .env("STITCHER__STORE__PATH", store)
        .env_remove("RUST_LOG")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(url) = sim_url {
        command.env("STITCHER__UPSTREAM__BASE_URL", url);
    }
    let mut child = command.spawn().expect("stitcher starts");
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    child.wait_with_output().unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The trees of a CSV answer (no quoting needed: the grouping names here are plain).
fn from_csv(csv: &str, levels: &[&str]) -> Value {
    let mut lines = csv.lines();
    assert_eq!(lines.next(), Some("grouping,tweet_id,engagement_type,week,month,day,hour,count"));
    let mut data = json!({});
    for line in lines {
        let cells: Vec<&str> = line.split(',').collect();
        let mut node = data.as_object_mut().unwrap().entry(cells[0]).or_insert_with(|| json!({}));
        for level in levels {
            let column = [
                "tweet.id",
                "engagement.type",
                "engagement.week",
                "engagement.month",
                "engagement.day",
                "engagement.hour",
            ]
            .iter()
            .position(|l| l == level)
            .unwrap();
            node = node.as_object_mut().unwrap().entry(cells[1 + column]).or_insert_with(|| json!({}));
        }
        *node = json!(cells[7]);
    }
    data
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_query_answers_as_the_oracle_in_json_native_and_csv() {
    let (_sim, sim_url) = simulator(Config::default()).await;
    let store = tempfile::tempdir().unwrap();
    let body = question(30, 3, &["impressions", "favorites"], PER_TWEET);
    let expected = oracle(&sim_url, &body).await;
    let file = store.path().join("question.json");
    std::fs::write(&file, serde_json::to_vec(&body).unwrap()).unwrap();
    let file = file.to_str().unwrap();
    let sim = Some(sim_url.as_str());

    let run = query(sim, &store.path().join("facts"), &[file], b"");
    assert!(run.status.success(), "{}", text(&run.stderr));
    let answer: Value = serde_json::from_slice(&run.stdout).expect("stdout is the answer alone");
    assert_eq!(answer, expected);

    let run =
        query(sim, &store.path().join("facts"), &["--native", "-"], &serde_json::to_vec(&body).unwrap());
    assert!(run.status.success(), "{}", text(&run.stderr));
    let native: Value = serde_json::from_slice(&run.stdout).unwrap();
    assert_eq!(as_strings(native["data"].clone()), expected);
    assert_eq!(native["meta"]["tweets"], 30);

    let run = query(sim, &store.path().join("facts"), &["--format", "csv", file], b"");
    assert!(run.status.success(), "{}", text(&run.stderr));
    let rebuilt = from_csv(&text(&run.stdout), PER_TWEET);
    assert_eq!(rebuilt["g"], expected["g"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn derived_numbers_come_with_native_answers() {
    let (_sim, sim_url) = simulator(Config::default()).await;
    let store = tempfile::tempdir().unwrap();
    let mut body = question(30, 1, &["impressions", "engagements"], &["engagement.day"]);
    body["derive"] = json!(["engagement_rate"]);
    body["top"] = json!({"by": "impressions", "n": 2});
    let mut per_tweet = body.clone();
    per_tweet["groupings"] = json!({"t": {"group_by": PER_TWEET}});
    let truth = oracle(&sim_url, &per_tweet).await;
    let count = |id: &str, t: &str| truth["t"][id][t].as_str().unwrap().parse::<u64>().unwrap();
    let ids: Vec<&str> = truth["t"].as_object().unwrap().keys().map(String::as_str).collect();
    let (e, i) =
        ids.iter().fold((0, 0), |(e, i), id| (e + count(id, "engagements"), i + count(id, "impressions")));
    let mut ranked: Vec<(u64, &str)> = ids.iter().map(|id| (count(id, "impressions"), *id)).collect();
    ranked.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.parse::<u64>().unwrap().cmp(&b.1.parse::<u64>().unwrap())));

    let run = query(
        Some(&sim_url),
        &store.path().join("facts"),
        &["--native"],
        &serde_json::to_vec(&body).unwrap(),
    );
    assert!(run.status.success(), "{}", text(&run.stderr));
    let got: Value = serde_json::from_slice(&run.stdout).unwrap();
    assert_eq!(got["derived"]["engagement_rate"]["overall"], json!(e as f64 / i as f64));
    let top: Vec<Value> = ranked[..2].iter().map(|(v, id)| json!({"tweet_id": id, "value": v})).collect();
    assert_eq!(got["top"], Value::Array(top));

    // The API's own shape has no room for them: said, not dropped.
    let run = query(Some(&sim_url), &store.path().join("facts"), &[], &serde_json::to_vec(&body).unwrap());
    assert_eq!(run.status.code(), Some(1));
    assert!(text(&run.stderr).contains("only for the native answer"), "{}", text(&run.stderr));
    assert!(run.stdout.is_empty());
    // CSV, as on /v1/historical, has the counts and leaves the derived numbers out.
    let csv = ["--format", "csv"];
    let run = query(Some(&sim_url), &store.path().join("facts"), &csv, &serde_json::to_vec(&body).unwrap());
    assert!(run.status.success(), "{}", text(&run.stderr));
    assert_eq!(text(&run.stdout).lines().count(), 1 + 28, "a header and 28 days");
}

#[test]
fn what_cannot_be_answered_is_said_on_stderr_with_a_non_zero_exit() {
    let store = tempfile::tempdir().unwrap();
    let facts = store.path().join("facts");
    let missing = store.path().join("no-such-question.json");

    let run = query(None, &facts, &[missing.to_str().unwrap()], b"");
    assert_eq!(run.status.code(), Some(2));
    let said = text(&run.stderr);
    assert!(
        said.contains("cannot read the question from") && said.contains("no-such-question.json"),
        "{said}"
    );
    assert!(run.stdout.is_empty());

    let run = query(None, &facts, &["-"], b"{\"tweet_ids\": [");
    assert_eq!(run.status.code(), Some(2));
    assert!(text(&run.stderr).contains("not valid JSON"), "{}", text(&run.stderr));
    assert!(run.stdout.is_empty());

    let refused = json!({"tweet_ids": ["1"], "engagement_types": ["reach"], "groupings": {"g": {"group_by": ["tweet.id"]}}});
    let run = query(None, &facts, &["-"], &serde_json::to_vec(&refused).unwrap());
    assert_eq!(run.status.code(), Some(1));
    assert!(text(&run.stderr).contains("reach"), "{}", text(&run.stderr));
    assert!(run.stdout.is_empty());

    let run = query(None, &facts, &["--format", "xml", "-"], b"{}");
    assert_eq!(run.status.code(), Some(2), "clap refuses an unknown format");
    assert!(text(&run.stderr).contains("xml"));
}

#[test]
fn demo_mode_answers_with_nothing_set_up() {
    let store = tempfile::tempdir().unwrap();
    let body = json!({
        "tweet_ids": ["1790000000000000000"], "engagement_types": ["impressions"],
        "groupings": {"daily": {"group_by": ["engagement.day"]}},
        "start": "2024-06-01", "end": "2024-06-04",
    });
    let run = query(None, &store.path().join("facts"), &[], &serde_json::to_vec(&body).unwrap());
    assert!(run.status.success(), "{}", text(&run.stderr));
    let answer: Value = serde_json::from_slice(&run.stdout).expect("only the answer on stdout");
    let days: Vec<&String> = answer["daily"].as_object().unwrap().keys().collect();
    assert_eq!(days, ["2024-06-01", "2024-06-02", "2024-06-03"]);
    // The API's own shape: counts as decimal strings.
    assert!(
        answer["daily"].as_object().unwrap().values().all(|c| c.as_str().unwrap().parse::<u64>().is_ok())
    );
    assert_eq!(answer["start"], "2024-06-01T00:00:00Z");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_cannot_be_answered_here_exits_1_and_says_what_to_do() {
    let (sim, sim_url) = simulator(Config::default()).await;
    let store = tempfile::tempdir().unwrap();
    let facts = store.path().join("facts");
    let body = serde_json::to_vec(&question(1, 1, &["impressions"], PER_TWEET)).unwrap();

    let run = query(Some(&sim_url), &facts, &["--handle", "nobody", "-"], &body);
    assert_eq!(run.status.code(), Some(1), "{}", text(&run.stderr));
    assert!(text(&run.stderr).contains("nobody"), "{}", text(&run.stderr));

    // A member nobody reads is refused in both shapes, with the name it likely meant.
    let mut misspelt = question(1, 1, &["impressions"], PER_TWEET);
    misspelt["engagement_type"] = misspelt["engagement_types"].take();
    for shape in [&["-"][..], &["--native", "-"][..]] {
        let run = query(Some(&sim_url), &facts, shape, &serde_json::to_vec(&misspelt).unwrap());
        assert_eq!(run.status.code(), Some(1), "{}", text(&run.stderr));
        let said = text(&run.stderr);
        assert!(
            said.contains("unknown member \"engagement_type\" (did you mean \"engagement_types\"?)"),
            "{said}"
        );
        assert!(run.stdout.is_empty());
    }
    assert_eq!(sim.stats().requests_total, 0, "none of these made a call");

    // Too many calls for its time: the way out is more time, not a job.
    let mut command = std::process::Command::new(support::binary());
    let run = command
        .args(["query", "-"])
        .env("STITCHER__STORE__PATH", &facts)
        .env("STITCHER__UPSTREAM__BASE_URL", &sim_url)
        .env("STITCHER__UPSTREAM__REQUESTS_PER_MINUTE", "6")
        .env("STITCHER__JOBS__TIMEOUT_SECS", "10")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut child = run;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(&serde_json::to_vec(&question(1, 20, &["impressions"], PER_TWEET)).unwrap())
        .unwrap();
    let run = child.wait_with_output().unwrap();
    assert_eq!(run.status.code(), Some(1));
    let said = text(&run.stderr);
    assert!(said.contains("jobs.timeout_secs") && !said.contains("POST /v1/jobs"), "{said}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn beside_a_running_service_a_demo_query_answers_and_a_real_one_says_what_to_do() {
    let store = tempfile::tempdir().unwrap();
    let facts = store.path().join("facts");
    let path = facts.display().to_string();
    let body = json!({
        "tweet_ids": ["1790000000000000000"], "engagement_types": ["impressions"],
        "groupings": {"daily": {"group_by": ["engagement.day"]}},
        "start": "2024-06-01", "end": "2024-06-04",
    });
    let body = serde_json::to_vec(&body).unwrap();
    // The service in demo mode, holding the store.
    let _service = support::Stitcher::start(&[("STITCHER__STORE__PATH", path.as_str())]).await;
    let run = query(None, &facts, &["-"], &body);
    assert!(run.status.success(), "{}", text(&run.stderr));
    let answer: Value = serde_json::from_slice(&run.stdout).expect("the answer on stdout");
    assert_eq!(answer["daily"].as_object().unwrap().len(), 3);
    assert!(text(&run.stderr).contains("store of its own"), "{}", text(&run.stderr));

    // With a real upstream, a store of its own would call behind the service's back.
    let (_sim, sim_url) = simulator(Config::default()).await;
    let run = query(Some(&sim_url), &facts, &["-"], &body);
    assert_eq!(run.status.code(), Some(1), "{}", text(&run.stderr));
    let said = text(&run.stderr);
    assert!(said.contains("running stitcher") && said.contains("POST /v1/historical"), "{said}");
    assert!(run.stdout.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_query_counts_local_days_by_flag_and_estimates_without_a_call() {
    let (sim, sim_url) = simulator(Config::default()).await;
    let store = tempfile::tempdir().unwrap();
    let mut body = question(30, 1, &["impressions"], &["engagement.day"]);
    body["start"] = json!("2022-01-10");
    body["end"] = json!("2022-01-13");
    let body = serde_json::to_vec(&body).unwrap();

    let run = query(Some(&sim_url), &store.path().join("facts"), &["--estimate", "-"], &body);
    assert!(run.status.success(), "{}", text(&run.stderr));
    let estimate: Value = serde_json::from_slice(&run.stdout).expect("stdout is the estimate alone");
    assert_eq!(estimate["upstream_calls"], 2, "30 Tweets in one window: {estimate}");
    assert_eq!(estimate["counts"], 3);
    assert_eq!(sim.stats().requests_total, 0, "an estimate makes no call");

    let args = ["--native", "--time-zone", "America/New_York", "-"];
    let run = query(Some(&sim_url), &store.path().join("facts"), &args, &body);
    assert!(run.status.success(), "{}", text(&run.stderr));
    let native: Value = serde_json::from_slice(&run.stdout).unwrap();
    assert_eq!(native["meta"]["time_zone"], "America/New_York");
    assert_eq!(native["meta"]["start"], "2022-01-10T05:00:00Z", "local midnight, EST");
    let days: Vec<&String> = native["data"]["g"].as_object().unwrap().keys().collect();
    assert_eq!(days, ["2022-01-10", "2022-01-11", "2022-01-12"]);
    // The same hours counted in UTC, by the oracle: 05:00 on the 10th to 05:00 on the 13th.
    let utc = json!({
        "tweet_ids": serde_json::from_slice::<Value>(&body).unwrap()["tweet_ids"],
        "engagement_types": ["impressions"], "groupings": {"t": {"group_by": ["engagement.type"]}},
        "start": "2022-01-10T05:00:00Z", "end": "2022-01-13T05:00:00Z",
    });
    let total: u64 = native["data"]["g"].as_object().unwrap().values().map(|v| v.as_u64().unwrap()).sum();
    assert_eq!(oracle(&sim_url, &utc).await["t"]["impressions"], total.to_string());

    let args = ["--time-zone", "Asia/Kolkata", "-"];
    let run = query(Some(&sim_url), &store.path().join("facts"), &args, &body);
    assert_eq!(run.status.code(), Some(1));
    assert!(run.stdout.is_empty());
    assert!(text(&run.stderr).contains("Asia/Kolkata"), "{}", text(&run.stderr));
}

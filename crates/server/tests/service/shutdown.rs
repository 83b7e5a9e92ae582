//! SIGTERM to the real `stitcher` binary in the middle of a question: the question
//! finishes, new ones are refused, `/readyz` turns `503`, and the process exits 0.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::support;

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use simulator::faults::Faults;
use simulator::{Config, Simulator};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_the_question_in_flight_finish_then_exits_zero() {
    let sim = Simulator::new(Config {
        faults: Faults { latency: Duration::from_millis(1500), ..Faults::default() },
        ..Config::default()
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let sim_url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(Arc::clone(&sim).serve(listener));
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let store = tempfile::tempdir().unwrap();
    let mut child = Command::new(support::binary())
        .env("STITCHER__SERVER__LISTEN", format!("127.0.0.1:{port}"))
        .env("STITCHER__UPSTREAM__BASE_URL", &sim_url)
        .env("STITCHER__SERVER__SHUTDOWN_GRACE_SECS", "10")
        .env("STITCHER__STORE__PATH", store.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("stitcher starts");
    let url = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    let mut up = false;
    for _ in 0..200 {
        if http.get(format!("{url}/readyz")).send().await.is_ok_and(|r| r.status().is_success()) {
            up = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(up, "stitcher did not come up");

    let body = json!({
        "tweet_ids": ["1800000000000000000"],
        "engagement_types": ["impressions"],
        "groupings": {"g": {"group_by": ["tweet.id", "engagement.type"]}},
        "start": "2024-08-01", "end": "2024-08-10"
    });
    let in_flight = {
        let (http, url, body) = (http.clone(), url.clone(), body.clone());
        tokio::spawn(async move {
            http.post(format!("{url}/v1/historical")).bearer_auth("demo-key").json(&body).send().await
        })
    };
    tokio::time::sleep(Duration::from_millis(400)).await;
    let killed = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(killed.success());
    tokio::time::sleep(Duration::from_millis(200)).await;

    let ready = http.get(format!("{url}/readyz")).send().await.unwrap();
    assert_eq!(ready.status().as_u16(), 503, "readyz turns 503 at once");
    let refused =
        http.post(format!("{url}/v1/historical")).bearer_auth("demo-key").json(&body).send().await.unwrap();
    assert_eq!(refused.status().as_u16(), 503, "new questions are refused");
    assert!(refused.headers().contains_key("retry-after"));

    let answered = in_flight.await.unwrap().expect("the question in flight is answered");
    assert_eq!(answered.status().as_u16(), 200);
    let answer: serde_json::Value = answered.json().await.unwrap();
    assert_eq!(answer["meta"]["slices_fetched"], 1);

    let mut status = None;
    for _ in 0..200 {
        if let Some(s) = child.try_wait().unwrap() {
            status = Some(s);
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let status = status.unwrap_or_else(|| {
        let _ = child.kill();
        panic!("stitcher did not exit after the question finished")
    });
    assert!(status.success(), "exit status {status:?}");
}

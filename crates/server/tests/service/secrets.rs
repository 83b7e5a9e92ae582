//! A full run of the real binary with credentials, logging at debug level: no secret and
//! no API key appears anywhere in what it prints.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::support;

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use simulator::{Config, Credentials, Handle, Simulator};

const CONSUMER_SECRET: &str = "cs-0f9e8d7c-SECRET";
const TOKEN_SECRET: &str = "ts-1a2b3c4d-SECRET";
const API_KEY: &str = "key-5e6f7a8b-SECRET";
const WRONG_KEY: &str = "wrong-9c0d1e2f-SECRET";
/// In the URL of a Redis that is away, so its failures are logged too.
const REDIS_PASSWORD: &str = "rp-7d6c5b4a-SECRET";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_of_a_full_run_hold_no_secret() {
    let credentials = Credentials {
        consumer_key: "prod-consumer".into(),
        consumer_secret: CONSUMER_SECRET.into(),
        handles: vec![Handle {
            name: "brand".into(),
            token: "brand-token".into(),
            token_secret: TOKEN_SECRET.into(),
        }],
    };
    let sim = Simulator::new(Config { credentials, ..Config::default() });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let sim_url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(Arc::clone(&sim).serve(listener));

    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let away = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let log_path = std::env::temp_dir().join(format!("stitcher-secrets-{port}.log"));
    let log = std::fs::File::create(&log_path).unwrap();
    let store = tempfile::tempdir().unwrap();
    let mut child = Command::new(support::binary())
        .env("RUST_LOG", "debug")
        .env("STITCHER__STORE__PATH", store.path())
        .env("STITCHER__SERVER__LISTEN", format!("127.0.0.1:{port}"))
        .env("STITCHER__UPSTREAM__BASE_URL", &sim_url)
        .env("STITCHER__UPSTREAM__CONSUMER_KEY", "prod-consumer")
        .env("STITCHER__UPSTREAM__CONSUMER_SECRET", CONSUMER_SECRET)
        .env("STITCHER__HANDLES__DEMO__TOKEN", "brand-token")
        .env("STITCHER__HANDLES__DEMO__TOKEN_SECRET", TOKEN_SECRET)
        .env("STITCHER__CLIENTS__DEMO__KEY_SHA256", server::auth::key_hash(API_KEY))
        .env("STITCHER__CLIENTS__DEMO__HANDLES", "demo")
        .env("STITCHER__REDIS__URL", format!("redis://:{REDIS_PASSWORD}@127.0.0.1:{away}"))
        .stdout(Stdio::from(log.try_clone().unwrap()))
        .stderr(Stdio::from(log))
        .spawn()
        .expect("stitcher starts");
    let url = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    for _ in 0..200 {
        if http.get(format!("{url}/livez")).send().await.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let body = json!({
        "tweet_ids": ["1800000000000000000", "1850000000000000000"],
        "engagement_types": ["impressions", "engagements"],
        "groupings": {"g": {"group_by": ["tweet.id", "engagement.type"]}},
        "start": "2024-06-01", "end": "2025-01-01"
    });
    let ok = http.post(format!("{url}/v1/historical")).bearer_auth(API_KEY).json(&body).send().await.unwrap();
    assert_eq!(ok.status().as_u16(), 200, "{}", ok.text().await.unwrap());
    let wrong =
        http.post(format!("{url}/v1/historical")).bearer_auth(WRONG_KEY).json(&body).send().await.unwrap();
    assert_eq!(wrong.status().as_u16(), 401);
    let bad = http
        .post(format!("{url}/v1/historical"))
        .bearer_auth(API_KEY)
        .json(&json!({"tweet_ids": ["x"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status().as_u16(), 400);
    assert!(
        sim.stats().by_status.get("200").copied().unwrap_or(0) > 0,
        "the upstream was called with the secrets"
    );

    Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    let _ = child.wait();
    let logs = std::fs::read_to_string(&log_path).unwrap();
    let _ = std::fs::remove_file(&log_path);
    assert!(logs.lines().count() > 5, "the run logged: {logs}");
    assert!(logs.contains("\"request_id\""), "logs carry request IDs");
    for secret in [CONSUMER_SECRET, TOKEN_SECRET, API_KEY, WRONG_KEY, REDIS_PASSWORD, "SECRET"] {
        assert!(!logs.contains(secret), "{secret} appears in the logs");
    }
}

//! The real `stitcher` binary as a child process, against a simulator in the test process.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use simulator::{Config, Simulator};

/// A simulator serving on a loopback port; its base URL.
pub async fn simulator(config: Config) -> (Arc<Simulator>, String) {
    let sim = Simulator::new(config);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(Arc::clone(&sim).serve(listener));
    (sim, url)
}

/// A simulator with `config`, and `stitcher` calling it, with `env` laid over the defaults.
pub async fn against(config: Config, env: &[(&str, &str)]) -> (Arc<Simulator>, Stitcher) {
    let (sim, sim_url) = simulator(config).await;
    let mut vars = vec![("STITCHER__UPSTREAM__BASE_URL", sim_url.as_str())];
    vars.extend_from_slice(env);
    (sim, Stitcher::start(&vars).await)
}

/// One grouping per Tweet and type.
pub const PER_TWEET: &[&str] = &["tweet.id", "engagement.type"];
/// One grouping per Tweet, type, day and hour.
pub const HOURLY: &[&str] = &["tweet.id", "engagement.type", "engagement.day", "engagement.hour"];

/// A question for `tweets` Tweets created long before its `windows` 28-day windows on the
/// plan's grid (`ceil(tweets / 25) × windows` upstream calls), asking `types` grouped by
/// `levels`.
pub fn question(tweets: u64, windows: i64, types: &[&str], levels: &[&str]) -> Value {
    let first = engagement::TweetId::minted_at(engagement::parse_instant("2014-01-01").unwrap()).0;
    let ids: Vec<String> = (0..tweets).map(|n| (first + n).to_string()).collect();
    // 2022-01-10 is a line of the grid (2014-09-01 + 96 × 28 days).
    let start = engagement::parse_instant("2022-01-10").unwrap();
    let end = start + chrono::Duration::days(28 * windows);
    json!({
        "tweet_ids": ids,
        "engagement_types": types,
        "groupings": {"g": {"group_by": levels}},
        "start": engagement::time::format_instant(start),
        "end": engagement::time::format_instant(end),
    })
}

/// Asks `body` of `stitcher`'s `/v1/historical` as the demo client: the status and the
/// answer (`null` if it is not JSON).
pub async fn ask(stitcher: &Stitcher, body: &Value) -> (u16, Value) {
    let resp = reqwest::Client::new()
        .post(format!("{}/v1/historical", stitcher.url))
        .bearer_auth("demo-key")
        .json(body)
        .send()
        .await
        .unwrap();
    (resp.status().as_u16(), resp.json().await.unwrap_or(Value::Null))
}

/// `GET path` of `stitcher` as the demo client: the status and the body.
pub async fn get(stitcher: &Stitcher, path: &str) -> (u16, Value) {
    let resp = reqwest::Client::new()
        .get(format!("{}{path}", stitcher.url))
        .bearer_auth("demo-key")
        .send()
        .await
        .unwrap();
    (resp.status().as_u16(), resp.json().await.unwrap_or(Value::Null))
}

/// The simulator's unlimited answer to `body`.
pub async fn oracle(sim_url: &str, body: &Value) -> Value {
    oracle_says(sim_url, body).await.1
}

/// The simulator's unlimited answer to `body`, with its status (a refusal is `{"errors"}`).
pub async fn oracle_says(sim_url: &str, body: &Value) -> (u16, Value) {
    let resp =
        reqwest::Client::new().post(format!("{sim_url}/_oracle/historical")).json(body).send().await.unwrap();
    (resp.status().as_u16(), resp.json().await.unwrap())
}

/// `POST path` of `stitcher` with `body`, as the demo client.
pub async fn post(stitcher: &Stitcher, path: &str, body: &Value) -> reqwest::Response {
    reqwest::Client::new()
        .post(format!("{}{path}", stitcher.url))
        .bearer_auth("demo-key")
        .json(body)
        .send()
        .await
        .unwrap()
}

/// A Tweet ID minted `days` days before now, told apart by `n`.
pub fn tweet(days: i64, n: u64) -> u64 {
    engagement::TweetId::minted_at(chrono::Utc::now() - chrono::Duration::days(days)).0 + n
}

/// The `stitcher` binary under test: `STITCHER_BIN` when set (to try these tests on another
/// build of it), else this build's.
pub fn binary() -> String {
    std::env::var("STITCHER_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_stitcher").to_string())
}

/// Integer counts as strings, so a native answer's data reads as the oracle's.
pub fn as_strings(v: Value) -> Value {
    match v {
        Value::Number(n) => Value::String(n.to_string()),
        Value::Object(m) => Value::Object(m.into_iter().map(|(k, v)| (k, as_strings(v))).collect()),
        other => other,
    }
}

/// A free loopback port.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A running `stitcher`; killed when dropped.
#[derive(Debug)]
pub struct Stitcher {
    pub child: Child,
    pub url: String,
    pub addr: String,
    log: PathBuf,
    /// The store of facts, unless the test names its own with `STITCHER__STORE__PATH`.
    _store: tempfile::TempDir,
}

impl Stitcher {
    /// Starts the binary with `env` on a free port and waits until it says it serves (on
    /// another port if that one was taken meanwhile).
    pub async fn start(env: &[(&str, &str)]) -> Stitcher {
        for _ in 0..5 {
            let mut stitcher = Stitcher::spawn(env);
            for _ in 0..400 {
                if stitcher.child.try_wait().unwrap().is_some() {
                    break;
                }
                if stitcher.logs().contains("stitcher serving") {
                    return stitcher;
                }
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
            let logs = stitcher.logs();
            assert!(logs.contains("cannot listen"), "stitcher did not come up: {logs}");
        }
        panic!("no free port for stitcher");
    }

    fn spawn(env: &[(&str, &str)]) -> Stitcher {
        let port = free_port();
        let addr = format!("127.0.0.1:{port}");
        let log = std::env::temp_dir().join(format!("stitcher-test-{port}.log"));
        let file = std::fs::File::create(&log).unwrap();
        let store = tempfile::tempdir().unwrap();
        let child = Command::new(binary())
            .env("STITCHER__SERVER__LISTEN", &addr)
            .env("STITCHER__STORE__PATH", store.path())
            .env("STITCHER__UPSTREAM__RETRY_BASE_MS", "10")
            .envs(env.iter().copied())
            .stdout(Stdio::from(file.try_clone().unwrap()))
            .stderr(Stdio::from(file))
            .spawn()
            .expect("stitcher starts");
        Stitcher { child, url: format!("http://{addr}"), addr, log, _store: store }
    }

    /// What the process has printed so far.
    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Sends SIGTERM.
    pub fn terminate(&self) {
        let sent = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status().unwrap();
        assert!(sent.success());
    }

    /// Waits up to `limit` for the process to exit; its exit status.
    pub async fn exited(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let deadline = tokio::time::Instant::now() + limit;
        while tokio::time::Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Some(status);
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        None
    }
}

impl Drop for Stitcher {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.log);
    }
}

/// The value of the series `name` (with its labels as the exposition writes them, if any)
/// at `stitcher`, whose process has a recorder of its own; it must be there.
pub async fn metric(stitcher: &Stitcher, name: &str) -> f64 {
    let text = reqwest::get(format!("{}/metrics", stitcher.url)).await.unwrap().text().await.unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|rest| rest.strip_prefix(' ')))
        .map(|v| v.trim().parse().unwrap())
        .unwrap_or_else(|| panic!("no {name} in {text}"))
}

//! A world for end-to-end tests: a simulator on a loopback port, and the service built by
//! `Application::build_on` (as `main` builds it, on a clock the test may move ahead)
//! pointed at it, on port 0.

#![allow(clippy::unwrap_used, clippy::missing_panics_doc)]

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use engine::ports::{Clock as ServiceClock, MovedClock};
use serde_json::Value;
use server::{Application, Settings};
use simulator::{Clock, Config, Simulator};

/// The simulator and the service under test.
#[derive(Debug)]
pub struct World {
    /// The service's base URL.
    pub url: String,
    /// The simulator's base URL.
    pub sim_url: String,
    pub sim: Arc<Simulator>,
    pub http: reqwest::Client,
    pub now: DateTime<Utc>,
    /// The service's store of facts, removed with the world.
    pub store: tempfile::TempDir,
    /// The service's clock: the system's, until a test moves it ahead to pass a TTL.
    pub clock: Arc<MovedClock>,
}

/// The instant tests take as now: this hour's start, so every count is settled.
pub fn test_now() -> DateTime<Utc> {
    engagement::time::floor_hour(Utc::now())
}

impl World {
    /// A world whose simulator has `config` (its clock fixed at [`test_now`]) and whose
    /// service has the default settings overridden by `env` (`STITCHER__...` names).
    pub async fn start(config: Config, env: &[(&str, &str)]) -> World {
        World::start_with_clock(Config { clock: Clock::Fixed(test_now()), ..config }, env).await
    }

    /// Like [`World::start`], with the simulator's clock as `config` has it.
    pub async fn start_with_clock(config: Config, env: &[(&str, &str)]) -> World {
        let now = match config.clock {
            Clock::Fixed(t) => t,
            Clock::System => test_now(),
        };
        let sim = Simulator::new(config);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let sim_url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(Arc::clone(&sim).serve(listener));
        let store = tempfile::tempdir().unwrap();
        let mut vars: BTreeMap<String, String> = BTreeMap::from([
            ("STITCHER__SERVER__LISTEN".into(), "127.0.0.1:0".into()),
            ("STITCHER__STORE__PATH".into(), store.path().display().to_string()),
            ("STITCHER__UPSTREAM__BASE_URL".into(), sim_url.clone()),
            ("STITCHER__UPSTREAM__RETRY_BASE_MS".into(), "10".into()),
        ]);
        vars.extend(env.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        let settings = Settings::load_with(None, Some(vars)).unwrap();
        let clock = Arc::new(MovedClock::default());
        let app = Application::build_on(settings, Arc::clone(&clock) as Arc<dyn ServiceClock>).await.unwrap();
        let url = format!("http://{}", app.local_addr().unwrap());
        tokio::spawn(app.run());
        World { url, sim_url, sim, http: reqwest::Client::new(), now, store, clock }
    }

    /// `POST` to the service with the demo key.
    pub async fn ask(&self, path: &str, body: &Value) -> (u16, Value) {
        self.ask_as(path, body, Some("demo-key")).await
    }

    /// A `POST` of `body` to the service as the demo client, for the test to add to and send.
    pub fn post(&self, path: &str, body: &Value) -> reqwest::RequestBuilder {
        self.http.post(format!("{}{path}", self.url)).bearer_auth("demo-key").json(body)
    }

    /// `POST` to the service with `key` (or none).
    pub async fn ask_as(&self, path: &str, body: &Value, key: Option<&str>) -> (u16, Value) {
        let mut req = self.http.post(format!("{}{path}", self.url)).json(body);
        if let Some(k) = key {
            req = req.bearer_auth(k);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    /// The simulator's unlimited answer to `body`.
    pub async fn oracle(&self, body: &Value) -> Value {
        let resp =
            self.http.post(format!("{}/_oracle/historical", self.sim_url)).json(body).send().await.unwrap();
        assert_eq!(resp.status().as_u16(), 200);
        resp.json().await.unwrap()
    }

    /// The value of `series` in the service's metrics now (0 if absent). The tests of this
    /// binary share one recorder, so a test reads the change across its own action.
    pub async fn metric(&self, series: &str) -> f64 {
        let text = self.http.get(format!("{}/metrics", self.url)).send().await.unwrap().text().await.unwrap();
        metric_in(&text, series)
    }

    /// Moves the simulator's clock to `to` (its answers and its oracle's from then on).
    pub async fn move_upstream_clock(&self, to: DateTime<Utc>) {
        let moved = self
            .http
            .post(format!("{}/_clock", self.sim_url))
            .json(&serde_json::json!({"now": engagement::time::format_instant(to)}))
            .send()
            .await;
        assert_eq!(moved.unwrap().status().as_u16(), 200);
    }

    /// Submits `body` as a job and waits for its result, asked with `query` on its URL (and
    /// `If-None-Match: tag` when given): the first answer that is not `409` (still running).
    pub async fn job_result(&self, body: &Value, query: &str, tag: Option<&str>) -> reqwest::Response {
        let r = self.post("/v1/jobs", body).send().await.unwrap();
        assert_eq!(r.status().as_u16(), 202);
        let job = r.headers()["location"].to_str().unwrap().to_owned();
        for _ in 0..600 {
            let mut asked = self.http.get(format!("{}{job}/result{query}", self.url)).bearer_auth("demo-key");
            if let Some(tag) = tag {
                asked = asked.header("if-none-match", tag);
            }
            let r = asked.send().await.unwrap();
            if r.status().as_u16() != 409 {
                return r;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        panic!("the job did not finish");
    }

    /// Upstream calls the simulator has answered so far.
    pub fn upstream_calls(&self) -> u64 {
        self.sim.stats().requests_total
    }
}

/// A Tweet created `days` days before `now`, told apart by `n`.
pub fn tweet(now: DateTime<Utc>, days: f64, n: u64) -> engagement::TweetId {
    let at = now - chrono::Duration::seconds((days * 86_400.0) as i64);
    engagement::TweetId(engagement::TweetId::minted_at(at).0 + n)
}

/// A small deterministic generator for seeded random questions.
#[derive(Debug)]
pub struct Dice(u64);

impl Dice {
    pub fn new(seed: u64) -> Dice {
        Dice(seed)
    }

    /// A draw in `0..n`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.0 = simulator::model::mix(self.0);
        self.0 % n.max(1)
    }

    /// A draw in `lo..=hi`.
    pub fn between(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi - lo + 1)
    }

    /// One of `items`.
    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }
}

/// Turns integer counts into strings, so a native `data` tree reads as a drop-in answer.
pub fn counts_as_strings(v: Value) -> Value {
    match v {
        Value::Number(n) => Value::String(n.to_string()),
        Value::Object(m) => Value::Object(m.into_iter().map(|(k, v)| (k, counts_as_strings(v))).collect()),
        other => other,
    }
}

/// The value of the series `series` (a name, with its labels as the exposition writes
/// them, e.g. `stitcher_slices_total{kind="planned"}`) in Prometheus text `text`; 0 when
/// it is absent (a counter not yet counted).
pub fn metric_in(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series).and_then(|rest| rest.strip_prefix(' ')))
        .map_or(0.0, |v| v.trim().parse().unwrap())
}

//! Two `stitcher` processes on one Redis behave as one service: together they keep the
//! upstream's per-minute limit, a nonce used at one is refused at the other, and the
//! month's handle cap holds across both. When Redis goes away (a server of the test's own,
//! stopped mid-test) a replica answers alone under `local` and catches up when it returns,
//! or refuses under `refuse`. Redis is the real server (`REDIS_URL`, default the local one),
//! each test under its own key prefix.

#![allow(clippy::unwrap_used)]

use crate::support;

use std::num::NonZeroU64;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::support::{PER_TWEET, Stitcher, as_strings, ask, get, oracle};
use serde_json::{Value, json};
use simulator::Config;

fn redis_url() -> String {
    std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

/// A key prefix no other test (or run) uses.
fn prefix(test: &str) -> String {
    format!("stitcher-test:{}:{}:{test}:", std::process::id(), chrono::Utc::now().timestamp_micros())
}

/// A question for `tweets` Tweets from `first` on, over 4 × 28 days.
fn question(first: u64, tweets: u64) -> Value {
    let mut q = support::question(tweets, 4, &["impressions"], PER_TWEET);
    let base = engagement::TweetId::minted_at(engagement::parse_instant("2014-01-01").unwrap()).0;
    q["tweet_ids"] = json!((0..tweets).map(|n| (base + first + n).to_string()).collect::<Vec<_>>());
    q
}

async fn replicas(sim_url: &str, env: &[(&str, &str)]) -> (Stitcher, Stitcher) {
    let mut vars = vec![("STITCHER__UPSTREAM__BASE_URL", sim_url)];
    vars.extend_from_slice(env);
    (Stitcher::start(&vars).await, Stitcher::start(&vars).await)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn together_two_replicas_keep_the_upstreams_limit() {
    // 10 calls per 2 s window (300 a minute); each replica paces 240 a minute.
    let limited = || Config { rate_limit_per_minute: 10, rate_window_secs: 2, ..Config::default() };
    let pace = [("STITCHER__UPSTREAM__REQUESTS_PER_MINUTE", "240"), ("STITCHER__UPSTREAM__RATE_BURST", "1")];
    let both_at_once = |a: Stitcher, b: Stitcher, sim_url: String| async move {
        // 3 batches × 4 windows each, different Tweets at each replica.
        let (qa, qb) = (question(0, 75), question(1000, 75));
        let (ra, rb) = tokio::join!(ask(&a, &qa), ask(&b, &qb));
        for ((status, answer), q) in [(ra, qa), (rb, qb)] {
            assert_eq!(status, 200, "{answer}");
            assert_eq!(as_strings(answer["data"].clone()), oracle(&sim_url, &q).await);
        }
    };

    // Alone, each keeps its own pace, and together they pass the limit.
    let (sim, sim_url) = support::simulator(limited()).await;
    let (a, b) = replicas(&sim_url, &pace).await;
    both_at_once(a, b, sim_url).await;
    let alone = sim.stats().by_status.get("429").copied().unwrap_or(0);
    assert!(alone > 0, "two replicas each at 240 a minute pass 300 together: {:?}", sim.stats());

    let (sim, sim_url) = support::simulator(limited()).await;
    let url = redis_url();
    let prefix = prefix("rate");
    let mut shared = pace.to_vec();
    shared.extend([("STITCHER__REDIS__URL", url.as_str()), ("STITCHER__REDIS__KEY_PREFIX", prefix.as_str())]);
    let (a, b) = replicas(&sim_url, &shared).await;
    both_at_once(a, b, sim_url).await;
    let stats = sim.stats();
    assert_eq!(stats.by_status.get("429").copied().unwrap_or(0), 0, "{stats:?}");
    assert_eq!(stats.requests_total, 24);
}

#[tokio::test]
async fn a_refusal_told_at_one_replica_is_given_at_the_other_without_a_call() {
    let settled = question(0, 5);
    let ids: Vec<engagement::TweetId> = settled["tweet_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| engagement::TweetId::parse(t.as_str().unwrap()).unwrap())
        .collect();
    let (protected, foreign) = (ids[2], ids[4]);
    let config =
        Config { protected_ids: [protected].into(), foreign_ids: [foreign].into(), ..Config::default() };
    let (sim, sim_url) = support::simulator(config).await;
    let (url, prefix) = (redis_url(), prefix("refusals"));
    let env = [("STITCHER__REDIS__URL", url.as_str()), ("STITCHER__REDIS__KEY_PREFIX", prefix.as_str())];
    let (a, b) = replicas(&sim_url, &env).await;

    let mut protected_only = settled.clone();
    protected_only["tweet_ids"] = json!(ids[..4].iter().map(ToString::to_string).collect::<Vec<_>>());
    let (status, at_a) = ask(&a, &protected_only).await;
    assert_eq!(status, 400, "{at_a}");
    assert_eq!(at_a["errors"], json!([format!("Tweet ID(s) are unavailable: {protected}")]));
    let calls = sim.stats().requests_total;
    let (status, at_b) = ask(&b, &protected_only).await;
    assert_eq!((status, &at_b["errors"]), (400, &at_a["errors"]), "{at_b}");
    assert_eq!(sim.stats().requests_total, calls, "the other replica made no call");

    let (status, at_a) = ask(&a, &settled).await;
    assert_eq!(status, 403, "not the handle's comes first: {at_a}");
    let calls = sim.stats().requests_total;
    let (status, at_b) = ask(&b, &settled).await;
    assert_eq!((status, &at_b["errors"]), (403, &at_a["errors"]), "{at_b}");
    assert_eq!(sim.stats().requests_total, calls, "the other replica made no call");
}

#[tokio::test]
async fn a_question_answered_at_one_replica_costs_no_call_at_the_other() {
    let (sim, sim_url) = support::simulator(Config::default()).await;
    let (url, prefix) = (redis_url(), prefix("facts"));
    let env = [("STITCHER__REDIS__URL", url.as_str()), ("STITCHER__REDIS__KEY_PREFIX", prefix.as_str())];
    let (a, b) = replicas(&sim_url, &env).await;
    // Settled months, and the last days up to now (unsettled, shared for the fresh TTL).
    let now = chrono::Utc::now();
    let base = engagement::TweetId::minted_at(now - chrono::Duration::days(400)).0;
    let ids: Vec<String> = (0..30).map(|n| (base + n).to_string()).collect();
    let question = |levels: &[&str], days: i64| {
        json!({
            "tweet_ids": ids,
            "engagement_types": ["impressions", "favorites"],
            "groupings": {"g": {"group_by": levels}},
            "start": engagement::time::format_instant(now - chrono::Duration::days(days)),
            "end": engagement::time::format_instant(now),
        })
    };
    let q = question(PER_TWEET, 60);
    let (status, at_a) = ask(&a, &q).await;
    assert_eq!(status, 200, "{at_a}");
    let cold = sim.stats().requests_total;
    assert!(cold >= 2 * 3, "{cold}");

    let (status, at_b) = ask(&b, &q).await;
    assert_eq!(status, 200, "{at_b}");
    assert_eq!(sim.stats().requests_total, cold, "the other replica made no call");
    assert_eq!(at_b["meta"]["upstream_calls"], 0);
    assert_eq!(at_b["data"], at_a["data"]);
    assert_eq!(as_strings(at_b["data"].clone()), oracle(&sim_url, &q).await);

    // Another grouping, and a shorter range, at the other replica: still no call.
    let by_day = question(&["engagement.day", "engagement.type"], 20);
    let (status, answer) = ask(&b, &by_day).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(sim.stats().requests_total, cold);
    assert_eq!(as_strings(answer["data"].clone()), oracle(&sim_url, &by_day).await);
    assert!(support::metric(&b, "stitcher_store_shared_hits_total").await > 0.0);
}

#[tokio::test]
async fn fifty_tweets_over_500_days_answered_at_one_replica_cost_no_call_at_the_other_and_redis_stays_up() {
    let (sim, sim_url) = support::simulator(Config::default()).await;
    let (url, prefix) = (redis_url(), prefix("big"));
    let env = [("STITCHER__REDIS__URL", url.as_str()), ("STITCHER__REDIS__KEY_PREFIX", prefix.as_str())];
    let (a, b) = replicas(&sim_url, &env).await;
    let now = chrono::Utc::now();
    let base = engagement::TweetId::minted_at(now - chrono::Duration::days(600)).0;
    let ids: Vec<String> = (0..50).map(|n| (base + n).to_string()).collect();
    let q = json!({
        "tweet_ids": ids,
        "engagement_types": ["impressions", "favorites"],
        "groupings": {"g": {"group_by": ["tweet.id", "engagement.type", "engagement.day"]}},
        "start": engagement::time::format_instant(now - chrono::Duration::days(500)),
        "end": engagement::time::format_instant(now),
    });
    let (status, at_a) = ask(&a, &q).await;
    assert_eq!(status, 200, "{at_a}");
    let cold = sim.stats().requests_total;
    assert!(cold >= 2 * 18, "two batches over 18 windows or more: {cold}");

    let (status, at_b) = ask(&b, &q).await;
    assert_eq!(status, 200, "{at_b}");
    assert_eq!(sim.stats().requests_total, cold, "the other replica made no call");
    assert_eq!(at_b["data"], at_a["data"]);
    for replica in [&a, &b] {
        assert_eq!(support::metric(replica, "stitcher_redis_up").await, 1.0);
    }
    // Nothing was done alone at the other replica (the counter appears once something is).
    let text = reqwest::get(format!("{}/metrics", b.url)).await.unwrap().text().await.unwrap();
    let alone: Vec<&str> = text.lines().filter(|l| l.starts_with("stitcher_redis_fallbacks_total")).collect();
    assert!(alone.iter().all(|l| l.ends_with(" 0")), "{alone:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_cold_question_sent_to_both_replicas_at_once_is_fetched_once() {
    let faults = simulator::faults::Faults { latency: Duration::from_millis(300), ..Default::default() };
    let (sim, sim_url) = support::simulator(Config { faults, ..Config::default() }).await;
    let (url, prefix) = (redis_url(), prefix("lease"));
    let env = [("STITCHER__REDIS__URL", url.as_str()), ("STITCHER__REDIS__KEY_PREFIX", prefix.as_str())];
    let (a, b) = replicas(&sim_url, &env).await;
    // 2 batches × 3 windows.
    let q = question(0, 50);
    let q = json!({"end": q["end"], "start": q["start"], "tweet_ids": q["tweet_ids"],
        "engagement_types": ["impressions", "url_clicks"], "groupings": q["groupings"]});
    let (ra, rb) = tokio::join!(ask(&a, &q), ask(&b, &q));
    for (status, answer) in [&ra, &rb] {
        assert_eq!(*status, 200, "{answer}");
        assert_eq!(as_strings(answer["data"].clone()), oracle(&sim_url, &q).await);
    }
    let one_question = 2 * 4;
    assert_eq!(sim.stats().requests_total, one_question, "{:?} and {:?}", ra.1["meta"], rb.1["meta"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_outlives_a_call_slower_than_its_term_so_the_call_is_made_once() {
    // Each call takes 3 s; a lease is taken for 1 s and renewed every third of it.
    let faults = simulator::faults::Faults { latency: Duration::from_secs(3), ..Default::default() };
    let (sim, sim_url) = support::simulator(Config { faults, ..Config::default() }).await;
    let (url, prefix) = (redis_url(), prefix("slow-lease"));
    let env = [
        ("STITCHER__REDIS__URL", url.as_str()),
        ("STITCHER__REDIS__KEY_PREFIX", prefix.as_str()),
        ("STITCHER__REDIS__LEASE_SECS", "1"),
    ];
    let (a, b) = replicas(&sim_url, &env).await;
    // 1 batch × 4 windows, asked at A, then at B while A's calls run.
    let q = question(0, 25);
    let at_a = ask(&a, &q);
    let at_b = async {
        tokio::time::sleep(Duration::from_millis(500)).await;
        ask(&b, &q).await
    };
    let (ra, rb) = tokio::join!(at_a, at_b);
    for (status, answer) in [&ra, &rb] {
        assert_eq!(*status, 200, "{answer}");
        assert_eq!(as_strings(answer["data"].clone()), oracle(&sim_url, &q).await);
    }
    assert_eq!(sim.stats().requests_total, 4, "{:?} and {:?}", ra.1["meta"], rb.1["meta"]);
    assert_eq!(rb.1["meta"]["upstream_calls"], 0, "{}", rb.1["meta"]);
}

#[tokio::test]
async fn junk_in_redis_is_counted_and_taken_as_missing() {
    let (sim, sim_url) = support::simulator(Config::default()).await;
    let (url, prefix) = (redis_url(), prefix("junk"));
    let env = [("STITCHER__REDIS__URL", url.as_str()), ("STITCHER__REDIS__KEY_PREFIX", prefix.as_str())];
    let (a, b) = replicas(&sim_url, &env).await;
    let q = question(0, 5);
    let (status, at_a) = ask(&a, &q).await;
    assert_eq!(status, 200, "{at_a}");
    let cold = sim.stats().requests_total;

    // Another writer spoils a block of one Tweet's settled facts and every status.
    let mut redis =
        redis::Client::open(url.as_str()).unwrap().get_multiplexed_async_connection().await.unwrap();
    let keys = |pattern: String| {
        let mut redis = redis.clone();
        async move {
            let keys: Vec<String> = redis::cmd("KEYS").arg(pattern).query_async(&mut redis).await.unwrap();
            keys
        }
    };
    let blocks = keys(format!("{prefix}settled:*")).await;
    let statuses = keys(format!("{prefix}status:*")).await;
    assert!(!blocks.is_empty() && statuses.len() == 5, "{blocks:?} {statuses:?}");
    let _: () = redis::cmd("DEL").arg(&blocks[0]).query_async(&mut redis).await.unwrap();
    let _: () =
        redis::cmd("HSET").arg(&blocks[0]).arg("5").arg("many").query_async(&mut redis).await.unwrap();
    for key in &statuses {
        let _: () = redis::cmd("SET").arg(key).arg("perhaps").query_async(&mut redis).await.unwrap();
    }

    let (status, at_b) = ask(&b, &q).await;
    assert_eq!(status, 200, "{at_b}");
    assert_eq!(as_strings(at_b["data"].clone()), oracle(&sim_url, &q).await);
    assert!(sim.stats().requests_total > cold, "what was spoilt is fetched again");
    let text = reqwest::get(format!("{}/metrics", b.url)).await.unwrap().text().await.unwrap();
    let bad: f64 = text
        .lines()
        .filter_map(|l| l.strip_prefix("stitcher_redis_bad_values_total{"))
        .map(|l| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap())
        .sum();
    assert!(bad >= 5.0, "five statuses at least were junk: {text}");
    assert_eq!(support::metric(&b, "stitcher_redis_up").await, 1.0);
}

fn signed(url: &str) -> String {
    let client = oauth1_request::Credentials::new("sim-consumer-key", "sim-consumer-secret");
    let mut b = oauth1_request::Builder::new(client, oauth1_request::HMAC_SHA1);
    b.token(oauth1_request::Credentials::new("demo-token", "demo-token-secret"));
    b.version(true);
    b.timestamp(NonZeroU64::new(chrono::Utc::now().timestamp() as u64));
    b.post(url, &())
}

#[tokio::test]
async fn a_nonce_used_at_one_replica_is_refused_at_the_other() {
    let (_sim, sim_url) = support::simulator(Config::default()).await;
    let (url, prefix) = (redis_url(), prefix("nonce"));
    // Behind one load balancer, both are signed for as one public URL.
    let (a, b) = replicas(
        &sim_url,
        &[
            ("STITCHER__REDIS__URL", url.as_str()),
            ("STITCHER__REDIS__KEY_PREFIX", prefix.as_str()),
            ("STITCHER__SERVER__PUBLIC_BASE_URL", "https://stitcher.example"),
        ],
    )
    .await;
    let authorization = signed("https://stitcher.example/insights/engagement/historical");
    let body = question(0, 3);
    let post = |s: &Stitcher| {
        let (url, authorization, body) = (s.url.clone(), authorization.clone(), body.clone());
        async move {
            let resp = reqwest::Client::new()
                .post(format!("{url}/insights/engagement/historical"))
                .header("authorization", authorization)
                .json(&body)
                .send()
                .await
                .unwrap();
            (resp.status().as_u16(), resp.json::<Value>().await.unwrap())
        }
    };
    let (status, answer) = post(&a).await;
    assert_eq!(status, 200, "{answer}");
    let (status, refused) = post(&b).await;
    assert_eq!(status, 401, "{refused}");
    assert!(refused["errors"][0].as_str().unwrap().contains("oauth_nonce was already used"), "{refused}");
}

#[tokio::test]
async fn the_months_handle_cap_holds_across_replicas() {
    let (_sim, sim_url) = support::simulator(Config::default()).await;
    let (url, prefix) = (redis_url(), prefix("ledger"));
    let redis = replicas::Redis::connect(&url, &prefix).unwrap();
    let now = chrono::Utc::now();
    // Another replica has counted one handle this month.
    redis.admit_handle("elsewhere", now, None, false).await.unwrap();
    let env = [
        ("STITCHER__REDIS__URL", url.as_str()),
        ("STITCHER__REDIS__KEY_PREFIX", prefix.as_str()),
        ("STITCHER__LEDGER__HANDLE_CAP", "2"),
    ];
    let (a, b) = replicas(&sim_url, &env).await;
    let (status, answer) = ask(&a, &question(0, 3)).await;
    assert_eq!(status, 200, "{answer}");
    let (status, usage) = get(&b, "/v1/usage").await;
    assert_eq!(status, 200, "{usage}");
    assert_eq!(usage["handles_used"], 2, "the other replica's count: {usage}");
    assert_eq!(usage["handles"][0]["handle"], "demo", "{usage}");

    // The cap is reached: a third handle counted anywhere leaves none for a new one.
    let (url2, prefix2) = (redis_url(), self::prefix("ledger-full"));
    let full = replicas::Redis::connect(&url2, &prefix2).unwrap();
    full.admit_handle("one", now, None, false).await.unwrap();
    full.admit_handle("two", now, None, false).await.unwrap();
    let env = [
        ("STITCHER__REDIS__URL", url2.as_str()),
        ("STITCHER__REDIS__KEY_PREFIX", prefix2.as_str()),
        ("STITCHER__LEDGER__HANDLE_CAP", "2"),
    ];
    let (c, _d) = replicas(&sim_url, &env).await;
    let (status, refused) = ask(&c, &question(0, 3)).await;
    assert_eq!(status, 403, "{refused}");
    assert!(refused["errors"][0].as_str().unwrap().contains('2'), "names the cap: {refused}");
}

/// A Redis server of the test's own, on `port`; killed when dropped.
struct OwnRedis(Child);

impl OwnRedis {
    async fn start(port: u16) -> OwnRedis {
        let own = OwnRedis(
            Command::new("redis-server")
                .args(["--port", &port.to_string(), "--save", "", "--appendonly", "no"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("redis-server is installed (scripts/redis installs it)"),
        );
        for _ in 0..200 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return own;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("redis-server did not come up on port {port}");
    }
}

impl Drop for OwnRedis {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Waits up to 10 s for `/readyz` to answer `status`, returning its body.
async fn readiness(stitcher: &Stitcher, status: u16, redis: &str) -> Value {
    let mut last = Value::Null;
    for _ in 0..100 {
        let (code, body) = get(stitcher, "/readyz").await;
        if code == status && body["redis"].as_str().is_some_and(|r| r.starts_with(redis)) {
            return body;
        }
        last = json!({"status": code, "body": body});
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("/readyz never said {status} with redis {redis}: {last}");
}

#[tokio::test]
async fn with_redis_away_a_replica_answers_alone_and_catches_up_when_it_returns() {
    let (_sim, sim_url) = support::simulator(Config::default()).await;
    let port = support::free_port();
    let url = format!("redis://127.0.0.1:{port}");
    let own = OwnRedis::start(port).await;
    let prefix = prefix("away");
    let s = Stitcher::start(&[
        ("STITCHER__UPSTREAM__BASE_URL", sim_url.as_str()),
        ("STITCHER__REDIS__URL", url.as_str()),
        ("STITCHER__REDIS__KEY_PREFIX", prefix.as_str()),
        ("STITCHER__UPSTREAM__REQUESTS_PER_MINUTE", "6000"),
    ])
    .await;
    readiness(&s, 200, "up").await;

    drop(own);
    let ready = readiness(&s, 200, "unreachable").await;
    assert_eq!(ready["status"], "ready", "{ready}");
    // The first handle of the month is counted while Redis is away.
    let q = question(0, 30);
    let (status, answer) = ask(&s, &q).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(as_strings(answer["data"].clone()), oracle(&sim_url, &q).await);
    assert!(support::metric(&s, "stitcher_redis_fallbacks_total{what=\"ledger\"}").await >= 1.0);
    assert_eq!(support::metric(&s, "stitcher_redis_up").await, 0.0);

    let _back = OwnRedis::start(port).await;
    // Questions keep coming as Redis returns; the ledger still catches up.
    let (status, answer) = ask(&s, &question(100, 3)).await;
    assert_eq!(status, 200, "{answer}");
    readiness(&s, 200, "up").await;
    let redis = replicas::Redis::connect(&url, &prefix).unwrap();
    let mut listed = Vec::new();
    for _ in 0..50 {
        listed = redis.handles_in_month(chrono::Utc::now()).await.unwrap();
        if !listed.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        listed.iter().map(|e| e.handle.as_str()).collect::<Vec<_>>(),
        ["demo"],
        "the ledger caught up"
    );
}

#[tokio::test]
async fn under_refuse_a_replica_without_redis_is_not_ready_and_says_when_to_retry() {
    let (sim, sim_url) = support::simulator(Config::default()).await;
    let port = support::free_port();
    let url = format!("redis://127.0.0.1:{port}");
    let s = Stitcher::start(&[
        ("STITCHER__UPSTREAM__BASE_URL", sim_url.as_str()),
        ("STITCHER__REDIS__URL", url.as_str()),
        ("STITCHER__REDIS__ON_FAILURE", "refuse"),
    ])
    .await;
    readiness(&s, 503, "unreachable").await;
    let resp = reqwest::Client::new()
        .post(format!("{}/v1/historical", s.url))
        .bearer_auth("demo-key")
        .json(&question(0, 3))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 503);
    assert!(resp.headers().get("retry-after").is_some());
    let body: Value = resp.json().await.unwrap();
    assert!(body["errors"][0].as_str().unwrap().contains("redis.on_failure"), "{body}");
    assert_eq!(sim.stats().requests_total, 0, "no call without the shared budget");

    let _own = OwnRedis::start(port).await;
    readiness(&s, 200, "up").await;
    let (status, answer) = ask(&s, &question(0, 3)).await;
    assert_eq!(status, 200, "back without a restart: {answer}");
}

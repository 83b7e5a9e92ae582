//! One test per rule of the simulator, over HTTP, with requests signed by an OAuth library
//! independent of the simulator's verifier.

#![allow(clippy::unwrap_used)]

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use engagement::{EngagementType, HourlyCounts, TweetId};
use serde_json::{Value, json};
use simulator::faults::Faults;
use simulator::{Clock, Config, Simulator};

const NOW: &str = "2024-06-01T12:30:00Z";

fn now() -> chrono::DateTime<chrono::Utc> {
    engagement::parse_instant(NOW).unwrap()
}

fn tweet(days_before_now: i64, n: u64) -> TweetId {
    TweetId(TweetId::minted_at(now() - chrono::Duration::days(days_before_now)).0 + n)
}

fn config() -> Config {
    Config { seed: 3, clock: Clock::Fixed(now()), ..Config::default() }
}

async fn start(config: Config) -> (String, Arc<Simulator>) {
    let sim = Simulator::new(config);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(Arc::clone(&sim).serve(listener));
    (base, sim)
}

fn sign(url: &str, token: &str, token_secret: &str, consumer_secret: &str) -> String {
    let client = oauth1_request::Credentials::new("sim-consumer-key", consumer_secret);
    let mut builder = oauth1_request::Builder::new(client, oauth1_request::HMAC_SHA1);
    builder.token(oauth1_request::Credentials::new(token, token_secret));
    builder.version(true);
    builder.post(url, &())
}

struct Answer {
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: Value,
}

async fn call_with(base: &str, path: &str, body: &Value, auth: Option<String>, gzip: bool) -> Answer {
    let client =
        if gzip { reqwest::Client::new() } else { reqwest::Client::builder().no_gzip().build().unwrap() };
    let mut req = client.post(format!("{base}{path}")).json(body);
    if let Some(a) = auth {
        req = req.header("authorization", a);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = resp.json().await.unwrap_or(Value::Null);
    Answer { status, headers, body }
}

async fn call(base: &str, body: &Value) -> Answer {
    let url = format!("{base}/insights/engagement/historical");
    call_with(
        base,
        "/insights/engagement/historical",
        body,
        Some(sign(&url, "demo-token", "demo-token-secret", "sim-consumer-secret")),
        true,
    )
    .await
}

fn question(ids: &[TweetId]) -> Value {
    json!({
        "tweet_ids": ids.iter().map(|i| i.to_string()).collect::<Vec<_>>(),
        "engagement_types": ["impressions", "engagements", "favorites"],
        "groupings": {"by tweet": {"group_by": ["tweet.id", "engagement.type"]}},
        "start": "2024-05-01", "end": "2024-05-20"
    })
}

fn message(a: &Answer) -> String {
    a.body["errors"]
        .as_array()
        .map(|e| e.iter().filter_map(|s| s.as_str()).collect::<Vec<_>>().join(" | "))
        .unwrap_or_default()
}

#[tokio::test]
async fn a_signed_gzip_request_gets_the_documented_shape() {
    let (base, _) = start(config()).await;
    let ids = [tweet(40, 0), tweet(100, 1)];
    let a = call(&base, &question(&ids)).await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(
        a.headers.get("content-encoding").map(|v| v.as_bytes()),
        None,
        "reqwest decoded the gzip body"
    );
    assert_eq!(a.body["start"], "2024-05-01T00:00:00Z");
    assert_eq!(a.body["end"], "2024-05-20T00:00:00Z");
    for id in ids {
        for ty in ["impressions", "engagements", "favorites"] {
            let leaf = &a.body["by tweet"][id.to_string()][ty];
            assert!(leaf.as_str().is_some_and(|s| s.parse::<u64>().is_ok()), "{id} {ty}: {leaf}");
        }
    }
}

#[tokio::test]
async fn every_answer_is_gzip_on_the_wire() {
    let (base, _) = start(config()).await;
    let url = format!("{base}/insights/engagement/historical");
    let resp = reqwest::Client::builder()
        .no_gzip()
        .build()
        .unwrap()
        .post(&url)
        .header("accept-encoding", "gzip")
        .header("authorization", sign(&url, "demo-token", "demo-token-secret", "sim-consumer-secret"))
        .json(&question(&[tweet(10, 0)]))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers()["content-encoding"], "gzip");
    let bytes = resp.bytes().await.unwrap();
    assert_eq!(&bytes[..2], &[0x1f, 0x8b], "gzip magic");
}

#[tokio::test]
async fn without_gzip_the_answer_is_406() {
    let (base, _) = start(config()).await;
    let url = format!("{base}/insights/engagement/historical");
    let a = call_with(
        &base,
        "/insights/engagement/historical",
        &question(&[tweet(10, 0)]),
        Some(sign(&url, "demo-token", "demo-token-secret", "sim-consumer-secret")),
        false,
    )
    .await;
    assert_eq!(a.status, 406);
    assert!(message(&a).starts_with("This request requires gzip compression."));
}

#[tokio::test]
async fn bad_or_missing_credentials_are_401() {
    let (base, sim) = start(config()).await;
    let path = "/insights/engagement/historical";
    let url = format!("{base}{path}");
    let body = question(&[tweet(10, 0)]);
    let none = call_with(&base, path, &body, None, true).await;
    assert_eq!(none.status, 401);
    assert!(message(&none).starts_with("Your account could not be authenticated. Reason:"));
    let wrong_secret =
        call_with(&base, path, &body, Some(sign(&url, "demo-token", "nope", "sim-consumer-secret")), true)
            .await;
    assert_eq!(wrong_secret.status, 401);
    assert!(message(&wrong_secret).contains("signature"));
    let wrong_token = call_with(
        &base,
        path,
        &body,
        Some(sign(&url, "other", "demo-token-secret", "sim-consumer-secret")),
        true,
    )
    .await;
    assert_eq!(wrong_token.status, 401);
    assert!(message(&wrong_token).contains("Access token not found"));
    // Signed for another URL: the signature covers the URL.
    let elsewhere = sign(
        &format!("{base}/insights/engagement/28hr"),
        "demo-token",
        "demo-token-secret",
        "sim-consumer-secret",
    );
    assert_eq!(call_with(&base, path, &body, Some(elsewhere), true).await.status, 401);
    assert_eq!(sim.stats().by_status.get("401"), Some(&4));
}

#[tokio::test]
async fn limits_and_rules_are_400_with_a_message() {
    let (base, _) = start(config()).await;
    let ids: Vec<TweetId> = (0..26).map(|n| tweet(50, n)).collect();
    let cases: Vec<(Value, &str)> = vec![
        (question(&ids), "at most 25"),
        (json!({"start": "2024-04-01"}), "at most 672 hours"),
        (json!({"start": "2014-08-01", "end": "2014-08-10"}), "before 2014-09-01"),
        (json!({"end": "2024-06-02"}), "in the future"),
        (json!({"engagement_types": ["clicks"]}), "unknown engagement type"),
        (json!({"engagement_types": ["quote_tweets"]}), "not available on the historical endpoint"),
        (
            json!({"groupings": {"g": {"group_by": ["engagement.day", "tweet.id", "engagement.type", "engagement.hour"]}}}),
            "4 values must be",
        ),
        (
            json!({"groupings": {"a": {"group_by": ["tweet.id"]}, "b": {"group_by": ["tweet.id"]}, "c": {"group_by": ["tweet.id"]}, "d": {"group_by": ["tweet.id"]}}}),
            "at most 3",
        ),
        (json!({"start": "2024-05-10", "end": "2024-05-09"}), "must be before end"),
    ];
    for (patch, expected) in cases {
        let mut body = question(&[tweet(50, 0)]);
        for (k, v) in patch.as_object().unwrap() {
            body[k] = v.clone();
        }
        let a = call(&base, &body).await;
        assert_eq!(a.status, 400, "{patch}: {}", a.body);
        assert!(message(&a).contains(expected), "{patch}: {}", message(&a));
    }
}

#[tokio::test]
async fn day_groupings_on_totals_are_400() {
    let (base, _) = start(config()).await;
    let path = "/insights/engagement/totals";
    let url = format!("{base}{path}");
    let body = json!({"tweet_ids": [tweet(10, 0).to_string()], "engagement_types": ["favorites"], "groupings": {"g": {"group_by": ["tweet.id", "engagement.day"]}}});
    let a = call_with(
        &base,
        path,
        &body,
        Some(sign(&url, "demo-token", "demo-token-secret", "sim-consumer-secret")),
        true,
    )
    .await;
    assert_eq!(a.status, 400);
    assert!(message(&a).contains("not supported: (engagement.day)"));
    let ok = json!({"tweet_ids": [tweet(10, 0).to_string(), tweet(200, 0).to_string()], "engagement_types": ["impressions", "quote_tweets"], "groupings": {"g": {"group_by": ["tweet.id", "engagement.type"]}}});
    let a = call_with(
        &base,
        path,
        &ok,
        Some(sign(&url, "demo-token", "demo-token-secret", "sim-consumer-secret")),
        true,
    )
    .await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(
        a.body["unsupported_for_impressions_engagements_tweet_ids"],
        json!([tweet(200, 0).to_string()])
    );
    assert_eq!(a.body["g"][tweet(200, 0).to_string()]["impressions"], "0");
}

#[tokio::test]
async fn foreign_protected_and_deleted_tweets() {
    let (good, foreign, protected, deleted) = (tweet(30, 0), tweet(30, 1), tweet(30, 2), tweet(30, 3));
    let mut cfg = config();
    cfg.foreign_ids = HashSet::from([foreign]);
    cfg.protected_ids = HashSet::from([protected]);
    cfg.deleted_ids = HashSet::from([deleted]);
    let (base, _) = start(cfg).await;
    let a = call(&base, &question(&[good, foreign])).await;
    assert_eq!((a.status, message(&a)), (403, format!("Forbidden to access tweets: {foreign}")));
    let a = call(&base, &question(&[good, protected])).await;
    assert_eq!(a.status, 400);
    assert!(message(&a).contains(&protected.to_string()));
    let a = call(&base, &question(&[good, deleted])).await;
    assert_eq!(a.status, 200);
    assert_eq!(a.body["unavailable_tweet_ids"], json!([deleted.to_string()]));
    assert_eq!(message(&a), "1 Tweet ID(s) are unavailable");
    assert!(a.body["by tweet"].get(deleted.to_string()).is_none());
    assert!(a.body["by tweet"].get(good.to_string()).is_some());
}

#[tokio::test]
async fn video_views_of_tweets_older_than_1800_days_are_unsupported() {
    let (base, _) = start(config()).await;
    let (old, young) = (tweet(1801, 0), tweet(1799, 0));
    let mut body = question(&[old, young]);
    body["engagement_types"] = json!(["video_views", "impressions"]);
    let a = call(&base, &body).await;
    assert_eq!(a.status, 200);
    assert_eq!(a.body["unsupported_for_video_views_tweet_ids"], json!([old.to_string()]));
    assert_eq!(a.body["by tweet"][old.to_string()]["video_views"], "0");
}

#[tokio::test]
async fn the_per_minute_limit_answers_429_with_headers() {
    let mut cfg = config();
    cfg.rate_limit_per_minute = 3;
    let (base, sim) = start(cfg).await;
    let body = question(&[tweet(10, 0)]);
    let mut statuses = Vec::new();
    for _ in 0..4 {
        let a = call(&base, &body).await;
        assert_eq!(a.headers["x-per-minute-limit"], "3");
        assert!(
            a.headers.contains_key("x-per-minute-remaining") && a.headers.contains_key("x-per-minute-reset")
        );
        statuses.push(a.status);
        if a.status == 429 {
            assert_eq!(a.headers["x-per-minute-remaining"], "0");
            let wait: i64 = a.headers["retry-after"].to_str().unwrap().parse().unwrap();
            assert!((1..=60).contains(&wait));
        }
    }
    // The four calls may straddle a minute boundary; within one minute the fourth is refused.
    assert!(
        statuses == [200, 200, 200, 429] || statuses.iter().filter(|s| **s == 429).count() == 0,
        "{statuses:?}"
    );
    assert_eq!(
        sim.stats().by_status.get("429").copied().unwrap_or(0),
        statuses.iter().filter(|s| **s == 429).count() as u64
    );
}

#[tokio::test]
async fn injected_faults() {
    let body = question(&[tweet(10, 0)]);
    let mut cfg = config();
    cfg.faults = Faults { error_rate: 1.0, ..Faults::default() };
    let (base, _) = start(cfg).await;
    let a = call(&base, &body).await;
    assert!([500, 502, 503].contains(&a.status), "{}", a.status);

    let mut cfg = config();
    cfg.faults = Faults { burst_every: 4, burst_length: 2, ..Faults::default() };
    let (base, _) = start(cfg).await;
    let mut statuses = Vec::new();
    for _ in 0..4 {
        statuses.push(call(&base, &body).await.status);
    }
    assert_eq!(statuses, [429, 429, 200, 200]);

    let mut cfg = config();
    cfg.faults = Faults { truncate_rate: 1.0, ..Faults::default() };
    let (base, _) = start(cfg).await;
    let a = call(&base, &body).await;
    assert_eq!((a.status, a.body.clone()), (200, Value::Null), "a cut body does not parse");

    let mut cfg = config();
    cfg.faults = Faults { hang_rate: 1.0, ..Faults::default() };
    let (base, _) = start(cfg).await;
    let url = format!("{base}/insights/engagement/historical");
    let result = reqwest::Client::new()
        .post(&url)
        .header("authorization", sign(&url, "demo-token", "demo-token-secret", "sim-consumer-secret"))
        .json(&body)
        .timeout(Duration::from_millis(300))
        .send()
        .await;
    assert!(result.is_err_and(|e| e.is_timeout()));
}

#[tokio::test]
async fn oracle_is_unlimited_and_stats_count_api_calls_only() {
    let (base, sim) = start(config()).await;
    let ids: Vec<TweetId> = (0..40).map(|n| tweet(400 + n as i64, n)).collect();
    let mut body = question(&ids);
    body["start"] = json!("2023-01-01");
    let a = call_with(&base, "/_oracle/historical", &body, None, true).await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(a.body["by tweet"].as_object().unwrap().len(), 40);
    call(&base, &question(&ids[..2])).await;
    let stats: Value = reqwest::get(format!("{base}/_stats")).await.unwrap().json().await.unwrap();
    assert_eq!(stats["requests_total"], 1);
    assert_eq!(stats["by_status"]["200"], 1);
    assert_eq!(stats["by_endpoint"]["historical"], 1);
    assert_eq!(sim.stats().requests_total, 1);
}

/// Seeded random legal questions: the HTTP answer equals the oracle's.
#[tokio::test]
async fn random_legal_requests_equal_the_oracle() {
    let (base, _) = start(config()).await;
    let shapes: [&[&str]; 7] = [
        &["engagement.type"],
        &["tweet.id", "engagement.type"],
        &["engagement.hour"],
        &["engagement.day", "tweet.id"],
        &["tweet.id", "engagement.type", "engagement.day", "engagement.hour"],
        &["engagement.type", "tweet.id", "engagement.day", "engagement.hour"],
        &["engagement.hour", "engagement.type", "engagement.day"],
    ];
    let types: Vec<&str> = engagement::Endpoint::Historical.types().map(|t| t.name()).collect();
    let mut state = 11u64;
    let mut next = |n: u64| {
        state = simulator::model::mix(state);
        state % n
    };
    for case in 0..30 {
        let ids: Vec<String> = (0..1 + next(25)).map(|k| tweet(next(900) as i64, k).to_string()).collect();
        let ty: Vec<&str> = (0..1 + next(5)).map(|_| types[next(types.len() as u64) as usize]).collect();
        let hours = 1 + next(28 * 24);
        let start = now() - chrono::Duration::hours(hours as i64 + next(24 * 400) as i64);
        let end = start + chrono::Duration::hours(hours as i64);
        let shape = shapes[next(shapes.len() as u64) as usize];
        let body = json!({
            "tweet_ids": ids, "engagement_types": ty,
            "groupings": {"g": {"group_by": shape}},
            "start": engagement::time::format_instant(start), "end": engagement::time::format_instant(end),
        });
        let api = call(&base, &body).await;
        let oracle = call_with(&base, "/_oracle/historical", &body, None, true).await;
        assert_eq!(api.status, 200, "case {case}: {}", api.body);
        assert_eq!(api.body, oracle.body, "case {case}: {body}");
    }
}

/// `POST /_clock` with a raw body.
async fn set_clock(base: &str, body: &str) -> Answer {
    let resp = reqwest::Client::new()
        .post(format!("{base}/_clock"))
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = resp.json().await.unwrap_or(Value::Null);
    Answer { status, headers, body }
}

async fn get_clock(base: &str) -> Value {
    reqwest::get(format!("{base}/_clock")).await.unwrap().json().await.unwrap()
}

/// Impressions of a few day-old Tweets in the hour that started 10 h before `NOW`, by the oracle.
async fn impressions_ten_hours_before_now(base: &str) -> u64 {
    let ids: Vec<TweetId> = (0..5).map(|n| tweet(1, n)).collect();
    let mut body = question(&ids);
    body["engagement_types"] = json!(["impressions"]);
    body["groupings"] = json!({"total": {"group_by": ["engagement.type"]}});
    body["start"] = json!("2024-06-01T02:00:00Z");
    body["end"] = json!("2024-06-01T03:00:00Z");
    let a = call_with(base, "/_oracle/historical", &body, None, true).await;
    assert_eq!(a.status, 200, "{}", a.body);
    a.body["total"]["impressions"].as_str().unwrap().parse().unwrap()
}

#[tokio::test]
async fn moving_the_clock_lets_recent_hours_settle() {
    let mut cfg = config();
    cfg.settle_hours = 48;
    let (base, sim) = start(cfg).await;
    assert_eq!(get_clock(&base).await, json!({"now": "2024-06-01T12:30:00Z"}));
    let before = impressions_ten_hours_before_now(&base).await;

    let a = set_clock(&base, r#"{"now": "2024-06-02T12:30:00Z"}"#).await;
    assert_eq!((a.status, a.body.clone()), (200, json!({"now": "2024-06-02T12:30:00Z"})));
    assert_eq!(sim.now(), engagement::parse_instant("2024-06-02T12:30:00Z").unwrap());
    assert_eq!(get_clock(&base).await, json!({"now": "2024-06-02T12:30:00Z"}));
    let after = impressions_ten_hours_before_now(&base).await;
    assert!(after > before, "34 h old shows more than 10 h old: {before} then {after}");

    // 58.5 hours old, past its 1 + 48 hours of settling: final, as a simulator that never
    // settles shows it.
    set_clock(&base, r#"{"now": "2024-06-03T14:30:00+02:00"}"#).await;
    let (settled_base, _) = start(config()).await;
    assert_eq!(
        impressions_ten_hours_before_now(&base).await,
        impressions_ten_hours_before_now(&settled_base).await
    );
}

#[tokio::test]
async fn the_api_validates_and_answers_at_the_moved_clock() {
    let (base, _) = start(config()).await;
    let mut body = question(&[tweet(10, 0)]);
    body["start"] = json!("2024-06-01");
    body["end"] = json!("2024-06-02");
    let a = call(&base, &body).await;
    assert_eq!(a.status, 400);
    assert!(message(&a).contains("in the future"), "{}", message(&a));
    assert_eq!(set_clock(&base, r#"{"now": "2024-06-03T00:00:00Z"}"#).await.status, 200);
    let a = call(&base, &body).await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(a.body, call_with(&base, "/_oracle/historical", &body, None, true).await.body);
}

#[tokio::test]
async fn a_bad_clock_body_is_400_and_leaves_the_clock() {
    let (base, sim) = start(config()).await;
    for body in ["not json", "{}", r#"{"now": "yesterday"}"#, r#"{"now": 1717245000}"#, r#"["2024-06-03"]"#] {
        let a = set_clock(&base, body).await;
        assert_eq!(a.status, 400, "{body}: {}", a.body);
        assert!(message(&a).contains(r#"{"now": "<RFC 3339 instant>"}"#), "{body}: {}", message(&a));
    }
    assert_eq!(sim.now(), now());
    assert_eq!(get_clock(&base).await, json!({"now": NOW}));
}

#[test]
fn the_oracle_over_a_range_is_the_sum_of_its_hourly_counts() {
    let cfg = config();
    let model = simulator::Model { seed: cfg.seed, now: now(), settle_hours: 0 };
    let ids = [tweet(120, 0), tweet(60, 7)];
    let body = json!({
        "tweet_ids": ids.iter().map(|i| i.to_string()).collect::<Vec<_>>(),
        "engagement_types": ["impressions", "url_clicks"],
        "groupings": {"total": {"group_by": ["engagement.type"]}, "hod": {"group_by": ["engagement.hour"]}},
        "start": "2024-01-01", "end": "2024-05-31T05:00:00Z"
    });
    let answer = simulator::oracle(&cfg, &model, &body).unwrap();
    let start = engagement::parse_instant("2024-01-01").unwrap();
    let hours = (engagement::parse_instant("2024-05-31T05:00:00Z").unwrap() - start).num_hours() as usize;
    let mut by_type = [0u64; 2];
    let mut by_hour = [0u64; 24];
    for id in ids {
        for (i, ty) in [EngagementType::Impressions, EngagementType::UrlClicks].into_iter().enumerate() {
            let mut series = vec![0; hours];
            model.fill(id, ty, start, &mut series);
            by_type[i] += series.iter().sum::<u64>();
            for (h, c) in series.iter().enumerate() {
                by_hour[h % 24] += c;
            }
        }
    }
    assert!(by_type[0] > 0);
    assert_eq!(answer.groupings["total"].get("impressions"), Some(&engagement::Node::Count(by_type[0])));
    assert_eq!(answer.groupings["total"].get("url_clicks"), Some(&engagement::Node::Count(by_type[1])));
    for (h, sum) in by_hour.iter().enumerate() {
        assert_eq!(
            answer.groupings["hod"].get(&format!("{h:02}")),
            Some(&engagement::Node::Count(*sum)),
            "hour {h}"
        );
    }
}

//! Honest refusals of the real binary: the demo key only in demo mode, questions the
//! upstream's budget cannot carry, answers cut off by shutdown, and the rough edges of
//! requests (impossible IDs, duplicate groupings, content types, routes, request IDs).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::support;

use std::io::Write;
use std::process::Command;
use std::time::Duration;

use crate::support::{Stitcher, against, simulator};
use serde_json::{Value, json};
use simulator::Config;
use simulator::faults::Faults;

/// A question for `tweets` Tweets over `windows` grid windows, one type per Tweet:
/// `ceil(tweets / 25) × windows` upstream calls.
fn question(tweets: u64, windows: i64) -> Value {
    support::question(tweets, windows, &["impressions"], support::PER_TWEET)
}

/// Asks `/v1/historical` with `key` (owned, so it can be spawned).
async fn post(url: String, key: &'static str, body: Value) -> reqwest::Response {
    reqwest::Client::new()
        .post(format!("{url}/v1/historical"))
        .bearer_auth(key)
        .json(&body)
        .send()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deployment_with_its_own_clients_does_not_take_the_demo_key() {
    let (_sim, sim_url) = simulator(Config::default()).await;
    let file = std::env::temp_dir().join(format!("stitcher-clients-{}.toml", support::free_port()));
    let mut f = std::fs::File::create(&file).unwrap();
    writeln!(
        f,
        "[upstream]\nbase_url = \"{sim_url}\"\n\n[handles.brand]\ntoken = \"demo-token\"\ntoken_secret = \"demo-token-secret\"\n\n[clients.dashboards]\nkey_sha256 = \"{}\"\nhandles = [\"brand\"]",
        server::auth::key_hash("dashboards-key")
    )
    .unwrap();
    let stitcher = Stitcher::start(&[("STITCHER_CONFIG", file.to_str().unwrap())]).await;
    let body = question(1, 1);
    let demo = post(stitcher.url.clone(), "demo-key", body.clone()).await;
    assert_eq!(demo.status().as_u16(), 401);
    let own = post(stitcher.url.clone(), "dashboards-key", body.clone()).await;
    assert_eq!(own.status().as_u16(), 200, "{}", own.text().await.unwrap());
    let _ = std::fs::remove_file(file);
}

#[test]
fn demo_credentials_with_a_remote_upstream_stop_the_start() {
    let out = Command::new(support::binary())
        .env("STITCHER__SERVER__LISTEN", format!("127.0.0.1:{}", support::free_port()))
        .env("STITCHER__UPSTREAM__BASE_URL", "https://data-api.example.com")
        .output()
        .unwrap();
    assert!(!out.status.success(), "it must not serve");
    let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    for setting in ["upstream.consumer_key", "handles.demo", "clients.demo"] {
        assert!(said.contains(setting), "{setting} is named: {said}");
    }

    // Only the key is the simulator's: only the key is named, and the message comes alone,
    // whatever RUST_BACKTRACE says.
    let key = server::auth::key_hash("dashboards-key");
    let out = Command::new(support::binary())
        .env("RUST_BACKTRACE", "1")
        .env("STITCHER__SERVER__LISTEN", format!("127.0.0.1:{}", support::free_port()))
        .env("STITCHER__UPSTREAM__BASE_URL", "https://data-api.example.com")
        .env("STITCHER__UPSTREAM__CONSUMER_SECRET", "the-operators-own")
        .env("STITCHER__HANDLES__BRAND__TOKEN", "brand-token")
        .env("STITCHER__HANDLES__BRAND__TOKEN_SECRET", "brand-secret")
        .env("STITCHER__CLIENTS__DASH__KEY_SHA256", &key)
        .env("STITCHER__CLIENTS__DASH__HANDLES", "brand")
        .output()
        .unwrap();
    assert!(!out.status.success(), "it must not serve");
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(said.starts_with("stitcher: ") && said.contains("upstream.consumer_key"), "{said}");
    assert!(!said.contains("consumer_secret") && !said.contains("handles.brand"), "{said}");
    assert!(!said.to_lowercase().contains("backtrace"), "{said}");
    assert_eq!(said.trim_end().lines().count(), 1, "{said}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn questions_the_configured_budget_cannot_carry_are_refused_before_any_call() {
    // 120 calls a minute, one every 0.5 s; 8 s deadline: 1 + 16 calls fit.
    let (sim, stitcher) = against(
        Config::default(),
        &[
            ("STITCHER__UPSTREAM__REQUESTS_PER_MINUTE", "120"),
            ("STITCHER__SERVER__REQUEST_TIMEOUT_SECS", "8"),
        ],
    )
    .await;
    let never = post(stitcher.url.clone(), "demo-key", question(25, 18)).await;
    assert_eq!(never.status().as_u16(), 400);
    let message = never.text().await.unwrap();
    for part in ["18 upstream calls", "120 calls a minute", "at most 17", "8 s"] {
        assert!(message.contains(part), "{part}: {message}");
    }
    assert_eq!(sim.stats().requests_total, 0, "refused before any call");

    // A question of 10 calls is running (about 4.5 s); one of 12 more would end past its
    // deadline beside it, so it is told when it would fit.
    let first = tokio::spawn(post(stitcher.url.clone(), "demo-key", question(25, 10)));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let busy = post(stitcher.url.clone(), "demo-key", question(25, 12)).await;
    assert_eq!(busy.status().as_u16(), 429);
    let wait: u64 = busy.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    // Alone beside it, 8 or 9 calls ahead + 12 of its own, less the burst, at 0.5 s would
    // take 9.5 or 10 s of its 8; and its 12 calls would push the first question (about 4 s
    // from done) past its deadline, so the wait is until that one is done.
    assert!((3..=5).contains(&wait), "Retry-After {wait}");
    let message = busy.text().await.unwrap();
    assert!(message.contains("busy with other questions"), "{message}");
    let first = first.await.unwrap();
    assert_eq!(first.status().as_u16(), 200);
    assert_eq!(sim.stats().requests_total, 10, "the refused question made no call");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_limit_learned_from_the_upstreams_headers_refuses_what_can_never_fit() {
    let (sim, stitcher) = against(
        Config { rate_limit_per_minute: 6, ..Config::default() },
        &[("STITCHER__SERVER__REQUEST_TIMEOUT_SECS", "10")],
    )
    .await;
    assert_eq!(post(stitcher.url.clone(), "demo-key", question(1, 1)).await.status().as_u16(), 200);
    let never = post(stitcher.url.clone(), "demo-key", question(25, 30)).await;
    assert_eq!(never.status().as_u16(), 400);
    let message = never.text().await.unwrap();
    assert!(message.contains("30 upstream calls") && message.contains("x-per-minute-limit"), "{message}");
    assert_eq!(sim.stats().requests_total, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_question_still_running_after_the_grace_period_is_answered_503() {
    let slow = Config {
        faults: Faults { latency: Duration::from_secs(6), ..Faults::default() },
        ..Config::default()
    };
    let (_sim, mut stitcher) = against(slow, &[("STITCHER__SERVER__SHUTDOWN_GRACE_SECS", "1")]).await;
    let asked = tokio::spawn(post(stitcher.url.clone(), "demo-key", question(1, 1)));
    tokio::time::sleep(Duration::from_millis(400)).await;
    stitcher.terminate();
    let answer = asked.await.unwrap();
    assert_eq!(answer.status().as_u16(), 503);
    assert!(answer.headers().contains_key("retry-after"));
    let body: Value = answer.json().await.unwrap();
    assert!(body["errors"][0].as_str().unwrap().contains("shut down"), "{body}");
    assert_eq!(body["failed_slices"].as_array().unwrap().len(), 1, "{body}");
    let status = stitcher.exited(Duration::from_secs(10)).await.expect("it exits");
    assert!(status.success(), "{status:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rough_edges_get_clear_refusals() {
    let slow = Config {
        faults: Faults { latency: Duration::from_millis(1500), ..Faults::default() },
        ..Config::default()
    };
    let (sim, stitcher) = against(slow, &[("STITCHER__SERVER__MAX_CONCURRENT_REQUESTS", "1")]).await;
    let http = reqwest::Client::new();
    let url = format!("{}/v1/historical", stitcher.url);

    // IDs no Tweet can have.
    let future = engagement::TweetId::minted_at(chrono::Utc::now() + chrono::Duration::days(1)).to_string();
    for ids in [json!(["0"]), json!([0]), json!(["9223372036854775808"]), json!([future])] {
        let mut body = question(1, 1);
        body["tweet_ids"] = ids.clone();
        let answer = post(stitcher.url.clone(), "demo-key", body.clone()).await;
        assert_eq!(answer.status().as_u16(), 400, "{ids}");
        assert!(answer.text().await.unwrap().contains("IDs no Tweet can have"), "{ids}");
    }
    // A grouping named twice.
    let twice = r#"{"tweet_ids": ["1000000000000000000"], "engagement_types": ["impressions"],
        "groupings": {"g": {"group_by": ["tweet.id"]}, "g": {"group_by": ["engagement.type"]}},
        "start": "2022-01-05", "end": "2022-01-06"}"#;
    let answer = http.post(&url).bearer_auth("demo-key").body(twice).send().await.unwrap();
    assert_eq!(answer.status().as_u16(), 400);
    assert!(answer.text().await.unwrap().contains("twice"));
    assert_eq!(sim.stats().requests_total, 0, "none of these made a call");

    // Content types and encodings.
    let body = serde_json::to_vec(&question(1, 1)).unwrap();
    let answer =
        http.post(&url).bearer_auth("demo-key").header("content-type", "text/plain").body(body.clone());
    let answer = answer.send().await.unwrap();
    assert_eq!(answer.status().as_u16(), 415);
    assert!(answer.text().await.unwrap().contains("application/json"));
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&body).unwrap();
    let zipped = http
        .post(&url)
        .header("authorization", "bearer demo-key")
        .header("content-type", "application/json")
        .header("content-encoding", "gzip")
        .body(gz.finish().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(zipped.status().as_u16(), 200, "a gzip body with a lower-case bearer scheme");
    let plain = http.post(&url).bearer_auth("demo-key").json(&question(1, 1)).send().await.unwrap();
    let (zipped, plain): (Value, Value) = (zipped.json().await.unwrap(), plain.json().await.unwrap());
    assert_eq!(zipped["data"], plain["data"]);
    let answer = http
        .post(&url)
        .bearer_auth("demo-key")
        .header("content-encoding", "br")
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status().as_u16(), 415);
    let error: Value = answer.json().await.unwrap();
    assert!(error["errors"][0].as_str().unwrap().contains("Content-Encoding"), "{error}");

    // Routes and methods, in the error shape.
    let missing = http.get(format!("{}/nope", stitcher.url)).send().await.unwrap();
    assert_eq!(missing.status().as_u16(), 404);
    let error: Value = missing.json().await.unwrap();
    assert!(error["request_id"].is_string(), "{error}");
    let wrong = http.get(&url).send().await.unwrap();
    assert_eq!(wrong.status().as_u16(), 405);
    assert!(wrong.headers()["allow"].to_str().unwrap().contains("POST"));
    let error: Value = wrong.json().await.unwrap();
    assert!(
        error["errors"][0].as_str().unwrap().contains("POST") && error["request_id"].is_string(),
        "{error}"
    );

    // Request IDs: a usable one is echoed, anything else replaced.
    let echoed =
        http.get(format!("{}/livez", stitcher.url)).header("x-request-id", "dash-42").send().await.unwrap();
    assert_eq!(echoed.headers()["x-request-id"], "dash-42");
    for bad in [vec![b'x'; 200], b"two words".to_vec(), b"caf\xe9".to_vec()] {
        let value = reqwest::header::HeaderValue::from_bytes(&bad).unwrap();
        let replaced = http.get(format!("{}/nope", stitcher.url)).header("x-request-id", value);
        let replaced = replaced.send().await.unwrap();
        let id = replaced.headers()["x-request-id"].to_str().unwrap().to_owned();
        assert!(id.as_bytes() != bad && id.len() <= 128 && !id.contains(' '), "{bad:?} became {id:?}");
        let error: Value = replaced.json().await.unwrap();
        assert_eq!(error["request_id"], id.as_str());
    }

    // Overload is a warning, not an error. (Two Tweets: a question the store has not seen.)
    let slow = tokio::spawn(post(stitcher.url.clone(), "demo-key", question(2, 1)));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(post(stitcher.url.clone(), "demo-key", question(1, 1)).await.status().as_u16(), 503);
    assert_eq!(slow.await.unwrap().status().as_u16(), 200);
    let logs = stitcher.logs();
    assert!(logs.lines().any(|l| l.contains("\"WARN\"") && l.contains("503")), "{logs}");
    assert!(!logs.contains("\"ERROR\""), "{logs}");
}

/// A drop-in question for `tweets` over the days from 40 to 10 days ago, per Tweet and type.
fn refusable(tweets: &[u64]) -> Value {
    let ago = |days: i64| engagement::time::format_instant(chrono::Utc::now() - chrono::Duration::days(days));
    json!({
        "tweet_ids": tweets.iter().map(ToString::to_string).collect::<Vec<_>>(),
        "engagement_types": ["impressions"],
        "groupings": {"per tweet": {"group_by": ["tweet.id", "engagement.type"]}},
        "start": ago(40), "end": ago(10),
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_tweets_in_any_batches_get_the_refusal_of_one_call() {
    // Three questions of Tweets created 200 days ago, sorted, each in batches of 25: the
    // refused ones in different batches.
    let ids = |first: u64, n: u64| (first..first + n).map(|k| support::tweet(200, k)).collect::<Vec<u64>>();
    let (mixed, two_foreign, three_protected) = (ids(0, 48), ids(100, 48), ids(200, 72));
    let config = Config {
        // Protected in the first batch, foreign in the second: the API judges ownership first.
        protected_ids: [mixed[3], three_protected[5], three_protected[30], three_protected[60]]
            .map(engagement::TweetId)
            .into(),
        foreign_ids: [mixed[40], two_foreign[2], two_foreign[45]].map(engagement::TweetId).into(),
        ..Config::default()
    };
    let (sim, sim_url) = simulator(config).await;
    let stitcher = Stitcher::start(&[("STITCHER__UPSTREAM__BASE_URL", sim_url.as_str())]).await;
    for tweets in [&mixed, &two_foreign, &three_protected] {
        let body = refusable(tweets);
        let (status, oracle) = support::oracle_says(&sim_url, &body).await;
        assert!(status == 400 || status == 403, "{oracle}");
        for asking in ["cold", "from memory"] {
            let answer = support::post(&stitcher, "/insights/engagement/historical", &body).await;
            assert_eq!(answer.status().as_u16(), status, "{asking}");
            let said: Value = answer.json().await.unwrap();
            assert_eq!(said["errors"], oracle["errors"], "{asking}: {said}");
        }
    }
    let named = |v: &[u64]| v.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ");
    let answer = support::post(&stitcher, "/insights/engagement/historical", &refusable(&two_foreign)).await;
    let said: Value = answer.json().await.unwrap();
    assert_eq!(
        said["errors"][0],
        format!("Forbidden to access tweets: {}", named(&[two_foreign[2], two_foreign[45]])),
        "every refused Tweet is named, in order"
    );
    assert!(sim.stats().requests_total > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_the_api_accepts_is_accepted_and_refusals_name_the_route_asked() {
    let (sim, stitcher) = against(Config::default(), &[]).await;
    // "partial": false asks for what the drop-in gives anyway.
    let mut body = question(1, 1);
    body["partial"] = json!(false);
    let answer = support::post(&stitcher, "/insights/engagement/historical", &body).await;
    assert_eq!(answer.status().as_u16(), 200, "{}", answer.text().await.unwrap());
    body["partial"] = json!(true);
    let answer = support::post(&stitcher, "/insights/engagement/historical", &body).await;
    assert_eq!(answer.status().as_u16(), 400);

    // An ID as a JSON number with a zero fraction is that integer; one a parser may have
    // rounded is refused, and told to send strings.
    let mut body = question(1, 1);
    body["tweet_ids"] = json!([5150.0]);
    let answer = support::post(&stitcher, "/v1/historical", &body).await;
    assert_eq!(answer.status().as_u16(), 200, "{}", answer.text().await.unwrap());
    let data: Value = answer.json().await.unwrap();
    assert!(data["data"]["g"].get("5150").is_some(), "{data}");
    body["tweet_ids"] = json!([1.79e18]);
    let answer = support::post(&stitcher, "/v1/historical", &body).await;
    assert_eq!(answer.status().as_u16(), 400);
    assert!(answer.text().await.unwrap().contains("strings"));

    // A refusal of /v1/totals names /v1/totals.
    let totals = json!({"tweet_ids": ["5150"], "engagement_types": ["favorites"],
        "groupings": {"g": {"group_by": ["tweet.id"]}}});
    let answer = support::post(&stitcher, "/v1/totals?format=csv", &totals).await;
    assert_eq!(answer.status().as_u16(), 400);
    let said: Value = answer.json().await.unwrap();
    let message = said["errors"][0].as_str().unwrap();
    assert!(message.starts_with("/v1/totals ") && !message.contains("/insights"), "{message}");
    let mut ranged = totals.clone();
    ranged["start"] = json!("2024-01-01");
    let answer = support::post(&stitcher, "/v1/totals", &ranged).await;
    let said: Value = answer.json().await.unwrap();
    assert!(said["errors"][0].as_str().unwrap().starts_with("/v1/totals "), "{said}");
    assert!(sim.stats().requests_total > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_that_cannot_be_reached_is_said_at_start_and_named_in_errors() {
    let (_sim, sim_url) = simulator(Config::default()).await;
    let nothing = format!("http://127.0.0.1:{}", support::free_port());
    let tls_to_plain = sim_url.replace("http://", "https://");
    for base_url in [nothing, tls_to_plain] {
        let stitcher = Stitcher::start(&[("STITCHER__UPSTREAM__BASE_URL", base_url.as_str())]).await;
        let mut ready = Value::Null;
        for _ in 0..100 {
            ready = reqwest::get(format!("{}/readyz", stitcher.url)).await.unwrap().json().await.unwrap();
            if ready["upstream"] != "not tried yet" {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let upstream = ready["upstream"].as_str().unwrap();
        assert!(upstream.starts_with("unreachable: ") && upstream.contains("upstream.base_url"), "{ready}");
        let logs = stitcher.logs();
        assert!(logs.lines().any(|l| l.contains("\"WARN\"") && l.contains("cannot be reached")), "{logs}");

        // Six calls: the first that cannot connect ends the question.
        let answer = post(stitcher.url.clone(), "demo-key", question(30, 3)).await;
        assert_eq!(answer.status().as_u16(), 502);
        let said: Value = answer.json().await.unwrap();
        let message = said["errors"][0].as_str().unwrap();
        assert!(message.contains(&base_url) && message.contains("upstream.base_url"), "{message}");
        assert!(!message.contains("retry later"), "{message}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_native_endpoints_refuse_members_they_do_not_read_and_the_drop_in_takes_them() {
    let (sim, stitcher) = against(Config::default(), &[]).await;
    let said = |v: &Value| {
        v["errors"].as_array().unwrap().iter().map(|e| e.as_str().unwrap().to_owned()).collect::<Vec<_>>()
    };

    let mut body = question(1, 1);
    body["timezone"] = json!("America/New_York");
    body["groupings"]["g"]["sort"] = json!("asc");
    body["strat"] = body["start"].clone();
    for path in ["/v1/historical", "/v1/jobs"] {
        let answer = support::post(&stitcher, path, &body).await;
        assert_eq!(answer.status().as_u16(), 400, "{path}");
        let errors = said(&answer.json().await.unwrap());
        for expected in [
            "unknown member \"timezone\" (did you mean \"time_zone\"?)",
            "unknown member \"strat\" (did you mean \"start\"?)",
            "unknown member \"sort\" in grouping \"g\"",
        ] {
            assert!(errors.contains(&expected.to_string()), "{path}: {errors:?}");
        }
    }
    let mut misspelt = question(1, 1);
    misspelt["grouping"] = misspelt["groupings"].take();
    misspelt["top"] = json!({"by": "impressions", "n": 1, "count": 2});
    let answer = support::post(&stitcher, "/v1/historical", &misspelt).await;
    assert_eq!(answer.status().as_u16(), 400);
    let errors = said(&answer.json().await.unwrap());
    assert!(
        errors.contains(&"unknown member \"grouping\" (did you mean \"groupings\"?)".to_string()),
        "{errors:?}"
    );
    assert!(errors.contains(&"unknown member \"count\" in \"top\"".to_string()), "{errors:?}");

    let now = json!({"tweet_ids": ["5150"], "engagement_types": ["favorites"],
        "groupings": {"g": {"group_by": ["tweet.id"], "groupBy": ["tweet.id"]}}, "timezone": "UTC"});
    for path in ["/v1/totals", "/v1/28hr"] {
        let answer = support::post(&stitcher, path, &now).await;
        assert_eq!(answer.status().as_u16(), 400, "{path}");
        let errors = said(&answer.json().await.unwrap());
        let zone = "unknown member \"timezone\" (did you mean \"time_zone\"?)";
        assert!(errors.contains(&zone.to_string()), "{path}: {errors:?}");
        let grouping = "unknown member \"groupBy\" in grouping \"g\" (did you mean \"group_by\"?)";
        assert!(errors.contains(&grouping.to_string()), "{path}: {errors:?}");
    }
    assert_eq!(sim.stats().requests_total, 0, "no call for any of them");

    // The drop-in endpoints take what the API takes.
    let answer = support::post(&stitcher, "/insights/engagement/historical", &body).await;
    assert_eq!(answer.status().as_u16(), 200, "{}", answer.text().await.unwrap());
    let answer = support::post(&stitcher, "/insights/engagement/totals", &now).await;
    assert_eq!(answer.status().as_u16(), 200, "{}", answer.text().await.unwrap());
}

//! The service's benchmark table: fan-out against a slow upstream, calls saved by the
//! creation-time cut, merge cost against plain JSON parsing, and peak memory.
//!
//! `cargo bench -p server --bench service` prints the tables of BENCHMARKS.md. Every
//! timing is a ratio measured in the same run (service vs. ideal, merge vs. parse).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use engagement::time::{floor_hour, format_instant};
use engagement::{Endpoint, Limits, Response, TimeRange, TweetId};
use serde_json::{Value, json};
use server::{Application, Settings};
use simulator::faults::Faults;
use simulator::{Clock, Config, Simulator};

fn now() -> DateTime<Utc> {
    floor_hour(Utc::now())
}

/// `n` Tweets created `days_old` days ago (spread over a day).
fn tweets(n: u64, days_old: f64, salt: u64) -> Vec<TweetId> {
    (0..n)
        .map(|k| {
            let at = now() - chrono::Duration::seconds(((days_old + k as f64 / n as f64) * 86_400.0) as i64);
            TweetId(TweetId::minted_at(at).0 + salt)
        })
        .collect()
}

fn question(ids: &[TweetId], range: TimeRange, groupings: Value, types: &[&str]) -> Value {
    json!({
        "tweet_ids": ids.iter().map(ToString::to_string).collect::<Vec<_>>(),
        "engagement_types": types,
        "groupings": groupings,
        "start": format_instant(range.start),
        "end": format_instant(range.end),
    })
}

fn per_tweet() -> Value {
    json!({"per tweet": {"group_by": ["tweet.id", "engagement.type"]}})
}

/// A simulator on threads and a runtime of its own.
fn start_simulator(config: Config) -> (String, Arc<Simulator>) {
    let sim = Simulator::new(Config { clock: Clock::Fixed(now()), ..config });
    let (tx, rx) = std::sync::mpsc::channel();
    let served = Arc::clone(&sim);
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            tx.send(format!("http://{}", listener.local_addr().unwrap())).unwrap();
            served.serve(listener).await.unwrap();
        });
    });
    (rx.recv().unwrap(), sim)
}

/// The service without a store: every question fetched in full (what the fetch tables
/// measure).
async fn start_service(sim_url: &str, in_flight: usize) -> String {
    start_service_with(sim_url, in_flight, &[("STITCHER__STORE__ENABLED", "false")]).await
}

/// The service on a fresh store of its own, with `extra` settings.
async fn start_service_with(sim_url: &str, in_flight: usize, extra: &[(&str, &str)]) -> String {
    // The store lives as long as the bench process.
    let store = Box::leak(Box::new(tempfile::tempdir().unwrap()));
    let mut env = vec![
        ("STITCHER__SERVER__LISTEN", "127.0.0.1:0".to_string()),
        ("STITCHER__UPSTREAM__BASE_URL", sim_url.to_string()),
        ("STITCHER__UPSTREAM__MAX_IN_FLIGHT", in_flight.to_string()),
        ("STITCHER__SERVER__REQUEST_TIMEOUT_SECS", "600".to_string()),
        ("STITCHER__STORE__PATH", store.path().display().to_string()),
    ];
    env.extend(extra.iter().map(|(k, v)| (*k, v.to_string())));
    let settings =
        Settings::load_with(None, Some(env.into_iter().map(|(k, v)| (k.to_string(), v)).collect())).unwrap();
    let app = Application::build(settings).await.unwrap();
    let url = format!("http://{}", app.local_addr().unwrap());
    tokio::spawn(app.run());
    url
}

/// `body` posted to `path` at `url` as the demo client, answered `200`.
async fn post_question(url: &str, path: &str, body: &Value) -> reqwest::Response {
    let resp = reqwest::Client::new()
        .post(format!("{url}{path}"))
        .bearer_auth("demo-key")
        .json(body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    resp
}

async fn ask(url: &str, body: &Value) -> (Duration, Value) {
    let started = Instant::now();
    let answer: Value = post_question(url, "/v1/historical", body).await.json().await.unwrap();
    (started.elapsed(), answer)
}

/// The drop-in endpoint's answer to `body` at `url`, as sent.
async fn ask_drop_in(url: &str, body: &Value) -> bytes::Bytes {
    post_question(url, "/insights/engagement/historical", body).await.bytes().await.unwrap()
}

fn ms(d: Duration) -> String {
    format!("{:.0} ms", d.as_secs_f64() * 1000.0)
}

async fn creation_cut_table() {
    println!(
        "\n## A 2-year question for 100 Tweets created over the last 3 years (200 ms upstream latency, max_in_flight 8)\n"
    );
    let latency = Duration::from_millis(200);
    let (sim_url, sim) =
        start_simulator(Config { faults: Faults { latency, ..Faults::default() }, ..Config::default() });
    let url = start_service(&sim_url, 8).await;
    let ids: Vec<TweetId> = (0..100).flat_map(|k| tweets(1, k as f64 * 365.0 * 3.0 / 100.0, k)).collect();
    let range = TimeRange::covering(now() - chrono::Duration::days(730), now() - chrono::Duration::days(1));
    let (took, answer) =
        ask(&url, &question(&ids, range, per_tweet(), &["impressions", "engagements"])).await;
    let calls = answer["meta"]["upstream_calls"].as_u64().unwrap();
    let planned = answer["meta"]["slices_planned"].as_u64().unwrap();
    let ideal = latency * calls.div_ceil(8) as u32;
    println!(
        "| calls made | windows × batches | wall time | ideal ceil(calls/8) × 200 ms | calls × 200 ms | wall / ideal |"
    );
    println!("|---|---|---|---|---|---|");
    println!(
        "| {calls} | {planned} | {} | {} | {} | {:.2} |",
        ms(took),
        ms(ideal),
        ms(latency * calls as u32),
        took.as_secs_f64() / ideal.as_secs_f64()
    );
    assert_eq!(sim.stats().requests_total, calls);
}

async fn fan_out_table() {
    println!(
        "\n## Fan-out: wall time vs. ideal ceil(calls / in_flight) × latency (100 ms upstream latency)\n"
    );
    let latency = Duration::from_millis(100);
    let (sim_url, _sim) =
        start_simulator(Config { faults: Faults { latency, ..Faults::default() }, ..Config::default() });
    // All Tweets older than the range: calls = batches × windows exactly.
    let cases: [(u64, i64); 3] = [(25, 30), (100, 25), (200, 50)];
    println!("| calls | in_flight | wall time | ideal | wall / ideal |");
    println!("|---|---|---|---|---|");
    for in_flight in [1usize, 8, 32] {
        let url = start_service(&sim_url, in_flight).await;
        for (n, windows) in cases {
            let ids = tweets(n, 3000.0, in_flight as u64);
            let end = TimeRange::covering(now() - chrono::Duration::days(2), now()).start;
            let anchor_aligned =
                stitch::windows(TimeRange { start: end - chrono::Duration::days(28 * windows), end });
            let range = TimeRange { start: anchor_aligned[0].start, end };
            let range = if stitch::windows(range).len() as i64 > windows {
                TimeRange { start: anchor_aligned[1].start, end }
            } else {
                range
            };
            let (took, answer) = ask(&url, &question(&ids, range, per_tweet(), &["impressions"])).await;
            let calls = answer["meta"]["upstream_calls"].as_u64().unwrap();
            let ideal = latency * calls.div_ceil(in_flight as u64) as u32;
            println!(
                "| {calls} | {in_flight} | {} | {} | {:.2} |",
                ms(took),
                ms(ideal),
                took.as_secs_f64() / ideal.as_secs_f64()
            );
        }
    }
}

fn calls_saved_table() {
    println!("\n## Calls saved: Tweets of mixed ages, 3-year question\n");
    println!(
        "| Tweets | ages | calls made | windows × batches | 27-day windows × batches (published Python client) |"
    );
    println!("|---|---|---|---|---|");
    let range =
        TimeRange::covering(now() - chrono::Duration::days(3 * 365), now() - chrono::Duration::days(1));
    for (label, ids) in [
        ("all older than the range", tweets(100, 4.0 * 365.0, 0)),
        (
            "spread evenly over 3 years",
            (0..100).flat_map(|k| tweets(1, k as f64 * 10.95, k)).collect::<Vec<_>>(),
        ),
        (
            "half from the last 90 days",
            (0..100)
                .flat_map(|k| tweets(1, if k % 2 == 0 { k as f64 * 0.9 } else { k as f64 * 10.95 }, k))
                .collect(),
        ),
        ("all from the last 30 days", tweets(100, 15.0, 0)),
    ] {
        let p = stitch::plan(&ids, range, 25);
        let python = (range.hours() as u64).div_ceil(27 * 24) * p.batches.len() as u64;
        println!("| {} | {label} | {} | {} | {python} |", ids.len(), p.fetched.len(), p.planned());
    }
}

fn merge_cost_table() {
    println!(
        "\n## Merge cost: parse + merge of the upstream answers vs. plain serde_json parsing of the same bytes\n"
    );
    println!("| question | answers | bytes | serde_json::Value parse | parse + merge | ratio |");
    println!("|---|---|---|---|---|---|");
    let config = Config { clock: Clock::Fixed(now()), ..Config::default() };
    let model = simulator::Model { seed: 0, now: now(), settle_hours: 0 };
    let end = now() - chrono::Duration::days(1);
    for (label, n, days, groupings) in [
        (
            "1 year, 300 Tweets, daily",
            300u64,
            365i64,
            json!({"daily": {"group_by": ["tweet.id", "engagement.type", "engagement.day"]}}),
        ),
        (
            "28 days, 25 Tweets, hourly",
            25,
            28,
            json!({"hourly": {"group_by": ["tweet.id", "engagement.type", "engagement.day", "engagement.hour"]}}),
        ),
    ] {
        let ids = tweets(n, days as f64 + 30.0, 0);
        let range = TimeRange::covering(end - chrono::Duration::days(days), end);
        let p = stitch::plan(&ids, range, 25);
        let types = ["impressions", "engagements", "favorites"];
        let bodies: Vec<Vec<u8>> = p
            .fetched
            .iter()
            .map(|s| {
                let q = question(&p.batches[s.batch], s.window, groupings.clone(), &types);
                let r = simulator::answer(
                    &config,
                    &model,
                    Endpoint::Historical,
                    &q,
                    &Limits::of(Endpoint::Historical),
                )
                .unwrap();
                serde_json::to_vec(&r).unwrap()
            })
            .collect();
        let bytes: usize = bodies.iter().map(Vec::len).sum();
        let rounds = 5;
        let started = Instant::now();
        for _ in 0..rounds {
            for b in &bodies {
                std::hint::black_box(serde_json::from_slice::<Value>(b).unwrap());
            }
        }
        let parse = started.elapsed() / rounds;
        let started = Instant::now();
        for _ in 0..rounds {
            let mut acc = Response::default();
            for b in &bodies {
                stitch::absorb(&mut acc, serde_json::from_slice::<Response>(b).unwrap()).unwrap();
            }
            std::hint::black_box(acc);
        }
        let merge = started.elapsed() / rounds;
        println!(
            "| {label} | {} | {:.1} MB | {} | {} | {:.2} |",
            bodies.len(),
            bytes as f64 / 1e6,
            ms(parse),
            ms(merge),
            merge.as_secs_f64() / parse.as_secs_f64()
        );
    }
}

/// Peak resident memory of a `stitcher` process (from /proc), in bytes.
fn peak_rss(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    Some(line.split_whitespace().nth(1)?.parse::<u64>().ok()? * 1024)
}

async fn memory_table() {
    println!("\n## Peak memory of the service process for the largest question (cold, max_in_flight 32)\n");
    println!("| store | question | answer size | peak RSS | target 4 × answer + 50 MB | idle RSS |");
    println!("|---|---|---|---|---|---|");
    for store_on in [false, true] {
        memory_rows(store_on).await;
    }
}

/// A `stitcher` process on `sim_url` with 32 calls in flight, a store of its own in `store`,
/// and the settings `extra`, ready to answer; its address.
async fn start_stitcher(
    sim_url: &str,
    store: &std::path::Path,
    extra: &[(&str, &str)],
) -> (std::process::Child, String) {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_stitcher"))
        .env("STITCHER__SERVER__LISTEN", format!("127.0.0.1:{port}"))
        .env("STITCHER__STORE__PATH", store)
        .env("STITCHER__UPSTREAM__BASE_URL", sim_url)
        .env("STITCHER__UPSTREAM__MAX_IN_FLIGHT", "32")
        .env("RUST_LOG", "warn")
        // As the Docker image runs it (README, "Overload, memory and shutdown").
        .env("MALLOC_ARENA_MAX", "2")
        .envs(extra.iter().copied())
        .spawn()
        .expect("the stitcher binary starts");
    let url = format!("http://127.0.0.1:{port}");
    for _ in 0..100 {
        if reqwest::get(format!("{url}/livez")).await.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    (child, url)
}

/// The largest question the tables ask: 1,000 Tweets, 4 years to `end`, 3 types, daily.
fn biggest_question(end: DateTime<Utc>) -> Value {
    let days = 4 * 365;
    let ids = tweets(1000, days as f64 + 10.0, 0);
    let range = TimeRange::covering(end - chrono::Duration::days(days), end);
    let groupings = json!({"daily": {"group_by": ["tweet.id", "engagement.type", "engagement.day"]}});
    question(&ids, range, groupings, &["impressions", "engagements", "favorites"])
}

/// One `stitcher` process, with the store or without, asked the two largest questions.
async fn memory_rows(store_on: bool) {
    let (sim_url, _sim) = start_simulator(Config::default());
    let store = tempfile::tempdir().unwrap();
    let enabled = if store_on { "true" } else { "false" };
    let (mut child, url) =
        start_stitcher(&sim_url, store.path(), &[("STITCHER__STORE__ENABLED", enabled)]).await;
    let idle = peak_rss(child.id()).unwrap_or(0);
    let end = now() - chrono::Duration::days(1);
    let year = json!({"daily": {"group_by": ["tweet.id", "engagement.type", "engagement.day"]}});
    let year_ids = tweets(300, 375.0, 0);
    let year = question(
        &year_ids,
        TimeRange::covering(end - chrono::Duration::days(365), end),
        year,
        &["impressions", "engagements", "favorites"],
    );
    for (label, body) in [
        ("1 year, 300 Tweets, 3 types, daily", year),
        ("4 years, 1000 Tweets, 3 types, daily", biggest_question(end)),
    ] {
        let size = ask_drop_in(&url, &body).await.len() as u64;
        let peak = peak_rss(child.id()).unwrap_or(0);
        println!(
            "| {} | {label} | {:.1} MB | {:.1} MB | {:.1} MB | {:.1} MB |",
            if store_on { "on" } else { "off" },
            size as f64 / 1e6,
            peak as f64 / 1e6,
            (4 * size + 50_000_000) as f64 / 1e6,
            idle as f64 / 1e6
        );
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// The p-th percentile of `samples` (nearest rank).
fn percentile(samples: &mut [Duration], p: f64) -> Duration {
    samples.sort_unstable();
    let rank = ((p / 100.0) * samples.len() as f64).ceil() as usize;
    samples[rank.clamp(1, samples.len()) - 1]
}

async fn latency_under_merge_table() {
    println!(
        "\n## Latency of a one-window question beside a 1,000-Tweet, 4-year daily question (no upstream latency, max_in_flight 8)\n"
    );
    let (sim_url, _sim) = start_simulator(Config::default());
    let url = start_service(&sim_url, 8).await;
    let small_ids = tweets(1, 400.0, 7);
    let week = TimeRange::covering(now() - chrono::Duration::days(8), now() - chrono::Duration::days(1));
    let small = question(&small_ids, week, per_tweet(), &["impressions"]);
    let big_ids = tweets(1000, 2000.0, 11);
    let years =
        TimeRange::covering(now() - chrono::Duration::days(4 * 365 + 1), now() - chrono::Duration::days(1));
    let daily = json!({"daily": {"group_by": ["tweet.id", "engagement.type", "engagement.day"]}});
    let big = question(&big_ids, years, daily, &["impressions", "engagements"]);

    ask(&url, &small).await;
    let mut alone: Vec<Duration> = Vec::new();
    for _ in 0..100 {
        alone.push(ask(&url, &small).await.0);
    }
    let running = {
        let (url, big) = (url.clone(), big.clone());
        tokio::spawn(async move { ask(&url, &big).await })
    };
    let mut beside: Vec<Duration> = Vec::new();
    while !running.is_finished() {
        beside.push(ask(&url, &small).await.0);
    }
    let (big_took, answer) = running.await.unwrap();
    let calls = answer["meta"]["upstream_calls"].as_u64().unwrap();
    let (p50a, p99a) = (percentile(&mut alone, 50.0), percentile(&mut alone, 99.0));
    let (p50b, p99b) = (percentile(&mut beside, 50.0), percentile(&mut beside, 99.0));
    println!(
        "| small questions | p50 alone | p99 alone | p50 beside | p99 beside | p99 beside / p99 alone | big question |"
    );
    println!("|---|---|---|---|---|---|---|");
    println!(
        "| {} beside, 100 alone | {} | {} | {} | {} | {:.2} | {calls} calls, {} |",
        beside.len(),
        ms(p50a),
        ms(p99a),
        ms(p50b),
        ms(p99b),
        p99b.as_secs_f64() / p99a.as_secs_f64(),
        ms(big_took)
    );
}

/// The price of one fact-fetching call (25 Tweets, 28 days, hourly) by the types it asks:
/// the upstream's bytes, and the time to read them into facts.
fn fact_types_table() {
    println!("\n## One hourly call (25 Tweets, 28 days): asking the question's types or all 17\n");
    println!(
        "| types | JSON bytes | gzip bytes | read into facts | × of 2 types | parsing into a tree alone |"
    );
    println!("|---|---|---|---|---|---|");
    let config = Config { clock: Clock::Fixed(now()), ..Config::default() };
    let model = simulator::Model { seed: 0, now: now(), settle_hours: 0 };
    let end = now() - chrono::Duration::days(5);
    let window = TimeRange { start: end - chrono::Duration::days(28), end };
    let ids = tweets(25, 400.0, 3);
    let hourly =
        json!({"hourly": {"group_by": ["tweet.id", "engagement.type", "engagement.day", "engagement.hour"]}});
    let all: Vec<&str> = Endpoint::Historical.types().map(|t| t.name()).collect();
    let mut base = None;
    for types in [vec!["impressions", "engagements"], all] {
        let q = question(&ids, window, hourly.clone(), &types);
        let r =
            simulator::answer(&config, &model, Endpoint::Historical, &q, &Limits::of(Endpoint::Historical))
                .unwrap();
        let bytes = serde_json::to_vec(&r).unwrap();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        std::io::Write::write_all(&mut gz, &bytes).unwrap();
        let gzip = gz.finish().unwrap().len();
        let asked: Vec<engagement::EngagementType> = types.iter().map(|t| t.parse().unwrap()).collect();
        let rounds = 5;
        let started = Instant::now();
        for _ in 0..rounds {
            std::hint::black_box(
                store::CallFacts::read_hourly(&ids, &asked, window, &bytes, "hourly").unwrap(),
            );
        }
        let took = started.elapsed() / rounds;
        let started = Instant::now();
        for _ in 0..rounds {
            std::hint::black_box(serde_json::from_slice::<Response>(&bytes).unwrap());
        }
        let as_tree = started.elapsed() / rounds;
        let base = *base.get_or_insert(took);
        println!(
            "| {} | {:.2} MB | {:.2} MB | {} | {:.1} | {} |",
            types.len(),
            bytes.len() as f64 / 1e6,
            gzip as f64 / 1e6,
            ms(took),
            took.as_secs_f64() / base.as_secs_f64(),
            ms(as_tree)
        );
    }
}

/// Upstream calls of cold questions for 50 Tweets: the store's fewest windows, the fixed
/// grid without a store, and the published client's 27-day windows.
async fn fewest_calls_table() {
    println!("\n## Cold questions for 50 Tweets (2 batches): upstream calls\n");
    let (sim_url, sim) = start_simulator(Config::default());
    let url = start_service_with(&sim_url, 8, &[]).await;
    println!(
        "| range | with the store | fewest, 2 × ceil(hours / 672) | grid, no store (range starts mid-cell) | published client, 27-day windows |"
    );
    println!("|---|---|---|---|---|");
    for (k, days) in [7i64, 27, 28, 54, 90, 365].into_iter().enumerate() {
        let ids = tweets(50, 800.0, 100 + k as u64);
        // Off the grid's lines, as most ranges are.
        let end = now() - chrono::Duration::days(3) - chrono::Duration::hours(5);
        let range = TimeRange { start: end - chrono::Duration::days(days), end };
        let before = sim.stats().requests_total;
        ask(&url, &question(&ids, range, per_tweet(), &["impressions"])).await;
        let calls = sim.stats().requests_total - before;
        let grid = stitch::plan(&ids, range, 25).fetched.len();
        let client = 2 * (days as u64).div_ceil(27);
        println!("| {days} days | {calls} | {} | {grid} | {client} |", 2 * (days as u64 * 24).div_ceil(672));
    }
}

/// The dashboard workload: 20 viewers reloading two views of the last 90 days for 100
/// Tweets, every simulated hour of a working day; with the store and without.
async fn dashboard_table() {
    println!(
        "\n## Dashboard: 20 viewers reload \"last 90 days, daily, 100 Tweets\" and its hour-of-day view every simulated hour of a working day (9 loads each; 50 ms upstream latency, max_in_flight 16)\n"
    );
    println!("| store | questions | upstream calls | wall time |");
    println!("|---|---|---|---|");
    let latency = Duration::from_millis(50);
    let ids = tweets(100, 200.0, 77);
    let mut calls_by_mode = Vec::new();
    for enabled in [true, false] {
        let (sim_url, sim) =
            start_simulator(Config { faults: Faults { latency, ..Faults::default() }, ..Config::default() });
        let url = start_service_with(
            &sim_url,
            16,
            &[
                ("STITCHER__STORE__ENABLED", if enabled { "true" } else { "false" }),
                ("STITCHER__STORE__FRESH_TTL_SECS", "1"),
            ],
        )
        .await;
        // The simulated day ends at this hour, so no question reaches past the service's now.
        let day_start = now() - chrono::Duration::hours(8);
        let started = Instant::now();
        let mut questions = 0;
        for hour in 0..9 {
            let at = day_start + chrono::Duration::hours(hour);
            sim.set_clock(Clock::Fixed(at));
            let range = TimeRange { start: at - chrono::Duration::days(90), end: at };
            let views = [
                question(
                    &ids,
                    range,
                    json!({"daily": {"group_by": ["tweet.id", "engagement.day"]}}),
                    &["impressions", "engagements"],
                ),
                question(
                    &ids,
                    range,
                    json!({"by hour": {"group_by": ["engagement.hour"]}}),
                    &["impressions", "engagements"],
                ),
            ];
            let loads: Vec<_> = (0..20)
                .flat_map(|_| views.clone())
                .map(|q| {
                    let url = url.clone();
                    tokio::spawn(async move { ask(&url, &q).await })
                })
                .collect();
            for load in loads {
                load.await.unwrap();
                questions += 1;
            }
            // Each simulated hour outlives the store's fresh TTL (1 s here, as 60 s is to an hour).
            tokio::time::sleep(Duration::from_millis(1100)).await;
        }
        let calls = sim.stats().requests_total;
        calls_by_mode.push(calls);
        println!(
            "| {} | {questions} | {calls} | {} |",
            if enabled { "on" } else { "off" },
            ms(started.elapsed())
        );
    }
    println!(
        "\nUpstream calls without the store / with it: {:.0}× (target ≥ 20×)",
        calls_by_mode[1] as f64 / calls_by_mode[0].max(1) as f64
    );
}

/// A settled repeat against a cold question, and against plain serialization of its answer.
async fn settled_repeat_table() {
    println!(
        "\n## A settled repeat: \"90 days, daily, 100 Tweets\" (50 ms upstream latency, max_in_flight 8)\n"
    );
    let latency = Duration::from_millis(50);
    let (sim_url, _sim) =
        start_simulator(Config { faults: Faults { latency, ..Faults::default() }, ..Config::default() });
    let url = start_service_with(&sim_url, 8, &[]).await;
    let end = now() - chrono::Duration::days(5);
    let range = TimeRange { start: end - chrono::Duration::days(90), end };
    let daily = json!({"daily": {"group_by": ["tweet.id", "engagement.type", "engagement.day"]}});
    let types = ["impressions", "engagements", "favorites"];
    let mut cold = Vec::new();
    let mut warm = Vec::new();
    let mut serialize = Vec::new();
    // Uncompressed, as serializing is: gzip would cost both sides alike.
    let client = reqwest::Client::builder().no_gzip().build().unwrap();
    for k in 0..5 {
        let q = question(&tweets(100, 200.0, 1000 + k), range, daily.clone(), &types);
        cold.push(ask(&url, &q).await.0);
        for _ in 0..20 {
            // The answer's bytes as they arrive, not parsed: what the service spends.
            let started = Instant::now();
            let resp =
                client.post(format!("{url}/v1/historical")).bearer_auth("demo-key").json(&q).send().await;
            let bytes = resp.unwrap().bytes().await.unwrap();
            warm.push(started.elapsed());
            let answer: Value = serde_json::from_slice(&bytes).unwrap();
            assert_eq!(answer["meta"]["upstream_calls"], 0);
            let data: Response = serde_json::from_value(answer["data"].clone()).unwrap();
            let started = Instant::now();
            std::hint::black_box(serde_json::to_vec(&data).unwrap());
            serialize.push(started.elapsed());
        }
    }
    let (c, w, s) =
        (percentile(&mut cold, 50.0), percentile(&mut warm, 50.0), percentile(&mut serialize, 50.0));
    println!(
        "| p50 cold | p50 settled repeat | p50 serializing the answer | repeat / cold (target ≤ 0.05) | repeat / serializing (target ≤ 2) |"
    );
    println!("|---|---|---|---|---|");
    println!(
        "| {} | {:.1} ms | {:.1} ms | {:.3} | {:.1} |",
        ms(c),
        w.as_secs_f64() * 1000.0,
        s.as_secs_f64() * 1000.0,
        w.as_secs_f64() / c.as_secs_f64(),
        w.as_secs_f64() / s.as_secs_f64()
    );
}

/// Asks `questions` all at once, each of the services at `urls` in turn, as a round-robin
/// balancer would: how many were answered, and how many of them without a call.
async fn round_robin(urls: &[String], questions: impl Iterator<Item = Value>) -> (usize, usize) {
    let asks: Vec<_> = questions
        .enumerate()
        .map(|(n, q)| {
            let url = urls[n % urls.len()].clone();
            tokio::spawn(async move { ask(&url, &q).await.1 })
        })
        .collect();
    let (mut answered, mut free) = (0, 0);
    for answer in asks {
        let answer = answer.await.unwrap();
        answered += 1;
        if answer["meta"]["upstream_calls"] == 0 {
            free += 1;
        }
    }
    (answered, free)
}

/// Two replicas against one, on the same upstream budget and the same questions.
async fn replicas_table() {
    println!(
        "\n## Two replicas vs one: 8 campaigns of 50 Tweets, 60 days, 2 views each, asked by 4 viewers through a round-robin balancer (upstream limit 50 calls per 10 s, each replica paced at 280 a minute, 50 ms latency)\n"
    );
    println!(
        "| replicas | Redis | questions | upstream calls | 429s drawn | answers a minute | answered without a call | cross-replica hit rate |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    // The services share the bench process's metrics: each row reads what it added.
    let counter =
        |name: &str| metric_sum(&server::metrics::handle().map(|h| h.render()).unwrap_or_default(), name);
    let redis_url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let prefix = format!("stitcher-bench:{}:", std::process::id());
    let campaigns: Vec<Vec<TweetId>> = (0..8).map(|c| tweets(50, 300.0, 1000 + c)).collect();
    let range =
        TimeRange { start: now() - chrono::Duration::days(62), end: now() - chrono::Duration::days(2) };
    let views = |ids: &[TweetId]| {
        [
            question(
                ids,
                range,
                json!({"daily": {"group_by": ["tweet.id", "engagement.day"]}}),
                &["impressions"],
            ),
            question(ids, range, json!({"by type": {"group_by": ["engagement.type"]}}), &["impressions"]),
        ]
    };
    for (replicas, shared) in [(1, false), (2, false), (2, true)] {
        let faults = Faults { latency: Duration::from_millis(50), ..Faults::default() };
        let (sim_url, sim) = start_simulator(Config {
            faults,
            rate_limit_per_minute: 50,
            rate_window_secs: 10,
            ..Config::default()
        });
        let key_prefix = format!("{prefix}{replicas}{shared}:");
        let mut extra = vec![("STITCHER__UPSTREAM__REQUESTS_PER_MINUTE", "280")];
        if shared {
            extra.extend([
                ("STITCHER__REDIS__URL", redis_url.as_str()),
                ("STITCHER__REDIS__KEY_PREFIX", key_prefix.as_str()),
            ]);
        }
        let mut urls = Vec::new();
        for _ in 0..replicas {
            urls.push(start_service_with(&sim_url, 8, &extra).await);
        }
        let (shared_before, misses_before) =
            (counter("stitcher_store_shared_hits_total"), counter("stitcher_store_misses_total"));
        let started = Instant::now();
        let (questions, free) =
            round_robin(&urls, (0..4).flat_map(|_| campaigns.iter().flat_map(|ids| views(ids)))).await;
        let minutes = started.elapsed().as_secs_f64() / 60.0;
        let stats = sim.stats();
        // Of the Tweet-hours a replica's own store lacked, the share Redis held.
        let shared_hits = counter("stitcher_store_shared_hits_total") - shared_before;
        let misses = counter("stitcher_store_misses_total") - misses_before;
        let rate = if shared {
            format!("{:.0}%", 100.0 * shared_hits / (shared_hits + misses).max(1.0))
        } else {
            "-".into()
        };
        println!(
            "| {replicas} | {} | {questions} | {} | {} | {:.0} | {free} | {rate} |",
            if shared { "yes" } else { "no" },
            stats.requests_total,
            stats.by_status.get("429").copied().unwrap_or(0),
            questions as f64 / minutes
        );
    }
}

/// The sum of the samples of metric `name` (every label) in a `/metrics` text.
fn metric_sum(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with([' ', '{']))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// The largest question asked at one replica, then at another on the same Redis: the
/// calls each made, and whether Redis stayed up at both; then at the first again, settled.
async fn biggest_shared_table() {
    println!(
        "\n## The largest question at two replicas on one Redis (1,000 Tweets, 4 years, 3 types, daily)\n"
    );
    println!("| replica | asked | upstream calls | wall | Redis up throughout | Redis fallbacks | answer |");
    println!("|---|---|---|---|---|---|---|");
    let redis_url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let prefix = format!("stitcher-bench:{}:biggest:", std::process::id());
    let (sim_url, sim) = start_simulator(Config::default());
    let extra =
        [("STITCHER__REDIS__URL", redis_url.as_str()), ("STITCHER__REDIS__KEY_PREFIX", prefix.as_str())];
    let stores = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    let mut replicas = Vec::new();
    for store in &stores {
        replicas.push(start_stitcher(&sim_url, store.path(), &extra).await);
    }
    // Over settled time, so asked again at A it is a settled repeat.
    let body = biggest_question(now() - chrono::Duration::days(4));
    let mut answers = Vec::new();
    let asked = [(0, "first (cold)"), (1, "next"), (0, "again (settled repeat)")];
    for (row, &(i, asked)) in asked.iter().enumerate() {
        let url = &replicas[i].1;
        // Redis's state at this replica, sampled while it answers: how often it was down.
        let down = Arc::new(std::sync::atomic::AtomicU32::new(0));
        let watching = {
            let (url, down) = (url.clone(), Arc::clone(&down));
            tokio::spawn(async move {
                loop {
                    if let Ok(r) = reqwest::get(format!("{url}/metrics")).await
                        && metric_sum(&r.text().await.unwrap_or_default(), "stitcher_redis_up") < 1.0
                    {
                        down.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            })
        };
        let before = sim.stats().requests_total;
        let started = Instant::now();
        let answer = ask_drop_in(url, &body).await;
        let took = started.elapsed();
        let calls = sim.stats().requests_total - before;
        let text = reqwest::get(format!("{url}/metrics")).await.unwrap().text().await.unwrap();
        let up_now = metric_sum(&text, "stitcher_redis_up") >= 1.0;
        watching.abort();
        let down = down.load(std::sync::atomic::Ordering::Relaxed);
        answers.push(answer.clone());
        println!(
            "| {} | {asked} | {calls} | {:.1} s | {} | {} | {} |",
            ["A", "B"][i],
            took.as_secs_f64(),
            if up_now && down == 0 { "yes" } else { "no" },
            metric_sum(&text, "stitcher_redis_fallbacks_total") as u64,
            if row == 0 {
                format!("{:.1} MB", answer.len() as f64 / 1e6)
            } else if answers[0] == answer {
                "the same bytes as A's".into()
            } else {
                "DIFFERS from A's".into()
            }
        );
    }
    let redis = replicas::Redis::connect(&redis_url, &prefix).unwrap();
    let held = redis.memory_under_prefix().await.unwrap();
    println!("\nRedis holds {:.0} MB under the run's prefix.", held as f64 / 1e6);
    redis.forget_prefix().await.unwrap();
    for (mut child, _) in replicas {
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// A question of `tweets` Tweets created before 2014-09-01 over `windows` windows of the
/// grid from its first line: ceil(tweets / 25) × windows calls without the store.
fn calls_question(tweets: u64, windows: i64, salt: u64) -> Value {
    let first = engagement::parse_instant("2014-09-01").unwrap();
    let born = TweetId::minted_at(first - chrono::Duration::days(30)).0;
    let ids: Vec<String> = (0..tweets).map(|k| (born + (salt << 32) + k).to_string()).collect();
    json!({
        "tweet_ids": ids, "engagement_types": ["impressions"],
        "groupings": {"g": {"group_by": ["tweet.id"]}},
        "start": format_instant(first), "end": format_instant(first + chrono::Duration::days(28 * windows)),
    })
}

/// `body` asked of `url` with `key`, answered `200`; the time it took.
async fn ask_as(url: &str, path: &str, body: &Value, key: &str) -> (Duration, reqwest::Response) {
    let started = Instant::now();
    let resp =
        reqwest::Client::new().post(format!("{url}{path}")).bearer_auth(key).json(body).send().await.unwrap();
    assert!(resp.status().is_success(), "{}", resp.status());
    (started.elapsed(), resp)
}

/// The median of `samples`.
fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort_unstable();
    samples[samples.len() / 2]
}

async fn shares_table() {
    println!(
        "\n## Shares: a dashboard's 10-call question beside 4 jobs of 400 calls (600 calls a minute, 50 ms upstream latency, no store)\n"
    );
    println!("| turns | batch's jobs from | dash's question, median | / alone |");
    println!("|---|---|---|---|");
    let mut alone = None;
    for (name, batch_clients) in [("alone", 0), ("by client (shares)", 1), ("by question (before shares)", 4)]
    {
        let latency = Duration::from_millis(50);
        let (sim_url, _sim) =
            start_simulator(Config { faults: Faults { latency, ..Faults::default() }, ..Config::default() });
        // dash, and batch's jobs from one client or from four (which takes turns as
        // four questions did before shares).
        let clients: Vec<String> =
            (0..batch_clients.max(1)).map(|i| format!("batch{i}")).chain(["dash".into()]).collect();
        let mut env: Vec<(String, String)> = vec![
            ("STITCHER__STORE__ENABLED".into(), "false".into()),
            ("STITCHER__UPSTREAM__REQUESTS_PER_MINUTE".into(), "600".into()),
        ];
        for c in &clients {
            let upper = c.to_ascii_uppercase();
            env.push((
                format!("STITCHER__CLIENTS__{upper}__KEY_SHA256"),
                server::settings::key_hash(&format!("{c}-key")),
            ));
            env.push((format!("STITCHER__CLIENTS__{upper}__HANDLES"), "demo".into()));
        }
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let url = start_service_with(&sim_url, 8, &env).await;
        let mut jobs = Vec::new();
        for j in 0..4 * usize::from(batch_clients > 0) {
            let key = format!("{}-key", clients[j % batch_clients]);
            let (_, resp) = ask_as(&url, "/v1/jobs", &calls_question(100, 100, j as u64), &key).await;
            jobs.push((resp.headers()["location"].to_str().unwrap().to_owned(), key));
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
        let mut times = Vec::new();
        for q in 0..11 {
            let (took, _) = ask_as(&url, "/v1/historical", &calls_question(1, 10, 100 + q), "dash-key").await;
            times.push(took);
        }
        let took = median(times);
        let alone_took = *alone.get_or_insert(took);
        let from = match batch_clients {
            0 => "(no jobs)".to_string(),
            1 => "one client".to_string(),
            n => format!("{n} clients"),
        };
        println!("| {name} | {from} | {} | {:.2} |", ms(took), took.as_secs_f64() / alone_took.as_secs_f64());
        for (job, key) in jobs {
            let _ = reqwest::Client::new().delete(format!("{url}{job}")).bearer_auth(key).send().await;
        }
    }
}

/// A dashboard's "last 90 days, daily" for `ids`, to the end of the hour in progress at `now`.
fn last_90_days(ids: &[TweetId], now: DateTime<Utc>) -> Value {
    let start = (now.date_naive() - chrono::Days::new(90)).and_time(chrono::NaiveTime::MIN).and_utc();
    let range = TimeRange { start, end: engagement::time::ceil_hour(now) };
    question(
        ids,
        range,
        json!({"daily": {"group_by": ["tweet.id", "engagement.type", "engagement.day"]}}),
        &["impressions", "engagements"],
    )
}

/// The watch at `url` + `location` once a refresh begun at or after `since` has ended.
async fn refreshed_watch(url: &str, location: &str, since: DateTime<Utc>) -> Value {
    loop {
        let resp = reqwest::Client::new()
            .get(format!("{url}{location}"))
            .bearer_auth("demo-key")
            .send()
            .await
            .unwrap();
        let watch: Value = resp.json().await.unwrap();
        let began = watch["last_refresh"].as_str().map(|t| engagement::parse_instant(t).unwrap());
        if began.is_some_and(|t| t >= since) && watch["state"] != "refreshing" {
            return watch;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn watches_table() {
    println!(
        "\n## Watches: a dashboard's last 90 days, daily, for 200 Tweets, asked 12 hours after it was last asked (200 ms upstream latency)\n"
    );
    println!(
        "| | the question's upstream calls | its time | the watch's refresh calls before it | equals the oracle |"
    );
    println!("|---|---|---|---|---|");
    let ids = tweets(200, 400.0, 0);
    for watched in [false, true] {
        let latency = Duration::from_millis(200);
        let (sim_url, sim) =
            start_simulator(Config { faults: Faults { latency, ..Faults::default() }, ..Config::default() });
        // The simulator's clock at the service's time, not the top of the hour: the hour in
        // progress is asked for, and the simulator counts it from its own clock.
        let start = chrono::SubsecRound::trunc_subsecs(Utc::now(), 0);
        sim.set_clock(Clock::Fixed(start));
        let clock = Arc::new(engine::ports::MovedClock::default());
        let url = start_service_on(&sim_url, Arc::clone(&clock) as Arc<dyn engine::ports::Clock>).await;
        let mut refresh_calls = 0;
        if watched {
            let body = json!({"tweet_ids": ids.iter().map(ToString::to_string).collect::<Vec<_>>(),
                "engagement_types": ["impressions", "engagements"], "lookback_days": 90, "refresh_secs": 3600});
            let made = reqwest::Client::new()
                .post(format!("{url}/v1/watches"))
                .bearer_auth("demo-key")
                .json(&body)
                .send()
                .await
                .unwrap();
            assert_eq!(made.status().as_u16(), 201);
            let location = made.headers()["location"].to_str().unwrap().to_owned();
            refreshed_watch(&url, &location, start).await;
            let moved = move_clocks(&sim, &clock, start);
            let before = sim.stats().requests_total;
            refreshed_watch(&url, &location, moved - chrono::Duration::seconds(5)).await;
            refresh_calls = sim.stats().requests_total - before;
        } else {
            ask(&url, &last_90_days(&ids, start)).await;
            move_clocks(&sim, &clock, start);
        }
        let later = start + chrono::Duration::hours(12);
        let q = last_90_days(&ids, later);
        let before = sim.stats().requests_total;
        let started = Instant::now();
        let answer: Value = serde_json::from_slice(&ask_drop_in(&url, &q).await).unwrap();
        let took = started.elapsed();
        let calls = sim.stats().requests_total - before;
        let oracle: Value = reqwest::Client::new()
            .post(format!("{sim_url}/_oracle/historical"))
            .json(&q)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        println!(
            "| {} | {calls} | {} | {} | {} |",
            if watched { "watched (refresh_secs = 3600)" } else { "not watched (asked before)" },
            ms(took),
            if watched { refresh_calls.to_string() } else { "-".into() },
            if answer == oracle { "yes" } else { "NO" }
        );
    }
}

/// Moves the simulator's clock and the service's 12 hours on from `start`; the service's time now.
fn move_clocks(sim: &Simulator, clock: &engine::ports::MovedClock, start: DateTime<Utc>) -> DateTime<Utc> {
    sim.set_clock(Clock::Fixed(start + chrono::Duration::hours(12)));
    clock.advance(Duration::from_secs(12 * 3600));
    engine::ports::Clock::now(clock)
}

/// The service on a fresh store, judging time by `clock`.
async fn start_service_on(sim_url: &str, clock: Arc<dyn engine::ports::Clock>) -> String {
    let store = Box::leak(Box::new(tempfile::tempdir().unwrap()));
    let env = [
        ("STITCHER__SERVER__LISTEN", "127.0.0.1:0".to_string()),
        ("STITCHER__UPSTREAM__BASE_URL", sim_url.to_string()),
        ("STITCHER__STORE__PATH", store.path().display().to_string()),
    ];
    let settings =
        Settings::load_with(None, Some(env.into_iter().map(|(k, v)| (k.to_string(), v)).collect())).unwrap();
    let app = Application::build_on(settings, clock).await.unwrap();
    let url = format!("http://{}", app.local_addr().unwrap());
    tokio::spawn(app.run());
    url
}

#[tokio::main]
async fn main() {
    if std::env::args().any(|a| a == "--list" || a == "--test") {
        // `cargo test --benches` probes bench binaries; the table is for `cargo bench`.
        return;
    }
    // `cargo bench -p server --bench service -- fan` runs only the tables whose name holds "fan".
    let only: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with('-')).collect();
    let wanted = |name: &str| only.is_empty() || only.iter().any(|o| name.contains(o.as_str()));
    println!("# stitcher benchmarks ({} cores)", std::thread::available_parallelism().map_or(0, |n| n.get()));
    if wanted("creation-cut") {
        creation_cut_table().await;
    }
    if wanted("calls-saved") {
        calls_saved_table();
    }
    if wanted("merge-cost") {
        merge_cost_table();
    }
    if wanted("memory") {
        memory_table().await;
    }
    if wanted("fan-out") {
        fan_out_table().await;
    }
    if wanted("latency-under-merge") {
        latency_under_merge_table().await;
    }
    if wanted("fact-types") {
        fact_types_table();
    }
    if wanted("fewest-calls") {
        fewest_calls_table().await;
    }
    if wanted("dashboard") {
        dashboard_table().await;
    }
    if wanted("settled-repeat") {
        settled_repeat_table().await;
    }
    if wanted("replicas") {
        replicas_table().await;
    }
    if wanted("biggest-shared") {
        biggest_shared_table().await;
    }
    if wanted("shares") {
        shares_table().await;
    }
    if wanted("watches") {
        watches_table().await;
    }
}

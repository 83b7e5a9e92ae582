//! Numbers derived from an answer (the engagement rate, the Top Tweets) equal those
//! computed from the simulator's oracle, with the store on and off; an answer as CSV
//! rebuilds its JSON exactly, on `/v1/historical` and on a job's result.

#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, HashSet};

use chrono::Duration as Span;
use end_to_end::{World, tweet};
use engagement::TweetId;
use engagement::time::format_instant;
use serde_json::{Map, Value, json};
use simulator::Config;

/// 40 Tweets: most older than the range, three created after it (all zeros, so ties), two
/// deleted.
fn tweets(now: chrono::DateTime<chrono::Utc>) -> (Vec<TweetId>, HashSet<TweetId>) {
    let mut ids: Vec<TweetId> = (0..37).map(|k| tweet(now, 100.0 + k as f64 * 9.0, k)).collect();
    ids.extend((0..3).map(|k| tweet(now, 1.0, 100 + k)));
    let deleted = HashSet::from([ids[3], ids[20]]);
    (ids, deleted)
}

fn range(now: chrono::DateTime<chrono::Utc>) -> (String, String) {
    let end = engagement::time::floor_hour(now - Span::days(10));
    (format_instant(end - Span::days(75)), format_instant(end))
}

fn strings(ids: &[TweetId]) -> Vec<String> {
    ids.iter().map(ToString::to_string).collect()
}

/// Each Tweet's counts per type over the range, from the oracle.
async fn per_tweet(
    world: &World,
    ids: &[TweetId],
    types: &[&str],
) -> BTreeMap<TweetId, BTreeMap<String, u64>> {
    let (start, end) = range(world.now);
    let oracle = world
        .oracle(&json!({
            "tweet_ids": strings(ids), "engagement_types": types,
            "groupings": {"t": {"group_by": ["tweet.id", "engagement.type"]}},
            "start": start, "end": end,
        }))
        .await;
    oracle["t"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(id, counts)| {
            let counts = counts.as_object().unwrap();
            let counts =
                counts.iter().map(|(t, c)| (t.clone(), c.as_str().unwrap().parse().unwrap())).collect();
            (TweetId(id.parse().unwrap()), counts)
        })
        .collect()
}

fn rate(engagements: u64, impressions: u64) -> Value {
    if impressions == 0 { Value::Null } else { json!(engagements as f64 / impressions as f64) }
}

/// Two rates as equal as JSON text can carry them (serde_json's reading of a float may be a
/// unit in the last place off), or both `null`.
fn assert_close(got: &Value, expected: &Value) {
    match (got.as_f64(), expected.as_f64()) {
        (Some(a), Some(b)) => assert!((a - b).abs() <= b.abs() * 1e-15, "{a} ≠ {b}"),
        _ => assert!(got.is_null() && expected.is_null(), "{got} ≠ {expected}"),
    }
}

async fn derived_numbers_equal_the_oracles(env: &[(&str, &str)]) {
    let now = end_to_end::test_now();
    let (ids, deleted) = tweets(now);
    let world = World::start(Config { deleted_ids: deleted.clone(), ..Config::default() }, env).await;
    let (start, end) = range(world.now);
    let types = ["impressions", "engagements", "favorites"];
    let truth = per_tweet(&world, &ids, &types).await;
    assert!(deleted.iter().all(|id| !truth.contains_key(id)));

    let count = |id: &TweetId, t: &str| truth[id][t];
    let (e, i): (u64, u64) =
        truth.keys().fold((0, 0), |(e, i), id| (e + count(id, "engagements"), i + count(id, "impressions")));
    let by_tweet: Map<String, Value> = truth
        .keys()
        .map(|id| (id.to_string(), rate(count(id, "engagements"), count(id, "impressions"))))
        .collect();
    let mut ranked: Vec<(TweetId, u64)> = truth.keys().map(|id| (*id, count(id, "favorites"))).collect();
    ranked.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    let n = truth.len(); // every Tweet, so the ties at zero are in it
    let top: Vec<Value> =
        ranked[..n].iter().map(|(id, v)| json!({"tweet_id": id.to_string(), "value": v})).collect();
    assert!(ranked.iter().filter(|(_, v)| *v == 0).count() >= 3);

    // From a grouping of the question's own, and from none that has Tweets and types.
    for groupings in [
        json!({"daily": {"group_by": ["engagement.type", "tweet.id", "engagement.day"]}}),
        json!({"daily": {"group_by": ["engagement.type", "engagement.day"]}, "hours": {"group_by": ["engagement.hour"]}}),
    ] {
        let body = json!({
            "tweet_ids": strings(&ids), "engagement_types": types, "groupings": groupings,
            "start": start, "end": end,
            "derive": ["engagement_rate"], "top": {"by": "favorites", "n": n},
        });
        let (status, got) = world.ask("/v1/historical", &body).await;
        assert_eq!(status, 200, "{got}");
        let rate_got = &got["derived"]["engagement_rate"];
        assert_close(&rate_got["overall"], &rate(e, i));
        assert_eq!(rate_got["by_tweet"].as_object().unwrap().len(), by_tweet.len());
        for (id, r) in &by_tweet {
            assert_close(&rate_got["by_tweet"][id], r);
        }
        assert_eq!(got["top"], Value::Array(top.clone()), "{groupings}");
        // The data is the question's own, without what was asked to derive from.
        let names: Vec<&String> = got["data"].as_object().unwrap().keys().collect();
        assert!(
            names.iter().all(|k| groupings.get(k.as_str()).is_some()
                || ["start", "end", "errors", "unavailable_tweet_ids"].contains(&k.as_str())),
            "{names:?}"
        );

        // A top 3 is the first three of the same ranking.
        let mut three = body.clone();
        three["top"]["n"] = json!(3);
        three.as_object_mut().unwrap().remove("derive");
        let (_, got) = world.ask("/v1/historical", &three).await;
        assert_eq!(got["top"], Value::Array(top[..3].to_vec()));
        assert!(got.get("derived").is_none());
    }

    // A job carries them too.
    let body = json!({
        "tweet_ids": strings(&ids), "engagement_types": types,
        "groupings": {"daily": {"group_by": ["engagement.day"]}}, "start": start, "end": end,
        "derive": ["engagement_rate"], "top": {"by": "favorites", "n": n},
    });
    let result = world.job_result(&body, "", None).await.text().await.unwrap();
    let result: Value = serde_json::from_str(&result).unwrap();
    assert_close(&result["derived"]["engagement_rate"]["overall"], &rate(e, i));
    assert_eq!(result["top"], Value::Array(top));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn engagement_rate_and_top_tweets_equal_the_oracles() {
    derived_numbers_equal_the_oracles(&[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn engagement_rate_and_top_tweets_equal_the_oracles_without_the_store() {
    // With the store off, they come from the question's calls, or from calls of their own.
    derived_numbers_equal_the_oracles(&[("STITCHER__STORE__ENABLED", "false")]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn derived_numbers_asked_wrongly_are_refused_before_any_call() {
    let now = end_to_end::test_now();
    let (ids, _) = tweets(now);
    let world = World::start(Config::default(), &[]).await;
    let (start, end) = range(world.now);
    let body = |extra: Value| {
        let mut b = json!({
            "tweet_ids": strings(&ids[..3]), "engagement_types": ["impressions", "favorites"],
            "groupings": {"g": {"group_by": ["engagement.type"]}}, "start": start, "end": end,
        });
        b.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        b
    };
    for (path, extra, said) in [
        ("/v1/historical", json!({"derive": ["engagement_rate"]}), "missing: engagements"),
        ("/v1/historical", json!({"derive": ["reach"]}), "is not a derived number"),
        ("/v1/historical", json!({"derive": "engagement_rate"}), "must be a list"),
        ("/v1/historical", json!({"derive": [null]}), "is not a derived number"),
        ("/v1/historical", json!({"top": {"by": "retweets", "n": 5}}), "top.by must be one of"),
        ("/v1/historical", json!({"top": {"by": "favorites", "n": 0}}), "top.n must be"),
        ("/v1/historical", json!({"top": 5}), "top must be an object"),
        ("/v1/jobs", json!({"top": {"by": "retweets", "n": 5}}), "top.by must be one of"),
        (
            "/insights/engagement/historical",
            json!({"top": {"by": "favorites", "n": 5}}),
            "only for the native answer",
        ),
    ] {
        let (status, got) = world.ask(path, &body(extra.clone())).await;
        assert_eq!(status, 400, "{path} {extra}: {got}");
        assert!(got["errors"].to_string().contains(said), "{path} {extra}: {got}");
    }
    assert_eq!(world.upstream_calls(), 0);
    // null is as good as leaving them out.
    let (status, got) = world.ask("/v1/historical", &body(json!({"derive": null, "top": null}))).await;
    assert_eq!(status, 200, "{got}");
    assert!(got.get("derived").is_none() && got.get("top").is_none());
    let nothing = body(json!({"derive": null, "top": null, "partial": null}));
    let (status, got) = world.ask("/insights/engagement/historical", &nothing).await;
    assert_eq!(status, 200, "the drop-in reads null as absent too: {got}");
}

/// Reads CSV text (RFC 4180 quoting) into rows of cells.
fn parse_csv(text: &str) -> Vec<Vec<String>> {
    let (mut rows, mut row, mut cell) = (Vec::new(), Vec::new(), String::new());
    let (mut quoted, mut chars) = (false, text.chars().peekable());
    while let Some(c) = chars.next() {
        match (quoted, c) {
            (true, '"') if chars.peek() == Some(&'"') => {
                chars.next();
                cell.push('"');
            }
            (true, '"') => quoted = false,
            (true, c) => cell.push(c),
            (false, '"') => quoted = true,
            (false, ',') => row.push(std::mem::take(&mut cell)),
            (false, '\r') => {
                assert_eq!(chars.next(), Some('\n'), "a line ends with CRLF");
                row.push(std::mem::take(&mut cell));
                rows.push(std::mem::take(&mut row));
            }
            (false, '\n') => panic!("a line ends with CRLF, not a bare LF"),
            (false, c) => cell.push(c),
        }
    }
    assert!(cell.is_empty() && row.is_empty(), "the CSV ends with a line break");
    rows
}

/// The `data` trees a CSV answer holds, rebuilt by each grouping's levels.
fn rebuild(rows: &[Vec<String>], groupings: &Value) -> Map<String, Value> {
    let column = |level: &str| match level {
        "tweet.id" => 1,
        "engagement.type" => 2,
        "engagement.week" => 3,
        "engagement.month" => 4,
        "engagement.day" => 5,
        "engagement.hour" => 6,
        other => panic!("no level {other}"),
    };
    let mut data = Map::new();
    for row in rows {
        assert_eq!(row.len(), 8, "{row:?}");
        let levels = groupings[&row[0]]["group_by"].as_array().unwrap();
        let mut node = data.entry(row[0].clone()).or_insert_with(|| json!({}));
        for level in levels {
            node = node
                .as_object_mut()
                .unwrap()
                .entry(row[column(level.as_str().unwrap())].clone())
                .or_insert_with(|| json!({}));
        }
        let used: HashSet<usize> = levels.iter().map(|l| column(l.as_str().unwrap())).collect();
        assert!((1..7).all(|c| used.contains(&c) || row[c].is_empty()), "{row:?}");
        *node = json!(row[7].parse::<u64>().unwrap());
    }
    data
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn csv_rebuilds_the_json_answer_exactly() {
    let now = end_to_end::test_now();
    let (ids, deleted) = tweets(now);
    let world = World::start(Config { deleted_ids: deleted, ..Config::default() }, &[]).await;
    let (_, end) = range(world.now);
    let start = format_instant(engagement::parse_instant(&end).unwrap() - Span::days(3));
    let groupings = json!({
        "per \"tweet\", by type": {"group_by": ["tweet.id", "engagement.type"]},
        "weeks of months": {"group_by": ["engagement.month", "engagement.week", "engagement.type"]},
        "hourly": {"group_by": ["engagement.type", "tweet.id", "engagement.day", "engagement.hour"]},
    });
    let body = json!({
        "tweet_ids": strings(&ids[..12]), "engagement_types": ["impressions", "url_clicks"],
        "groupings": groupings, "start": start, "end": end,
        "top": {"by": "url_clicks", "n": 3},
    });
    let (status, native) = world.ask("/v1/historical", &body).await;
    assert_eq!(status, 200, "{native}");
    let mut expected = native["data"].as_object().unwrap().clone();
    expected.retain(|k, _| groupings.get(k).is_some());

    let by_accept = world.post("/v1/historical", &body).header("accept", "text/csv").send().await.unwrap();
    assert_eq!(by_accept.status().as_u16(), 200);
    assert!(by_accept.headers()["content-type"].to_str().unwrap().starts_with("text/csv"));
    assert_eq!(by_accept.headers()["x-unavailable-tweets"], "1", "one deleted Tweet of the twelve");
    let text = by_accept.text().await.unwrap();
    let rows = parse_csv(&text);
    assert_eq!(rows[0], ["grouping", "tweet_id", "engagement_type", "week", "month", "day", "hour", "count"]);
    assert_eq!(rebuild(&rows[1..], &groupings), expected);
    // In the answer's order: groupings by name, then keys as the JSON writes them.
    let order: Vec<&str> = rows[1..].iter().map(|r| r[0].as_str()).collect();
    assert!(order.is_sorted());
    fn leaves(v: &Value) -> usize {
        v.as_object().map_or(1, |m| m.values().map(leaves).sum())
    }
    // One row per count: none twice, none left out.
    assert_eq!(rows.len() - 1, expected.values().map(leaves).sum::<usize>());
    // Three days touch one or two weeks and one or two months: at most three pairs, per type.
    let weeks = leaves(&expected["weeks of months"]);
    assert!([2, 4, 6].contains(&weeks), "{weeks}");
    assert_eq!(rows.len() - 1, 11 * 2 + weeks + 2 * 11 * 72, "12 Tweets, one deleted");

    let by_query = world.post("/v1/historical?format=csv", &body).send().await.unwrap();
    assert_eq!(by_query.text().await.unwrap(), text);
    assert_eq!(world.job_result(&body, "?format=csv", None).await.text().await.unwrap(), text);

    let (status, got) = world.ask("/v1/historical?format=xml", &body).await;
    assert_eq!(status, 400);
    assert!(got["errors"].to_string().contains("json or csv"), "{got}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partial_answer_says_what_is_missing_and_derives_nothing() {
    let now = end_to_end::test_now();
    let (ids, _) = tweets(now);
    let range = engagement::TimeRange::covering(now - Span::days(120), now - Span::days(10));
    let broken = stitch::windows(range)[1];
    let faults =
        simulator::faults::Faults { failing_window_starts: vec![broken.start], ..Default::default() };
    // Without the store, calls follow the fixed grid, so the broken window is one of them.
    let env = [("STITCHER__UPSTREAM__MAX_ATTEMPTS", "2"), ("STITCHER__STORE__ENABLED", "false")];
    let world = World::start(Config { faults, ..Config::default() }, &env).await;
    let body = json!({
        "tweet_ids": strings(&ids[..30]), "engagement_types": ["impressions", "engagements"],
        "groupings": {"per tweet": {"group_by": ["tweet.id", "engagement.type"]}},
        "start": format_instant(range.start), "end": format_instant(range.end),
        "partial": true, "derive": ["engagement_rate"], "top": {"by": "impressions", "n": 3},
    });
    let (status, got) = world.ask("/v1/historical", &body).await;
    assert_eq!(status, 200, "{got}");
    let missing = got["meta"]["incomplete"].as_array().unwrap().len();
    assert!(missing > 0);
    // Numbers over part of the range would mislead.
    assert!(got.get("derived").is_none() && got.get("top").is_none(), "{got}");

    let csv = world.post("/v1/historical?format=csv", &body).send().await.unwrap();
    assert_eq!(csv.status().as_u16(), 200);
    assert_eq!(csv.headers()["x-incomplete-slices"].to_str().unwrap(), missing.to_string());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accept_picks_csv_only_when_it_is_preferred_and_only_after_credentials() {
    let now = end_to_end::test_now();
    let (ids, _) = tweets(now);
    let world = World::start(Config::default(), &[]).await;
    let (start, end) = range(world.now);
    let body = json!({
        "tweet_ids": strings(&ids[..2]), "engagement_types": ["impressions"],
        "groupings": {"g": {"group_by": ["tweet.id"]}}, "start": start, "end": end,
    });
    for (accept, csv) in [
        ("text/csv", true),
        ("text/csv;q=0.5, application/json;q=0.4", true),
        ("text/csv;q=0", false),
        ("application/json, text/csv;q=0.1", false),
        ("*/*", false),
        ("text/csv, application/json", false),
    ] {
        let r = world.post("/v1/historical", &body).header("accept", accept).send().await.unwrap();
        let kind = r.headers()["content-type"].to_str().unwrap().to_owned();
        assert_eq!(kind.starts_with("text/csv"), csv, "{accept}: {kind}");
    }
    let (status, _) = world.ask_as("/v1/historical?format=xml", &body, None).await;
    assert_eq!(status, 401, "credentials are checked before anything else");
}

//! Cacheable answers: an entity tag on every historical answer and job result, `304` with no
//! body and no call for a tag the client holds, a new tag when the answer changes (a Tweet
//! deleted once its status is asked again, an unsettled hour that moved), `Cache-Control`,
//! and the `Stitcher-Result` and `Server-Timing` headers.

#![allow(clippy::unwrap_used)]

use std::time::Duration as Wait;

use chrono::Duration;
use end_to_end::{World, tweet};
use engagement::TweetId;
use engagement::time::format_instant;
use serde_json::{Value, json};
use simulator::Config;

fn question(
    ids: &[TweetId],
    start: chrono::DateTime<chrono::Utc>,
    end: chrono::DateTime<chrono::Utc>,
) -> Value {
    json!({
        "tweet_ids": ids.iter().map(ToString::to_string).collect::<Vec<_>>(),
        "engagement_types": ["impressions", "favorites"],
        "groupings": {"days": {"group_by": ["tweet.id", "engagement.day"]}},
        "start": format_instant(start), "end": format_instant(end),
    })
}

/// The status, headers and body of `body` posted to `path`, sent with `If-None-Match: tag`
/// if given.
async fn post(
    world: &World,
    path: &str,
    body: &Value,
    tag: Option<&str>,
) -> (u16, reqwest::header::HeaderMap, String) {
    let mut request = world.post(path, body);
    if let Some(tag) = tag {
        request = request.header("if-none-match", tag);
    }
    let response = request.send().await.unwrap();
    let (status, headers) = (response.status().as_u16(), response.headers().clone());
    (status, headers, response.text().await.unwrap())
}

fn header<'a>(headers: &'a reqwest::header::HeaderMap, name: &str) -> &'a str {
    headers.get(name).map_or("", |v| v.to_str().unwrap())
}

/// The number after `name=` in a `Stitcher-Result` header.
fn result_count(headers: &reqwest::header::HeaderMap, name: &str) -> u64 {
    let result = header(headers, "stitcher-result");
    let pair = result
        .split(", ")
        .find_map(|p| p.strip_prefix(&format!("{name}=")))
        .unwrap_or_else(|| panic!("{result}"));
    pair.parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_tag_the_client_holds_is_a_304_with_no_body_and_no_call() {
    let world = World::start(Config::default(), &[]).await;
    let ids: Vec<TweetId> = (0..30).map(|k| tweet(world.now, 200.0 + k as f64, k)).collect();
    let end = engagement::time::floor_hour(world.now - Duration::days(10));
    let body = question(&ids, end - Duration::days(40), end);

    let (status, headers, text) = post(&world, "/v1/historical", &body, None).await;
    assert_eq!(status, 200, "{text}");
    let tag = header(&headers, "etag").to_string();
    assert!(tag.starts_with("W/\"") && tag.ends_with("-json\""), "{tag}");
    let max_age: u64 =
        header(&headers, "cache-control").strip_prefix("private, max-age=").unwrap().parse().unwrap();
    assert!(
        (1..=900).contains(&max_age),
        "settled: until the statuses may be asked again (900 s): {max_age}"
    );
    assert_eq!(result_count(&headers, "calls"), 4, "2 batches × 2 windows");
    assert_eq!(result_count(&headers, "fetched"), 4);
    assert_eq!(result_count(&headers, "from_store"), 0);
    let timing = header(&headers, "server-timing");
    for metric in ["budget;", "upstream;", "render;"] {
        assert!(timing.contains(metric), "{timing}");
    }

    let calls = world.upstream_calls();
    let (status, again, text) = post(&world, "/v1/historical", &body, Some(&tag)).await;
    assert_eq!((status, text.as_str()), (304, ""), "no body");
    assert_eq!(header(&again, "etag"), tag);
    assert_eq!(result_count(&again, "calls"), 0);
    assert_eq!(result_count(&again, "from_store"), 4);
    assert_eq!(world.upstream_calls(), calls, "no call");
    let (status, _, _) =
        post(&world, "/v1/historical", &body, Some("\"other\", W/\"0000000000000000-json\"")).await;
    assert_eq!(status, 200, "a tag the answer does not have");
    let (status, _, _) = post(&world, "/v1/historical", &body, Some(&tag.replace("-json", "-csv"))).await;
    assert_eq!(status, 200, "another shape's tag");

    // The drop-in shape and CSV have tags of their own, and take them back alike.
    let (status, dropped, _) = post(&world, "/insights/engagement/historical", &body, None).await;
    assert_eq!(status, 200);
    let api_tag = header(&dropped, "etag").to_string();
    assert!(api_tag.ends_with("-api\"") && api_tag != tag, "{api_tag}");
    assert!(!header(&dropped, "stitcher-result").is_empty() && !header(&dropped, "server-timing").is_empty());
    let (status, _, text) = post(&world, "/insights/engagement/historical", &body, Some(&api_tag)).await;
    assert_eq!((status, text.as_str()), (304, ""));
    let (_, csv, _) = post(&world, "/v1/historical?format=csv", &body, None).await;
    assert!(header(&csv, "etag").ends_with("-csv\""));

    // A job's result is tagged as the same question's answer is.
    let answered = world.job_result(&body, "", None).await;
    assert_eq!(answered.status().as_u16(), 200);
    assert_eq!(header(answered.headers(), "etag"), tag, "the same answer, the same tag");
    let again = world.job_result(&body, "", Some(&tag)).await;
    assert_eq!(again.status().as_u16(), 304);
    assert_eq!(again.text().await.unwrap(), "");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_tweet_deleted_once_its_status_is_asked_again_changes_the_tag() {
    let now = end_to_end::test_now();
    let ids: Vec<TweetId> = (0..5).map(|k| tweet(now, 200.0 + k as f64, k)).collect();
    let config = Config { deleted_at: [(ids[2], now + Duration::hours(1))].into(), ..Config::default() };
    let world = World::start(config, &[("STITCHER__STORE__STATUS_TTL_SECS", "2")]).await;
    let end = engagement::time::floor_hour(now - Duration::days(10));
    let body = question(&ids, end - Duration::days(20), end);
    let (status, headers, text) = post(&world, "/v1/historical", &body, None).await;
    assert_eq!(status, 200, "{text}");
    let tag = header(&headers, "etag").to_string();
    let max_age: u64 =
        header(&headers, "cache-control").strip_prefix("private, max-age=").unwrap().parse().unwrap();
    assert!(max_age <= 2, "settled, until the statuses may be asked again: {max_age}");
    let (status, _, _) = post(&world, "/v1/historical", &body, Some(&tag)).await;
    assert_eq!(status, 304);

    world.move_upstream_clock(now + Duration::hours(2)).await;
    world.clock.advance(Wait::from_millis(2500));
    let (status, headers, text) = post(&world, "/v1/historical", &body, Some(&tag)).await;
    assert_eq!(status, 200, "the answer changed: {text}");
    assert_ne!(header(&headers, "etag"), tag);
    let answer: Value = serde_json::from_str(&text).unwrap();
    assert!(answer["data"]["days"].get(ids[2].to_string()).is_none(), "the deleted Tweet is left out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_unsettled_hour_that_moved_changes_the_tag() {
    let world = World::start(
        Config { settle_hours: 48, ..Config::default() },
        &[("STITCHER__STORE__FRESH_TTL_SECS", "1")],
    )
    .await;
    let ids: Vec<TweetId> = (0..10).map(|k| tweet(world.now, 6.0 + k as f64 * 0.1, k)).collect();
    let body = question(&ids, world.now - Duration::days(3), world.now);
    let (status, headers, text) = post(&world, "/v1/historical", &body, None).await;
    assert_eq!(status, 200, "{text}");
    let tag = header(&headers, "etag").to_string();
    assert_eq!(header(&headers, "cache-control"), "private, max-age=1", "unsettled: a fresh hour's life");
    let (status, _, _) = post(&world, "/v1/historical", &body, Some(&tag)).await;
    assert_eq!(status, 304, "within the fresh TTL nothing moved");

    world.move_upstream_clock(world.now + Duration::hours(6)).await;
    world.clock.advance(Wait::from_millis(1500));
    let (status, headers, _) = post(&world, "/v1/historical", &body, Some(&tag)).await;
    assert_eq!(status, 200, "recent hours moved");
    assert_ne!(header(&headers, "etag"), tag);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn answers_of_other_questions_have_other_tags_even_with_the_same_counts() {
    let world = World::start(Config::default(), &[]).await;
    let ids: Vec<TweetId> = (0..3).map(|k| tweet(world.now, 200.0 + k as f64, k)).collect();
    // One day, a Monday, by week and by day: the same counts under the same key, in
    // another CSV column and with other meta.
    let mut weekly = question(
        &ids,
        engagement::parse_instant("2026-03-02").unwrap(),
        engagement::parse_instant("2026-03-03").unwrap(),
    );
    weekly["groupings"] = json!({"g": {"group_by": ["engagement.week"]}});
    let mut daily = weekly.clone();
    daily["groupings"] = json!({"g": {"group_by": ["engagement.day"]}});
    let (_, by_week, week_csv) = post(&world, "/v1/historical?format=csv", &weekly, None).await;
    let (_, by_day, day_csv) = post(&world, "/v1/historical?format=csv", &daily, None).await;
    assert_ne!(week_csv, day_csv);
    assert_ne!(header(&by_week, "etag"), header(&by_day, "etag"));
    let (status, _, _) =
        post(&world, "/v1/historical?format=csv", &weekly, Some(header(&by_day, "etag"))).await;
    assert_eq!(status, 200, "the day's tag is not the week's");
    // The same hours in two zones of one offset: the same counts, another zone in meta.
    let mut new_york = daily.clone();
    new_york["start"] = json!("2026-01-05T05:00:00Z");
    new_york["end"] = json!("2026-01-06T05:00:00Z");
    new_york["time_zone"] = json!("America/New_York");
    let mut fixed = new_york.clone();
    fixed["time_zone"] = json!("-05:00");
    let (_, a, text_a) = post(&world, "/v1/historical", &new_york, None).await;
    let (_, b, text_b) = post(&world, "/v1/historical", &fixed, None).await;
    let (a_json, b_json): (Value, Value) =
        (serde_json::from_str(&text_a).unwrap(), serde_json::from_str(&text_b).unwrap());
    assert_eq!(a_json["data"], b_json["data"]);
    assert_ne!(
        header(&a, "etag"),
        header(&b, "etag"),
        "meta differs: {} / {}",
        a_json["meta"],
        b_json["meta"]
    );
}

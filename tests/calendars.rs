//! Local calendars: days, hours, weeks and months in a time zone equal the simulator's
//! hourly oracle answer re-bucketed here, with the store on and off, cold and repeated;
//! zones whose offset is part of an hour are refused where they would cut UTC hours, and the
//! drop-in endpoint keeps the API's UTC days.

#![allow(clippy::unwrap_used)]

use chrono::{DateTime, Datelike, Duration, NaiveDate, NaiveDateTime, TimeZone, Timelike, Utc};
use chrono_tz::Tz;
use end_to_end::{World, tweet};
use engagement::TweetId;
use engagement::time::format_instant;
use serde_json::{Map, Value, json};
use simulator::Config;

/// Where a test's zone puts an instant: its wall-clock time.
#[derive(Clone, Copy)]
enum Place {
    Named(Tz),
    Fixed(i64),
}

impl Place {
    fn local(self, t: DateTime<Utc>) -> NaiveDateTime {
        match self {
            Place::Named(tz) => t.with_timezone(&tz).naive_local(),
            Place::Fixed(secs) => t.naive_utc() + Duration::seconds(secs),
        }
    }

    /// The first instant of local date `date`.
    fn midnight(self, date: &str) -> DateTime<Utc> {
        let midnight = NaiveDate::parse_from_str(date, "%Y-%m-%d").unwrap().and_hms_opt(0, 0, 0).unwrap();
        match self {
            Place::Named(tz) => tz.from_local_datetime(&midnight).earliest().unwrap().with_timezone(&Utc),
            Place::Fixed(secs) => Utc.from_utc_datetime(&(midnight - Duration::seconds(secs))),
        }
    }
}

/// The key of `level` for the UTC hour `t` in `place`.
fn key(level: &str, place: Place, t: DateTime<Utc>) -> String {
    let local = place.local(t);
    match level {
        "engagement.day" => local.format("%Y-%m-%d").to_string(),
        "engagement.hour" => format!("{:02}", local.hour()),
        "engagement.week" => {
            let monday = local.date() - Duration::days(local.weekday().num_days_from_monday().into());
            monday.format("%Y-%m-%d").to_string()
        }
        "engagement.month" => local.format("%Y-%m").to_string(),
        other => panic!("not a time level: {other}"),
    }
}

/// The oracle's hourly answer for `ids` over `[start, end)` (UTC), cut into `levels` in
/// `place`: each UTC hour's count added under its local keys.
async fn expected(
    world: &World,
    ids: &[TweetId],
    types: &[&str],
    (start, end): (DateTime<Utc>, DateTime<Utc>),
    levels: &[&str],
    place: Place,
) -> Value {
    let ids: Vec<String> = ids.iter().map(ToString::to_string).collect();
    let hourly = world
        .oracle(&json!({
            "tweet_ids": ids, "engagement_types": types,
            "groupings": {"h": {"group_by": ["tweet.id", "engagement.type", "engagement.day", "engagement.hour"]}},
            "start": format_instant(start), "end": format_instant(end),
        }))
        .await;
    let mut out = Map::new();
    for (tweet, by_type) in hourly["h"].as_object().unwrap() {
        for (ty, days) in by_type.as_object().unwrap() {
            for (day, hours) in days.as_object().unwrap() {
                for (hour, count) in hours.as_object().unwrap() {
                    let t = engagement::parse_instant(&format!("{day}T{hour}:00:00Z")).unwrap();
                    let count: u64 = count.as_str().unwrap().parse().unwrap();
                    let path: Vec<String> = levels
                        .iter()
                        .map(|level| match *level {
                            "tweet.id" => tweet.clone(),
                            "engagement.type" => ty.clone(),
                            time => key(time, place, t),
                        })
                        .collect();
                    add(&mut out, &path, count);
                }
            }
        }
    }
    Value::Object(out)
}

fn add(node: &mut Map<String, Value>, path: &[String], count: u64) {
    match path {
        [last] => {
            let before = node.get(last).and_then(Value::as_u64).unwrap_or(0);
            node.insert(last.clone(), json!(before + count));
        }
        [first, rest @ ..] => {
            let child = node.entry(first.clone()).or_insert_with(|| json!({}));
            add(child.as_object_mut().unwrap(), rest, count);
        }
        [] => {}
    }
}

/// Tweets created well before 2026, so every hour of the ranges asked counts.
fn tweets(world: &World) -> Vec<TweetId> {
    let days = (world.now - engagement::parse_instant("2025-06-01").unwrap()).num_days() as f64;
    (0..30).map(|k| tweet(world.now, days + k as f64, k)).collect()
}

/// A question over local dates `start` to `end` in `zone`, asked twice: each answer's
/// groupings equal the oracle's hours cut here, the repeat costs no call with the store on,
/// and `meta` gives the range locally and in UTC.
async fn local_calendar_equals_the_oracle(
    world: &World,
    store: bool,
    (zone, place): (&str, Place),
    dates: (&str, &str),
) {
    let ids = tweets(world);
    let types = ["impressions", "favorites"];
    let groupings = json!({
        "days": {"group_by": ["tweet.id", "engagement.type", "engagement.day"]},
        "hours": {"group_by": ["engagement.day", "engagement.hour"]},
        "weeks and months": {"group_by": ["engagement.type", "engagement.month", "engagement.week"]},
    });
    let body = json!({
        "tweet_ids": ids.iter().map(ToString::to_string).collect::<Vec<_>>(),
        "engagement_types": types, "groupings": groupings,
        "start": dates.0, "end": dates.1, "time_zone": zone,
    });
    let utc = (place.midnight(dates.0), place.midnight(dates.1));
    let mut calls = Vec::new();
    for round in 0..2 {
        let before = world.upstream_calls();
        let (status, answer) = world.ask("/v1/historical", &body).await;
        assert_eq!(status, 200, "{zone} {dates:?}: {answer}");
        calls.push(world.upstream_calls() - before);
        for (name, spec) in groupings.as_object().unwrap() {
            let levels: Vec<&str> =
                spec["group_by"].as_array().unwrap().iter().map(|l| l.as_str().unwrap()).collect();
            let want = expected(world, &ids, &types, utc, &levels, place).await;
            assert_eq!(answer["data"][name], want, "{zone} {dates:?} round {round}: grouping {name}");
        }
        let meta = &answer["meta"];
        assert_eq!(meta["time_zone"], zone);
        assert_eq!(meta["start"], format_instant(utc.0));
        assert_eq!(meta["end"], format_instant(utc.1));
        assert!(
            meta["local_start"].as_str().unwrap().starts_with(&format!("{}T00:00:00", dates.0)),
            "{meta}"
        );
        assert!(meta["local_end"].as_str().unwrap().starts_with(&format!("{}T00:00:00", dates.1)), "{meta}");
    }
    assert!(calls[0] > 0, "the first answer was fetched");
    if store {
        assert_eq!(calls[1], 0, "{zone}: a repeat is answered from the store");
    }
}

async fn local_calendars(store: bool) {
    let env: &[(&str, &str)] = if store { &[] } else { &[("STITCHER__STORE__ENABLED", "false")] };
    let world = World::start(Config::default(), env).await;
    let ny = ("America/New_York", Place::Named(chrono_tz::America::New_York));
    // Both of 2026's changes: March 8 (23 hours) and November 1 (25 hours).
    local_calendar_equals_the_oracle(&world, store, ny, ("2026-03-01", "2026-03-16")).await;
    local_calendar_equals_the_oracle(&world, store, ny, ("2026-10-26", "2026-11-04")).await;
    let sydney = ("Australia/Sydney", Place::Named(chrono_tz::Australia::Sydney));
    // Sydney's clocks go back on April 5.
    local_calendar_equals_the_oracle(&world, store, sydney, ("2026-03-30", "2026-04-09")).await;
    local_calendar_equals_the_oracle(
        &world,
        store,
        ("+02:00", Place::Fixed(7200)),
        ("2026-01-26", "2026-02-10"),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn local_days_hours_weeks_and_months_equal_the_oracle_with_the_store() {
    local_calendars(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn local_days_hours_weeks_and_months_equal_the_oracle_without_the_store() {
    local_calendars(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_day_of_25_hours_counts_the_repeated_hour_twice_under_one_key() {
    let world = World::start(Config::default(), &[]).await;
    let ids = &tweets(&world)[..3];
    let body = json!({
        "tweet_ids": ids.iter().map(ToString::to_string).collect::<Vec<_>>(),
        "engagement_types": ["impressions"],
        "groupings": {"hours": {"group_by": ["engagement.day", "engagement.hour"]}},
        "start": "2026-11-01", "end": "2026-11-02", "time_zone": "America/New_York",
    });
    let (status, answer) = world.ask("/v1/historical", &body).await;
    assert_eq!(status, 200, "{answer}");
    let day = answer["data"]["hours"]["2026-11-01"].as_object().unwrap();
    assert_eq!(day.len(), 24, "25 hours under 24 keys: {day:?}");
    // 01:00 EDT is 05:00Z and 01:00 EST is 06:00Z.
    let utc = json!({
        "tweet_ids": ids.iter().map(ToString::to_string).collect::<Vec<_>>(),
        "engagement_types": ["impressions"],
        "groupings": {"h": {"group_by": ["engagement.hour"]}},
        "start": "2026-11-01T05:00:00Z", "end": "2026-11-01T07:00:00Z",
    });
    let oracle = world.oracle(&utc).await;
    let both: u64 =
        ["05", "06"].iter().map(|h| oracle["h"][h].as_str().unwrap().parse::<u64>().unwrap()).sum();
    assert_eq!(day["01"], json!(both));
    let mut spring = body.clone();
    spring["start"] = json!("2026-03-08");
    spring["end"] = json!("2026-03-09");
    let (status, answer) = world.ask("/v1/historical", &spring).await;
    assert_eq!(status, 200, "{answer}");
    let day = answer["data"]["hours"]["2026-03-08"].as_object().unwrap();
    assert_eq!(day.len(), 23, "{day:?}");
    assert!(day.get("02").is_none(), "the skipped hour has no key");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn zones_of_part_hours_are_refused_where_they_cut_utc_hours_and_answered_where_not() {
    let world = World::start(Config::default(), &[]).await;
    let ids: Vec<String> = tweets(&world)[..4].iter().map(ToString::to_string).collect();
    let days = json!({
        "tweet_ids": ids, "engagement_types": ["impressions"],
        "groupings": {"d": {"group_by": ["tweet.id", "engagement.day"]}},
        "start": "2026-05-01T00:00:00Z", "end": "2026-05-08T00:00:00Z", "time_zone": "Asia/Kolkata",
    });
    let before = world.upstream_calls();
    let (status, answer) = world.ask("/v1/historical", &days).await;
    assert_eq!(status, 400, "{answer}");
    let message = answer["errors"].to_string();
    for said in ["Asia/Kolkata", "UTC+05:30", "whole number of hours", "engagement.day"] {
        assert!(message.contains(said), "{said}: {message}");
    }
    // A date-only end is local midnight, 18:30 UTC: inside a UTC hour.
    let mut totals = days.clone();
    totals["groupings"] = json!({"t": {"group_by": ["tweet.id", "engagement.type"]}});
    totals["end"] = json!("2026-05-08");
    let (status, answer) = world.ask("/v1/historical", &totals).await;
    assert_eq!(status, 400, "{answer}");
    assert!(answer["errors"].to_string().contains("inside a UTC hour"), "{answer}");
    assert_eq!(world.upstream_calls(), before, "a refused question makes no call");
    // Totals per Tweet between whole UTC hours are answered, as in UTC.
    totals["end"] = json!("2026-05-08T00:00:00Z");
    let (status, answer) = world.ask("/v1/historical", &totals).await;
    assert_eq!(status, 200, "{answer}");
    let mut utc = totals.clone();
    utc.as_object_mut().unwrap().remove("time_zone");
    let oracle = world.oracle(&utc).await;
    assert_eq!(end_to_end::counts_as_strings(answer["data"]["t"].clone()), oracle["t"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_drop_in_keeps_utc_days_and_refuses_a_zone_and_the_service_s_own_levels() {
    let world = World::start(Config::default(), &[]).await;
    let ids: Vec<String> = tweets(&world)[..2].iter().map(ToString::to_string).collect();
    let body = json!({
        "tweet_ids": ids, "engagement_types": ["impressions"],
        "groupings": {"d": {"group_by": ["engagement.day"]}},
        "start": "2026-05-01", "end": "2026-05-08",
    });
    let mut zoned = body.clone();
    zoned["time_zone"] = json!("Europe/Berlin");
    let (status, answer) = world.ask("/insights/engagement/historical", &zoned).await;
    assert_eq!(status, 400, "{answer}");
    assert!(
        answer["errors"][0].as_str().unwrap().starts_with("\"time_zone\" is only for the native answer"),
        "{answer}"
    );
    let mut weekly = body.clone();
    weekly["groupings"] = json!({"w": {"group_by": ["engagement.week"]}});
    let (status, answer) = world.ask("/insights/engagement/historical", &weekly).await;
    assert_eq!(status, 400, "{answer}");
    assert!(answer["errors"].to_string().contains("engagement.week"), "{answer}");
    let (status, answer) = world.ask("/insights/engagement/historical", &body).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["d"].as_object().unwrap().len(), 7, "UTC days");
    let (status, answer) = world.ask("/v1/historical", &weekly).await;
    assert_eq!(status, 200, "{answer}");
    // 2026-05-01 is a Friday: the range cuts the weeks of April 27 and May 4.
    assert_eq!(answer["meta"]["partial_buckets"], json!({"engagement.week": ["2026-04-27", "2026-05-04"]}));
    assert!(answer["meta"].get("time_zone").is_none(), "UTC answers as before: {}", answer["meta"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn derived_numbers_and_jobs_count_over_the_local_range() {
    let world = World::start(Config::default(), &[]).await;
    let ids = tweets(&world);
    let strings: Vec<String> = ids.iter().map(ToString::to_string).collect();
    let body = json!({
        "tweet_ids": strings, "engagement_types": ["impressions", "engagements"],
        "groupings": {"weekly": {"group_by": ["engagement.type", "engagement.week"]}},
        "start": "2026-03-02", "end": "2026-03-16", "time_zone": "America/New_York",
        "derive": ["engagement_rate"], "top": {"by": "impressions", "n": 3},
    });
    let (status, answer) = world.ask("/v1/historical", &body).await;
    assert_eq!(status, 200, "{answer}");
    // New York's midnights: 05:00Z on March 2 (EST), 04:00Z on March 16 (EDT).
    let utc = json!({
        "tweet_ids": strings, "engagement_types": ["impressions", "engagements"],
        "groupings": {"t": {"group_by": ["tweet.id", "engagement.type"]}},
        "start": "2026-03-02T05:00:00Z", "end": "2026-03-16T04:00:00Z",
    });
    let oracle = world.oracle(&utc).await;
    let count = |id: &str, ty: &str| oracle["t"][id][ty].as_str().unwrap().parse::<u64>().unwrap();
    let (e, i) = strings
        .iter()
        .fold((0, 0), |(e, i), id| (e + count(id, "engagements"), i + count(id, "impressions")));
    let overall = answer["derived"]["engagement_rate"]["overall"].as_f64().unwrap();
    assert!((overall - e as f64 / i as f64).abs() < 1e-12, "{overall}");
    let mut ranked: Vec<(u64, &String)> = strings.iter().map(|id| (count(id, "impressions"), id)).collect();
    ranked.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.len().cmp(&b.1.len())).then(a.1.cmp(b.1)));
    let top: Vec<&str> =
        answer["top"].as_array().unwrap().iter().map(|t| t["tweet_id"].as_str().unwrap()).collect();
    assert_eq!(top, ranked[..3].iter().map(|(_, id)| id.as_str()).collect::<Vec<_>>());
    assert_eq!(answer["data"]["weekly"]["impressions"].as_object().unwrap().len(), 2, "two whole weeks");
    assert!(answer["meta"].get("partial_buckets").is_none(), "{}", answer["meta"]);

    // A job asks the same and gets the same.
    let result: Value = world.job_result(&body, "", None).await.json().await.unwrap();
    assert_eq!(result["data"], answer["data"]);
    assert_eq!(result["derived"], answer["derived"]);
}

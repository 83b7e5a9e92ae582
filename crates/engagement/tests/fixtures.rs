//! Every response shape from the API's documentation parses, and re-serializes to the same
//! JSON (counts become strings, as the API writes them).

use std::path::PathBuf;

use chrono::{Duration, Timelike};
use engagement::{Endpoint, EngagementType, HourlyCounts, Limits, Query, Response, TweetId, render};
use serde_json::Value;

fn fixture(name: &str) -> Value {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// The fixture with every number turned into its decimal string.
fn counts_as_strings(v: Value) -> Value {
    match v {
        Value::Number(n) => Value::String(n.to_string()),
        Value::Object(m) => Value::Object(m.into_iter().map(|(k, v)| (k, counts_as_strings(v))).collect()),
        Value::Array(a) => Value::Array(a.into_iter().map(counts_as_strings).collect()),
        other => other,
    }
}

#[test]
fn every_response_fixture_round_trips() {
    for name in [
        "28hr-hourly-series.json",
        "grand-totals.json",
        "historical-hour-of-day.json",
        "historical-tweet-type.response.json",
        "historical-unavailable.json",
        "totals-owned.json",
        "video-views-unsupported.json",
        "error-forbidden.json",
        "error-gzip.json",
    ] {
        let original = fixture(name);
        let parsed: Response =
            serde_json::from_value(original.clone()).unwrap_or_else(|e| panic!("{name}: {e}"));
        let again = serde_json::to_value(&parsed).unwrap();
        assert_eq!(again, counts_as_strings(original), "{name}");
    }
}

#[test]
fn special_members_are_read_as_such() {
    let r: Response = serde_json::from_value(fixture("historical-unavailable.json")).unwrap();
    assert_eq!(r.unavailable_tweet_ids, vec![TweetId(323456789)]);
    assert_eq!(r.errors, vec!["1 Tweet ID(s) are unavailable".to_string()]);
    assert_eq!(
        r.groupings["group1"].get("423456789").and_then(|n| n.get("retweets")),
        Some(&engagement::Node::Count(26))
    );
    let r: Response = serde_json::from_value(fixture("video-views-unsupported.json")).unwrap();
    assert_eq!(r.unsupported_for_video_views_tweet_ids.len(), 2);
    let r: Response = serde_json::from_value(fixture("historical-hour-of-day.json")).unwrap();
    let hours = r.groupings["hourly_timeseries"].get("impressions").and_then(|n| n.get("695310089847111681"));
    assert!(matches!(hours, Some(engagement::Node::Branch(b)) if b.len() == 24));
}

/// Count = 1 in every hour: each leaf then counts its hours.
struct Ones;
impl HourlyCounts for Ones {
    fn fill(&self, _: TweetId, _: EngagementType, _: chrono::DateTime<chrono::Utc>, out: &mut [u64]) {
        out.fill(1);
    }
}

#[test]
fn the_documented_request_renders_the_documented_shape() {
    let request = fixture("historical-tweet-type.request.json");
    let now = engagement::parse_instant("2016-01-01").unwrap();
    let q = Query::from_json(Endpoint::Historical, &request, &Limits::of(Endpoint::Historical), now).unwrap();
    let range = q.range.unwrap();
    let trees = render(&q.tweet_ids, &q.types, &q.groupings, range, &engagement::Zone::Utc, &Ones);
    let rendered = serde_json::to_value(&Response {
        start: Some(engagement::time::format_instant(range.start)),
        end: Some(engagement::time::format_instant(range.end)),
        groupings: trees,
        ..Response::default()
    })
    .unwrap();
    let documented = fixture("historical-tweet-type.response.json");
    assert_eq!(rendered["start"], documented["start"]);
    assert_eq!(rendered["end"], documented["end"]);
    let g = "types-by-tweet-id";
    let keys = |v: &Value| -> Vec<(String, Vec<String>)> {
        v[g].as_object()
            .unwrap()
            .iter()
            .map(|(k, t)| (k.clone(), t.as_object().unwrap().keys().cloned().collect()))
            .collect()
    };
    assert_eq!(keys(&rendered), keys(&documented));
    // 14 days of ones: 336 hours in every leaf.
    assert_eq!(rendered[g]["223456789"]["url_clicks"], "336");
}

#[test]
fn the_28hr_fixture_shape_is_what_render_gives_for_its_window() {
    let documented = fixture("28hr-hourly-series.json");
    let range = engagement::TimeRange::covering(
        engagement::parse_instant("2015-09-14T17:00:00Z").unwrap(),
        engagement::parse_instant("2015-09-15T00:00:00Z").unwrap(),
    );
    let groupings = vec![engagement::Grouping {
        name: "hourly-time-series".into(),
        group_by: engagement::GroupBy::ALL.to_vec(),
    }];
    let trees = render(
        &[TweetId(123456789)],
        &[EngagementType::Impressions, EngagementType::Engagements],
        &groupings,
        range,
        &engagement::Zone::Utc,
        &Ones,
    );
    let rendered = serde_json::to_value(&trees["hourly-time-series"]).unwrap();
    let day = &rendered["123456789"]["impressions"]["2015-09-14"];
    let documented_day = &documented["hourly-time-series"]["123456789"]["impressions"]["2015-09-14"];
    let hours = |v: &Value| v.as_object().unwrap().keys().cloned().collect::<Vec<_>>();
    assert_eq!(hours(day), hours(documented_day));
    assert_eq!(range.start.hour(), 17);
    assert_eq!(range.end - range.start, Duration::hours(7));
}

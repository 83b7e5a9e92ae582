//! Traces, from the real binary to an OTLP/HTTP receiver of the test's own: a question
//! asked with a client's `traceparent` arrives as spans of that trace (the request under
//! the client's span, the question under the request, the upstream calls under the
//! question, with their batch, window, attempt and status), the calls carry the trace to
//! the upstream, and the log lines name the trace.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::routing::post;
use serde_json::Value;
use simulator::Config;

use crate::support::{PER_TWEET, Stitcher, question, simulator};

/// The spans a receiver got: each with its trace, its own and its parent's ID, its name and
/// its attributes (as strings), and the service that sent it.
#[derive(Debug, Clone)]
struct Span {
    trace: String,
    id: String,
    parent: String,
    name: String,
    attributes: Value,
    service: String,
}

/// An OTLP/HTTP receiver (JSON) on a port of its own: its URL and what it received.
async fn receiver() -> (String, Arc<Mutex<Vec<Span>>>) {
    let got = Arc::new(Mutex::new(Vec::new()));
    let kept = Arc::clone(&got);
    let app = axum::Router::new().route(
        "/v1/traces",
        post(move |body: Bytes| {
            let kept = Arc::clone(&kept);
            async move {
                let sent: Value = serde_json::from_slice(&body).expect("OTLP JSON");
                kept.lock().unwrap().extend(spans_of(&sent));
                "{}"
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, got)
}

fn spans_of(sent: &Value) -> Vec<Span> {
    let mut out = Vec::new();
    for resource in sent["resourceSpans"].as_array().into_iter().flatten() {
        let service = resource["resource"]["attributes"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|a| a["key"] == "service.name")
            .map(|a| a["value"]["stringValue"].as_str().unwrap_or_default().to_string())
            .unwrap_or_default();
        for scope in resource["scopeSpans"].as_array().into_iter().flatten() {
            for span in scope["spans"].as_array().into_iter().flatten() {
                let attributes: serde_json::Map<String, Value> = span["attributes"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|a| {
                        let value = a["value"].as_object().and_then(|v| v.values().next()).cloned();
                        (a["key"].as_str().unwrap_or_default().to_string(), value.unwrap_or(Value::Null))
                    })
                    .collect();
                out.push(Span {
                    trace: span["traceId"].as_str().unwrap_or_default().to_lowercase(),
                    id: span["spanId"].as_str().unwrap_or_default().to_lowercase(),
                    parent: span["parentSpanId"].as_str().unwrap_or_default().to_lowercase(),
                    name: span["name"].as_str().unwrap_or_default().to_string(),
                    attributes: Value::Object(attributes),
                    service: service.clone(),
                });
            }
        }
    }
    out
}

const TRACE: &str = "0af7651916cd43dd8448eb211c80319c";
const CLIENT_SPAN: &str = "b7ad6b7169203331";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_question_s_spans_arrive_under_the_client_s_trace_with_its_calls_as_children() {
    let (receiver_url, got) = receiver().await;
    let (sim, sim_url) = simulator(Config::default()).await;
    let stitcher = Stitcher::start(&[
        ("STITCHER__UPSTREAM__BASE_URL", &sim_url),
        ("STITCHER__TELEMETRY__OTLP_ENDPOINT", &receiver_url),
    ])
    .await;
    // 30 Tweets over 2 windows: 2 batches × 2 windows.
    let body = question(30, 2, &["impressions"], PER_TWEET);
    let answer = reqwest::Client::new()
        .post(format!("{}/v1/historical", stitcher.url))
        .bearer_auth("demo-key")
        .header("traceparent", format!("00-{TRACE}-{CLIENT_SPAN}-01"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status().as_u16(), 200);

    let ours = |got: &Arc<Mutex<Vec<Span>>>| -> Vec<Span> {
        got.lock().unwrap().iter().filter(|s| s.trace == TRACE).cloned().collect()
    };
    let mut spans = Vec::new();
    for _ in 0..100 {
        spans = ours(&got);
        if spans.iter().filter(|s| s.name == "upstream call").count() >= 4
            && spans.iter().any(|s| s.name == "request")
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let named = |name: &str| spans.iter().filter(|s| s.name == name).cloned().collect::<Vec<_>>();
    let request = named("request");
    assert_eq!(request.len(), 1, "{spans:#?}");
    let request = &request[0];
    assert_eq!(request.parent, CLIENT_SPAN, "the request continues the client's span");
    assert_eq!(request.service, "stitcher");
    let question_span = named("question");
    assert_eq!(question_span.len(), 1, "{spans:#?}");
    assert_eq!(question_span[0].parent, request.id, "the question is the request's");
    let calls = named("upstream call");
    assert_eq!(calls.len(), 4, "{:?}", spans.iter().map(|s| (&s.name, &s.parent, &s.id)).collect::<Vec<_>>());
    // Each call is the question's.
    for call in &calls {
        assert_eq!(call.parent, question_span[0].id, "{call:?}");
        assert_eq!(call.attributes["status"], "200", "{call:?}");
        // OTLP writes 64-bit integers as strings.
        assert_eq!(call.attributes["attempt"], "1", "{call:?}");
        assert!(call.attributes["window"].as_str().is_some_and(|w| w.contains('/')), "{call:?}");
    }
    let batches: std::collections::BTreeSet<String> =
        calls.iter().map(|c| c.attributes["batch"].to_string()).collect();
    assert_eq!(batches.len(), 2, "{batches:?}");
    assert!(!named("store read").is_empty(), "{spans:#?}");

    // The calls carried the trace to the upstream, and the log lines name it.
    assert_eq!(sim.stats().by_trace.get(TRACE), Some(&4), "{:?}", sim.stats().by_trace);
    let logs = stitcher.logs();
    assert!(logs.lines().any(|l| l.contains("question answered") && l.contains(TRACE)), "{logs}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_refresh_arrives_as_a_span_with_its_questions_and_calls_beneath() {
    let (receiver_url, got) = receiver().await;
    let (_sim, sim_url) = simulator(Config::default()).await;
    let stitcher = Stitcher::start(&[
        ("STITCHER__UPSTREAM__BASE_URL", &sim_url),
        ("STITCHER__TELEMETRY__OTLP_ENDPOINT", &receiver_url),
    ])
    .await;
    // 30 Tweets over 40 days and today: 2 batches × 2 windows.
    let ids: Vec<String> = (0..30).map(|k| crate::support::tweet(700, k).to_string()).collect();
    let watch = serde_json::json!({"tweet_ids": ids, "engagement_types": ["impressions"], "lookback_days": 40, "refresh_secs": 3600});
    let made = crate::support::post(&stitcher, "/v1/watches", &watch).await;
    assert_eq!(made.status().as_u16(), 201);
    let id = made.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_string();

    let mut spans = Vec::new();
    for _ in 0..100 {
        spans = got.lock().unwrap().clone();
        if spans.iter().filter(|s| s.name == "upstream call").count() >= 4
            && spans.iter().any(|s| s.name == "watch refresh")
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let refresh: Vec<&Span> = spans.iter().filter(|s| s.name == "watch refresh").collect();
    assert_eq!(refresh.len(), 1, "{spans:#?}");
    assert_eq!(refresh[0].attributes["watch"], id.as_str());
    assert_eq!(refresh[0].service, "stitcher");
    let questions: Vec<&Span> =
        spans.iter().filter(|s| s.name == "question" && s.parent == refresh[0].id).collect();
    assert_eq!(questions.len(), 1, "one question of its 30 Tweets beneath the refresh: {spans:#?}");
    let calls: Vec<&Span> =
        spans.iter().filter(|s| s.name == "upstream call" && s.parent == questions[0].id).collect();
    assert_eq!(calls.len(), 4, "{spans:#?}");
    assert!(spans.iter().all(|s| s.trace == refresh[0].trace || s.name != "upstream call"));
}

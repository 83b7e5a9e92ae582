//! Prometheus metrics: one recorder for the process, served at `GET /metrics`.
//!
//! | metric | kind | labels |
//! |---|---|---|
//! | `stitcher_requests_total` | counter | `route`, `status` |
//! | `stitcher_request_duration_seconds` | histogram | `route` |
//! | `stitcher_upstream_calls_total` | counter | `status` (`200`, `429`, `503`, ..., `timeout`, `error`) |
//! | `stitcher_upstream_retries_total` | counter | |
//! | `stitcher_rate_limit_wait_seconds` | gauge (total time calls waited for the budget) | |
//! | `stitcher_slices_total` | counter | `kind` (`planned`, `fetched`, `synthesized`, `from_store`) |
//! | `stitcher_store_hits_total` | counter (Tweet-hours a question found held) | |
//! | `stitcher_store_misses_total` | counter (Tweet-hours a question had to fetch) | |
//! | `stitcher_store_bytes` | gauge (encoded size of the settled facts held) | |
//! | `stitcher_store_evictions_total` | counter (Tweets whose facts were evicted) | |
//! | `stitcher_upstream_calls_coalesced_total` | counter (calls a question shared with another instead of making) | |
//! | `stitcher_ledger_handles_total` | counter (handles counted for the month) | `cap` (`under`, `over`) |
//! | `stitcher_ledger_refused_total` | counter (questions refused for the month's handle cap) | |
//! | `stitcher_upstream_in_flight` | gauge | |
//! | `stitcher_connections_open` | gauge | |
//! | `stitcher_connections_refused_total` | counter (closed at once: `server.max_connections` were open) | |
//! | `stitcher_connections_timed_out_total` | counter (closed for a head, an idle wait or a write that took too long) | |

use std::sync::OnceLock;
use std::time::Instant;

use axum::extract::{MatchedPath, Request};
use axum::middleware::Next;
use axum::response::Response;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// The process's recorder, installed on first use. `None` if another recorder was
/// installed first (then metrics go there).
pub fn handle() -> Option<&'static PrometheusHandle> {
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets_for_metric(
                    Matcher::Full("stitcher_request_duration_seconds".into()),
                    &[0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0],
                )
                .ok()?
                .build_recorder();
            let handle = recorder.handle();
            metrics::set_global_recorder(recorder).ok()?;
            Some(handle)
        })
        .as_ref()
}

/// Makes the counters that may stay at zero for a while visible from the start, so a
/// dashboard reads 0 rather than no data.
pub fn start_at_zero() {
    for name in [
        "stitcher_store_hits_total",
        "stitcher_store_misses_total",
        "stitcher_store_evictions_total",
        "stitcher_upstream_calls_coalesced_total",
        "stitcher_ledger_refused_total",
        "stitcher_upstream_retries_total",
    ] {
        metrics::counter!(name).increment(0);
    }
}

/// Counts and times every request by its route and status.
pub async fn track(req: Request, next: Next) -> Response {
    let route = req.extensions().get::<MatchedPath>().map_or("unmatched", MatchedPath::as_str).to_owned();
    let started = Instant::now();
    let response = next.run(req).await;
    let status = response.status().as_u16().to_string();
    metrics::counter!("stitcher_requests_total", "route" => route.clone(), "status" => status).increment(1);
    metrics::histogram!("stitcher_request_duration_seconds", "route" => route)
        .record(started.elapsed().as_secs_f64());
    response
}

/// Records one upstream attempt by its outcome.
pub fn upstream_call(outcome: &str) {
    metrics::counter!("stitcher_upstream_calls_total", "status" => outcome.to_owned()).increment(1);
}

/// Records the slices of one question.
pub fn slices(planned: usize, fetched: usize, synthesized: usize, from_store: usize, retries: u32) {
    for (kind, n) in
        [("planned", planned), ("fetched", fetched), ("synthesized", synthesized), ("from_store", from_store)]
    {
        metrics::counter!("stitcher_slices_total", "kind" => kind).increment(n as u64);
    }
    metrics::counter!("stitcher_upstream_retries_total").increment(u64::from(retries));
}

/// Records the Tweet-hours one question found held and had to fetch.
pub fn store_lookups(hits: u64, misses: u64) {
    metrics::counter!("stitcher_store_hits_total").increment(hits);
    metrics::counter!("stitcher_store_misses_total").increment(misses);
}

/// Records a call a question shared instead of making.
pub fn coalesced() {
    metrics::counter!("stitcher_upstream_calls_coalesced_total").increment(1);
}

/// Records a handle counted for the month.
pub fn handle_counted(over_cap: bool) {
    let cap = if over_cap { "over" } else { "under" };
    metrics::counter!("stitcher_ledger_handles_total", "cap" => cap).increment(1);
}

/// Records a question refused for the month's handle cap.
pub fn handle_refused() {
    metrics::counter!("stitcher_ledger_refused_total").increment(1);
}

/// Records whether the shared Redis answered, as a gauge (1: up).
pub fn redis_up(up: bool) {
    metrics::gauge!("stitcher_redis_up").set(if up { 1.0 } else { 0.0 });
}

/// Records one time this replica did `what` (budget, facts, ledger, nonce, usage) on its own
/// because Redis was away.
pub fn redis_fallback(what: &'static str) {
    metrics::counter!("stitcher_redis_fallbacks_total", "what" => what).increment(1);
}

/// Records Tweet-hours a question found in the shared tier (fetched by another replica).
pub fn shared_hits(hours: u64) {
    metrics::counter!("stitcher_store_shared_hits_total").increment(hours);
}

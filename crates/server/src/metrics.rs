//! Prometheus metrics: one recorder for the process, served at `GET /metrics`. The engine
//! records its own (`engine::metrics`); the server records these, the gauges when scraped:
//!
//! | metric | kind | labels |
//! |---|---|---|
//! | `stitcher_requests_total` | counter | `route`, `status` |
//! | `stitcher_request_duration_seconds` | histogram | `route` |
//! | `stitcher_rate_limit_wait_seconds` | gauge (total time calls waited for the budget) | |
//! | `stitcher_store_bytes` | gauge (encoded size of the settled facts held) | |
//! | `stitcher_store_evictions_total` | counter (Tweets whose facts were evicted) | |
//! | `stitcher_upstream_in_flight` | gauge | |
//! | `stitcher_connections_open` | gauge | |
//! | `stitcher_connections_refused_total` | counter (closed at once: `server.max_connections` were open) | |
//! | `stitcher_connections_timed_out_total` | counter (closed for a head, an idle wait or a write that took too long) | |
//! | `stitcher_job_results_bytes` | gauge (bytes the kept results of finished jobs hold) | |

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

//! The probes operators and balancers ask: liveness, readiness (with Redis and the
//! upstream), and the Prometheus metrics.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::metrics::handle;
use crate::schemas::{RouteErrors, Status};
use crate::state::AppState;

/// `GET /livez`: the process answers.
#[utoipa::path(get, path = "/livez", tag = "operations", responses((status = 200, description = "Alive", body = Status), RouteErrors))]
pub async fn livez() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

/// `GET /readyz`: the service takes questions (not while shutting down, nor while the
/// Redis it shares state through is away under `redis.on_failure = "refuse"`). With Redis
/// set, `redis` says whether it is reached; `upstream` says whether the Engagement API was
/// (an unreachable API leaves the service ready: what the store holds is still answered).
#[utoipa::path(get, path = "/readyz", tag = "operations", responses((status = 200, description = "Taking questions", body = Status), (status = 503, description = "Shutting down, or Redis away when it is required", body = Status), RouteErrors))]
pub async fn readyz(State(state): State<Arc<AppState>>) -> Response {
    let redis = state.engine.shared.state.readiness().map(|r| (r.said, r.ready));
    let ready = state.ready.load(Ordering::SeqCst);
    let status = match (ready, redis) {
        (false, _) => "shutting down",
        (true, Some((_, false))) => "not ready: Redis is unreachable",
        (true, _) => "ready",
    };
    let upstream = match state.engine.calls.upstream().reach() {
        upstream::Reach::Reached => "reachable".to_string(),
        upstream::Reach::Unknown => "not tried yet".to_string(),
        upstream::Reach::Unreachable(reason) => format!("unreachable: {reason}"),
    };
    let body =
        Status { status: status.into(), redis: redis.map(|(r, _)| r.to_string()), upstream: Some(upstream) };
    let code = if ready && redis.is_none_or(|(_, ok)| ok) {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, Json(body)).into_response()
}

/// `GET /metrics`: the Prometheus text format.
#[utoipa::path(get, path = "/metrics", operation_id = "serve", tag = "operations", responses((status = 200, description = "Prometheus text format", content_type = "text/plain"), crate::schemas::RouteErrors))]
pub async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    let calls = &state.engine.calls;
    metrics::gauge!("stitcher_upstream_in_flight").set(calls.in_flight() as f64);
    metrics::gauge!("stitcher_rate_limit_wait_seconds").set(calls.budget().waited().as_secs_f64());
    let store = &state.engine.store;
    metrics::gauge!("stitcher_store_bytes").set(store.bytes() as f64);
    // The store counts its evictions; the counter is brought up to that count.
    metrics::counter!("stitcher_store_evictions_total").absolute(store.evictions());
    metrics::gauge!("stitcher_job_results_bytes").set(state.jobs.kept_bytes() as f64);
    match handle() {
        Some(h) => ([("content-type", "text/plain; version=0.0.4")], h.render()).into_response(),
        None => {
            (axum::http::StatusCode::SERVICE_UNAVAILABLE, "metrics are recorded elsewhere in this process")
                .into_response()
        }
    }
}

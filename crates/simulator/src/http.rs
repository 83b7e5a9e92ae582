//! The simulator on the wire: gzip, OAuth, rate limit, faults, and the extra routes for
//! tests (`/_oracle/historical`, `/_stats`, `/_clock`).

use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response as HttpResponse};
use axum::routing::{get, post};
use engagement::vocabulary::rate_headers;
use engagement::{ApiError, Endpoint, Limits};
use flate2::Compression;
use flate2::write::GzEncoder;
use serde_json::Value;

use crate::Simulator;
use crate::config::Handle;
use crate::faults::Fault;
use crate::rate::Quota;
use engagement::oauth::{Received, signed_url, verify};

/// How far a client's `oauth_timestamp` may be from the simulator's wall clock.
const TIMESTAMP_TOLERANCE_SECS: i64 = 15 * 60;

/// The message of a `406`, as the API words it.
pub const GZIP_REQUIRED: &str = "This request requires gzip compression. Retry the request after setting 'Accept-Encoding' header in the request to 'gzip'.";

pub(crate) fn router(sim: Arc<Simulator>) -> Router {
    Router::new()
        .route("/insights/engagement/{endpoint}", post(api))
        .route("/_oracle/historical", post(oracle))
        .route("/_stats", get(stats))
        .route("/_stats/reset", post(reset_stats))
        .route("/_clock", get(clock).post(set_clock))
        .fallback(not_found)
        .with_state(sim)
}

/// An answer before it is put on the wire.
struct Reply {
    status: u16,
    json: Vec<u8>,
    quota: Option<Quota>,
    truncate: bool,
}

impl Reply {
    fn error(status: u16, message: impl Into<String>) -> Reply {
        Reply::refusal(status, &ApiError::new(message))
    }

    fn refusal(status: u16, error: &ApiError) -> Reply {
        Reply { status, json: serde_json::to_vec(error).unwrap_or_default(), quota: None, truncate: false }
    }

    fn into_http(self, gzip: bool) -> HttpResponse {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut body = if gzip { gzipped(&self.json) } else { self.json };
        if self.truncate {
            body.truncate(body.len() / 2);
        }
        let mut response = (status, body).into_response();
        let h = response.headers_mut();
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json; charset=utf-8"));
        if gzip {
            h.insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
        }
        if let Some(q) = self.quota {
            h.insert(rate_headers::LIMIT, HeaderValue::from(q.limit));
            h.insert(rate_headers::REMAINING, HeaderValue::from(q.remaining));
            h.insert(rate_headers::RESET, HeaderValue::from(q.reset));
            if !q.allowed {
                let wait = (q.reset - chrono::Utc::now().timestamp()).max(1);
                h.insert(header::RETRY_AFTER, HeaderValue::from(wait));
            }
        } else if self.status == 429 {
            // A burst of 429 with no per-minute window: ask for a one-second pause.
            h.insert(header::RETRY_AFTER, HeaderValue::from(1));
        }
        response
    }
}

fn gzipped(bytes: &[u8]) -> Vec<u8> {
    let mut enc = GzEncoder::new(Vec::with_capacity(bytes.len() / 8 + 64), Compression::fast());
    // Writing to a Vec cannot fail.
    let _ = enc.write_all(bytes);
    enc.finish().unwrap_or_default()
}

fn accepts_gzip(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|enc| {
            let mut parts = enc.split(';');
            let name = parts.next().unwrap_or("").trim();
            let refused = parts.any(|p| p.trim().replace(' ', "") == "q=0");
            (name.eq_ignore_ascii_case("gzip") || name == "*") && !refused
        })
}

async fn api(
    State(sim): State<Arc<Simulator>>,
    Path(name): Path<String>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> HttpResponse {
    let gzip = accepts_gzip(&headers);
    if let Some(traceparent) = headers.get("traceparent").and_then(|v| v.to_str().ok()) {
        sim.stats.traced(traceparent);
    }
    let Some(endpoint) =
        [Endpoint::Totals, Endpoint::Hr28, Endpoint::Historical].into_iter().find(|e| e.name() == name)
    else {
        sim.stats.record("other", 404, None);
        return Reply::error(404, format!("no such endpoint: {}", uri.path())).into_http(gzip);
    };
    if endpoint == Endpoint::Historical {
        sim.stats.arrived(&body);
    }
    let (fault, delay, truncate) = sim.faults.roll(&sim.config.faults);
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    if !gzip {
        sim.stats.record(endpoint.name(), 406, None);
        return Reply::error(406, GZIP_REQUIRED).into_http(false);
    }
    let handle = match authenticate(&sim, &method, &uri, &headers) {
        Ok(h) => h.name.clone(),
        Err(reason) => {
            sim.stats.record(endpoint.name(), 401, None);
            return Reply::error(401, format!("Your account could not be authenticated. Reason: {reason}"))
                .into_http(gzip);
        }
    };
    let quota = sim.limiter.take(chrono::Utc::now().timestamp());
    if let Some(q) = quota.filter(|q| q.allowed) {
        sim.stats.allowed(q.reset);
    }
    let mut reply = if quota.is_some_and(|q| !q.allowed) || fault == Fault::Burst429 {
        Reply::error(429, "Rate limit exceeded: too many requests in this minute")
    } else {
        match fault {
            Fault::Hang => {
                sim.stats.record(endpoint.name(), 0, Some(&handle));
                tokio::time::sleep(Duration::from_secs(3600)).await;
                Reply::error(504, "hung")
            }
            Fault::Error(status) => Reply::error(status, "Internal error, please retry"),
            _ => answer_call(&sim, endpoint, &body, truncate).await,
        }
    };
    reply.quota = quota.map(|q| if reply.status == 429 { Quota { allowed: false, ..q } } else { q });
    sim.stats.record(endpoint.name(), reply.status, Some(&handle));
    reply.into_http(gzip)
}

async fn answer_call(sim: &Arc<Simulator>, endpoint: Endpoint, body: &Bytes, truncate: bool) -> Reply {
    let value: Value = match serde_json::from_slice(body) {
        Ok(v) => v,
        Err(e) => return Reply::error(400, format!("the request body is not valid JSON: {e}")),
    };
    let starts = &sim.config.faults.failing_window_starts;
    let start = value.get("start").and_then(Value::as_str).and_then(engagement::parse_instant);
    if start.is_some_and(|s| starts.iter().any(|f| engagement::time::floor_hour(s) == *f)) {
        return Reply::error(503, "Service unavailable for this window, please retry");
    }
    let sim = Arc::clone(sim);
    let work = tokio::task::spawn_blocking(move || {
        let model = sim.model();
        crate::answer(&sim.config, &model, endpoint, &value, &Limits::of(endpoint))
            .map(|r| serde_json::to_vec(&r).unwrap_or_default())
    });
    match work.await {
        Ok(Ok(json)) => Reply { status: 200, json, quota: None, truncate },
        Ok(Err(refusal)) => Reply::refusal(refusal.status, &refusal.error),
        Err(_) => Reply::error(500, "the simulator failed while answering"),
    }
}

/// Checks the OAuth 1.0a signature of a call and finds its handle; `Err` gives the reason.
fn authenticate<'a>(
    sim: &'a Simulator,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
) -> Result<&'a Handle, String> {
    let creds = &sim.config.credentials;
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
    let url = signed_url(sim.config.public_url.as_deref(), host, uri.path());
    let received = Received {
        method: method.as_str(),
        url: &url,
        query: uri.query().unwrap_or(""),
        authorization: headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()),
    };
    let secret_of =
        |token: &str| creds.handles.iter().find(|h| h.token == token).map(|h| h.token_secret.clone());
    let verified = verify(
        &received,
        &creds.consumer_key,
        &creds.consumer_secret,
        secret_of,
        chrono::Utc::now().timestamp(),
        TIMESTAMP_TOLERANCE_SECS,
    )
    .map_err(|r| r.to_string())?;
    creds
        .handles
        .iter()
        .find(|h| h.token == verified.token)
        .ok_or_else(|| "Access token not found".to_string())
}

async fn oracle(State(sim): State<Arc<Simulator>>, headers: HeaderMap, body: Bytes) -> HttpResponse {
    let gzip = accepts_gzip(&headers);
    let value: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => {
            return Reply::error(400, format!("the request body is not valid JSON: {e}")).into_http(gzip);
        }
    };
    let work = tokio::task::spawn_blocking(move || {
        crate::oracle(&sim.config, &sim.model(), &value).map(|r| serde_json::to_vec(&r).unwrap_or_default())
    });
    match work.await {
        Ok(Ok(json)) => Reply { status: 200, json, quota: None, truncate: false }.into_http(gzip),
        Ok(Err(refusal)) => Reply::refusal(refusal.status, &refusal.error).into_http(gzip),
        Err(_) => Reply::error(500, "the oracle failed while answering").into_http(gzip),
    }
}

async fn stats(State(sim): State<Arc<Simulator>>) -> HttpResponse {
    axum::Json(sim.stats.snapshot()).into_response()
}

async fn reset_stats(State(sim): State<Arc<Simulator>>) -> StatusCode {
    sim.stats.reset();
    StatusCode::NO_CONTENT
}

/// What `POST /_clock` takes, for its `400`.
const CLOCK_BODY: &str = r#"a JSON body {"now": "<RFC 3339 instant>"}, e.g. {"now": "2024-06-01T12:00:00Z"}"#;

/// `{"now": ...}`: the simulator's clock, as `GET /_clock` and `POST /_clock` answer.
fn clock_json(now: chrono::DateTime<chrono::Utc>) -> HttpResponse {
    axum::Json(serde_json::json!({ "now": engagement::time::format_instant(now) })).into_response()
}

async fn clock(State(sim): State<Arc<Simulator>>) -> HttpResponse {
    clock_json(sim.now())
}

/// Stops the clock at the instant in the body, so tests can watch counts settle without
/// waiting. Rate-limit windows and OAuth timestamps stay on the wall clock: clients sign
/// with theirs.
async fn set_clock(State(sim): State<Arc<Simulator>>, body: Bytes) -> HttpResponse {
    let value: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => return bad_request(format!("expected {CLOCK_BODY}; the body is not valid JSON: {e}")),
    };
    let Some(now) = value.get("now").and_then(Value::as_str).and_then(engagement::parse_instant) else {
        return bad_request(format!("expected {CLOCK_BODY}; got {value}"));
    };
    sim.set_clock(crate::Clock::Fixed(now));
    tracing::info!(now = %engagement::time::format_instant(now), "clock moved");
    clock_json(now)
}

fn bad_request(message: String) -> HttpResponse {
    (StatusCode::BAD_REQUEST, axum::Json(serde_json::json!({ "errors": [message] }))).into_response()
}

async fn not_found(uri: Uri) -> HttpResponse {
    let body = serde_json::json!({ "errors": [format!("no such endpoint: {}", uri.path())] });
    (StatusCode::NOT_FOUND, axum::Json(body)).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gzip_is_recognized_in_accept_encoding() {
        let mut h = HeaderMap::new();
        assert!(!accepts_gzip(&h));
        h.insert(header::ACCEPT_ENCODING, HeaderValue::from_static("deflate, GZIP;q=0.8"));
        assert!(accepts_gzip(&h));
        h.insert(header::ACCEPT_ENCODING, HeaderValue::from_static("gzip;q=0, br"));
        assert!(!accepts_gzip(&h));
    }

    #[test]
    fn gzipped_bodies_round_trip() {
        use std::io::Read;
        let data = br#"{"a":"1"}"#;
        let mut out = String::new();
        flate2::read::GzDecoder::new(&gzipped(data)[..]).read_to_string(&mut out).unwrap();
        assert_eq!(out.as_bytes(), data);
    }
}

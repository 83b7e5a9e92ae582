//! The Engagement API over HTTP: rustls, gzip, a signed `POST` per attempt, its answer
//! classified (and parsed off the async workers). What the upstream says of its per-minute
//! limit goes to the shared budget.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use engagement::vocabulary::rate_headers;
use engagement::{Endpoint, RawRequest};
use reqwest::header::{ACCEPT_ENCODING, AUTHORIZATION, CONTENT_ENCODING, HeaderMap};
use tokio::time::Instant;

use crate::budget::RateBudget;
use crate::classify::AttemptError;
use crate::credentials::{AppCredentials, HandleCredentials};
use crate::http_answer::{classify, retry_after};
use crate::{Body, Reach, Upstream, signing};

/// The HTTP client for the API's endpoints.
#[derive(Debug)]
pub struct HttpUpstream {
    client: reqwest::Client,
    base_url: String,
    app: AppCredentials,
    budget: Arc<RateBudget>,
    call_timeout: Duration,
    /// Whether it could be reached when last tried, and how many times that was recorded.
    reach: std::sync::Mutex<(Reach, u64)>,
}

impl HttpUpstream {
    /// A client for the API at `base_url` (e.g. `https://data-api.x.com`).
    pub fn new(
        base_url: &str,
        app: AppCredentials,
        budget: Arc<RateBudget>,
        call_timeout: Duration,
    ) -> Result<HttpUpstream, reqwest::Error> {
        let client = reqwest::Client::builder()
            .user_agent(concat!("stitcher/", env!("CARGO_PKG_VERSION")))
            // Answers are inflated whole, in one pass (see `inflate`), not as they stream.
            .gzip(false)
            .connect_timeout(Duration::from_secs(5))
            .pool_max_idle_per_host(64)
            .build()?;
        let base_url = base_url.trim_end_matches('/').to_owned();
        Ok(HttpUpstream {
            client,
            base_url,
            app,
            budget,
            call_timeout,
            reach: std::sync::Mutex::new((Reach::Unknown, 0)),
        })
    }

    /// Records whether the upstream could be reached, unless something was recorded since
    /// the `seen`th record (a probe's outcome does not undo a call's that came after it).
    fn reached(&self, reach: Reach, seen: Option<u64>) {
        let mut now = self.reach.lock().unwrap_or_else(|p| p.into_inner());
        if seen.is_none_or(|seen| seen == now.1) {
            *now = (reach, now.1 + 1);
        }
    }

    /// The records so far.
    fn records(&self) -> u64 {
        self.reach.lock().unwrap_or_else(|p| p.into_inner()).1
    }

    /// Why no connection to the upstream could be made, naming where it was looked for.
    fn unreachable(&self, e: &reqwest::Error) -> String {
        let mut causes = Vec::new();
        let mut source = std::error::Error::source(e);
        while let Some(cause) = source {
            causes.push(cause.to_string());
            source = cause.source();
        }
        let why = causes.last().cloned().unwrap_or_else(|| e.to_string());
        format!("cannot connect to the Engagement API at {} (upstream.base_url): {why}", self.base_url)
    }

    /// Tells the shared budget the upstream's limit, and pauses it when the upstream says
    /// this minute is spent.
    fn observe(&self, status: u16, headers: &HeaderMap, now_ms: i64) {
        let remaining = headers
            .get(rate_headers::REMAINING)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok());
        if let Some(limit) = headers
            .get(rate_headers::LIMIT)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u32>().ok())
            .filter(|l| *l > 0)
        {
            self.budget.learn_limit(limit);
        }
        if status == 429 || remaining == Some(0) {
            // Until the reset, to the millisecond, so no part of the next window is left
            // idle; a second when none is said or it looks due already (the clocks differ),
            // so it is not raced.
            let wait =
                retry_after(headers, now_ms).filter(|w| !w.is_zero()).unwrap_or(Duration::from_secs(1));
            self.budget.pause_for(wait);
        }
    }
}

/// Whether an answer's body is gzip (the API's answers are, being asked so).
fn is_gzip(headers: &HeaderMap) -> bool {
    headers
        .get(CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("gzip"))
}

/// Compressed answers smaller than this are inflated on the async worker that read them;
/// bigger ones by their reader, off the async workers.
const INFLATE_HERE_BYTES: usize = 16 << 10;

#[async_trait]
impl Upstream for HttpUpstream {
    async fn call(
        &self,
        endpoint: Endpoint,
        handle: &HandleCredentials,
        body: &RawRequest,
        deadline: Instant,
    ) -> Result<Body, AttemptError> {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(AttemptError::Deadline { last: None });
        }
        let url = format!("{}{}", self.base_url, endpoint.path());
        let authorization = signing::authorization(&url, &self.app, handle);
        let mut request =
            self.client.post(&url).header(AUTHORIZATION, authorization).header(ACCEPT_ENCODING, "gzip");
        for (name, value) in trace_context() {
            request = request.header(name, value);
        }
        let sent = request.json(body).timeout(self.call_timeout.min(left)).send().await;
        let response = match sent {
            Ok(r) => r,
            Err(e) if e.is_timeout() && self.call_timeout >= left => {
                return Err(AttemptError::Deadline { last: None });
            }
            Err(e) if e.is_connect() => {
                let reason = self.unreachable(&e);
                self.reached(Reach::Unreachable(reason.clone()), None);
                return Err(AttemptError::Unreachable { reason });
            }
            Err(e) => {
                let kind = if e.is_timeout() {
                    "timed out"
                } else if e.is_connect() {
                    "could not connect"
                } else {
                    "failed"
                };
                return Err(AttemptError::Transient {
                    reason: format!("the upstream call {kind}: {e}"),
                    status: None,
                    retry_after: None,
                });
            }
        };
        self.reached(Reach::Reached, None);
        let status = response.status();
        let headers = response.headers().clone();
        let now_ms = chrono::Utc::now().timestamp_millis();
        self.observe(status.as_u16(), &headers, now_ms);
        let body = match response.bytes().await {
            // A big answer is inflated by whoever reads it, on the thread that reads it.
            Ok(gz) if is_gzip(&headers) && status.is_success() && gz.len() >= INFLATE_HERE_BYTES => {
                return Ok(Body::Gzip(gz));
            }
            Ok(gz) if is_gzip(&headers) => crate::gzip::inflate(&gz),
            Ok(text) => Ok(text),
            Err(e) => Err(e.to_string()),
        };
        classify(status, &headers, body, now_ms).map(Body::Text)
    }

    fn reach(&self) -> Reach {
        self.reach.lock().unwrap_or_else(|p| p.into_inner()).0.clone()
    }

    async fn probe(&self) -> Reach {
        let seen = self.records();
        // Any answer at all, even a 404, means a connection was made.
        let tried =
            self.client.get(format!("{}/", self.base_url)).timeout(Duration::from_secs(10)).send().await;
        let reach = match tried {
            Ok(_) => Reach::Reached,
            Err(e) if e.is_connect() => Reach::Unreachable(self.unreachable(&e)),
            Err(e) if e.is_timeout() => Reach::Unreachable(format!(
                "the Engagement API at {} (upstream.base_url) did not answer within 10 s",
                self.base_url
            )),
            // Any other failure came after a connection was made.
            Err(_) => Reach::Reached,
        };
        self.reached(reach.clone(), Some(seen));
        reach
    }
}

/// The headers that carry the trace of the span the call is made in (`traceparent`, and
/// `tracestate` if any) to the upstream; none when no trace is exported.
fn trace_context() -> std::collections::HashMap<String, String> {
    use tracing_opentelemetry::OpenTelemetrySpanExt;
    let context = tracing::Span::current().context();
    let mut headers = std::collections::HashMap::new();
    opentelemetry::global::get_text_map_propagator(|p| p.inject_context(&context, &mut headers));
    headers
}

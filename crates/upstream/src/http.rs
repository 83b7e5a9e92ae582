//! The Engagement API over HTTP: rustls, gzip, a signed `POST` per attempt, its answer
//! classified (and parsed off the async workers). What the upstream says of its per-minute
//! limit goes to the shared budget.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use engagement::vocabulary::rate_headers;
use engagement::{Endpoint, RawRequest};
use reqwest::header::{ACCEPT_ENCODING, AUTHORIZATION, CONTENT_ENCODING, HeaderMap};
use tokio::time::Instant;

use crate::budget::RateBudget;
use crate::classify::AttemptError;
use crate::credentials::{AppCredentials, HandleCredentials};
use crate::http_answer::{classify, retry_after};
use crate::{Reach, Upstream, signing};

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
    fn observe(&self, status: u16, headers: &HeaderMap, now_unix: i64) {
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
            // Whole seconds from the upstream's clock: at least one, so a reset that looks
            // due already is not raced.
            let wait = retry_after(headers, now_unix).unwrap_or_default().max(Duration::from_secs(1));
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

/// The most an answer may inflate to. A 28-day hourly answer for 25 Tweets of every type
/// is a few megabytes; past this a body is taken for a fault, not an answer.
pub const MAX_INFLATED_BYTES: u64 = 256 << 20;

/// Compressed bodies smaller than this are inflated on the async worker that read them.
const INFLATE_HERE_BYTES: usize = 16 << 10;

/// A gzip body, inflated: off the async workers when it is big.
async fn inflate(body: Bytes) -> Result<Bytes, String> {
    if body.len() < INFLATE_HERE_BYTES {
        return inflate_now(&body);
    }
    crate::blocking::off_the_workers("inflating an answer", move || inflate_now(&body).map_err(Inflate))
        .await
        .map_err(|Inflate(e)| e)
}

/// Why an answer could not be inflated.
struct Inflate(String);

impl From<crate::blocking::TaskFailed> for Inflate {
    fn from(e: crate::blocking::TaskFailed) -> Inflate {
        Inflate(e.to_string())
    }
}

/// Inflates a gzip body in one pass, at most [`MAX_INFLATED_BYTES`].
fn inflate_now(body: &[u8]) -> Result<Bytes, String> {
    inflate_at_most(body, MAX_INFLATED_BYTES)
}

/// Inflates a gzip body in one pass into a buffer of the size its trailer gives (the size
/// modulo 2^32; the buffer grows if that was less), never zeroed first, or says why not:
/// not gzip (its checksum and length included), or more than `max` bytes.
fn inflate_at_most(body: &[u8], max: u64) -> Result<Bytes, String> {
    use flate2::{Decompress, FlushDecompress, Status};
    let told = body
        .len()
        .checked_sub(4)
        .map_or(0, |at| u32::from_le_bytes([body[at], body[at + 1], body[at + 2], body[at + 3]]) as u64);
    let mut out: Vec<u8> = Vec::with_capacity(told.clamp(1, max + 1) as usize);
    let mut inflater = Decompress::new_gzip(15);
    loop {
        let (read, written) = (inflater.total_in(), inflater.total_out());
        let status = inflater
            .decompress_vec(&body[read as usize..], &mut out, FlushDecompress::Finish)
            .map_err(|e| format!("gzip: {e}"))?;
        if out.len() as u64 > max {
            return Err(format!("gzip: the answer inflates past {max} bytes"));
        }
        match status {
            Status::StreamEnd => return Ok(Bytes::from(out)),
            _ if out.len() == out.capacity() => {
                // Told less than it holds: room for as much again, up to one past the bound.
                let more = out.len().max(1 << 16).min((max + 1) as usize - out.len());
                out.reserve_exact(more);
            }
            _ if (read, written) == (inflater.total_in(), inflater.total_out()) => {
                return Err("gzip: the body ends before its stream does".into());
            }
            _ => {}
        }
    }
}

#[async_trait]
impl Upstream for HttpUpstream {
    async fn call(
        &self,
        endpoint: Endpoint,
        handle: &HandleCredentials,
        body: &RawRequest,
        deadline: Instant,
    ) -> Result<Bytes, AttemptError> {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(AttemptError::Deadline { last: None });
        }
        let url = format!("{}{}", self.base_url, endpoint.path());
        let authorization = signing::authorization(&url, &self.app, handle);
        let sent = self
            .client
            .post(&url)
            .header(AUTHORIZATION, authorization)
            .header(ACCEPT_ENCODING, "gzip")
            .json(body)
            .timeout(self.call_timeout.min(left))
            .send()
            .await;
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
        let now_unix = chrono::Utc::now().timestamp();
        self.observe(status.as_u16(), &headers, now_unix);
        let bytes = match response.bytes().await {
            Ok(body) if is_gzip(&headers) => inflate(body).await,
            Ok(body) => Ok(body),
            Err(e) => Err(e.to_string()),
        };
        classify(status, &headers, bytes, now_unix)
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn gzip(text: &[u8]) -> Vec<u8> {
        let mut out = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        out.write_all(text).unwrap();
        out.finish().unwrap()
    }

    #[test]
    fn a_body_inflates_whole_whatever_its_trailer_says_and_not_past_the_bound() {
        let text: Vec<u8> = (0..100_000u32).flat_map(|i| i.to_string().into_bytes()).collect();
        let body = gzip(&text);
        assert_eq!(inflate_now(&body).unwrap(), text);
        // The trailer is a hint for the buffer only: one that lies is caught by the check.
        let mut lying = body.clone();
        let at = lying.len() - 4;
        lying[at..].copy_from_slice(&7u32.to_le_bytes());
        assert!(inflate_now(&lying).unwrap_err().starts_with("gzip:"));
        let bound = text.len() as u64 - 1;
        let past = inflate_at_most(&body, bound).unwrap_err();
        assert_eq!(past, format!("gzip: the answer inflates past {bound} bytes"));
        assert_eq!(inflate_at_most(&body, text.len() as u64).unwrap(), text);
        assert!(inflate_now(b"not gzip at all").unwrap_err().starts_with("gzip:"));
        assert_eq!(inflate_now(&gzip(b"")).unwrap(), b""[..]);
        assert!(inflate_now(&body[..body.len() / 2]).unwrap_err().starts_with("gzip:"));
    }
}

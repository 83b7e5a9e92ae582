//! What one attempt's outcome means: an answer, a failure worth retrying, or a refusal.

use std::time::Duration;

use bytes::Bytes;
use engagement::{ApiError, Response};
use reqwest::StatusCode;
use reqwest::header::HeaderMap;

/// Why an attempt gave no answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AttemptError {
    /// Worth trying again: `429`, `5xx`, timeouts, resets, cut or unreadable bodies.
    #[error("{reason}")]
    Transient {
        reason: String,
        status: Option<u16>,
        /// How long the upstream asked us to wait, if it said.
        retry_after: Option<Duration>,
    },
    /// The upstream could not be reached at all: no connection (refused, no such host, a
    /// TLS handshake that failed). Retried like a transient failure, but said as it is.
    #[error("{reason}")]
    Unreachable { reason: String },
    /// The upstream refused the call; trying again changes nothing.
    #[error("upstream answered {status}: {}", errors.join("; "))]
    Refused { status: u16, errors: Vec<String> },
    /// The per-minute budget has no call free before the deadline.
    #[error("no upstream call is free in the per-minute budget before the deadline")]
    Budget { wait: Duration },
    /// The request's deadline passed (or would have before the next attempt); `last` is the
    /// failure that attempt was to retry.
    #[error("the deadline passed{}", last.as_ref().map(|l| format!(" (last failure: {l})")).unwrap_or_default())]
    Deadline { last: Option<String> },
}

impl AttemptError {
    /// Whether another attempt could succeed.
    pub fn is_transient(&self) -> bool {
        matches!(self, AttemptError::Transient { .. } | AttemptError::Unreachable { .. })
    }

    /// The upstream status, if there was an answer.
    pub fn status(&self) -> Option<u16> {
        match self {
            AttemptError::Transient { status, .. } => *status,
            AttemptError::Refused { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// An answer that could not be read or kept because the task doing it failed: the attempt
/// failed, and is retried like any transient failure.
impl From<crate::blocking::TaskFailed> for AttemptError {
    fn from(e: crate::blocking::TaskFailed) -> AttemptError {
        let reason = format!("{}: {}", e.what, e.source);
        AttemptError::Transient { reason, status: None, retry_after: None }
    }
}

/// A successful answer's body read as a tree of counts; one that is not an answer is worth
/// another attempt.
pub fn read_answer(body: &[u8]) -> Result<Response, AttemptError> {
    serde_json::from_slice(body).map_err(|e| unreadable(&e))
}

/// An answer whose body is not what was asked for, as `what` says: the attempt failed, and
/// is retried like any transient failure.
pub fn unreadable(what: &dyn std::fmt::Display) -> AttemptError {
    AttemptError::Transient {
        reason: format!("the upstream sent an unreadable answer ({what})"),
        status: Some(200),
        retry_after: None,
    }
}

/// Statuses that are worth another attempt.
pub fn is_transient_status(status: StatusCode) -> bool {
    matches!(status.as_u16(), 429 | 500 | 502 | 503 | 504)
}

/// How long the upstream asks us to wait: `Retry-After` in seconds, else the time until
/// `x-per-minute-reset` (Unix seconds) as seen from `now_unix`.
pub fn retry_after(headers: &HeaderMap, now_unix: i64) -> Option<Duration> {
    let number = |name: &str| headers.get(name)?.to_str().ok()?.trim().parse::<i64>().ok();
    if let Some(secs) = number(reqwest::header::RETRY_AFTER.as_str()) {
        return Some(Duration::from_secs(secs.max(0) as u64));
    }
    number(engagement::vocabulary::rate_headers::RESET)
        .map(|reset| Duration::from_secs((reset - now_unix).max(0) as u64))
}

/// What an answer's status, headers and body say: a successful answer's body (unread:
/// see [`read_answer`]), or why there is none.
pub fn classify(
    status: StatusCode,
    headers: &HeaderMap,
    body: Result<Bytes, String>,
    now_unix: i64,
) -> Result<Bytes, AttemptError> {
    let body = match body {
        Ok(b) => b,
        Err(e) => {
            return Err(AttemptError::Transient {
                reason: format!("the upstream body could not be read ({e})"),
                status: Some(status.as_u16()),
                retry_after: None,
            });
        }
    };
    if status.is_success() {
        return Ok(body);
    }
    let errors = match serde_json::from_slice::<ApiError>(&body) {
        Ok(e) if !e.errors.is_empty() => e.errors,
        _ => {
            let text = String::from_utf8_lossy(&body);
            let text: String = text.chars().take(300).collect();
            vec![if text.trim().is_empty() {
                format!("upstream answered {status} with no body")
            } else {
                text
            }]
        }
    };
    if is_transient_status(status) {
        Err(AttemptError::Transient {
            reason: format!("upstream answered {}: {}", status.as_u16(), errors.join("; ")),
            status: Some(status.as_u16()),
            retry_after: retry_after(headers, now_unix),
        })
    } else {
        Err(AttemptError::Refused { status: status.as_u16(), errors })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn answers_refusals_and_transients() {
        let ok =
            classify(StatusCode::OK, &HeaderMap::new(), Ok(Bytes::from_static(br#"{"g": {"1": "2"}}"#)), 0);
        assert!(read_answer(&ok.unwrap()).is_ok());
        let forbidden = classify(
            StatusCode::FORBIDDEN,
            &HeaderMap::new(),
            Ok(Bytes::from_static(br#"{"errors": ["Forbidden to access tweets: 1"]}"#)),
            0,
        );
        assert_eq!(
            forbidden,
            Err(AttemptError::Refused { status: 403, errors: vec!["Forbidden to access tweets: 1".into()] })
        );
        for status in [429u16, 500, 502, 503, 504] {
            let e = classify(StatusCode::from_u16(status).unwrap(), &HeaderMap::new(), Ok(Bytes::new()), 0)
                .unwrap_err();
            assert!(e.is_transient(), "{status}");
        }
        let cut = read_answer(br#"{"g": {"1"#).unwrap_err();
        assert!(cut.is_transient());
        let unreadable =
            classify(StatusCode::OK, &HeaderMap::new(), Err("gzip error".into()), 0).unwrap_err();
        assert!(unreadable.is_transient());
        let html = classify(
            StatusCode::BAD_REQUEST,
            &HeaderMap::new(),
            Ok(Bytes::from_static(b"<html>bad</html>")),
            0,
        )
        .unwrap_err();
        assert_eq!(html, AttemptError::Refused { status: 400, errors: vec!["<html>bad</html>".into()] });
    }

    #[test]
    fn retry_after_prefers_the_header_then_the_reset() {
        assert_eq!(
            retry_after(&headers(&[("retry-after", "7"), ("x-per-minute-reset", "1000")]), 900),
            Some(Duration::from_secs(7))
        );
        assert_eq!(
            retry_after(&headers(&[("x-per-minute-reset", "1000")]), 990),
            Some(Duration::from_secs(10))
        );
        assert_eq!(retry_after(&headers(&[("x-per-minute-reset", "1000")]), 2000), Some(Duration::ZERO));
        assert_eq!(retry_after(&HeaderMap::new(), 0), None);
    }
}

//! What an HTTP answer's status, headers and body mean: an answer, a failure worth
//! retrying, or a refusal.

use std::time::Duration;

use bytes::Bytes;
use engagement::ApiError;
use reqwest::StatusCode;
use reqwest::header::HeaderMap;

use crate::classify::AttemptError;

/// Statuses that are worth another attempt.
pub fn is_transient_status(status: StatusCode) -> bool {
    matches!(status.as_u16(), 429 | 500 | 502 | 503 | 504)
}

/// How long the upstream asks us to wait: `Retry-After` in seconds, else the time until
/// `x-per-minute-reset` (Unix seconds) as seen from `now_ms` (Unix milliseconds: a reset
/// 50 ms away is 50 ms away, not the second the clock's whole seconds would say).
pub fn retry_after(headers: &HeaderMap, now_ms: i64) -> Option<Duration> {
    let number = |name: &str| headers.get(name)?.to_str().ok()?.trim().parse::<i64>().ok();
    if let Some(secs) = number(reqwest::header::RETRY_AFTER.as_str()) {
        return Some(Duration::from_secs(secs.max(0) as u64));
    }
    number(engagement::vocabulary::rate_headers::RESET)
        .map(|reset| Duration::from_millis(reset.saturating_mul(1000).saturating_sub(now_ms).max(0) as u64))
}

/// What an answer's status, headers and body say: a successful answer's body (unread:
/// see [`read_answer`]), or why there is none.
pub fn classify(
    status: StatusCode,
    headers: &HeaderMap,
    body: Result<Bytes, String>,
    now_ms: i64,
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
            retry_after: retry_after(headers, now_ms),
        })
    } else {
        Err(AttemptError::Refused { status: status.as_u16(), errors })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::classify::read_answer;
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
            retry_after(&headers(&[("retry-after", "7"), ("x-per-minute-reset", "1000")]), 900_000),
            Some(Duration::from_secs(7))
        );
        assert_eq!(
            retry_after(&headers(&[("x-per-minute-reset", "1000")]), 990_000),
            Some(Duration::from_secs(10))
        );
        assert_eq!(
            retry_after(&headers(&[("x-per-minute-reset", "1000")]), 999_950),
            Some(Duration::from_millis(50)),
            "to the millisecond"
        );
        assert_eq!(retry_after(&headers(&[("x-per-minute-reset", "1000")]), 2_000_000), Some(Duration::ZERO));
        assert_eq!(retry_after(&HeaderMap::new(), 0), None);
    }
}

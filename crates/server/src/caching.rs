//! What lets a client reuse an answer and see what it cost: its entity tag (`ETag`, and
//! `304 Not Modified` for a tag the client already holds), `Cache-Control`, and the
//! `Stitcher-Result` and `Server-Timing` headers.

use std::sync::Arc;

use axum::http::header::{CACHE_CONTROL, ETAG, IF_NONE_MATCH};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use engine::Answer;

use crate::error::ServiceError;

/// On every historical answer: what it took of the upstream and the store, as a
/// structured-field dictionary: `calls=3, from_store=12, fetched=3, synthesized=2, shared=0`
/// (`shared`: calls this question joined that another question made).
pub const STITCHER_RESULT: HeaderName = HeaderName::from_static("stitcher-result");

/// On every historical answer: where its time went (`budget`, `upstream`, `render`, in
/// milliseconds), which browsers' developer tools show.
pub const SERVER_TIMING: HeaderName = HeaderName::from_static("server-timing");

/// The ways an answer is written, which its entity tag tells apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Shape {
    /// The API's shape: counts as strings, no `meta`.
    DropIn,
    /// The native JSON body.
    Native,
    /// The native answer as CSV.
    Csv,
}

impl Shape {
    /// How an answer is written: the drop-in's shape, or the native one in `format`.
    pub(crate) fn of(native: bool, format: crate::format::Format) -> Shape {
        match (native, format) {
            (false, _) => Shape::DropIn,
            (true, crate::format::Format::Csv) => Shape::Csv,
            (true, crate::format::Format::Json) => Shape::Native,
        }
    }

    fn tag(self) -> &'static str {
        match self {
            Shape::DropIn => "api",
            Shape::Native => "json",
            Shape::Csv => "csv",
        }
    }
}

/// `answer` written as `shape` at `now` by `write`, with the headers of [`Validators`];
/// or `304` with them and no body when the `request`'s `If-None-Match` names its tag (then
/// it is not written).
pub(crate) async fn reply<W: std::future::Future<Output = Result<Response, ServiceError>>>(
    (answer, shape): (&Arc<Answer>, Shape),
    now: DateTime<Utc>,
    request: &HeaderMap,
    write: impl FnOnce() -> W,
) -> Result<Response, ServiceError> {
    let validators = Validators::of(answer, shape, now).await?;
    if validators.held_by(request) {
        return Ok(validators.not_modified());
    }
    let mut response = write().await?;
    validators.apply(&mut response);
    Ok(response)
}

/// The headers an answer is written with.
#[derive(Debug, Clone)]
struct Validators {
    etag: HeaderValue,
    cache_control: HeaderValue,
    result: HeaderValue,
    timing: HeaderValue,
}

impl Validators {
    /// The headers of `answer` written as `shape` at `now`; its digest is taken off the
    /// async workers (a repeat's is kept with it, so it costs no walk of its trees).
    async fn of(answer: &Arc<Answer>, shape: Shape, now: DateTime<Utc>) -> Result<Validators, ServiceError> {
        let of = Arc::clone(answer);
        let digest = engine::off_the_workers("the answer's entity tag could not be made", move || {
            Ok::<_, ServiceError>(of.digest())
        })
        .await?;
        Ok(Validators::with_digest(answer, digest, shape, now))
    }

    fn with_digest(answer: &Answer, digest: u64, shape: Shape, now: DateTime<Utc>) -> Validators {
        let meta = &answer.meta;
        let took = &answer.took;
        let ms = |d: std::time::Duration| d.as_secs_f64() * 1000.0;
        let value = |text: String| HeaderValue::from_str(&text).unwrap_or(HeaderValue::from_static(""));
        Validators {
            // Weak: the same answer is sent gzipped or not, and both are this one tag.
            etag: value(format!("W/\"{digest:016x}-{}\"", shape.tag())),
            cache_control: value(format!(
                "private, max-age={}",
                // Whole seconds left, rounded up: a second left in part is still reusable.
                ((answer.reuse_until - now).num_milliseconds().max(0) + 999) / 1000
            )),
            result: value(format!(
                "calls={}, from_store={}, fetched={}, synthesized={}, shared={}",
                meta.upstream_calls,
                meta.slices_from_store,
                meta.slices_fetched,
                meta.slices_synthesized,
                took.shared_calls
            )),
            timing: value(format!(
                "budget;desc=\"waiting for the per-minute budget\";dur={:.1}, upstream;desc=\"calling the upstream\";dur={:.1}, render;desc=\"rendering\";dur={:.1}",
                ms(took.budget_wait),
                ms(took.calling),
                ms(took.rendering)
            )),
        }
    }

    /// Whether the request's `If-None-Match` names this answer's tag, so the client holds
    /// it already. (`*` names no tag: the question is a `POST`, which is answered anew.)
    fn held_by(&self, request: &HeaderMap) -> bool {
        // If-None-Match compares weakly: `W/` is not part of the tag (RFC 9110 13.1.2).
        let opaque = |tag: &[u8]| tag.strip_prefix(b"W/").unwrap_or(tag).to_vec();
        let ours = opaque(self.etag.as_bytes());
        request.get_all(IF_NONE_MATCH).iter().filter_map(|v| v.to_str().ok()).flat_map(|v| v.split(',')).any(
            |tag| {
                let tag = tag.trim();
                opaque(tag.as_bytes()) == ours
            },
        )
    }

    /// `304 Not Modified` with these headers and no body.
    fn not_modified(&self) -> Response {
        let mut response = StatusCode::NOT_MODIFIED.into_response();
        self.apply(&mut response);
        response
    }

    /// Puts these headers on `response`.
    fn apply(&self, response: &mut Response) {
        let headers = response.headers_mut();
        headers.insert(ETAG, self.etag.clone());
        headers.insert(CACHE_CONTROL, self.cache_control.clone());
        headers.insert(STITCHER_RESULT, self.result.clone());
        headers.insert(SERVER_TIMING, self.timing.clone());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn validators() -> Validators {
        Validators {
            etag: HeaderValue::from_static("W/\"00000000000000ab-json\""),
            cache_control: HeaderValue::from_static("private, max-age=60"),
            result: HeaderValue::from_static(""),
            timing: HeaderValue::from_static(""),
        }
    }

    #[test]
    fn if_none_match_names_the_tag_in_a_list_or_weakly() {
        let held = |values: &[&str]| {
            let mut headers = HeaderMap::new();
            for v in values {
                headers.append(IF_NONE_MATCH, HeaderValue::from_str(v).unwrap());
            }
            validators().held_by(&headers)
        };
        assert!(held(&["\"00000000000000ab-json\""]));
        assert!(held(&["\"x\", W/\"00000000000000ab-json\""]));
        assert!(held(&["\"x\"", "\"00000000000000ab-json\""]));
        assert!(!held(&["*"]), "a question is asked anew");
        assert!(!held(&[]));
        assert!(!held(&["\"00000000000000ab-csv\""]));
        assert!(!held(&["00000000000000ab-json"]), "unquoted is another tag");
    }
}

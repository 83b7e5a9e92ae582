//! Each request's ID: taken from the client's `X-Request-Id` when usable, else made; echoed
//! on the answer, named in error bodies and on every log line of the request.

use axum::extract::Request;
use axum::http::{HeaderMap, HeaderName};
use axum::middleware::Next;
use axum::response::Response;

/// The header that carries a request's ID.
pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The request's ID, as the request-ID layer set it.
pub(crate) fn request_id(headers: &HeaderMap) -> Option<String> {
    headers.get(REQUEST_ID).and_then(|v| v.to_str().ok()).map(str::to_owned)
}

/// The longest `X-Request-Id` taken from a client.
const MAX_REQUEST_ID: usize = 128;

/// Drops a client's `X-Request-Id` that is too long or holds anything but visible ASCII, so
/// a fresh one is made: the ID goes into headers, bodies and logs as it is.
pub async fn fresh_request_id(mut request: Request, next: Next) -> Response {
    let usable = request.headers().get(REQUEST_ID).is_none_or(|id| {
        let id = id.as_bytes();
        !id.is_empty() && id.len() <= MAX_REQUEST_ID && id.iter().all(|b| (0x21..=0x7e).contains(b))
    });
    if !usable {
        request.headers_mut().remove(REQUEST_ID);
    }
    next.run(request).await
}

//! What answers when no route does, and the service's error shape on the router's own
//! refusals.

use axum::extract::Request;
use axum::http::{HeaderMap, StatusCode, Uri, header};
use axum::middleware::Next;
use axum::response::Response;

use crate::error::{self};
use crate::request_id::request_id;

/// Any other path.
pub async fn not_found(uri: Uri, headers: HeaderMap) -> Response {
    let message = format!(
        "no such route: {}; GET /openapi.json lists the routes the service answers (POST /insights/engagement/historical, /totals and /28hr, their /v1 twins, jobs), and GET / is a page for people",
        uri.path()
    );
    error::plain(StatusCode::NOT_FOUND, message, request_id(&headers).as_deref())
}

/// Gives the bodiless refusals of the router and its layers (`405` for a method a route does
/// not answer, `415` for a body encoding it cannot decode) the service's error shape.
pub async fn error_bodies(request: Request, next: Next) -> Response {
    let (method, path, id) =
        (request.method().clone(), request.uri().path().to_owned(), request_id(request.headers()));
    let response = next.run(request).await;
    if response.headers().contains_key(header::CONTENT_TYPE) {
        return response;
    }
    let message = match response.status() {
        StatusCode::METHOD_NOT_ALLOWED => {
            let allowed: Vec<&str> = response
                .headers()
                .get_all(header::ALLOW)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .filter(|v| !v.is_empty())
                .collect();
            format!("{method} is not allowed on {path}; it answers {}", allowed.join(","))
        }
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "the request body's Content-Encoding is not supported: send it as is, or gzip-compressed with Content-Encoding: gzip".to_owned(),
        _ => return response,
    };
    let (parts, _) = response.into_parts();
    let mut fresh = error::plain(parts.status, message, id.as_deref());
    // Keep what the refusal said (Allow), but not the length of the body it no longer has.
    for (name, value) in &parts.headers {
        if name != header::CONTENT_LENGTH && !fresh.headers().contains_key(name) {
            fresh.headers_mut().append(name.clone(), value.clone());
        }
    }
    fresh
}

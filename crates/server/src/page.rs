//! The page for people at `GET /`: a form for a question, a chart, the totals, the
//! engagement rate and the Top Tweets. Its files are built into the binary and load nothing
//! from elsewhere; it asks through the service's own routes with the key the person gives.

use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};

/// Content Security Policy of the page: its own files and routes only.
const POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data: blob:; form-action 'none'; frame-ancestors 'none'; base-uri 'none'";

fn file(content_type: &'static str, body: &'static str) -> Response {
    let mut response = body.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(POLICY));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    response
}

/// `GET /`: the page.
pub async fn index() -> Response {
    file("text/html; charset=utf-8", include_str!("../page/index.html"))
}

/// `GET /page/app.js`: the page's script.
pub async fn script() -> Response {
    file("text/javascript; charset=utf-8", include_str!("../page/app.js"))
}

/// `GET /page/style.css`: the page's style.
pub async fn style() -> Response {
    file("text/css; charset=utf-8", include_str!("../page/style.css"))
}

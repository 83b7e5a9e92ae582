//! The HTTP surface: the drop-in `/insights/engagement/historical`, the native
//! `/v1/historical`, and the probes.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use engagement::tree::CountStyle;
use engagement::{ApiError, Endpoint, Query};
use serde_json::{Value, json};
use tokio::sync::OwnedSemaphorePermit;

use crate::app::REQUEST_ID;
use crate::error::ServiceError;
use crate::historical::{self, Answer};
use crate::openapi::{DropInAnswer, NativeAnswer, NativeQuestion, Question, QuestionErrors, Status};
use crate::state::AppState;
use crate::streaming;

/// How long an overloaded service asks clients to wait.
const OVERLOADED_RETRY_AFTER: Duration = Duration::from_secs(1);

/// A question's place among those in flight, held until its answer is written.
struct Admitted {
    _request: OwnedSemaphorePermit,
    _counts: OwnedSemaphorePermit,
}

/// What authentication looks at.
struct RequestHead {
    method: Method,
    uri: Uri,
    headers: HeaderMap,
}

/// Admits, authenticates and reads a question; then answers it.
async fn ask(
    state: &Arc<AppState>,
    request: &RequestHead,
    body: Result<Bytes, BytesRejection>,
    native: bool,
) -> Result<(Answer, Admitted), ServiceError> {
    if !state.ready.load(Ordering::SeqCst) {
        return Err(ServiceError::ShuttingDown);
    }
    let admitted = Arc::clone(&state.admission)
        .try_acquire_owned()
        .map_err(|_| ServiceError::Overloaded { retry_after: OVERLOADED_RETRY_AFTER })?;
    let caller = state.keyring.authenticate(&request.method, &request.uri, &request.headers)?;
    let body = body.map_err(|rejection| match rejection.status() {
        StatusCode::PAYLOAD_TOO_LARGE => {
            ServiceError::PayloadTooLarge { limit: state.settings.server.max_body_bytes }
        }
        _ => ServiceError::BadRequest(ApiError::new(format!(
            "the request body could not be read: {rejection}"
        ))),
    })?;
    let value: Value = serde_json::from_slice(&body).map_err(|e| {
        ServiceError::BadRequest(ApiError::new(format!("the request body is not valid JSON: {e}")))
    })?;
    let partial = match value.get("partial") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) if native => *b,
        Some(Value::Bool(_)) => {
            return Err(ServiceError::BadRequest(ApiError::new(
                "\"partial\" is only for /v1/historical; the drop-in endpoint answers in full or not at all",
            )));
        }
        Some(other) => {
            return Err(ServiceError::BadRequest(ApiError::new(format!(
                "\"partial\" must be true or false, not {other}"
            ))));
        }
    };
    let query = Query::from_json(Endpoint::Historical, &value, &state.limits, chrono::Utc::now())
        .map_err(ServiceError::BadRequest)?;
    let counts = query.answer_counts();
    let budget = state.settings.max_counts_in_flight();
    if counts > u64::from(budget) {
        return Err(ServiceError::BadRequest(ApiError::new(format!(
            "this question's answer would hold {counts} counts (Tweets × types × days or hours, per grouping); at most {budget} are answered at once: ask for fewer Tweets or types, a shorter range, or engagement.day instead of engagement.hour"
        ))));
    }
    let room = Arc::clone(&state.counts)
        .try_acquire_many_owned(counts as u32)
        .map_err(|_| ServiceError::Overloaded { retry_after: OVERLOADED_RETRY_AFTER })?;
    let answer = historical::answer(state, &caller, query, partial).await?;
    Ok((answer, Admitted { _request: admitted, _counts: room }))
}

/// `POST /insights/engagement/historical`: the API's request and answer, any span.
#[utoipa::path(post, path = "/insights/engagement/historical", tag = "questions", request_body = Question,
    responses(
        (status = 200, description = "The whole answer, counts as strings", body = DropInAnswer),
        QuestionErrors,
    ),
    security(("bearer" = []), ("oauth1" = [])))]
pub async fn drop_in(
    State(state): State<Arc<AppState>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    respond(&state, RequestHead { method, uri, headers }, body, false).await
}

/// The request's ID, as the request-ID layer set it.
fn request_id(headers: &HeaderMap) -> Option<String> {
    headers.get(REQUEST_ID).and_then(|v| v.to_str().ok()).map(str::to_owned)
}

/// `POST /v1/historical`: the same question; integer counts and a `meta` block.
#[utoipa::path(post, path = "/v1/historical", tag = "questions", request_body = NativeQuestion,
    responses(
        (status = 200, description = "The answer with integer counts and meta", body = NativeAnswer),
        QuestionErrors,
    ),
    security(("bearer" = []), ("oauth1" = [])))]
pub async fn native(
    State(state): State<Arc<AppState>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    respond(&state, RequestHead { method, uri, headers }, body, true).await
}

/// Answers a question in the drop-in shape or the native one, streaming the answer and
/// naming the request's ID in errors.
async fn respond(
    state: &Arc<AppState>,
    head: RequestHead,
    body: Result<Bytes, BytesRejection>,
    native: bool,
) -> Response {
    let id = request_id(&head.headers);
    match ask(state, &head, body, native).await {
        Ok((answer, admitted)) => streaming::json(move |out| {
            let _admitted = admitted;
            if native {
                serde_json::to_writer(out, &native_body(&answer))
            } else {
                serde_json::to_writer(out, &answer.response.styled(CountStyle::Strings))
            }
        }),
        Err(e) => e.into_response_for(id.as_deref()),
    }
}

/// The native body, written straight from the tree (no intermediate JSON value).
#[derive(serde::Serialize)]
struct NativeBody<'a> {
    data: engagement::tree::Styled<'a, engagement::Response>,
    meta: NativeMeta<'a>,
}

#[derive(serde::Serialize)]
struct NativeMeta<'a> {
    #[serde(flatten)]
    meta: &'a historical::Meta,
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    incomplete: &'a [crate::error::FailedSlice],
}

fn native_body(answer: &Answer) -> NativeBody<'_> {
    NativeBody {
        data: answer.response.styled(CountStyle::Integers),
        meta: NativeMeta { meta: &answer.meta, incomplete: &answer.incomplete },
    }
}

/// `GET /livez`: the process answers.
#[utoipa::path(get, path = "/livez", tag = "operations", responses((status = 200, description = "Alive", body = Status)))]
pub async fn livez() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

/// `GET /readyz`: the service takes questions (not while shutting down).
#[utoipa::path(get, path = "/readyz", tag = "operations", responses((status = 200, description = "Taking questions", body = Status), (status = 503, description = "Shutting down", body = Status)))]
pub async fn readyz(State(state): State<Arc<AppState>>) -> Response {
    if state.ready.load(Ordering::SeqCst) {
        Json(json!({ "status": "ready" })).into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, Json(json!({ "status": "shutting down" }))).into_response()
    }
}

/// Any other path.
pub async fn not_found(uri: axum::http::Uri) -> Response {
    let message = format!(
        "no such route: {}; the service answers POST /insights/engagement/historical and POST /v1/historical",
        uri.path()
    );
    (StatusCode::NOT_FOUND, Json(ApiError::new(message))).into_response()
}

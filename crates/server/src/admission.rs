//! Admission: what a request must pass before its question is answered, each check an
//! extractor (readiness, body size, credentials, a place among the requests in flight, a
//! JSON body read in time) and [`Admission`] all of them in order; and the room its
//! answer's counts take.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::RequestPartsExt;
use axum::body::{Body, Bytes};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, Method, Uri, header};
use axum::response::{IntoResponse, Response};
use engagement::{ApiError, Query};
use tokio::sync::OwnedSemaphorePermit;
use tokio_util::task::task_tracker::TaskTrackerToken;

use crate::auth::Caller;
use crate::error::{EngineError, ServiceError};
use crate::request_id::request_id;
use crate::state::AppState;
use engine::{NativeQuestion, Reading};

/// How long an overloaded service asks clients to wait.
const OVERLOADED_RETRY_AFTER: Duration = Duration::from_secs(1);

/// A question's place among those in flight, held until its answer is written.
pub(crate) struct Admitted {
    pub _request: InFlight,
    pub _counts: OwnedSemaphorePermit,
}

/// A request's place among those in flight, held until its answer is written: shutdown
/// waits for every one.
#[derive(Debug)]
pub struct InFlight {
    _place: OwnedSemaphorePermit,
    _tracked: TaskTrackerToken,
}

/// What authentication looks at; a handler takes it as an extractor.
pub struct RequestHead {
    pub method: Method,
    pub uri: Uri,
    pub headers: HeaderMap,
}

impl std::fmt::Debug for RequestHead {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The headers and the query may hold credentials: they are never printed.
        f.debug_struct("RequestHead")
            .field("method", &self.method)
            .field("path", &self.uri.path())
            .finish_non_exhaustive()
    }
}

impl<S: Send + Sync> FromRequestParts<S> for RequestHead {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(RequestHead {
            method: parts.method.clone(),
            uri: parts.uri.clone(),
            headers: parts.headers.clone(),
        })
    }
}

/// A request rejected at admission, answered with its request's ID.
#[derive(Debug)]
pub struct Rejected {
    error: ServiceError,
    request_id: Option<String>,
}

impl Rejected {
    fn new(error: impl Into<ServiceError>, parts: &Parts) -> Rejected {
        Rejected { error: error.into(), request_id: request_id(&parts.headers) }
    }
}

impl IntoResponse for Rejected {
    fn into_response(self) -> Response {
        self.error.into_response_for(self.request_id.as_deref())
    }
}

/// The service takes questions: not once shutdown has begun.
pub(crate) struct Ready;

impl FromRequestParts<Arc<AppState>> for Ready {
    type Rejection = Rejected;

    async fn from_request_parts(parts: &mut Parts, state: &Arc<AppState>) -> Result<Self, Rejected> {
        if state.ready.load(Ordering::SeqCst) {
            Ok(Ready)
        } else {
            Err(Rejected::new(EngineError::ShuttingDown, parts))
        }
    }
}

/// A body whose declared length fits `server.max_body_bytes` (or that declares none: it
/// is held to the limit as it is read).
pub(crate) struct BodyFits;

impl FromRequestParts<Arc<AppState>> for BodyFits {
    type Rejection = Rejected;

    async fn from_request_parts(parts: &mut Parts, state: &Arc<AppState>) -> Result<Self, Rejected> {
        let limit = state.settings.server.max_body_bytes;
        let declared = parts
            .headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok());
        if declared.is_some_and(|length| length > limit as u64) {
            return Err(Rejected::new(ServiceError::PayloadTooLarge { limit }, parts));
        }
        Ok(BodyFits)
    }
}

/// Who asks: a Bearer key or an OAuth 1.0a signature the keyring knows.
pub(crate) struct Authenticated(pub Caller);

impl FromRequestParts<Arc<AppState>> for Authenticated {
    type Rejection = Rejected;

    async fn from_request_parts(parts: &mut Parts, state: &Arc<AppState>) -> Result<Self, Rejected> {
        match state.keyring.authenticate(&parts.method, &parts.uri, &parts.headers).await {
            Ok(caller) => Ok(Authenticated(caller)),
            Err(e) => Err(Rejected::new(e, parts)),
        }
    }
}

impl FromRequestParts<Arc<AppState>> for InFlight {
    type Rejection = Rejected;

    async fn from_request_parts(parts: &mut Parts, state: &Arc<AppState>) -> Result<Self, Rejected> {
        let place = Arc::clone(&state.admission).try_acquire_owned().map_err(|_| {
            Rejected::new(ServiceError::Overloaded { retry_after: OVERLOADED_RETRY_AFTER }, parts)
        })?;
        Ok(InFlight { _place: place, _tracked: state.tasks.token() })
    }
}

/// A JSON body (or one that does not say what it is), read within
/// `server.header_timeout_secs` and `server.max_body_bytes`.
pub(crate) struct JsonBody(pub Bytes);

impl FromRequest<Arc<AppState>> for JsonBody {
    type Rejection = Rejected;

    async fn from_request(request: Request, state: &Arc<AppState>) -> Result<Self, Rejected> {
        let (parts, body) = request.into_parts();
        read_json(state, &parts, body).await.map(JsonBody).map_err(|e| Rejected::new(e, &parts))
    }
}

async fn read_json(state: &AppState, parts: &Parts, body: Body) -> Result<Bytes, ServiceError> {
    if let Some(kind) = parts.headers.get(header::CONTENT_TYPE) {
        let essence = kind.to_str().unwrap_or_default().split(';').next().unwrap_or_default().trim();
        let json = essence.eq_ignore_ascii_case("application/json")
            || essence.to_ascii_lowercase().ends_with("+json");
        if !json {
            return Err(ServiceError::UnsupportedMediaType(format!(
                "the request body must be JSON (Content-Type: application/json), not {essence:?}"
            )));
        }
    }
    let (limit, timeout) = (state.settings.server.max_body_bytes, state.settings.header_timeout());
    match tokio::time::timeout(timeout, axum::body::to_bytes(body, limit)).await {
        Err(_) => Err(ServiceError::BodyTimeout(timeout.as_secs())),
        Ok(Ok(bytes)) => Ok(bytes),
        Ok(Err(e)) => {
            let too_large =
                std::error::Error::source(&e).is_some_and(|s| s.is::<http_body_util::LengthLimitError>());
            Err(if too_large {
                ServiceError::PayloadTooLarge { limit }
            } else {
                ServiceError::BadRequest(ApiError::new(format!("the request body could not be read: {e}")))
            })
        }
    }
}

/// A request admitted to be answered: each check in turn, from the head alone where the
/// head is enough (shutting down `503`, a body too large `413`, credentials `401`/`403`,
/// a full service `503`), then the JSON body read (`415`, `408`, `413`).
pub struct Admission {
    pub head: RequestHead,
    pub caller: Caller,
    /// The request's place among those in flight.
    pub in_flight: InFlight,
    pub body: Bytes,
}

impl std::fmt::Debug for Admission {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Admission")
            .field("head", &self.head)
            .field("client", &self.caller.client)
            .field("body_bytes", &self.body.len())
            .finish_non_exhaustive()
    }
}

impl FromRequest<Arc<AppState>> for Admission {
    type Rejection = Rejected;

    async fn from_request(request: Request, state: &Arc<AppState>) -> Result<Self, Rejected> {
        let (mut parts, body) = request.into_parts();
        let Ok(head) = parts.extract::<RequestHead>().await;
        parts.extract_with_state::<Ready, _>(state).await?;
        parts.extract_with_state::<BodyFits, _>(state).await?;
        let Authenticated(caller) = parts.extract_with_state(state).await?;
        let in_flight = parts.extract_with_state::<InFlight, _>(state).await?;
        let JsonBody(body) = JsonBody::from_request(Request::from_parts(parts, body), state).await?;
        Ok(Admission { head, caller, in_flight, body })
    }
}

/// A question read and validated, with who asks it and how many counts its answer holds.
pub(crate) struct Asked {
    pub caller: Caller,
    /// The request's place among those in flight.
    pub admitted: InFlight,
    pub question: engine::Question,
    pub counts: u32,
}

/// Reads the question `admission` brought as `reading` says, refusing one whose answer
/// could never fit in `server.max_counts_in_flight`.
pub(crate) fn read_question(
    state: &AppState,
    admission: Admission,
    reading: Reading,
) -> Result<Asked, ServiceError> {
    let (question, counts) = question_of(state, &admission.body, reading)?;
    Ok(Asked { caller: admission.caller, admitted: admission.in_flight, question, counts })
}

/// Reads and validates a question's body as `reading` says, and the counts its answer
/// holds, refusing one that could never fit.
pub(crate) fn question_of(
    state: &AppState,
    body: &[u8],
    reading: Reading,
) -> Result<(engine::Question, u32), ServiceError> {
    let body = NativeQuestion::read(body, reading).map_err(ServiceError::BadRequest)?;
    let question = body
        .historical(reading, &state.limits, state.engine.clock.now())
        .map_err(ServiceError::BadRequest)?;
    let counts = answer_size(state, &question.query)?;
    Ok((question, counts))
}

/// The counts `query`'s answer holds, refusing one that could never fit in
/// `server.max_counts_in_flight`.
pub(crate) fn answer_size(state: &AppState, query: &Query) -> Result<u32, ServiceError> {
    let counts = query.answer_counts();
    let budget = state.settings.max_counts_in_flight();
    if counts > u64::from(budget) {
        return Err(ServiceError::BadRequest(ApiError::new(format!(
            "this question's answer would hold {counts} counts (Tweets × types × days or hours, per grouping); at most {budget} are answered at once: ask for fewer Tweets or types, a shorter range, or engagement.day instead of engagement.hour"
        ))));
    }
    Ok(counts as u32)
}

/// Room for `counts` among the counts in flight, or `503` at once.
pub(crate) fn room_for(state: &AppState, counts: u32) -> Result<OwnedSemaphorePermit, ServiceError> {
    Arc::clone(&state.counts)
        .try_acquire_many_owned(counts)
        .map_err(|_| ServiceError::Overloaded { retry_after: OVERLOADED_RETRY_AFTER })
}

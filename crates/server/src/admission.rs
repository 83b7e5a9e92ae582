//! Admission: what a request must pass before its question is answered (readiness, body
//! size, credentials, a place among the requests in flight, a JSON body read in time), and
//! the room its answer's counts take.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, Method, Uri, header};
use engagement::{ApiError, Query};
use tokio::sync::OwnedSemaphorePermit;
use tokio_util::task::task_tracker::TaskTrackerToken;

use crate::auth::Caller;
use crate::error::{EngineError, ServiceError};
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
pub(crate) struct InFlight {
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

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for RequestHead {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _: &S,
    ) -> Result<Self, Self::Rejection> {
        Ok(RequestHead {
            method: parts.method.clone(),
            uri: parts.uri.clone(),
            headers: parts.headers.clone(),
        })
    }
}

/// Refuses from the head alone what needs no body (a body that would be too large, no
/// or bad credentials, a full service, a body that is not JSON), then reads the body
/// within `server.header_timeout_secs` and `server.max_body_bytes`.
pub(crate) async fn admit(
    state: &Arc<AppState>,
    head: &RequestHead,
    body: Body,
) -> Result<(Caller, InFlight, Bytes), ServiceError> {
    if !state.ready.load(Ordering::SeqCst) {
        return Err(EngineError::ShuttingDown.into());
    }
    let limit = state.settings.server.max_body_bytes;
    let declared = head
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if declared.is_some_and(|length| length > limit as u64) {
        return Err(ServiceError::PayloadTooLarge { limit });
    }
    let caller = state.keyring.authenticate(&head.method, &head.uri, &head.headers).await?;
    let place = Arc::clone(&state.admission)
        .try_acquire_owned()
        .map_err(|_| ServiceError::Overloaded { retry_after: OVERLOADED_RETRY_AFTER })?;
    let admitted = InFlight { _place: place, _tracked: state.tasks.token() };
    if let Some(kind) = head.headers.get(header::CONTENT_TYPE) {
        let essence = kind.to_str().unwrap_or_default().split(';').next().unwrap_or_default().trim();
        let json = essence.eq_ignore_ascii_case("application/json")
            || essence.to_ascii_lowercase().ends_with("+json");
        if !json {
            return Err(ServiceError::UnsupportedMediaType(format!(
                "the request body must be JSON (Content-Type: application/json), not {essence:?}"
            )));
        }
    }
    let timeout = state.settings.header_timeout();
    let bytes = match tokio::time::timeout(timeout, axum::body::to_bytes(body, limit)).await {
        Err(_) => return Err(ServiceError::BodyTimeout(timeout.as_secs())),
        Ok(Ok(bytes)) => bytes,
        Ok(Err(e)) => {
            let too_large =
                std::error::Error::source(&e).is_some_and(|s| s.is::<http_body_util::LengthLimitError>());
            return Err(if too_large {
                ServiceError::PayloadTooLarge { limit }
            } else {
                ServiceError::BadRequest(ApiError::new(format!("the request body could not be read: {e}")))
            });
        }
    };
    Ok((caller, admitted, bytes))
}

/// A question read and validated, with who asks it and how many counts its answer holds.
pub(crate) struct Asked {
    pub caller: Caller,
    /// The request's place among those in flight.
    pub admitted: InFlight,
    pub question: engine::Question,
    pub counts: u32,
}

/// Admits, authenticates and reads a question as `reading` says, refusing one whose
/// answer could never fit in `server.max_counts_in_flight`.
pub(crate) async fn read_question(
    state: &Arc<AppState>,
    head: &RequestHead,
    body: Body,
    reading: Reading,
) -> Result<Asked, ServiceError> {
    let (caller, admitted, body) = admit(state, head, body).await?;
    let (question, counts) = question_of(state, &body, reading)?;
    Ok(Asked { caller, admitted, question, counts })
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

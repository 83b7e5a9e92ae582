//! Every way a question can fail, each with one status and a message a person can act on.
//! Bodies keep the upstream's shape, `{"errors": [...]}`, so drop-in clients read them as
//! they read the API's; failed slices are listed beside.

use std::time::Duration;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use engagement::ApiError;
use engine::error::whole_secs;
pub use engine::{EngineError, FailedSlice};
use serde::Serialize;

/// Why a request got no full answer: the engine's reasons, and the HTTP exchange's own.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error("{0}")]
    BadRequest(ApiError),
    #[error("the request body is larger than {limit} bytes")]
    PayloadTooLarge { limit: usize },
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    #[error("the request body did not arrive within {0} s")]
    BodyTimeout(u64),
    #[error("{0}")]
    UnsupportedMediaType(String),
    #[error("too many requests in flight")]
    Overloaded { retry_after: Duration },
    #[error("job queue full: {running} running, {queued} queued")]
    JobQueueFull { running: usize, queued: usize, retry_after: Duration },
    #[error("the result of job {id} was let go")]
    ResultLetGo { id: String, bytes: u64, limit: u64 },
}

#[derive(Serialize)]
struct Body<'a> {
    errors: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    request_id: Option<&'a str>,
    #[serde(skip_serializing_if = "<[FailedSlice]>::is_empty")]
    failed_slices: &'a [FailedSlice],
}

impl ServiceError {
    /// A fault of the service's own, caused by `source` if given.
    pub fn internal(
        context: impl Into<String>,
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    ) -> ServiceError {
        ServiceError::Engine(EngineError::internal(context, source))
    }

    /// The HTTP status of this error.
    pub fn status(&self) -> StatusCode {
        match self {
            ServiceError::Engine(e) => engine_status(e),
            ServiceError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ServiceError::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ServiceError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ServiceError::Forbidden(_) => StatusCode::FORBIDDEN,
            ServiceError::NotFound(_) => StatusCode::NOT_FOUND,
            ServiceError::BodyTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            ServiceError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ServiceError::ResultLetGo { .. } => StatusCode::GONE,
            ServiceError::Overloaded { .. } | ServiceError::JobQueueFull { .. } => {
                StatusCode::SERVICE_UNAVAILABLE
            }
        }
    }

    /// What the client is told.
    pub fn messages(&self) -> Vec<String> {
        match self {
            ServiceError::Engine(e) => e.messages(),
            ServiceError::BadRequest(e) => e.errors.clone(),
            ServiceError::BodyTimeout(secs) => vec![format!(
                "the request body did not arrive within {secs} s (server.header_timeout_secs); send it at once"
            )],
            ServiceError::Overloaded { retry_after } => vec![format!(
                "the service is answering as many questions as it may; retry in {} s",
                whole_secs(*retry_after)
            )],
            ServiceError::JobQueueFull { running, queued, retry_after } => vec![format!(
                "job queue full: {running} running, {queued} queued (jobs.max_running, jobs.max_queued); retry in {} s, when the first running job is expected to end",
                whole_secs(*retry_after)
            )],
            ServiceError::ResultLetGo { id, bytes, limit } => vec![format!(
                "job {id} was answered, but its result ({bytes} bytes) was let go to keep finished jobs' results within jobs.max_result_bytes ({limit} bytes together, oldest first); submit the job again and read its result soon after it is done"
            )],
            other => vec![other.to_string()],
        }
    }

    /// The slices that could not be had, when the failure is about slices.
    pub fn failed(&self) -> &[FailedSlice] {
        match self {
            ServiceError::Engine(e) => e.failed(),
            _ => &[],
        }
    }

    fn retry_after(&self) -> Option<Duration> {
        match self {
            ServiceError::Engine(e) => e.retry_after(),
            ServiceError::Overloaded { retry_after } | ServiceError::JobQueueFull { retry_after, .. } => {
                Some(*retry_after)
            }
            _ => None,
        }
    }
}

/// The HTTP status of each way the engine fails.
pub fn engine_status(error: &EngineError) -> StatusCode {
    match error {
        EngineError::TooBigForDeadline { .. } => StatusCode::BAD_REQUEST,
        EngineError::HandleCap { .. } => StatusCode::FORBIDDEN,
        EngineError::UpstreamRefused { status, .. } => {
            StatusCode::from_u16(*status).unwrap_or(StatusCode::BAD_GATEWAY)
        }
        EngineError::RateBudget { .. } | EngineError::BudgetBusy { .. } => StatusCode::TOO_MANY_REQUESTS,
        EngineError::UpstreamFailed { .. } | EngineError::UpstreamUnreachable { .. } => {
            StatusCode::BAD_GATEWAY
        }
        EngineError::DeadlineExceeded { .. } => StatusCode::GATEWAY_TIMEOUT,
        EngineError::SharedStateAway { .. } | EngineError::ShuttingDown | EngineError::CutOff { .. } => {
            StatusCode::SERVICE_UNAVAILABLE
        }
        EngineError::Internal { .. } => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// A response in the service's error shape with one message.
pub fn plain(status: StatusCode, message: String, request_id: Option<&str>) -> Response {
    (status, axum::Json(Body { errors: vec![message], request_id, failed_slices: &[] })).into_response()
}

impl IntoResponse for ServiceError {
    fn into_response(self) -> Response {
        self.into_response_for(None)
    }
}

impl ServiceError {
    /// The response, naming the request's ID so a client can quote it.
    pub fn into_response_for(self, request_id: Option<&str>) -> Response {
        self.response_for(request_id)
    }

    /// The response, as [`ServiceError::into_response_for`], from a borrowed error.
    pub fn response_for(&self, request_id: Option<&str>) -> Response {
        let failure = Failure { status: self.status(), messages: self.messages(), failed: self.failed() };
        failure.respond(self, self.retry_after(), request_id)
    }
}

/// The response to a borrowed engine error (a failed job's, which may be asked for more than
/// once), naming the request's ID.
pub fn engine_response(error: &EngineError, request_id: Option<&str>) -> Response {
    let failure =
        Failure { status: engine_status(error), messages: error.messages(), failed: error.failed() };
    failure.respond(error, error.retry_after(), request_id)
}

/// What an error response says.
struct Failure<'a> {
    status: StatusCode,
    messages: Vec<String>,
    failed: &'a [FailedSlice],
}

impl Failure<'_> {
    /// The response for `error`, logged when the fault is the service's or the upstream's.
    fn respond(
        self,
        error: &dyn std::error::Error,
        retry_after: Option<Duration>,
        request_id: Option<&str>,
    ) -> Response {
        let status = self.status;
        if status.is_server_error() {
            let cause = error.source().map(ToString::to_string);
            tracing::warn!(status = status.as_u16(), error = %error, cause, "question failed");
        }
        let body = Body { errors: self.messages, request_id, failed_slices: self.failed };
        let mut response = (status, axum::Json(body)).into_response();
        if let Some(wait) = retry_after {
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(whole_secs(wait)));
        }
        response
    }
}

/// A blocking task that failed is the service's own failure, told as what it was doing.
impl From<engine::TaskFailed> for ServiceError {
    fn from(e: engine::TaskFailed) -> ServiceError {
        ServiceError::internal(e.what, Some(Box::new(e.source)))
    }
}

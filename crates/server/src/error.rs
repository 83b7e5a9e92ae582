//! Every way a question can fail, each with one status and a message a person can act on.
//! Bodies keep the upstream's shape, `{"errors": [...]}`, so drop-in clients read them as
//! they read the API's; failed slices are listed beside.

use std::time::Duration;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use engagement::ApiError;
use serde::Serialize;

/// A slice (a batch of Tweets over one window) that could not be had.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct FailedSlice {
    pub start: String,
    pub end: String,
    pub tweet_ids: Vec<String>,
    /// The upstream's last status, if it answered.
    pub status: Option<u16>,
    /// What the upstream said, or what went wrong on the way.
    pub errors: Vec<String>,
    pub attempts: u32,
}

/// Why a question got no full answer.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
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
    #[error("the upstream refused a batch ({status})")]
    UpstreamRefused { status: u16, errors: Vec<String>, failed: Vec<FailedSlice> },
    #[error("the month's handle cap is reached")]
    HandleCap { cap: usize, month: String, handle: String },
    #[error("the upstream rate budget has no room before the deadline")]
    RateBudget { retry_after: Duration, failed: Vec<FailedSlice> },
    #[error("{refusal}")]
    TooBigForDeadline { refusal: upstream::BudgetRefusal },
    #[error("the upstream rate budget is busy with other questions")]
    BudgetBusy { retry_after: Duration, calls: usize, ahead: usize },
    #[error("the service shut down before the question was answered")]
    CutOff { failed: Vec<FailedSlice> },
    #[error("the request body did not arrive within {0} s")]
    BodyTimeout(u64),
    #[error("{0}")]
    UnsupportedMediaType(String),
    #[error("upstream calls kept failing after retries")]
    UpstreamFailed { failed: Vec<FailedSlice> },
    #[error("{reason}")]
    UpstreamUnreachable { reason: String, failed: Vec<FailedSlice> },
    #[error("the request's deadline passed")]
    DeadlineExceeded { timeout: Duration, failed: Vec<FailedSlice> },
    #[error("too many requests in flight")]
    Overloaded { retry_after: Duration },
    #[error("job queue full: {running} running, {queued} queued")]
    JobQueueFull { running: usize, queued: usize, retry_after: Duration },
    #[error("the result of job {id} was let go")]
    ResultLetGo { id: String, bytes: u64, limit: u64 },
    #[error(
        "the state this service shares with its other replicas (Redis) cannot be reached, and redis.on_failure is refuse; retry in {} s",
        whole_secs(*retry_after)
    )]
    SharedStateAway { retry_after: Duration },
    #[error("the service is shutting down and takes no new questions; retry against another instance")]
    ShuttingDown,
    /// A fault of the service's own, with what caused it when something did.
    #[error("{context}")]
    Internal {
        context: String,
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },
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
        ServiceError::Internal { context: context.into(), source }
    }

    /// The HTTP status of this error.
    pub fn status(&self) -> StatusCode {
        match self {
            ServiceError::BadRequest(_) | ServiceError::TooBigForDeadline { .. } => StatusCode::BAD_REQUEST,
            ServiceError::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ServiceError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ServiceError::Forbidden(_) | ServiceError::HandleCap { .. } => StatusCode::FORBIDDEN,
            ServiceError::NotFound(_) => StatusCode::NOT_FOUND,
            ServiceError::UpstreamRefused { status, .. } => {
                StatusCode::from_u16(*status).unwrap_or(StatusCode::BAD_GATEWAY)
            }
            ServiceError::RateBudget { .. } | ServiceError::BudgetBusy { .. } => {
                StatusCode::TOO_MANY_REQUESTS
            }
            ServiceError::BodyTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            ServiceError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ServiceError::UpstreamFailed { .. } | ServiceError::UpstreamUnreachable { .. } => {
                StatusCode::BAD_GATEWAY
            }
            ServiceError::DeadlineExceeded { .. } => StatusCode::GATEWAY_TIMEOUT,
            ServiceError::ResultLetGo { .. } => StatusCode::GONE,
            ServiceError::Overloaded { .. }
            | ServiceError::JobQueueFull { .. }
            | ServiceError::SharedStateAway { .. }
            | ServiceError::ShuttingDown
            | ServiceError::CutOff { .. } => StatusCode::SERVICE_UNAVAILABLE,
            ServiceError::Internal { .. } => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// What the client is told.
    pub fn messages(&self) -> Vec<String> {
        let slices = |failed: &[FailedSlice]| {
            let n = failed.len();
            format!("{n} slice{} could not be had; see failed_slices", if n == 1 { "" } else { "s" })
        };
        match self {
            ServiceError::BadRequest(e) => e.errors.clone(),
            ServiceError::TooBigForDeadline { refusal } => vec![format!(
                "{refusal}, its deadline: ask it as a job (POST /v1/jobs, which has hours), or ask for a shorter range or fewer Tweets"
            )],
            ServiceError::UpstreamRefused { errors, .. } => errors.clone(),
            ServiceError::HandleCap { cap, month, handle } => vec![format!(
                "the handle \"{handle}\" would be handle {} this month ({month}, UTC), past the contract's cap of {cap} handles (ledger.handle_cap); no call was made. Ask for handles already used this month (GET /v1/usage), or wait for the next month",
                cap + 1
            )],
            ServiceError::RateBudget { retry_after, failed } => vec![format!(
                "the upstream's per-minute budget has no room for this question before its deadline; retry in {} s ({})",
                whole_secs(*retry_after),
                slices(failed)
            )],
            ServiceError::BudgetBusy { retry_after, calls, ahead } => vec![format!(
                "the upstream's per-minute budget is busy with other questions: {ahead} of their calls go before the last of this question's {calls}, which would pass its deadline; retry in {} s",
                whole_secs(*retry_after)
            )],
            ServiceError::CutOff { failed } => vec![format!(
                "the service shut down before this question was answered ({}); ask again, another instance will answer",
                slices(failed)
            )],
            ServiceError::BodyTimeout(secs) => vec![format!(
                "the request body did not arrive within {secs} s (server.header_timeout_secs); send it at once"
            )],
            ServiceError::UpstreamFailed { failed } => vec![format!(
                "the Engagement API kept failing after retries ({}); retry later, or send \"partial\": true to /v1/historical for the rest",
                slices(failed)
            )],
            ServiceError::UpstreamUnreachable { reason, failed } => vec![format!(
                "{reason} ({}); check upstream.base_url (its scheme, host and port) and that the API is up there",
                slices(failed)
            )],
            ServiceError::DeadlineExceeded { timeout, failed } => vec![format!(
                "the question was not answered within {} s ({}); ask for fewer Tweets or a shorter range, or retry",
                whole_secs(*timeout),
                slices(failed)
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
            ServiceError::UpstreamRefused { failed, .. }
            | ServiceError::RateBudget { failed, .. }
            | ServiceError::UpstreamFailed { failed }
            | ServiceError::UpstreamUnreachable { failed, .. }
            | ServiceError::CutOff { failed }
            | ServiceError::DeadlineExceeded { failed, .. } => failed,
            _ => &[],
        }
    }

    fn retry_after(&self) -> Option<Duration> {
        match self {
            ServiceError::RateBudget { retry_after, .. }
            | ServiceError::BudgetBusy { retry_after, .. }
            | ServiceError::Overloaded { retry_after }
            | ServiceError::JobQueueFull { retry_after, .. }
            | ServiceError::SharedStateAway { retry_after } => Some(*retry_after),
            ServiceError::ShuttingDown | ServiceError::CutOff { .. } => Some(Duration::from_secs(1)),
            _ => None,
        }
    }
}

/// A response in the service's error shape with one message.
pub fn plain(status: StatusCode, message: String, request_id: Option<&str>) -> Response {
    (status, axum::Json(Body { errors: vec![message], request_id, failed_slices: &[] })).into_response()
}

/// A wait in whole seconds, rounded up, at least one: a client that waits that long is not
/// early.
fn whole_secs(wait: Duration) -> u64 {
    (wait.as_secs() + u64::from(wait.subsec_nanos() > 0)).max(1)
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

    /// The response, as [`ServiceError::into_response_for`], from a borrowed error (a
    /// failed job's, which may be asked for more than once).
    pub fn response_for(&self, request_id: Option<&str>) -> Response {
        let status = self.status();
        if status.is_server_error() {
            let cause = std::error::Error::source(self).map(ToString::to_string);
            tracing::warn!(status = status.as_u16(), error = %self, cause, "question failed");
        }
        let body = Body { errors: self.messages(), request_id, failed_slices: self.failed() };
        let mut response = (status, axum::Json(body)).into_response();
        if let Some(wait) = self.retry_after() {
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(whole_secs(wait)));
        }
        response
    }
}

//! The jobs routes: `POST /v1/jobs`, `GET /v1/jobs/{id}` (JSON, or server-sent events with
//! `Accept: text/event-stream`), `GET /v1/jobs/{id}/result` and `DELETE /v1/jobs/{id}`.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::Stream;

use engine::jobs::{Job, JobReport, JobResult, JobState, QueueFull, Submitted};
use engine::{FailedSlice, NativeQuestion, ProgressSnapshot, Reading};
use serde::Serialize;

use crate::admission::{Admission, Asked, RequestHead, read_question};
use crate::caching::{self, Shape};
use crate::error::{self, ServiceError};
use crate::format::Format;
use crate::request_id::request_id;
use crate::schemas::{ErrorBody, NativeAnswer, QuestionErrors};
use crate::state::AppState;

/// A failed job's error, as a question's would be.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct JobError {
    pub status: u16,
    pub errors: Vec<String>,
    /// The slices that could not be had (or were not fetched when the job was stopped).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub failed_slices: Vec<FailedSlice>,
}

/// What `GET /v1/jobs/{id}` answers.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct JobStatus {
    pub id: String,
    pub state: JobState,
    pub progress: ProgressSnapshot,
    pub created_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<String>,
    /// Seconds until its calls are done, from its own pace so far (before its first call
    /// ends, from the per-minute budget, if one is set).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub eta_secs: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<JobError>,
}

impl JobStatus {
    /// The status of the job `report` tells of.
    pub fn of(report: JobReport) -> JobStatus {
        let at = |t: chrono::DateTime<chrono::Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        JobStatus {
            id: report.id,
            state: report.state,
            progress: report.progress,
            created_at: at(report.created_at),
            finished_at: report.finished_at.map(at),
            eta_secs: report.eta.map(|d| d.as_secs() + u64::from(d.subsec_nanos() > 0)),
            error: report.failure.map(|e| JobError {
                status: error::engine_status(&e).as_u16(),
                errors: e.messages(),
                failed_slices: e.failed().to_vec(),
            }),
        }
    }
}

/// How often a job's event stream may send progress.
const EVENT_EVERY: Duration = Duration::from_millis(200);

/// `POST /v1/jobs`: the `/v1/historical` body; the job starts in the background.
#[utoipa::path(post, path = "/v1/jobs", tag = "jobs", request_body = NativeQuestion,
    responses(
        (status = 202, description = "Accepted; Location names the job", body = JobStatus,
            headers(("location" = String, description = "/v1/jobs/{id}"))),
        QuestionErrors,
    ),
    security(("bearer" = []), ("oauth1" = [])))]
pub async fn submit(State(state): State<Arc<AppState>>, admission: Admission) -> Response {
    let id = request_id(&admission.head.headers);
    let submitted = async {
        let Asked { caller, question, counts, .. } = read_question(&state, admission, Reading::NATIVE)?;
        let limit = state.settings.jobs.max_result_bytes;
        let least = u64::from(counts) * engagement::Response::ENTRY_BYTES;
        if least > limit {
            return Err(ServiceError::BadRequest(engagement::ApiError::new(format!(
                "this job's answer would hold {counts} counts, at least {least} bytes, more than a finished job's results may hold together (jobs.max_result_bytes, {limit}): ask for fewer Tweets or types, a shorter range, or engagement.day instead of engagement.hour"
            ))));
        }
        let job = Submitted { client: caller.client, handle: caller.handle, question, counts };
        state.jobs.submit(&state.engine, job, &state.counts, &state.cut_off).map_err(
            |QueueFull { running, queued, retry_after }| ServiceError::JobQueueFull {
                running,
                queued,
                retry_after,
            },
        )
    };
    match submitted.await {
        Ok(job) => {
            let mut response =
                (StatusCode::ACCEPTED, Json(JobStatus::of(job.report(&state.engine)))).into_response();
            if let Ok(location) = HeaderValue::from_str(&format!("/v1/jobs/{}", job.id)) {
                response.headers_mut().insert(header::LOCATION, location);
            }
            response
        }
        Err(e) => e.into_response_for(id.as_deref()),
    }
}

/// The caller's job `id`; `401` or `404` if not.
async fn find(state: &AppState, head: &RequestHead, id: &str) -> Result<Arc<Job>, ServiceError> {
    let caller = state.keyring.authenticate(&head.method, &head.uri, &head.headers).await?;
    state
        .jobs
        .get(&caller.client, id)
        .ok_or_else(|| ServiceError::NotFound(format!("no job {id} of yours is kept")))
}

/// `GET /v1/jobs/{id}`: the job's state and progress; with `Accept: text/event-stream`, a
/// stream of them until it ends.
#[utoipa::path(get, path = "/v1/jobs/{id}", tag = "jobs",
    params(("id" = String, Path, description = "The job's ID")),
    responses(
        (status = 200, description = "The job's state and progress (JSON), or `progress` events then one named after its final state (text/event-stream)", body = JobStatus),
        (status = 401, description = "No or unknown API key", body = ErrorBody),
        (status = 404, description = "No such job of this client's (or its result's time is over)", body = ErrorBody),
    ),
    security(("bearer" = []), ("oauth1" = [])))]
pub async fn status(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    head: RequestHead,
) -> Response {
    let job = match find(&state, &head, &id).await {
        Ok(job) => job,
        Err(e) => return e.into_response_for(request_id(&head.headers).as_deref()),
    };
    let wants_events = head
        .headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("text/event-stream"));
    if wants_events {
        Sse::new(events(state, job)).keep_alive(KeepAlive::default()).into_response()
    } else {
        Json(JobStatus::of(job.report(&state.engine))).into_response()
    }
}

/// `progress` events as the job moves (at most one per [`EVENT_EVERY`]), then one named
/// after its final state.
fn events(state: Arc<AppState>, job: Arc<Job>) -> impl Stream<Item = Result<Event, Infallible>> {
    let changes = job.progress.subscribe();
    futures::stream::unfold(Some((state, job, changes, true)), |next| async move {
        let (state, job, mut changes, first) = next?;
        if !first {
            tokio::time::sleep(EVENT_EVERY).await;
            if !job.state().is_final() {
                // The sender lives as long as the job, which this stream holds.
                let _ = changes.changed().await;
            }
        }
        let status = JobStatus::of(job.report(&state.engine));
        let name = match status.state {
            JobState::Done => "done",
            JobState::Failed => "failed",
            JobState::Cancelled => "cancelled",
            JobState::Queued | JobState::Running => "progress",
        };
        let event = Event::default()
            .event(name)
            .json_data(&status)
            .unwrap_or_else(|_| Event::default().comment("unwritable status"));
        let rest = (!status.state.is_final()).then_some((state, job, changes, false));
        Some((Ok(event), rest))
    })
}

/// `GET /v1/jobs/{id}/result`: the answer once done (`200`), `409` before, the failure's
/// error once failed, `410` once its answer was let go.
#[utoipa::path(get, path = "/v1/jobs/{id}/result", tag = "jobs",
    params(
        ("id" = String, Path, description = "The job's ID"),
        ("format" = Option<crate::schemas::AnswerFormat>, Query, description = "json (the default) or csv; Accept: text/csv asks for CSV too"),
    ),
    responses(
        (status = 200, description = "The /v1/historical answer; as CSV when asked", content(
            (NativeAnswer = "application/json"),
            (String = "text/csv"),
        )),
        (status = 409, description = "Still queued or running", body = ErrorBody),
        (status = 404, description = "No such job of this client's (or it was cancelled: DELETE forgets it)", body = ErrorBody),
        (status = 410, description = "Answered, but the result was let go to keep results within jobs.max_result_bytes", body = ErrorBody),
        QuestionErrors,
    ),
    security(("bearer" = []), ("oauth1" = [])))]
pub async fn result(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    head: RequestHead,
) -> Response {
    let job = match find(&state, &head, &id).await {
        Ok(job) => job,
        Err(e) => return e.into_response_for(request_id(&head.headers).as_deref()),
    };
    let rid = request_id(&head.headers);
    let format = match Format::asked(&head.uri, &head.headers) {
        Ok(format) => format,
        Err(e) => return e.into_response_for(rid.as_deref()),
    };
    match job.result() {
        JobResult::Answered(answer) => {
            let shape = Shape::of(true, format);
            let write = || async { Ok(format.write(Arc::clone(&answer), ())) };
            caching::reply((&answer, shape), state.engine.clock.now(), &head.headers, write)
                .await
                .unwrap_or_else(|e| e.into_response_for(rid.as_deref()))
        }
        JobResult::Failed(e) => error::engine_response(&e, rid.as_deref()),
        JobResult::LetGo(bytes) => {
            ServiceError::ResultLetGo { id, bytes, limit: state.settings.jobs.max_result_bytes }
                .into_response_for(rid.as_deref())
        }
        JobResult::Cancelled => error::plain(
            StatusCode::CONFLICT,
            format!("job {id} was cancelled; it has no result"),
            rid.as_deref(),
        ),
        JobResult::Pending(state) => error::plain(
            StatusCode::CONFLICT,
            format!(
                "job {id} is {}; its result is ready when its state is done",
                match state {
                    JobState::Queued => "queued",
                    _ => "running",
                }
            ),
            rid.as_deref(),
        ),
    }
}

/// `DELETE /v1/jobs/{id}`: cancels a queued or running job (no upstream call starts after
/// it) and forgets the job, whatever its state: then it is `404`.
#[utoipa::path(delete, path = "/v1/jobs/{id}", tag = "jobs",
    params(("id" = String, Path, description = "The job's ID")),
    responses(
        (status = 200, description = "The job as it was left: cancelled if it was queued or running. It is forgotten (then 404).", body = JobStatus),
        (status = 401, description = "No or unknown API key", body = ErrorBody),
        (status = 404, description = "No such job of this client's", body = ErrorBody),
    ),
    security(("bearer" = []), ("oauth1" = [])))]
pub async fn cancel(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    head: RequestHead,
) -> Response {
    match find(&state, &head, &id).await {
        Ok(job) => {
            state.jobs.delete(&job);
            Json(JobStatus::of(job.report(&state.engine))).into_response()
        }
        Err(e) => e.into_response_for(request_id(&head.headers).as_deref()),
    }
}

//! The HTTP surface: the drop-in `/insights/engagement/historical`, the native
//! `/v1/historical`, and the probes.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::middleware::Next;
use axum::response::Response;
use engagement::derive::Derived;
use engagement::request::QuestionBody;
use engagement::tree::CountStyle;
use engagement::{ApiError, Query};
use tokio::sync::OwnedSemaphorePermit;
use tokio_util::task::task_tracker::TaskTrackerToken;
use tracing::Instrument;

use crate::auth::Caller;
use crate::error::{self, EngineError, ServiceError};
use crate::request_id::request_id;
use crate::schemas::{DropInAnswer, NativeAnswer, QuestionErrors};
use crate::state::AppState;
use crate::streaming;
use engine::{Answer, Meta, NativeQuestion, Reading};

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

/// What authentication looks at.
pub(crate) struct RequestHead {
    pub method: Method,
    pub uri: Uri,
    pub headers: HeaderMap,
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
    let question =
        body.historical(reading, &state.limits, chrono::Utc::now()).map_err(ServiceError::BadRequest)?;
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

/// Admits, authenticates and reads a question; then answers it.
async fn ask(
    state: &Arc<AppState>,
    head: &RequestHead,
    body: Body,
    native: bool,
) -> Result<(Answer, Admitted, Format), ServiceError> {
    let reading = if native { Reading::NATIVE } else { Reading::DROP_IN };
    let Asked { caller, admitted, question, counts } = read_question(state, head, body, reading).await?;
    let format = if native { Format::asked(&head.uri, &head.headers)? } else { Format::Json };
    let room = room_for(state, counts)?;
    let deadline = tokio::time::Instant::now() + state.settings.request_timeout();
    let answer = state
        .engine
        .answer(&engine::Ask::new(caller.handle, deadline, state.cut_off.clone()), &question)
        .instrument(tracing::info_span!("question", client = %caller.client))
        .await?;
    Ok((answer, Admitted { _request: admitted, _counts: room }, format))
}

/// `POST /insights/engagement/historical`: the API's request and answer, any span.
#[utoipa::path(post, path = "/insights/engagement/historical", tag = "questions", request_body = QuestionBody,
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
    body: Body,
) -> Response {
    respond(&state, RequestHead { method, uri, headers }, body, false).await
}

/// `POST /v1/historical`: the same question; integer counts and a `meta` block.
#[utoipa::path(post, path = "/v1/historical", tag = "questions", request_body = NativeQuestion,
    params(("format" = Option<crate::schemas::AnswerFormat>, Query, description = "json (the default) or csv; Accept: text/csv asks for CSV too")),
    responses(
        (status = 200, description = "The answer with integer counts and meta; as CSV (grouping,tweet_id,engagement_type,day,hour,count; no derived numbers) when asked", content(
            (NativeAnswer = "application/json"),
            (String = "text/csv"),
        )),
        QuestionErrors,
    ),
    security(("bearer" = []), ("oauth1" = [])))]
pub async fn native(
    State(state): State<Arc<AppState>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Response {
    respond(&state, RequestHead { method, uri, headers }, body, true).await
}

/// On a CSV answer with `"partial": true`: how many slices failed and are left out (the
/// JSON answer lists them under `meta.incomplete`).
pub const INCOMPLETE_SLICES: header::HeaderName = header::HeaderName::from_static("x-incomplete-slices");

/// On a CSV answer: how many of the Tweets asked for are deleted (the JSON answer lists
/// them under `unavailable_tweet_ids`).
pub const UNAVAILABLE_TWEETS: header::HeaderName = header::HeaderName::from_static("x-unavailable-tweets");

/// How a native answer is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Format {
    Json,
    /// One row per count (`engagement::csv`); derived numbers are left out.
    Csv,
}

impl Format {
    /// `?format=csv|json` if given, else `Accept: text/csv` for CSV, else JSON.
    pub(crate) fn asked(uri: &Uri, headers: &HeaderMap) -> Result<Format, ServiceError> {
        let given = uri
            .query()
            .into_iter()
            .flat_map(|q| url::form_urlencoded::parse(q.as_bytes()))
            .find(|(k, _)| k == "format")
            .map(|(_, v)| v.into_owned());
        match given.as_deref().map(str::to_ascii_lowercase).as_deref() {
            Some("csv") => return Ok(Format::Csv),
            Some("json") => return Ok(Format::Json),
            Some(_) => {
                let other = given.unwrap_or_default();
                return Err(ServiceError::BadRequest(ApiError::new(format!(
                    "format must be json or csv, not {other:?}"
                ))));
            }
            None => {}
        }
        // CSV when `Accept` prefers it to JSON (by its `q`, JSON winning a tie).
        let (mut csv, mut json) = (0.0f32, 0.0f32);
        let ranges =
            headers.get_all(header::ACCEPT).iter().filter_map(|v| v.to_str().ok()).flat_map(|v| v.split(','));
        for range in ranges {
            let mut parts = range.split(';');
            let media = parts.next().unwrap_or_default().trim().to_ascii_lowercase();
            // A weight that is not a number from 0 to 1 makes the range count for nothing.
            let q = match parts.find_map(|p| p.trim().strip_prefix("q=")) {
                None => 1.0,
                Some(q) => q.trim().parse::<f32>().ok().filter(|q| (0.0..=1.0).contains(q)).unwrap_or(0.0),
            };
            match media.as_str() {
                "text/csv" => csv = csv.max(q),
                "application/json" | "application/*" | "*/*" => json = json.max(q),
                _ => {}
            }
        }
        Ok(if csv > 0.0 && csv > json { Format::Csv } else { Format::Json })
    }

    /// The native answer in this format, written as a stream.
    pub(crate) fn write(self, answer: Arc<Answer>, keep: impl Send + 'static) -> Response {
        match self {
            Format::Json => streaming::json(move |out| {
                let _keep = keep;
                serde_json::to_writer(out, &native_body(&answer))
            }),
            Format::Csv => {
                let (incomplete, unavailable) =
                    (answer.incomplete.len(), answer.response.unavailable_tweet_ids.len());
                let mut response = streaming::csv(move |out| {
                    let _keep = keep;
                    engagement::csv::write(&answer.response, &answer.groupings, out)
                });
                // CSV has no room for `meta.incomplete` or `unavailable_tweet_ids`: say
                // that slices or Tweets are missing.
                for (name, n) in [(INCOMPLETE_SLICES, incomplete), (UNAVAILABLE_TWEETS, unavailable)] {
                    if n > 0 {
                        response.headers_mut().insert(name, n.into());
                    }
                }
                response
            }
        }
    }
}

/// Answers a question in the drop-in shape or the native one, streaming the answer and
/// naming the request's ID in errors.
async fn respond(state: &Arc<AppState>, head: RequestHead, body: Body, native: bool) -> Response {
    let id = request_id(&head.headers);
    match ask(state, &head, body, native).await {
        Ok((answer, admitted, Format::Csv)) => Format::Csv.write(Arc::new(answer), admitted),
        Ok((answer, admitted, _)) if answer.written.is_some() => {
            // A repeat: its text is kept (or made once now, off the async workers).
            let made =
                tokio::task::spawn_blocking(move || repeat_text(&answer, native).map(|t| (t, admitted)));
            match made.await {
                Ok(Ok((chunks, _admitted))) => streaming::chunks(chunks),
                Ok(Err(e)) => ServiceError::internal("the answer could not be written", Some(Box::new(e)))
                    .into_response_for(id.as_deref()),
                Err(e) => ServiceError::internal("the answer could not be written", Some(Box::new(e)))
                    .into_response_for(id.as_deref()),
            }
        }
        Ok((answer, admitted, format)) if native => format.write(Arc::new(answer), admitted),
        Ok((answer, admitted, _)) => streaming::json(move |out| {
            let _admitted = admitted;
            serde_json::to_writer(out, &answer.response.styled(CountStyle::Strings))
        }),
        Err(e) => e.into_response_for(id.as_deref()),
    }
}

/// A repeated answer's body from its kept text: the drop-in body is the text itself; the
/// native one frames it with `meta`.
fn repeat_text(answer: &Answer, native: bool) -> serde_json::Result<Vec<axum::body::Bytes>> {
    let Some(written) = &answer.written else {
        return Ok(vec![serde_json::to_vec(&native_body(answer))?.into()]);
    };
    if !native {
        return Ok(vec![written.text(&answer.response, CountStyle::Strings)?]);
    }
    let data = written.text(&answer.response, CountStyle::Integers)?;
    // `{"meta": …, "derived": …}` with its `{` made the `,` after `data`.
    let mut tail = serde_json::to_vec(&NativeTail::of(answer))?;
    tail[0] = b',';
    Ok(vec![axum::body::Bytes::from_static(b"{\"data\":"), data, tail.into()])
}

/// A native body, written straight from the tree (no intermediate JSON value): the counts
/// as integers under `data`, then what `tail` says of them (`meta`, derived numbers).
#[derive(serde::Serialize)]
pub(crate) struct NativeBody<'a, T> {
    data: engagement::tree::Styled<'a, engagement::Response>,
    #[serde(flatten)]
    tail: T,
}

impl<'a, T> NativeBody<'a, T> {
    /// The body of `response`, followed by `tail`.
    pub(crate) fn new(response: &'a engagement::Response, tail: T) -> NativeBody<'a, T> {
        NativeBody { data: response.styled(CountStyle::Integers), tail }
    }
}

/// What the native body carries besides `data`.
#[derive(serde::Serialize)]
pub(crate) struct NativeTail<'a> {
    meta: NativeMeta<'a>,
    #[serde(flatten)]
    derived: &'a Derived,
}

impl NativeTail<'_> {
    fn of(answer: &Answer) -> NativeTail<'_> {
        NativeTail {
            meta: NativeMeta { meta: &answer.meta, incomplete: &answer.incomplete },
            derived: &answer.derived,
        }
    }
}

#[derive(serde::Serialize)]
pub(crate) struct NativeMeta<'a> {
    #[serde(flatten)]
    meta: &'a Meta,
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    incomplete: &'a [crate::error::FailedSlice],
}

pub(crate) fn native_body(answer: &Answer) -> NativeBody<'_, NativeTail<'_>> {
    NativeBody::new(&answer.response, NativeTail::of(answer))
}

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

//! The historical surface: the drop-in `/insights/engagement/historical` and the native
//! `/v1/historical`.

use std::sync::Arc;

use axum::extract::State;
use axum::response::Response;
use engagement::request::QuestionBody;
use engagement::tree::CountStyle;

use crate::admission::{Admission, Admitted, Asked, read_question, room_for};
use crate::caching::{self, Shape};
use crate::error::ServiceError;
use crate::format::{Format, NativeTail, native_body};
use crate::request_id::request_id;
use crate::schemas::{DropInAnswer, NativeAnswer, QuestionErrors};
use crate::state::AppState;
use crate::streaming;
use engine::{Answer, NativeQuestion, Reading};

/// Reads the question `admission` brought; then answers it.
async fn ask(
    state: &Arc<AppState>,
    admission: Admission,
    native: bool,
) -> Result<(Answer, Admitted, Format), ServiceError> {
    let reading = if native { Reading::NATIVE } else { Reading::DROP_IN };
    // The question's own problems are told before a format it cannot be written in.
    let format =
        if native { Format::asked(&admission.head.uri, &admission.head.headers) } else { Ok(Format::Json) };
    let Asked { caller, admitted, question, counts } = read_question(state, admission, reading)?;
    let format = format?;
    let room = room_for(state, counts)?;
    let deadline = tokio::time::Instant::now() + state.settings.request_timeout();
    let answer = state
        .engine
        .answer(&engine::Ask::new(&caller.client, caller.handle, deadline, state.cut_off.clone()), &question)
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
pub async fn drop_in(State(state): State<Arc<AppState>>, admission: Admission) -> Response {
    respond(&state, admission, false).await
}

/// `POST /v1/historical`: the same question; integer counts and a `meta` block.
#[utoipa::path(post, path = "/v1/historical", tag = "questions", request_body = NativeQuestion,
    params(("format" = Option<crate::schemas::AnswerFormat>, Query, description = "json (the default) or csv; Accept: text/csv asks for CSV too")),
    responses(
        (status = 200, description = "The answer with integer counts and meta; as CSV (grouping,tweet_id,engagement_type,week,month,day,hour,count; no derived numbers) when asked", content(
            (NativeAnswer = "application/json"),
            (String = "text/csv"),
        )),
        QuestionErrors,
    ),
    security(("bearer" = []), ("oauth1" = [])))]
pub async fn native(State(state): State<Arc<AppState>>, admission: Admission) -> Response {
    respond(&state, admission, true).await
}

/// Answers a question in the drop-in shape or the native one, streaming the answer and
/// naming the request's ID in errors; with its entity tag, or `304` when the client holds
/// the answer already.
async fn respond(state: &Arc<AppState>, admission: Admission, native: bool) -> Response {
    let id = request_id(&admission.head.headers);
    let asked = admission.head.headers.clone();
    let replied = async {
        let (answer, admitted, format) = ask(state, admission, native).await?;
        let (answer, shape) = (Arc::new(answer), Shape::of(native, format));
        let write = || write(Arc::clone(&answer), shape, admitted, format);
        caching::reply((&answer, shape), state.engine.clock.now(), &asked, write).await
    };
    replied.await.unwrap_or_else(|e| e.into_response_for(id.as_deref()))
}

/// `answer` written as `shape` (`format` for the native one), holding `admitted` while it
/// is written.
async fn write(
    answer: Arc<Answer>,
    shape: Shape,
    admitted: Admitted,
    format: Format,
) -> Result<Response, ServiceError> {
    let native = shape != Shape::DropIn;
    Ok(match shape {
        Shape::Csv => Format::Csv.write(answer, admitted),
        _ if answer.written.is_some() => {
            // A repeat: its text is kept (or made once now, off the async workers).
            const FAILED: &str = "the answer could not be written";
            let made = engine::off_the_workers(FAILED, move || {
                repeat_text(&answer, native)
                    .map(|text| (text, admitted))
                    .map_err(|e| ServiceError::internal(FAILED, Some(Box::new(e))))
            });
            let (chunks, _admitted) = made.await?;
            streaming::chunks(chunks)
        }
        Shape::Native => format.write(answer, admitted),
        Shape::DropIn => streaming::json(move |out| {
            let _admitted = admitted;
            serde_json::to_writer(out, &answer.response.styled(CountStyle::Strings))
        }),
    })
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

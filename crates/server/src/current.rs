//! The API's two other endpoints without their limits on Tweets: `/totals` (lifetime
//! counts) and `/28hr` (the last 28 hours), as drop-ins and as native `/v1/` twins.

use std::sync::Arc;

use axum::extract::State;
use axum::http::Uri;
use axum::response::Response;
use engagement::Endpoint;
use engagement::tree::CountStyle;
use serde::Serialize;

use crate::admission::{Admission, Admitted, answer_size, room_for};
use crate::error::ServiceError;
use crate::format::{Format, NativeBody};
use crate::request_id::request_id;
use crate::schemas::{
    Hr28Question, NativeHr28Question, NativeTotalsQuestion, NowDropInAnswer, NowNativeAnswer, QuestionErrors,
    TotalsQuestion,
};
use crate::state::AppState;
use crate::streaming;
use engine::{NativeQuestion, NowAnswer, NowMeta, Reading};

/// Reads and answers the `/totals` or `/28hr` question `admission` brought.
async fn ask(
    state: &Arc<AppState>,
    admission: Admission,
    (endpoint, reading): (Endpoint, Reading),
) -> Result<(NowAnswer, Admitted), ServiceError> {
    let Admission { head, caller, in_flight: admitted, body } = admission;
    if query_names_format(&head.uri) && Format::asked(&head.uri, &head.headers)? == Format::Csv {
        return Err(refused(format!(
            "{} answers JSON only; CSV is for /v1/historical and job results",
            head.uri.path()
        )));
    }
    let body = NativeQuestion::read(&body, reading).map_err(ServiceError::BadRequest)?;
    let query = body
        .current(endpoint, head.uri.path(), &state.limits, state.engine.clock.now())
        .map_err(ServiceError::BadRequest)?;
    let room = room_for(state, answer_size(state, &query)?)?;
    let deadline = tokio::time::Instant::now() + state.settings.request_timeout();
    let answer = state
        .engine
        .current(&engine::Ask::new(&caller.client, caller.handle, deadline, state.cut_off.clone()), &query)
        .await?;
    Ok((answer, Admitted { _request: admitted, _counts: room }))
}

fn refused(message: String) -> ServiceError {
    ServiceError::BadRequest(engagement::ApiError::new(message))
}

/// Whether the URL's query names a `format`.
fn query_names_format(uri: &Uri) -> bool {
    uri.query().is_some_and(|q| url::form_urlencoded::parse(q.as_bytes()).any(|(k, _)| k == "format"))
}

/// What the native body carries besides `data`.
#[derive(Serialize)]
struct NowTail<'a> {
    meta: &'a NowMeta,
}

/// Answers a `/totals` or `/28hr` question in the API's shape or the native one, streamed.
async fn respond(state: &Arc<AppState>, admission: Admission, endpoint: Endpoint, native: bool) -> Response {
    let id = request_id(&admission.head.headers);
    let reading = if native { Reading::NATIVE } else { Reading::DROP_IN };
    match ask(state, admission, (endpoint, reading)).await {
        Ok((answer, admitted)) => streaming::json(move |out| {
            let _admitted = admitted;
            if native {
                serde_json::to_writer(out, &NativeBody::new(&answer.response, NowTail { meta: &answer.meta }))
            } else {
                serde_json::to_writer(out, &answer.response.styled(CountStyle::Strings))
            }
        }),
        Err(e) => e.into_response_for(id.as_deref()),
    }
}

/// `POST /insights/engagement/totals`: the API's request and answer, any number of Tweets
/// (batches of 250).
#[utoipa::path(post, path = "/insights/engagement/totals", tag = "questions", request_body = TotalsQuestion,
    responses(
        (status = 200, description = "Lifetime counts per the groupings, as strings (all impressions, organic and promoted; /historical counts organic ones)", body = NowDropInAnswer),
        QuestionErrors,
    ),
    security(("bearer" = []), ("oauth1" = [])))]
pub async fn totals(State(state): State<Arc<AppState>>, admission: Admission) -> Response {
    respond(&state, admission, Endpoint::Totals, false).await
}

/// `POST /insights/engagement/28hr`: the API's request and answer, any number of Tweets
/// (batches of 25).
#[utoipa::path(post, path = "/insights/engagement/28hr", tag = "questions", request_body = Hr28Question,
    responses(
        (status = 200, description = "The last 28 hours per the groupings, counts as strings", body = NowDropInAnswer),
        QuestionErrors,
    ),
    security(("bearer" = []), ("oauth1" = [])))]
pub async fn hr28(State(state): State<Arc<AppState>>, admission: Admission) -> Response {
    respond(&state, admission, Endpoint::Hr28, false).await
}

/// `POST /v1/totals`: the same question; integer counts and `meta`.
#[utoipa::path(post, path = "/v1/totals", tag = "questions", request_body = NativeTotalsQuestion,
    responses(
        (status = 200, description = "Lifetime counts with integer counts and meta", body = NowNativeAnswer),
        QuestionErrors,
    ),
    security(("bearer" = []), ("oauth1" = [])))]
pub async fn native_totals(State(state): State<Arc<AppState>>, admission: Admission) -> Response {
    respond(&state, admission, Endpoint::Totals, true).await
}

/// `POST /v1/28hr`: the same question; integer counts and `meta`.
#[utoipa::path(post, path = "/v1/28hr", tag = "questions", request_body = NativeHr28Question,
    responses(
        (status = 200, description = "The last 28 hours with integer counts and meta", body = NowNativeAnswer),
        QuestionErrors,
    ),
    security(("bearer" = []), ("oauth1" = [])))]
pub async fn native_28hr(State(state): State<Arc<AppState>>, admission: Admission) -> Response {
    respond(&state, admission, Endpoint::Hr28, true).await
}

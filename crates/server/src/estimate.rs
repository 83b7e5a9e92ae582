//! `POST /v1/estimate`: what a `/v1/historical` question would cost if asked now, told
//! without asking it: no upstream call is made.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use engine::{Estimate, NativeQuestion, Reading};

use crate::admission::{Admission, Asked, read_question};
use crate::error::ServiceError;
use crate::request_id::request_id;
use crate::schemas::QuestionErrors;
use crate::state::AppState;

/// `POST /v1/estimate`.
#[utoipa::path(post, path = "/v1/estimate", tag = "questions", request_body = NativeQuestion,
    responses(
        (status = 200, description = "What asking the question now would cost; no upstream call is made", body = Estimate),
        QuestionErrors,
    ),
    security(("bearer" = []), ("oauth1" = [])))]
pub async fn estimate(State(state): State<Arc<AppState>>, admission: Admission) -> Response {
    let id = request_id(&admission.head.headers);
    match estimated(&state, admission).await {
        Ok(estimate) => Json(estimate).into_response(),
        Err(e) => e.into_response_for(id.as_deref()),
    }
}

async fn estimated(state: &AppState, admission: Admission) -> Result<Estimate, ServiceError> {
    let Asked { caller, question, .. } = read_question(state, admission, Reading::NATIVE)?;
    let asker = (caller.client.as_str(), caller.handle.handle.as_str());
    Ok(state.engine.estimate(asker, &question, state.settings.request_timeout()).await?)
}

//! The watches routes: `POST /v1/watches`, `GET /v1/watches`, `GET /v1/watches/{id}` and
//! `DELETE /v1/watches/{id}`. A watch is its client's alone: any other gets `404`.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use engine::watches::{Watch, WatchBody, WatchRefusal, WatchSpec};

use crate::admission::{Admission, RequestHead};
use crate::error::ServiceError;
use crate::request_id::request_id;
use crate::schemas::{ErrorBody, QuestionErrors, RouteErrors};
use crate::state::AppState;

/// `POST /v1/watches`: keeps the Tweets' hours over the lookback in the store, refreshed
/// every `refresh_secs` in budget no question waits for, for the caller's handle.
#[utoipa::path(post, path = "/v1/watches", tag = "watches", request_body = WatchBody,
    responses(
        (status = 201, description = "Made; Location names it. Its first fill starts at once", body = Watch,
            headers(("location" = String, description = "/v1/watches/{id}"))),
        QuestionErrors,
    ),
    security(("bearer" = []), ("oauth1" = [])))]
pub async fn create(State(state): State<Arc<AppState>>, admission: Admission) -> Response {
    let rid = request_id(&admission.head.headers);
    let made = async {
        enabled(&state)?;
        let now = state.engine.clock.now();
        let spec = WatchSpec::read(&admission.body, state.settings.watches.max_tweets, now)
            .map_err(ServiceError::BadRequest)?;
        let caller = &admission.caller;
        state.watches.create(&caller.client, &caller.handle.handle, spec).await.map_err(refused)
    };
    match made.await {
        Ok(watch) => {
            let location = HeaderValue::from_str(&format!("/v1/watches/{}", watch.id));
            let mut response = (StatusCode::CREATED, Json(watch)).into_response();
            if let Ok(location) = location {
                response.headers_mut().insert(header::LOCATION, location);
            }
            response
        }
        Err(e) => e.into_response_for(rid.as_deref()),
    }
}

/// Why a watch was not made, as the client's error: the ledger's refusal as a question's,
/// the others `403`.
fn refused(e: WatchRefusal) -> ServiceError {
    match e {
        WatchRefusal::Engine(e) => ServiceError::Engine(e),
        other => ServiceError::Forbidden(other.to_string()),
    }
}

/// The caller's client; `401` if the request has no valid credentials, `403` while
/// watches are off.
async fn client_of(state: &AppState, head: &RequestHead) -> Result<String, ServiceError> {
    let client = state.keyring.authenticate(&head.method, &head.uri, &head.headers).await?.client;
    enabled(state)?;
    Ok(client)
}

/// `403` while watches are off (`watches.enabled = false`).
fn enabled(state: &AppState) -> Result<(), ServiceError> {
    state.watches.available().map_err(refused)
}

/// `GET /v1/watches`: the caller's watches, oldest first.
#[utoipa::path(get, path = "/v1/watches", tag = "watches",
    responses(
        (status = 200, description = "The caller's watches", body = Vec<Watch>),
        (status = 401, description = "No or unknown API key", body = ErrorBody),
        RouteErrors,
    ),
    security(("bearer" = []), ("oauth1" = [])))]
pub async fn list(State(state): State<Arc<AppState>>, head: RequestHead) -> Response {
    let listed = async {
        let client = client_of(&state, &head).await?;
        Ok::<_, ServiceError>(state.watches.list(&client).await?)
    };
    match listed.await {
        Ok(watches) => Json(watches).into_response(),
        Err(e) => e.into_response_for(request_id(&head.headers).as_deref()),
    }
}

/// The caller's watch `id`, forgotten if `delete`; `404` if it is not theirs.
async fn find(state: &AppState, head: &RequestHead, id: &str, delete: bool) -> Response {
    let found = async {
        let client = client_of(state, head).await?;
        let watch = if delete {
            state.watches.delete(&client, id).await?
        } else {
            state.watches.get(&client, id).await?
        };
        watch.ok_or_else(|| ServiceError::NotFound(format!("no watch {id} of yours is kept")))
    };
    match found.await {
        Ok(watch) => Json(watch).into_response(),
        Err(e) => e.into_response_for(request_id(&head.headers).as_deref()),
    }
}

/// `GET /v1/watches/{id}`: the watch, with its last and next refresh, the Tweet-hours held,
/// the calls it has spent, and its state.
#[utoipa::path(get, path = "/v1/watches/{id}", tag = "watches",
    params(("id" = String, Path, description = "The watch's ID")),
    responses(
        (status = 200, description = "The watch", body = Watch),
        (status = 401, description = "No or unknown API key", body = ErrorBody),
        (status = 404, description = "No such watch of this client's", body = ErrorBody),
        RouteErrors,
    ),
    security(("bearer" = []), ("oauth1" = [])))]
pub async fn status(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    head: RequestHead,
) -> Response {
    find(&state, &head, &id, false).await
}

/// `DELETE /v1/watches/{id}`: forgets the watch and stops its refresh; what is already in
/// the store stays there, like any other facts.
#[utoipa::path(delete, path = "/v1/watches/{id}", tag = "watches",
    params(("id" = String, Path, description = "The watch's ID")),
    responses(
        (status = 200, description = "The watch as it was; it is forgotten (then 404)", body = Watch),
        (status = 401, description = "No or unknown API key", body = ErrorBody),
        (status = 404, description = "No such watch of this client's", body = ErrorBody),
        RouteErrors,
    ),
    security(("bearer" = []), ("oauth1" = [])))]
pub async fn delete(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    head: RequestHead,
) -> Response {
    find(&state, &head, &id, true).await
}

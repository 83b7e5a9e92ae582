//! `GET /v1/usage`: the month's handle ledger. The API bills every @handle the app calls for
//! in a calendar month against the contract's cap and leaves the counting to its clients.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, Method, Uri};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

use crate::error::ServiceError;
use crate::request_id::request_id;
use crate::schemas::ErrorBody;
use crate::settings::CapPolicy;
use crate::state::AppState;

/// The month's handles: the count is the app's, the names those granted to the caller.
#[derive(Debug, Serialize, ToSchema)]
pub struct Usage {
    /// The calendar month, UTC, as `YYYY-MM`.
    pub month: String,
    /// Distinct handles the app made calls for this month, whoever asked.
    pub handles_used: usize,
    /// `ledger.handle_cap`; null when there is none.
    pub handle_cap: Option<usize>,
    pub policy: CapPolicy,
    /// Those of the month's handles granted to the caller, by name.
    pub handles: Vec<UsedHandle>,
    /// What the caller's client takes of the upstream's calls.
    pub client: ClientUsage,
}

/// A client's use of the upstream's calls.
#[derive(Debug, Serialize, ToSchema)]
pub struct ClientUsage {
    /// The client (`clients.NAME`, or `oauth:HANDLE`).
    pub name: String,
    /// Its weight in the turns among clients (`clients.NAME.share`).
    pub share: f64,
    /// Its own cap on calls per minute (`clients.NAME.max_calls_per_minute`); null when none.
    pub max_calls_per_minute: Option<u32>,
    /// Upstream calls made for it in the last minute, at this replica.
    pub calls_this_minute: u64,
    /// Upstream calls made for it this calendar month (UTC), at this replica since it started.
    pub calls_this_month: u64,
}

/// A handle counted this month.
#[derive(Debug, Serialize, ToSchema)]
pub struct UsedHandle {
    pub handle: String,
    /// Its first call of the month, RFC 3339.
    pub first_call: String,
}

/// `GET /v1/usage`.
#[utoipa::path(get, path = "/v1/usage", tag = "usage",
    responses(
        (status = 200, description = "The month's handle ledger", body = Usage),
        (status = 401, description = "No or unknown API key", body = ErrorBody),
        crate::schemas::RouteErrors,
    ),
    security(("bearer" = []), ("oauth1" = [])))]
pub async fn usage(
    State(state): State<Arc<AppState>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    match read(&state, &method, &uri, &headers).await {
        Ok(usage) => Json(usage).into_response(),
        Err(e) => e.into_response_for(request_id(&headers).as_deref()),
    }
}

async fn read(
    state: &AppState,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
) -> Result<Usage, ServiceError> {
    let (client, granted) = state.keyring.granted_handles(method, uri, headers).await?;
    let now = state.engine.clock.now();
    let taken = state.engine.clients.of(&client, now, tokio::time::Instant::now());
    let configured = state.settings.clients.get(&client);
    let month = state.engine.shared.ledger.month(now).await?;
    let ledger = &state.settings.ledger;
    Ok(Usage {
        month: store::ledger::month_of(now),
        handles_used: month.len(),
        handle_cap: ledger.handle_cap,
        policy: ledger.policy,
        handles: month
            .into_iter()
            .filter(|e| granted.contains(&e.handle))
            .map(|e| UsedHandle {
                handle: e.handle,
                first_call: engagement::time::format_instant(e.first_call),
            })
            .collect(),
        client: ClientUsage {
            share: state.engine.calls.client(&client).share,
            max_calls_per_minute: configured.and_then(|c| c.max_calls_per_minute),
            calls_this_minute: taken.this_minute,
            calls_this_month: taken.this_month,
            name: client,
        },
    })
}

//! Building the service from settings, and serving it. `main` and the tests both go
//! through [`Application::build`].

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::Router;
use axum::http::Request;
use axum::routing::{get, post};
use secrecy::ExposeSecret;
use tower_http::LatencyUnit;
use tower_http::classify::ServerErrorsFailureClass;
use tower_http::compression::CompressionLayer;
use tower_http::decompression::RequestDecompressionLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::{DefaultOnResponse, TraceLayer};
use upstream::{
    AppCredentials, CallPolicy, ClientShare, HttpUpstream, RateBudget, Reach, SharedRate, Upstream,
};

use crate::auth::NONCE_LIFE;
use crate::request_id::{self, REQUEST_ID};
use crate::settings::Settings;
use crate::state::AppState;
use crate::{
    connections, current, demo, estimate, fallback, historical, jobs, metrics, openapi, page, probes, usage,
    watches,
};
use engine::Engine;
use engine::ports::{Clock, Shared, SystemClock};
use replicas::Sharing;

/// After the grace period, how long the `503`s of questions cut off have to be written, and
/// connections to close.
const CUT_OFF_LINGER: Duration = Duration::from_secs(2);

/// Waits up to `limit` for the questions in flight and the jobs to end (shutdown has closed
/// their tracker); whether they did.
async fn wait_for_questions(state: &AppState, limit: Duration) -> bool {
    tokio::time::timeout(limit, state.tasks.wait()).await.is_ok()
}

/// What a service talks to: its upstream, where that is, the per-minute budget, and the
/// Redis it shares with other replicas (if any).
#[derive(Debug)]
pub struct Connected {
    pub upstream: Arc<dyn Upstream>,
    pub upstream_url: String,
    pub budget: Arc<RateBudget>,
    pub sharing: Option<Arc<Sharing>>,
}

/// What `settings` connect to (starting the embedded simulator when no upstream is set).
async fn connect(settings: &Settings) -> anyhow::Result<Connected> {
    let upstream_url = match &settings.upstream.base_url {
        // Settings refuse demo credentials with an upstream off this machine.
        Some(url) => url.as_str().trim_end_matches('/').to_owned(),
        None => {
            let url = demo::start_simulator().await?;
            tracing::info!(simulator = %url, "demo mode: no upstream.base_url is set, so answers come from the embedded Engagement API simulator; ask with Authorization: Bearer demo-key");
            url
        }
    };
    let u = &settings.upstream;
    let app = AppCredentials {
        consumer_key: u.consumer_key.clone(),
        consumer_secret: u.consumer_secret.expose_secret().into(),
    };
    let sharing = Sharing::from_settings(&settings.redis)?;
    let shared_rate = sharing.as_ref().map(|sharing| sharing.rate(u.requests_per_minute));
    let budget = Arc::new(budget_of(u.requests_per_minute, u.rate_burst, shared_rate));
    let client =
        HttpUpstream::new(&upstream_url, app, Arc::clone(&budget), Duration::from_secs(u.call_timeout_secs))?;
    Ok(Connected { upstream: Arc::new(client), upstream_url, budget, sharing })
}

/// The state for `settings` on what it is `connected` to: its store, and the ports of what
/// it shares with its replicas (their Redis watched while the service lives), judging time
/// by `clock`.
fn start(settings: Settings, connected: Connected, clock: Arc<dyn Clock>) -> anyhow::Result<Arc<AppState>> {
    let Connected { upstream, budget, sharing, .. } = connected;
    let clock = match &sharing {
        Some(sharing) => sharing.clock(clock),
        None => clock,
    };
    let store = Arc::new(store::Store::open(settings.store_config())?);
    let alone = Shared::alone(Arc::clone(&store), NONCE_LIFE);
    let shared = match &sharing {
        Some(sharing) => {
            let paced_alone = Arc::clone(&budget);
            sharing.watch((Arc::clone(&alone.ledger), Arc::clone(&clock)), move || paced_alone.fallbacks());
            sharing.ports(alone)
        }
        None => alone,
    };
    let calls = CallPolicy::new(upstream, budget, settings.upstream.max_in_flight, settings.retry_policy())
        .with_clients(client_shares(&settings, sharing.as_ref()));
    let engine = Engine::new(calls, store, settings.store.enabled, settings.ledger.clone(), shared, clock);
    Ok(Arc::new(AppState::new(settings, Arc::new(engine))))
}

/// Each client's share of the turns and its own per-minute cap, if any: paced on Redis with
/// the other replicas when they share a budget, else here.
fn client_shares(settings: &Settings, sharing: Option<&Arc<Sharing>>) -> HashMap<String, ClientShare> {
    let burst = settings.upstream.rate_burst;
    settings
        .clients
        .iter()
        .map(|(name, client)| {
            let cap = client.max_calls_per_minute.map(|per_minute| {
                let shared_rate = sharing.map(|sharing| sharing.client_rate(name, per_minute));
                Arc::new(budget_of(per_minute, burst.clamp(1, per_minute), shared_rate))
            });
            (name.clone(), ClientShare { share: client.share, cap })
        })
        .collect()
}

/// A budget of `per_minute` calls with bursts of `burst`: on the replicas' shared rate (and
/// what this replica takes alone while it is away), when they share one, else this
/// process's own.
fn budget_of(per_minute: u32, burst: u32, shared: Option<(Arc<dyn SharedRate>, Option<u32>)>) -> RateBudget {
    match shared {
        Some((rate, alone)) => RateBudget::shared(per_minute, burst, rate, alone),
        None => RateBudget::new(per_minute, burst),
    }
}

/// A built service, bound to its port, ready to serve.
#[derive(Debug)]
pub struct Application {
    listener: tokio::net::TcpListener,
    state: Arc<AppState>,
    upstream_url: String,
}

impl Application {
    /// Binds `server.listen`, starts the embedded simulator when no upstream is set, and
    /// builds the state.
    pub async fn build(settings: Settings) -> anyhow::Result<Application> {
        Self::build_on(settings, Arc::new(SystemClock)).await
    }

    /// Like [`Application::build`], judging time by `clock` (tests move it ahead to pass
    /// TTLs without waiting).
    pub async fn build_on(settings: Settings, clock: Arc<dyn Clock>) -> anyhow::Result<Application> {
        let connected = connect(&settings).await?;
        Self::with_upstream(settings, connected, clock).await
    }

    /// Like [`Application::build_on`], with what it talks to given (tests, other stand-ins).
    pub async fn with_upstream(
        settings: Settings,
        connected: Connected,
        clock: Arc<dyn Clock>,
    ) -> anyhow::Result<Application> {
        let upstream_url = connected.upstream_url.clone();
        let listener = tokio::net::TcpListener::bind(&settings.server.listen)
            .await
            .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", settings.server.listen))?;
        metrics::handle();
        metrics::start_at_zero();
        let state = start(settings, connected, clock)?;
        state.watches.keep_warm(&state.tasks);
        // A wrong upstream.base_url is said at start, not by the first question.
        let probed = Arc::clone(&state);
        tokio::spawn(async move {
            if let Reach::Unreachable(reason) = probed.engine.calls.upstream().probe().await {
                tracing::warn!(%reason, "the Engagement API cannot be reached: questions that need calls will fail until it can; check upstream.base_url");
            }
        });
        // Finished jobs' results are let go once their time is over, asked for or not.
        let jobs = Arc::downgrade(&state);
        tokio::spawn(async move {
            let mut every = tokio::time::interval(Duration::from_secs(5));
            loop {
                every.tick().await;
                let Some(state) = jobs.upgrade() else { return };
                state.jobs.sweep();
            }
        });
        Ok(Application { listener, state, upstream_url })
    }

    /// The state of a service for `settings` with nothing to listen on: the same engine,
    /// store and upstream (the embedded simulator when none is set), for `stitcher query`.
    pub async fn standalone(settings: Settings) -> anyhow::Result<Arc<AppState>> {
        let connected = connect(&settings).await?;
        start(settings, connected, Arc::new(SystemClock))
    }

    /// The address the service listens on.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Where upstream calls go.
    pub fn upstream_url(&self) -> &str {
        &self.upstream_url
    }

    /// Serves until `shutdown` completes. Then `/readyz` answers `503` and new questions are
    /// refused at once, questions in flight get `server.shutdown_grace_secs` to finish (those
    /// still running then are answered `503` with what was not done), and the server stops.
    pub async fn run_until(self, shutdown: impl Future<Output = ()> + Send + 'static) -> std::io::Result<()> {
        let addr = self.listener.local_addr()?;
        tracing::info!(%addr, upstream = %self.upstream_url, "stitcher serving");
        let state = Arc::clone(&self.state);
        let server = &state.settings.server;
        let grace = Duration::from_secs(server.shutdown_grace_secs);
        let limits = connections::Limits {
            header_timeout: state.settings.header_timeout(),
            idle_timeout: Duration::from_secs(server.idle_timeout_secs),
            write_timeout: Duration::from_secs(server.write_timeout_secs),
            max_connections: server.max_connections,
        };
        let draining = {
            let state = Arc::clone(&state);
            async move {
                shutdown.await;
                state.ready.store(false, Ordering::SeqCst);
                state.jobs.close();
                state.watches.close();
                state.tasks.close();
                tracing::info!(
                    grace_secs = grace.as_secs(),
                    in_flight = state.questions_in_flight(),
                    jobs_running = state.jobs.running(),
                    "shutting down: refusing new questions and jobs, failing queued jobs, finishing those in flight"
                );
                if !wait_for_questions(&state, grace).await {
                    tracing::warn!(
                        in_flight = state.questions_in_flight(),
                        jobs_running = state.jobs.running(),
                        "grace period over: answering the questions still in flight with 503, failing running jobs"
                    );
                    state.cut_off.cancel();
                    wait_for_questions(&state, CUT_OFF_LINGER).await;
                }
            }
        };
        // Once drained, connections get a moment to close before the process stops anyway.
        connections::serve(self.listener, router(Arc::clone(&self.state)), limits, draining, CUT_OFF_LINGER)
            .await;
        sync_store(&self.state).await;
        Ok(())
    }

    /// Serves until the process is told to stop.
    pub async fn run(self) -> std::io::Result<()> {
        self.run_until(std::future::pending()).await
    }
}

/// Puts what the store committed last on disk before the process ends (it would be there
/// within `store::SYNC_EVERY` anyway, had the process lived).
pub(crate) async fn sync_store(state: &AppState) {
    let store = Arc::clone(&state.engine.store);
    match tokio::task::spawn_blocking(move || store.sync()).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::error!(error = %e, "the store's last facts could not be synced to disk"),
        Err(e) => tracing::error!(error = %e, "syncing the store failed"),
    }
}

/// The routes and middleware of the service.
pub fn router(state: Arc<AppState>) -> Router {
    let routes = Router::new()
        .route("/", get(page::index))
        .route("/page/app.js", get(page::script))
        .route("/page/style.css", get(page::style))
        .route("/insights/engagement/historical", post(historical::drop_in))
        .route("/v1/historical", post(historical::native))
        .route("/v1/estimate", post(estimate::estimate))
        .route("/insights/engagement/totals", post(current::totals))
        .route("/insights/engagement/28hr", post(current::hr28))
        .route("/v1/totals", post(current::native_totals))
        .route("/v1/28hr", post(current::native_28hr))
        .route("/v1/jobs", post(jobs::submit))
        .route("/v1/jobs/{id}", get(jobs::status).delete(jobs::cancel))
        .route("/v1/jobs/{id}/result", get(jobs::result))
        .route("/v1/usage", get(usage::usage))
        .route("/v1/watches", post(watches::create).get(watches::list))
        .route("/v1/watches/{id}", get(watches::status).delete(watches::delete))
        .route("/livez", get(probes::livez))
        .route("/readyz", get(probes::readyz))
        .route("/metrics", get(probes::metrics))
        .route("/openapi.json", get(openapi::serve))
        .route_layer(axum::middleware::from_fn(metrics::track))
        .fallback(fallback::not_found)
        .layer(RequestDecompressionLayer::new())
        .with_state(state);
    // The layers below see the routes' whole answers (a `405` with its `Allow`, which the
    // routes add last).
    Router::new()
        .fallback_service(routes)
        .layer(axum::middleware::from_fn(fallback::error_bodies))
        .layer(CompressionLayer::new())
        .layer(PropagateRequestIdLayer::new(REQUEST_ID))
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(|req: &Request<_>| {
                    let id = req.headers().get(REQUEST_ID).and_then(|v| v.to_str().ok()).unwrap_or("-");
                    let span = tracing::info_span!(
                        "request",
                        method = %req.method(),
                        path = %req.uri().path(),
                        request_id = %id,
                        trace_id = tracing::field::Empty,
                    );
                    crate::telemetry::continue_trace(&span, req.headers());
                    span
                })
                // One line per request at info: status and latency, inside the request's span.
                .on_response(
                    DefaultOnResponse::new().level(tracing::Level::INFO).latency_unit(LatencyUnit::Millis),
                )
                .on_failure(log_failure),
        )
        .layer(SetRequestIdLayer::new(REQUEST_ID, MakeRequestUuid))
        .layer(axum::middleware::from_fn(request_id::fresh_request_id))
}

/// Logs a `5xx`: at WARN when the service is only full or stopping (`503`, an expected
/// condition with its own `Retry-After`), at ERROR otherwise.
fn log_failure(class: ServerErrorsFailureClass, latency: Duration, _span: &tracing::Span) {
    let latency_ms = latency.as_millis() as u64;
    match class {
        ServerErrorsFailureClass::StatusCode(status)
            if status == axum::http::StatusCode::SERVICE_UNAVAILABLE =>
        {
            tracing::warn!(status = status.as_u16(), latency_ms, "service unavailable");
        }
        other => tracing::error!(classification = %other, latency_ms, "request failed"),
    }
}

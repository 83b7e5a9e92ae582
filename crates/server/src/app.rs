//! Building the service from settings, and serving it. `main` and the tests both go
//! through [`Application::build`].

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderName, Request};
use axum::routing::{get, post};
use secrecy::ExposeSecret;
use tower_http::LatencyUnit;
use tower_http::compression::CompressionLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::{DefaultOnResponse, TraceLayer};
use upstream::{AppCredentials, HttpUpstream, RateBudget, Upstream};

use crate::settings::Settings;
use crate::state::AppState;
use crate::{demo, metrics, openapi, routes};

/// The header that carries a request's ID.
pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

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
        let upstream_url = match &settings.upstream.base_url {
            Some(url) => {
                let demo = demo::demo_credentials_in_use(&settings);
                if !demo::is_loopback(url) && !demo.is_empty() {
                    tracing::warn!(upstream = %url, settings = ?demo, "demo credentials are configured for an upstream that is not on this machine; set real ones (see config/production.example.toml)");
                }
                url.clone()
            }
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
        let budget = Arc::new(RateBudget::new(u.requests_per_minute, u.rate_burst));
        let client = HttpUpstream::new(
            &upstream_url,
            app,
            Arc::clone(&budget),
            Duration::from_secs(u.call_timeout_secs),
        )?;
        Self::with_upstream(settings, Arc::new(client), upstream_url, Some(budget)).await
    }

    /// Like [`Application::build`], with the upstream given (tests, other stand-ins).
    pub async fn with_upstream(
        settings: Settings,
        upstream: Arc<dyn Upstream>,
        upstream_url: String,
        budget: Option<Arc<RateBudget>>,
    ) -> anyhow::Result<Application> {
        let listener = tokio::net::TcpListener::bind(&settings.server.listen)
            .await
            .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", settings.server.listen))?;
        metrics::handle();
        let state = Arc::new(AppState::new(settings, upstream, budget));
        Ok(Application { listener, state, upstream_url })
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
    /// refused at once, questions in flight get `server.shutdown_grace_secs` to finish, and
    /// the server stops.
    pub async fn run_until(self, shutdown: impl Future<Output = ()> + Send + 'static) -> std::io::Result<()> {
        let addr = self.listener.local_addr()?;
        tracing::info!(%addr, upstream = %self.upstream_url, "stitcher serving");
        let state = Arc::clone(&self.state);
        let grace = Duration::from_secs(state.settings.server.shutdown_grace_secs);
        let (drained, drained_rx) = tokio::sync::oneshot::channel::<()>();
        let draining = async move {
            shutdown.await;
            state.ready.store(false, Ordering::SeqCst);
            tracing::info!(
                grace_secs = grace.as_secs(),
                in_flight = state.questions_in_flight(),
                "shutting down: refusing new questions, finishing those in flight"
            );
            let deadline = tokio::time::Instant::now() + grace;
            while state.questions_in_flight() > 0 && tokio::time::Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            let _ = drained.send(());
        };
        let server =
            axum::serve(self.listener, router(Arc::clone(&self.state))).with_graceful_shutdown(draining);
        // Once drained, connections that stay open (idle keep-alives, questions past the
        // grace period) get a moment to close before the process stops anyway.
        let hard_stop = async {
            if drained_rx.await.is_ok() {
                tokio::time::sleep(Duration::from_secs(1)).await;
            } else {
                std::future::pending::<()>().await;
            }
        };
        tokio::select! {
            served = server => served,
            () = hard_stop => {
                tracing::warn!("connections still open after the grace period; stopping");
                Ok(())
            }
        }
    }

    /// Serves until the process is told to stop.
    pub async fn run(self) -> std::io::Result<()> {
        self.run_until(std::future::pending()).await
    }
}

/// The routes and middleware of the service.
pub fn router(state: Arc<AppState>) -> Router {
    let body_limit = state.settings.server.max_body_bytes;
    Router::new()
        .route("/insights/engagement/historical", post(routes::drop_in))
        .route("/v1/historical", post(routes::native))
        .route("/livez", get(routes::livez))
        .route("/readyz", get(routes::readyz))
        .route("/metrics", get(metrics::serve))
        .route("/openapi.json", get(openapi::serve))
        .route_layer(axum::middleware::from_fn(metrics::track))
        .fallback(routes::not_found)
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(CompressionLayer::new())
        .layer(PropagateRequestIdLayer::new(REQUEST_ID))
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(|req: &Request<_>| {
                    let id = req.headers().get(REQUEST_ID).and_then(|v| v.to_str().ok()).unwrap_or("-");
                    tracing::info_span!("request", method = %req.method(), path = %req.uri().path(), request_id = %id)
                })
                // One line per request at info: status and latency, inside the request's span.
                .on_response(DefaultOnResponse::new().level(tracing::Level::INFO).latency_unit(LatencyUnit::Millis)),
        )
        .layer(SetRequestIdLayer::new(REQUEST_ID, MakeRequestUuid))
        .with_state(state)
}

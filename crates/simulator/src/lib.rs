//! A stand-in for the Engagement API that enforces its rules, for tests, benchmarks and the
//! service's demo mode. See `answer` for the rules, `model` for the counts, `http` for the
//! wire, and [`oracle`] for the unlimited answer tests compare against.

pub mod answer;
pub mod config;
pub mod faults;
pub mod http;
pub mod model;
pub mod rate;
pub mod stats;

use std::sync::{Arc, RwLock};

use chrono::{DateTime, Utc};

pub use answer::{Refusal, answer, oracle};
pub use config::{Clock, Config, Credentials, Handle};
pub use model::Model;

/// One running simulator: its configuration and the state its rules keep.
#[derive(Debug)]
pub struct Simulator {
    /// What the simulator was set up with; its `clock` is only the clock it started with.
    pub config: Config,
    /// The clock read now: `config.clock` until `POST /_clock` (or `set_clock`) moves it.
    clock: RwLock<Clock>,
    pub(crate) limiter: rate::PerMinute,
    pub(crate) stats: stats::Stats,
    pub(crate) faults: faults::Dice,
}

impl Simulator {
    /// A simulator with `config`, ready to serve.
    pub fn new(config: Config) -> Arc<Simulator> {
        Arc::new(Simulator {
            limiter: rate::PerMinute::new(config.rate_limit_per_minute, config.rate_window_secs),
            faults: faults::Dice::new(config.seed),
            stats: stats::Stats::default(),
            clock: RwLock::new(config.clock),
            config,
        })
    }

    /// The instant the simulator takes as now, by its current clock.
    pub fn now(&self) -> DateTime<Utc> {
        self.clock().now()
    }

    /// The clock the simulator reads now.
    pub fn clock(&self) -> Clock {
        // A panic elsewhere cannot leave a `Clock` half-written: the value is still good.
        *self.clock.read().unwrap_or_else(|e| e.into_inner())
    }

    /// Moves the simulator's clock: every answer from now on, API and oracle alike, is as of
    /// `clock`.
    pub fn set_clock(&self, clock: Clock) {
        *self.clock.write().unwrap_or_else(|e| e.into_inner()) = clock;
    }

    /// The engagement model as of now. Take one per answer: it holds `now`, so one call sees
    /// one instant even if the clock moves meanwhile.
    pub fn model(&self) -> Model {
        Model { seed: self.config.seed, now: self.now(), settle_hours: self.config.settle_hours }
    }

    /// The axum router that serves the API, the oracle, the statistics and the clock.
    pub fn router(self: &Arc<Self>) -> axum::Router {
        http::router(Arc::clone(self))
    }

    /// A snapshot of the statistics served at `/_stats`.
    pub fn stats(&self) -> stats::Snapshot {
        self.stats.snapshot()
    }

    /// Serves on `listener` until the task is dropped.
    pub async fn serve(self: Arc<Self>, listener: tokio::net::TcpListener) -> std::io::Result<()> {
        axum::serve(listener, self.router()).await
    }
}

//! The Engagement API as the service sees it: the [`Upstream`] trait, its HTTP client (OAuth
//! 1.0a signing, gzip, classification of answers; the `http` feature), and the call policy every call goes
//! through: fair turns between questions, calls in flight, the per-minute budget, retries
//! with backoff, deadlines.

pub mod blocking;
pub mod budget;
pub mod classify;
pub mod coalesce;
pub mod credentials;
pub mod gzip;
#[cfg(feature = "http")]
pub mod http;
#[cfg(feature = "http")]
pub mod http_answer;
pub mod policy;
pub mod retry;
pub mod scheduler;
#[cfg(feature = "http")]
pub mod signing;

use async_trait::async_trait;
use engagement::{Endpoint, RawRequest};
use tokio::time::Instant;

pub use budget::{RateBudget, SharedRate};
pub use classify::{AttemptError, read_answer, unreadable};
pub use coalesce::Coalesce;
pub use credentials::{AppCredentials, HandleCredentials};
pub use gzip::Body;
#[cfg(feature = "http")]
pub use http::HttpUpstream;
pub use policy::{Attempt, BudgetRefusal, CallPolicy, Calling, ClientShare};
pub use retry::{Retried, RetryPolicy};
pub use scheduler::{Lane, Scheduler};

/// Whether the upstream can be reached, as last seen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reach {
    /// Nothing has been tried yet.
    Unknown,
    /// It answered (whatever it said).
    Reached,
    /// No connection could be made, and why.
    Unreachable(String),
}

/// Something that answers the API's calls: the real API over HTTP, or a stand-in.
#[async_trait]
pub trait Upstream: Send + Sync + std::fmt::Debug {
    /// One attempt at one call to `endpoint`, as `handle`, given up at `deadline`: the body
    /// of its answer, unread (a big one maybe still compressed, for its reader to inflate on
    /// the thread that reads it: [`Body::text`]), so each caller reads what it needs of it (a
    /// tree of counts, or facts straight into the store's rows); a refusal or failure,
    /// classified.
    async fn call(
        &self,
        endpoint: Endpoint,
        handle: &HandleCredentials,
        body: &RawRequest,
        deadline: Instant,
    ) -> Result<Body, AttemptError>;

    /// Whether it could be reached when last tried.
    fn reach(&self) -> Reach {
        Reach::Unknown
    }

    /// Tries to reach it now, without a call (nothing is spent); what was found.
    async fn probe(&self) -> Reach {
        self.reach()
    }
}

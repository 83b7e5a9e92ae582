//! The Engagement API as the service sees it: the [`Upstream`] trait, its HTTP client (OAuth
//! 1.0a signing, gzip, classification of answers), and the call policy every call goes
//! through: fair turns between questions, calls in flight, the per-minute budget, retries
//! with backoff, deadlines.

pub mod budget;
pub mod classify;
pub mod coalesce;
pub mod credentials;
pub mod http;
pub mod policy;
pub mod retry;
pub mod scheduler;
pub mod signing;

use async_trait::async_trait;
use engagement::{Endpoint, RawRequest, Response};
use tokio::time::Instant;

pub use budget::{RateBudget, SharedRate};
pub use classify::AttemptError;
pub use coalesce::Coalesce;
pub use credentials::{AppCredentials, HandleCredentials};
pub use http::HttpUpstream;
pub use policy::{BudgetRefusal, CallPolicy};
pub use retry::{Retried, RetryPolicy};
pub use scheduler::{Lane, Scheduler};

/// Something that answers the API's calls: the real API over HTTP, or a stand-in.
#[async_trait]
pub trait Upstream: Send + Sync + std::fmt::Debug {
    /// One attempt at one call to `endpoint`, as `handle`, given up at `deadline`.
    async fn call(
        &self,
        endpoint: Endpoint,
        handle: &HandleCredentials,
        body: &RawRequest,
        deadline: Instant,
    ) -> Result<Response, AttemptError>;
}

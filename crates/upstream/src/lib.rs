//! The Engagement API as the service sees it: the [`Upstream`] trait, and its HTTP client
//! with OAuth 1.0a signing, gzip, classification of answers, a per-minute budget, and
//! retries with backoff.

pub mod budget;
pub mod classify;
pub mod credentials;
pub mod http;
pub mod retry;
pub mod signing;

use async_trait::async_trait;
use engagement::{RawRequest, Response};
use tokio::time::Instant;

pub use budget::RateBudget;
pub use classify::AttemptError;
pub use credentials::{AppCredentials, HandleCredentials};
pub use http::HttpUpstream;
pub use retry::{Retried, RetryPolicy};

/// Something that answers `/historical` calls: the real API over HTTP, or a stand-in.
#[async_trait]
pub trait Upstream: Send + Sync + std::fmt::Debug {
    /// One attempt at one call, as `handle`, given up at `deadline`.
    async fn historical(
        &self,
        handle: &HandleCredentials,
        body: &RawRequest,
        deadline: Instant,
    ) -> Result<Response, AttemptError>;
}

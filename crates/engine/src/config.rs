//! What the engine is set up with: the sections of the service's settings it reads
//! (`[jobs]`, `[ledger]`, `[redis]`), as they are deserialized.

use secrecy::SecretString;
use serde::{Deserialize, Serialize};

/// Long questions, asked as jobs.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobsSettings {
    /// A job's deadline, instead of the request's.
    pub timeout_secs: u64,
    /// Jobs answered at once; more wait as `queued`.
    pub max_running: usize,
    /// Jobs waiting at most; past it a new one is `503`.
    pub max_queued: usize,
    /// How long a finished job's result is kept.
    pub result_ttl_secs: u64,
    /// The bytes all kept results may hold together; past it the oldest are let go.
    pub max_result_bytes: u64,
}

/// What to do when a question would add a handle past the month's cap.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum CapPolicy {
    /// `403` before any call.
    Refuse,
    /// Answer, log at WARN and count it in the metrics.
    Warn,
}

/// The month's handle ledger.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LedgerSettings {
    /// Distinct handles the contract allows per calendar month (UTC); unset: no cap.
    pub handle_cap: Option<usize>,
    pub policy: CapPolicy,
}

/// What to do while the shared Redis cannot be reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnFailure {
    /// Carry on alone: this replica's share of the budget, its own store, ledger and nonces
    /// (logged at WARN, counted in the metrics); the ledger catches up when Redis is back.
    Local,
    /// Answer what needs Redis (questions that need the upstream, OAuth requests,
    /// `/v1/usage`) `503` with `Retry-After`.
    Refuse,
}

/// State shared with the other replicas of the service, in Redis.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisSettings {
    /// `redis://[user:password@]host[:port][/db]` (`rediss://` for TLS); unset: nothing is shared.
    pub url: Option<SecretString>,
    /// Put before every key, so several deployments can share one Redis.
    pub key_prefix: String,
    pub on_failure: OnFailure,
    /// Replicas the budget is shared by: while Redis is away, each takes this share of
    /// `upstream.requests_per_minute`.
    pub expected_replicas: u32,
    /// How long a replica holds a call's lease before renewing it (every third of it, while
    /// the call runs); a replica that dies holding one leaves the call to another after it.
    pub lease_secs: u64,
}

impl std::fmt::Debug for RedisSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The URL may hold a password.
        f.debug_struct("RedisSettings")
            .field("url", &self.url.as_ref().map(|_| "[set]"))
            .field("key_prefix", &self.key_prefix)
            .field("on_failure", &self.on_failure)
            .field("expected_replicas", &self.expected_replicas)
            .field("lease_secs", &self.lease_secs)
            .finish()
    }
}

/// Watched Tweets, kept warm in the budget no question uses.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WatchSettings {
    /// Whether watches may be made and are refreshed.
    pub enabled: bool,
    /// Watches one client may have.
    pub max_per_client: usize,
    /// Tweets one client's watches may hold together.
    pub max_tweets: usize,
}

impl Default for WatchSettings {
    fn default() -> Self {
        WatchSettings { enabled: true, max_per_client: 20, max_tweets: 10_000 }
    }
}

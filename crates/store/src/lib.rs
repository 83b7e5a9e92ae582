//! What the service remembers, in one embedded database (redb) under `store.path`:
//!
//! - **facts**: the upstream's hourly counts per (handle, Tweet, type, hour). Settled hours
//!   (older than the settle horizon when fetched) are kept on disk until evicted, least
//!   recently used first, within `max_bytes`; unsettled hours live in memory for a short TTL.
//! - **status**: what only a call can tell of a Tweet (deleted, or refused as protected or
//!   not the handle's), per handle, with the time it was learned.
//! - **ledger**: every handle the app made a call for, per UTC month, with its first call.
//!
//! Nothing here knows about HTTP or the upstream: the engine reads what is held, fetches what
//! is not, and hands the answers back through [`Store::keep`].

mod answer;
pub mod block;
mod db;
pub mod facts;
pub mod ledger;
pub mod row;
mod sync;
mod watches;

use std::path::PathBuf;
use std::time::Duration;

pub use db::{Pin, Queued, Store};
pub use facts::{CallFacts, FreshHour, Held, Hours, Known, Refused, TweetStatus, Unshown};
pub use ledger::{Admission, LedgerEntry};
pub use sync::SYNC_EVERY;

/// How a store is set up.
#[derive(Debug, Clone)]
pub struct Config {
    /// The directory holding the database file.
    pub path: PathBuf,
    /// An hour is settled once it is this old when fetched.
    pub settle_after: Duration,
    /// How long unsettled hours are kept.
    pub fresh_ttl: Duration,
    /// How long what a call told of a Tweet (deleted, refused, or neither) is trusted.
    pub status_ttl: Duration,
    /// The bound on the encoded size of settled facts.
    pub max_bytes: u64,
}

/// Why the store could not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot create the store's directory {path}: {source}")]
    Directory { path: PathBuf, source: std::io::Error },
    #[error("the store at {path} is open in another process (one store per service)")]
    InUse { path: PathBuf },
    #[error(
        "the store at {path} is in format {found}, this service reads format {expected}: move it away (its facts are fetched again)"
    )]
    Format { path: PathBuf, found: u64, expected: u64 },
    #[error("the store's database failed: {0}")]
    Commit(String),
    #[error("the store's database failed: {0}")]
    Database(#[from] redb::Error),
    #[error(transparent)]
    Malformed(#[from] row::Malformed),
    #[error("the store lacks facts it held a moment ago for Tweet {tweet} (evicted or expired)")]
    Vanished { tweet: u64 },
}

impl From<redb::TransactionError> for StoreError {
    fn from(e: redb::TransactionError) -> Self {
        StoreError::Database(e.into())
    }
}
impl From<redb::TableError> for StoreError {
    fn from(e: redb::TableError) -> Self {
        StoreError::Database(e.into())
    }
}
impl From<redb::StorageError> for StoreError {
    fn from(e: redb::StorageError) -> Self {
        StoreError::Database(e.into())
    }
}
impl From<redb::CommitError> for StoreError {
    fn from(e: redb::CommitError) -> Self {
        StoreError::Database(e.into())
    }
}
impl From<redb::SetDurabilityError> for StoreError {
    fn from(e: redb::SetDurabilityError) -> Self {
        StoreError::Database(e.into())
    }
}

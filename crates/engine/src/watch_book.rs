//! Where watches are kept, as a port: a watch's record ([`Watch`]), the [`WatchBook`]
//! that keeps them, and [`LocalWatchBook`], this replica's store. `replicas` keeps them in
//! Redis, so every replica sees them.

use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use engagement::{EngagementType, TimeRange, TweetId};
use serde::{Deserialize, Serialize};
use store::Store;

use crate::error::EngineError;
use crate::off_the_workers;

/// Where a watch is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum WatchState {
    /// Made, not yet filled.
    Pending,
    /// A refresh is running.
    Refreshing,
    /// Its last refresh fetched everything it lacked.
    Warm,
    /// Its last refresh could not fetch everything (see `last_error`); the next one tries again.
    Behind,
}

/// One watch, as it is kept and as its owner sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Watch {
    pub id: String,
    /// The client that made it; only it sees the watch.
    pub client: String,
    /// The handle its calls are made as.
    pub handle: String,
    /// Tweet IDs, as decimal strings.
    pub tweet_ids: Vec<String>,
    pub engagement_types: Vec<String>,
    /// The days before today (UTC) kept warm, with today.
    pub lookback_days: u32,
    /// The seconds from one refresh to the next.
    pub refresh_secs: u64,
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub created_at: DateTime<Utc>,
    /// When the last refresh began; null before the first.
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>))]
    pub last_refresh: Option<DateTime<Utc>>,
    /// When the next refresh is due.
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub next_refresh: DateTime<Utc>,
    /// Hours of its live Tweets (from each one's creation) within the lookback that the
    /// store held every type of after the last refresh.
    pub tweet_hours_held: u64,
    /// Upstream calls its refreshes have made, retries too.
    pub calls_spent: u64,
    pub state: WatchState,
    /// Why the last refresh fell short, if it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

impl Watch {
    /// Its Tweets (an ID that does not read is left out: the record was not written so).
    pub fn tweets(&self) -> Vec<TweetId> {
        self.tweet_ids.iter().filter_map(|t| TweetId::parse(t)).collect()
    }

    /// Its types (likewise).
    pub fn types(&self) -> Vec<EngagementType> {
        self.engagement_types.iter().filter_map(|t| t.parse().ok()).collect()
    }

    /// The range it keeps warm at `now`: from the start of the UTC day `lookback_days`
    /// before today (not before the API's first day) to the end of the hour in progress.
    pub fn range(&self, now: DateTime<Utc>) -> TimeRange {
        let today = now.date_naive() - chrono::Days::new(u64::from(self.lookback_days));
        let start = today.and_time(chrono::NaiveTime::MIN).and_utc();
        TimeRange {
            start: start.max(engagement::vocabulary::earliest_start()),
            end: engagement::time::ceil_hour(now),
        }
    }
}

/// Where watches are kept.
#[async_trait]
pub trait WatchBook: Send + Sync + std::fmt::Debug {
    /// Every watch.
    async fn all(&self) -> Result<Vec<Watch>, EngineError>;

    /// The watch `id`, if it is kept.
    async fn get(&self, id: &str) -> Result<Option<Watch>, EngineError>;

    /// Keeps `watch`: added when `add`, else written only if it is still kept. Whether it
    /// was written.
    async fn put(&self, watch: &Watch, add: bool) -> Result<bool, EngineError>;

    /// Forgets the watch `id`; whether it was kept.
    async fn remove(&self, id: &str) -> Result<bool, EngineError>;
}

/// Reads a kept record; one that does not read is logged and left out.
pub fn read_record(id: &str, record: &[u8]) -> Option<Watch> {
    match serde_json::from_slice(record) {
        Ok(watch) => Some(watch),
        Err(e) => {
            tracing::warn!(watch = id, error = %e, "a kept watch could not be read; it is left out");
            None
        }
    }
}

/// A watch's record, as it is kept.
pub fn write_record(watch: &Watch) -> Result<Vec<u8>, EngineError> {
    serde_json::to_vec(watch)
        .map_err(|e| EngineError::internal("a watch could not be written", Some(Box::new(e))))
}

/// Watches in this replica's store.
#[derive(Debug, Clone)]
pub struct LocalWatchBook {
    store: Arc<Store>,
}

impl LocalWatchBook {
    /// The watches `store` keeps.
    pub fn new(store: Arc<Store>) -> LocalWatchBook {
        LocalWatchBook { store }
    }
}

fn unkept(e: store::StoreError) -> EngineError {
    EngineError::internal("the store's watches could not be read or written", Some(Box::new(e)))
}

#[async_trait]
impl WatchBook for LocalWatchBook {
    async fn all(&self) -> Result<Vec<Watch>, EngineError> {
        let store = Arc::clone(&self.store);
        let records = off_the_workers("reading watches", move || store.watches().map_err(unkept)).await?;
        Ok(records.iter().filter_map(|(id, record)| read_record(id, record)).collect())
    }

    async fn get(&self, id: &str) -> Result<Option<Watch>, EngineError> {
        Ok(self.all().await?.into_iter().find(|w| w.id == id))
    }

    async fn put(&self, watch: &Watch, add: bool) -> Result<bool, EngineError> {
        let (store, id) = (Arc::clone(&self.store), watch.id.clone());
        let record = write_record(watch)?;
        off_the_workers("keeping a watch", move || store.put_watch(&id, &record, add).map_err(unkept)).await
    }

    async fn remove(&self, id: &str) -> Result<bool, EngineError> {
        let (store, id) = (Arc::clone(&self.store), id.to_string());
        off_the_workers("forgetting a watch", move || store.remove_watch(&id).map_err(unkept)).await
    }
}

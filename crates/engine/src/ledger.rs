//! The month's handle ledger, as a port: where a handle is counted before its first call of
//! the month, and what the month's handles are. [`LocalLedger`] is this replica's store;
//! `replicas` keeps it in Redis, shared by every replica, with the store beside it, and
//! holds what to do while Redis is away (`redis.on_failure`), so no caller checks for
//! itself.

use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use store::{Admission, LedgerEntry, Store};

use crate::error::EngineError;
use crate::off_the_workers;

/// The month's handle ledger.
#[async_trait]
pub trait Ledger: Send + Sync + std::fmt::Debug {
    /// Counts `handle` in the month of `now`; past `cap` (if any) it is refused when
    /// `refuse`, else counted as over the cap.
    async fn admit(
        &self,
        handle: &str,
        now: DateTime<Utc>,
        cap: Option<usize>,
        refuse: bool,
    ) -> Result<Admission, EngineError>;

    /// The handles counted in the month of `now`, with their first calls.
    async fn month(&self, now: DateTime<Utc>) -> Result<Vec<LedgerEntry>, EngineError>;
}

/// The ledger in this replica's store.
#[derive(Debug, Clone)]
pub struct LocalLedger {
    store: Arc<Store>,
}

impl LocalLedger {
    /// The ledger `store` keeps.
    pub fn new(store: Arc<Store>) -> LocalLedger {
        LocalLedger { store }
    }
}

fn unreadable(e: store::StoreError) -> EngineError {
    EngineError::internal("the handle ledger could not be read", Some(Box::new(e)))
}

#[async_trait]
impl Ledger for LocalLedger {
    async fn admit(
        &self,
        handle: &str,
        now: DateTime<Utc>,
        cap: Option<usize>,
        refuse: bool,
    ) -> Result<Admission, EngineError> {
        let (store, name) = (Arc::clone(&self.store), handle.to_string());
        off_the_workers("the ledger", move || store.admit_handle(&name, now, cap, refuse).map_err(unreadable))
            .await
    }

    async fn month(&self, now: DateTime<Utc>) -> Result<Vec<LedgerEntry>, EngineError> {
        let store = Arc::clone(&self.store);
        off_the_workers("reading the ledger", move || store.handles_in_month(now).map_err(unreadable)).await
    }
}

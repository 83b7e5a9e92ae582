//! Counts of the calls the simulator answered, served at `/_stats`.

use std::collections::BTreeMap;
use std::sync::Mutex;

use serde::Serialize;

/// The counts, as served.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Snapshot {
    pub requests_total: u64,
    /// Status code (as a string) to count.
    pub by_status: BTreeMap<String, u64>,
    /// Endpoint name (`historical`, `28hr`, `totals`, `other`) to count.
    pub by_endpoint: BTreeMap<String, u64>,
    /// Handle name to count of authenticated calls.
    pub by_handle: BTreeMap<String, u64>,
    /// Trace ID (from a W3C `traceparent` header) to count of the calls that carried it.
    #[serde(default)]
    pub by_trace: BTreeMap<String, u64>,
    /// With a rate limit, the calls it allowed in each of its windows, by the window's end
    /// (Unix seconds; the last [`WINDOWS_KEPT`]).
    #[serde(default)]
    pub allowed_by_window: BTreeMap<i64, u64>,
    /// The `/historical` calls in the order they arrived (the last [`ARRIVALS_KEPT`]).
    #[serde(default)]
    pub arrivals: std::collections::VecDeque<Arrival>,
}

/// How many windows of the rate limit `/_stats` keeps.
pub const WINDOWS_KEPT: usize = 1_000;

/// How many arrivals `/_stats` keeps.
pub const ARRIVALS_KEPT: usize = 10_000;

/// One `/historical` call as it arrived: its Tweets and window, as sent.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Arrival {
    #[serde(default)]
    pub tweet_ids: Vec<String>,
    #[serde(default)]
    pub start: Option<String>,
    #[serde(default)]
    pub end: Option<String>,
}

/// The live counts.
#[derive(Debug, Default)]
pub struct Stats {
    inner: Mutex<Snapshot>,
}

impl Stats {
    /// Records one answered call.
    pub fn record(&self, endpoint: &str, status: u16, handle: Option<&str>) {
        let mut s = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        s.requests_total += 1;
        *s.by_status.entry(status.to_string()).or_default() += 1;
        *s.by_endpoint.entry(endpoint.to_string()).or_default() += 1;
        if let Some(h) = handle {
            *s.by_handle.entry(h.to_string()).or_default() += 1;
        }
    }

    /// Records a call's `traceparent` header (`00-<trace ID>-<span ID>-<flags>`).
    pub fn traced(&self, traceparent: &str) {
        let mut parts = traceparent.split('-');
        if let (Some("00"), Some(trace)) = (parts.next(), parts.next()) {
            let mut s = self.inner.lock().unwrap_or_else(|e| e.into_inner());
            *s.by_trace.entry(trace.to_string()).or_default() += 1;
        }
    }

    /// Records one call the rate limit allowed in its window ending at `reset`.
    pub fn allowed(&self, reset: i64) {
        let mut s = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        *s.allowed_by_window.entry(reset).or_default() += 1;
        if s.allowed_by_window.len() > WINDOWS_KEPT {
            s.allowed_by_window.pop_first();
        }
    }

    /// Records a `/historical` call's body as it arrives (one that does not read as a
    /// question is kept empty).
    pub fn arrived(&self, body: &[u8]) {
        let arrival: Arrival = serde_json::from_slice(body).unwrap_or_default();
        let mut s = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if s.arrivals.len() == ARRIVALS_KEPT {
            s.arrivals.pop_front();
        }
        s.arrivals.push_back(arrival);
    }

    /// A copy of the counts.
    pub fn snapshot(&self) -> Snapshot {
        self.inner.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Starts counting from zero.
    pub fn reset(&self) {
        *self.inner.lock().unwrap_or_else(|e| e.into_inner()) = Snapshot::default();
    }
}

//! What each client has taken of the upstream's calls, at this replica: its calls in the
//! last minute and in this calendar month (UTC), for `GET /v1/usage` and the metrics.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::time::Instant;

/// Each client's calls, counted as they are made.
#[derive(Debug, Default)]
pub struct ClientCalls {
    taken: Mutex<HashMap<String, Taken>>,
}

#[derive(Debug, Default)]
struct Taken {
    /// When each call of the last minute was made.
    minute: VecDeque<Instant>,
    /// The month counted (`YYYY-MM`) and its calls.
    month: String,
    in_month: u64,
}

/// A client's calls now.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ClientTaken {
    pub this_minute: u64,
    pub this_month: u64,
}

const MINUTE: Duration = Duration::from_secs(60);

impl ClientCalls {
    /// Counts one call (an attempt) of `client`, made at `now` (`at`: the same instant on
    /// the monotonic clock), having waited `waited` for the budget.
    pub(crate) fn record(&self, client: &str, now: DateTime<Utc>, at: Instant, waited: Duration) {
        crate::metrics::client_call(client, waited);
        let month = store::ledger::month_of(now);
        let mut taken = self.taken.lock().unwrap_or_else(|p| p.into_inner());
        let taken = taken.entry(client.to_owned()).or_default();
        if taken.month != month {
            taken.month = month;
            taken.in_month = 0;
        }
        taken.in_month += 1;
        taken.minute.push_back(at);
        forget_before(&mut taken.minute, at);
    }

    /// `client`'s calls in the minute up to `at` and in the month of `now`.
    pub fn of(&self, client: &str, now: DateTime<Utc>, at: Instant) -> ClientTaken {
        let mut taken = self.taken.lock().unwrap_or_else(|p| p.into_inner());
        let Some(taken) = taken.get_mut(client) else { return ClientTaken::default() };
        forget_before(&mut taken.minute, at);
        let this_month = if taken.month == store::ledger::month_of(now) { taken.in_month } else { 0 };
        ClientTaken { this_minute: taken.minute.len() as u64, this_month }
    }
}

/// Drops the calls more than a minute before `at`.
fn forget_before(minute: &mut VecDeque<Instant>, at: Instant) {
    while minute.front().is_some_and(|t| at.saturating_duration_since(*t) >= MINUTE) {
        minute.pop_front();
    }
}

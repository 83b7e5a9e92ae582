//! The month's handle ledger of every replica together: one hash per month, added to
//! atomically, so two replicas adding the last handle under the cap at once cannot both
//! succeed.

use chrono::{DateTime, Utc};
use engine::ports::{Admission, LedgerEntry, month_of};

use crate::{Redis, Unreachable};

/// How long a month's ledger is kept after its last write: the month and some.
const MONTH_TTL_SECS: u64 = 40 * 24 * 3600;

/// Counts ARGV[1] (first call ARGV[2], seconds) in the month's hash KEYS[1] unless it is;
/// with a cap ARGV[3] (-1: none) and ARGV[4] = 1, refuses a handle that would pass it.
/// Keeps the hash ARGV[5] seconds. Returns {0} counted before, {1, used, over cap} added,
/// {2} refused.
const ADMIT: &str = r"
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 1 then return {0, 0, 0} end
local used = redis.call('HLEN', KEYS[1])
local cap = tonumber(ARGV[3])
local over = cap >= 0 and used >= cap
if over and ARGV[4] == '1' then return {2, used, 1} end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('EXPIRE', KEYS[1], ARGV[5])
if over then return {1, used + 1, 1} end
return {1, used + 1, 0}
";

impl Redis {
    /// Counts `handle` for the month of `now` unless it already is; with `cap`, a handle
    /// that would pass it is refused when `refuse` is set (and counted over the cap when
    /// not).
    pub async fn admit_handle(
        &self,
        handle: &str,
        now: DateTime<Utc>,
        cap: Option<usize>,
        refuse: bool,
    ) -> Result<Admission, Unreachable> {
        static SCRIPT: std::sync::LazyLock<redis::Script> =
            std::sync::LazyLock::new(|| redis::Script::new(ADMIT));
        let mut call = SCRIPT.key(self.month_key(now));
        call.arg(handle)
            .arg(now.timestamp())
            .arg(cap.map_or(-1, |c| c as i64))
            .arg(u8::from(refuse))
            .arg(MONTH_TTL_SECS);
        let (kind, used, over): (u8, usize, u8) = self.invoke(&call).await?;
        Ok(match (kind, cap) {
            (0, _) => Admission::Counted,
            (2, Some(cap)) => Admission::Refused { cap },
            _ => Admission::Added { used, over_cap: over == 1 },
        })
    }

    /// Every handle counted in the month of `now`, by name.
    pub async fn handles_in_month(&self, now: DateTime<Utc>) -> Result<Vec<LedgerEntry>, Unreachable> {
        let mut cmd = redis::cmd("HGETALL");
        cmd.arg(self.month_key(now));
        let all: Vec<(String, i64)> = self.run(&cmd).await?;
        let mut entries: Vec<LedgerEntry> = all
            .into_iter()
            .map(|(handle, at)| LedgerEntry {
                handle,
                first_call: DateTime::from_timestamp(at, 0).unwrap_or_default(),
            })
            .collect();
        entries.sort_by(|a, b| a.handle.cmp(&b.handle));
        Ok(entries)
    }

    /// Adds handles counted while Redis was away, keeping any first call it already has.
    pub async fn catch_up(&self, now: DateTime<Utc>, entries: &[LedgerEntry]) -> Result<(), Unreachable> {
        if entries.is_empty() {
            return Ok(());
        }
        let key = self.month_key(now);
        // One round trip, so the expiry follows every write (a month has few handles).
        let mut pipe = redis::pipe();
        for e in entries {
            pipe.cmd("HSETNX").arg(&key).arg(&e.handle).arg(e.first_call.timestamp()).ignore();
        }
        pipe.cmd("EXPIRE").arg(&key).arg(MONTH_TTL_SECS).ignore();
        self.run_all::<()>(&pipe, entries.len() + 1).await
    }

    fn month_key(&self, now: DateTime<Utc>) -> String {
        self.key(&format!("ledger:{}", month_of(now)))
    }
}

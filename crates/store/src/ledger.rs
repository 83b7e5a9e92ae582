//! The month's handle ledger: every handle the app made a call for, per UTC month, with the
//! time of its first call. The API bills handles past the contract's cap and leaves the
//! counting to its clients.

use chrono::{DateTime, Utc};
use redb::{ReadableDatabase, ReadableTable, TableDefinition};

use crate::{Store, StoreError};

/// (month `YYYY-MM`, handle) → first call, seconds since the epoch.
pub(crate) const LEDGER: TableDefinition<(&str, &str), i64> = TableDefinition::new("ledger");

/// One handle counted in a month.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LedgerEntry {
    pub handle: String,
    pub first_call: DateTime<Utc>,
}

/// What the ledger says of a handle about to be called for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Already counted this month.
    Counted,
    /// Counted now; `used` handles this month, this one included.
    Added { used: usize, over_cap: bool },
    /// Not counted: it would pass the cap of `cap` handles this month.
    Refused { cap: usize },
}

/// The month of an instant, as the ledger keys it.
pub fn month_of(t: DateTime<Utc>) -> String {
    t.format("%Y-%m").to_string()
}

impl Store {
    /// Counts `handle` for the month of `now` unless it already is. With `refuse_past`
    /// set to a cap, a handle that would pass it is not counted and is refused.
    pub fn admit_handle(
        &self,
        handle: &str,
        now: DateTime<Utc>,
        cap: Option<usize>,
        refuse: bool,
    ) -> Result<Admission, StoreError> {
        let month = month_of(now);
        // Reading first keeps the common case (already counted) free of a durable write.
        if self.db.begin_read()?.open_table(LEDGER)?.get((month.as_str(), handle))?.is_some() {
            return Ok(Admission::Counted);
        }
        let txn = self.db.begin_write()?;
        let admission = {
            let mut table = txn.open_table(LEDGER)?;
            if table.get((month.as_str(), handle))?.is_some() {
                Admission::Counted
            } else {
                let used = table
                    .range((month.as_str(), "")..)?
                    .take_while(|e| e.as_ref().is_ok_and(|(k, _)| k.value().0 == month))
                    .count();
                let over_cap = cap.is_some_and(|cap| used >= cap);
                match cap {
                    Some(cap) if over_cap && refuse => Admission::Refused { cap },
                    _ => {
                        table.insert((month.as_str(), handle), now.timestamp())?;
                        Admission::Added { used: used + 1, over_cap }
                    }
                }
            }
        };
        txn.commit()?;
        Ok(admission)
    }

    /// Every handle counted in the month of `now`, by name.
    pub fn handles_in_month(&self, now: DateTime<Utc>) -> Result<Vec<LedgerEntry>, StoreError> {
        let month = month_of(now);
        let txn = self.db.begin_read()?;
        let table = txn.open_table(LEDGER)?;
        let mut out = Vec::new();
        for entry in table.range((month.as_str(), "")..)? {
            let (key, value) = entry?;
            let (m, handle) = key.value();
            if m != month {
                break;
            }
            out.push(LedgerEntry {
                handle: handle.to_string(),
                first_call: DateTime::from_timestamp(value.value(), 0).unwrap_or_default(),
            });
        }
        Ok(out)
    }
}

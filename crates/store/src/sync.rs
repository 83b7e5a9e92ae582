//! When kept facts reach the disk. A transaction of facts is committed at once (every later
//! read sees it), but synced only if no sync was made for [`SYNC_EVERY`]; a thread of its
//! own syncs the rest at most that long after the last sync. A cold question's calls, a
//! hundred transactions in a few seconds, cost a sync a second, not one each: the pages
//! several transactions touch are written once, and a third of the cold question's CPU
//! with the store went to writing and syncing. A crash loses at most the last
//! [`SYNC_EVERY`] of what was fetched, which is fetched again. The service syncs once more
//! when it stops.

use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use redb::Database;

use crate::StoreError;

/// The longest committed facts wait to be synced.
pub const SYNC_EVERY: Duration = Duration::from_secs(1);

/// Commits counted so far, and how many of them are known synced.
#[derive(Debug, Default)]
struct Counts {
    committed: u64,
    synced: u64,
    /// When the last sync was made.
    last: Option<Instant>,
    stop: bool,
}

#[derive(Debug)]
struct Shared {
    db: Arc<Database>,
    counts: Mutex<Counts>,
    wake: Condvar,
}

impl Shared {
    fn counts(&self) -> MutexGuard<'_, Counts> {
        self.counts.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Syncs every commit counted so far that is not known synced.
    fn sync(&self) -> Result<(), StoreError> {
        let seen = {
            let counts = self.counts();
            if counts.committed == counts.synced {
                return Ok(());
            }
            counts.committed
        };
        // An empty transaction with the default durability writes out and syncs every
        // commit before it.
        let synced = self.db.begin_write().map_err(StoreError::from).and_then(|txn| Ok(txn.commit()?));
        let mut counts = self.counts();
        counts.last = Some(Instant::now());
        if synced.is_ok() {
            counts.synced = counts.synced.max(seen);
        }
        synced
    }

    /// The syncing thread: waits for commits not synced, and syncs them once the last sync
    /// is [`SYNC_EVERY`] old; when stopped, syncs what is left and ends.
    fn run(&self) {
        let mut counts = self.counts();
        loop {
            if counts.committed == counts.synced {
                if counts.stop {
                    return;
                }
                counts = self.wake.wait(counts).unwrap_or_else(|p| p.into_inner());
                continue;
            }
            let due = counts.last.map_or(Duration::ZERO, |last| SYNC_EVERY.saturating_sub(last.elapsed()));
            if !due.is_zero() && !counts.stop {
                counts = self.wake.wait_timeout(counts, due).unwrap_or_else(|p| p.into_inner()).0;
                continue;
            }
            drop(counts);
            if let Err(e) = self.sync() {
                tracing::warn!(error = %e, "kept facts could not be synced to disk; trying again");
                let stop = self.counts().stop;
                if stop {
                    return;
                }
            }
            counts = self.counts();
        }
    }
}

/// Counts commits of facts and keeps them synced (see the module's doc).
#[derive(Debug)]
pub(crate) struct Syncer {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl Syncer {
    /// Starts syncing `db`'s commits.
    pub(crate) fn start(db: Arc<Database>) -> std::io::Result<Syncer> {
        let shared = Arc::new(Shared { db, counts: Mutex::default(), wake: Condvar::new() });
        let running = Arc::clone(&shared);
        let thread = std::thread::Builder::new().name("store-sync".into()).spawn(move || running.run())?;
        Ok(Syncer { shared, thread: Some(thread) })
    }

    /// Whether the next commit is to be synced: none was for [`SYNC_EVERY`].
    pub(crate) fn due(&self) -> bool {
        self.shared.counts().last.is_none_or(|last| last.elapsed() >= SYNC_EVERY)
    }

    /// A commit was made, `synced` or not.
    pub(crate) fn committed(&self, synced: bool) {
        let mut counts = self.shared.counts();
        counts.committed += 1;
        if synced {
            counts.synced = counts.committed;
            counts.last = Some(Instant::now());
        } else {
            drop(counts);
            self.shared.wake.notify_one();
        }
    }

    /// Syncs every commit made so far, now.
    pub(crate) fn sync(&self) -> Result<(), StoreError> {
        self.shared.sync()
    }

    /// Whether every commit counted is synced.
    #[cfg(test)]
    pub(crate) fn all_synced(&self) -> bool {
        let counts = self.shared.counts();
        counts.committed == counts.synced
    }
}

impl Drop for Syncer {
    fn drop(&mut self) {
        self.shared.counts().stop = true;
        self.shared.wake.notify_one();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use redb::{Durability, TableDefinition};

    const T: TableDefinition<u64, u64> = TableDefinition::new("t");

    fn commit(db: &Database, n: u64, durability: Durability) {
        let mut txn = db.begin_write().unwrap();
        txn.set_durability(durability).unwrap();
        txn.open_table(T).unwrap().insert(n, n).unwrap();
        txn.commit().unwrap();
    }

    #[test]
    fn a_commit_left_unsynced_is_synced_by_the_thread_soon_after() {
        let dir = tempfile::tempdir().unwrap();
        let db = Arc::new(Database::create(dir.path().join("t.redb")).unwrap());
        let syncer = Syncer::start(Arc::clone(&db)).unwrap();
        assert!(syncer.due(), "the first commit is synced");
        commit(&db, 1, Durability::Immediate);
        syncer.committed(true);
        assert!(syncer.all_synced());
        assert!(!syncer.due(), "the next one, so soon after, is not");
        commit(&db, 2, Durability::None);
        syncer.committed(false);
        assert!(!syncer.all_synced());
        // Due within SYNC_EVERY; a slow machine gets far longer before this fails.
        let until = Instant::now() + Duration::from_secs(20);
        while !syncer.all_synced() {
            assert!(Instant::now() < until, "the syncing thread never synced the commit");
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

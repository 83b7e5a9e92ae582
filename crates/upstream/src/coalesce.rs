//! Identical calls in flight, made once. The first caller's work runs as a task of its
//! own; every caller with the same key awaits the same outcome. The work goes on as long as
//! any of them still waits, so one that goes away does not cancel it for the others; once
//! none waits, it is aborted, and what it held (a turn, a call slot) is let go.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Mutex;

use futures::FutureExt;
use futures::future::{BoxFuture, Shared};
use tokio::task::AbortHandle;

/// Work in flight: its shared outcome (`None` if the task panicked), its waiters, and how
/// to stop it.
struct Entry<V: Clone> {
    outcome: Shared<BoxFuture<'static, Option<V>>>,
    waiters: usize,
    abort: AbortHandle,
}

/// Work in flight by key.
pub struct Coalesce<K, V: Clone> {
    in_flight: Mutex<HashMap<K, Entry<V>>>,
}

impl<K, V: Clone> std::fmt::Debug for Coalesce<K, V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let n = self.in_flight.lock().map(|m| m.len()).unwrap_or(0);
        f.debug_struct("Coalesce").field("in_flight", &n).finish()
    }
}

impl<K, V: Clone> Default for Coalesce<K, V> {
    fn default() -> Self {
        Coalesce { in_flight: Mutex::new(HashMap::new()) }
    }
}

/// One caller's wait; when the last one ends, the entry goes (and unfinished work with it).
struct Waiting<'a, K: Hash + Eq, V: Clone> {
    owner: &'a Coalesce<K, V>,
    key: K,
}

impl<K: Hash + Eq, V: Clone> Drop for Waiting<'_, K, V> {
    fn drop(&mut self) {
        let mut map = self.owner.in_flight.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(entry) = map.get_mut(&self.key) {
            entry.waiters -= 1;
            if entry.waiters == 0 {
                entry.abort.abort();
                map.remove(&self.key);
            }
        }
    }
}

impl<K, V> Coalesce<K, V>
where
    K: Hash + Eq + Clone + Send + 'static,
    V: Clone + Send + Sync + 'static,
{
    /// The outcome of the work for `key`: joined if it is in flight, else `start`ed as a
    /// task (on the current Tokio runtime). The flag says whether this caller joined work
    /// another started; `None` if the work panicked.
    pub async fn run(&self, key: K, start: impl FnOnce() -> BoxFuture<'static, V>) -> (Option<V>, bool) {
        let (outcome, joined) = {
            let mut map = self.in_flight.lock().unwrap_or_else(|p| p.into_inner());
            match map.get_mut(&key) {
                Some(entry) => {
                    entry.waiters += 1;
                    (entry.outcome.clone(), true)
                }
                None => {
                    let task = tokio::spawn(start());
                    let abort = task.abort_handle();
                    let outcome = async move { task.await.ok() }.boxed().shared();
                    map.insert(key.clone(), Entry { outcome: outcome.clone(), waiters: 1, abort });
                    (outcome, false)
                }
            }
        };
        let _waiting = Waiting { owner: self, key };
        (outcome.await, joined)
    }

    /// Keys in flight now.
    pub fn len(&self) -> usize {
        self.in_flight.lock().map(|m| m.len()).unwrap_or(0)
    }

    /// Whether nothing is in flight.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::time::Duration;

    #[tokio::test]
    async fn identical_work_in_flight_runs_once_and_a_leaver_does_not_cancel_it() {
        let c: Arc<Coalesce<u32, u32>> = Arc::default();
        let runs = Arc::new(AtomicU32::new(0));
        let start = |runs: Arc<AtomicU32>| {
            move || -> BoxFuture<'static, u32> {
                async move {
                    runs.fetch_add(1, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    7
                }
                .boxed()
            }
        };
        // The first caller leaves before the work is done.
        let leaver = {
            let (c, runs) = (Arc::clone(&c), Arc::clone(&runs));
            tokio::spawn(async move { c.run(1, start(runs)).await })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        let stayers: Vec<_> = (0..5)
            .map(|_| {
                let (c, runs) = (Arc::clone(&c), Arc::clone(&runs));
                tokio::spawn(async move { c.run(1, start(runs)).await })
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(20)).await;
        leaver.abort();
        for s in stayers {
            assert_eq!(s.await.unwrap(), (Some(7), true));
        }
        assert_eq!(runs.load(Ordering::SeqCst), 1);
        assert!(c.is_empty(), "finished work leaves the map");
        // Other keys, and the same key later, run afresh.
        assert_eq!(c.run(2, start(Arc::clone(&runs))).await, (Some(7), false));
        assert_eq!(c.run(1, start(Arc::clone(&runs))).await, (Some(7), false));
        assert_eq!(runs.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn work_nobody_waits_for_is_stopped_and_forgotten() {
        let c: Arc<Coalesce<u32, u32>> = Arc::default();
        let finished = Arc::new(AtomicU32::new(0));
        let waiters: Vec<_> = (0..3)
            .map(|_| {
                let (c, finished) = (Arc::clone(&c), Arc::clone(&finished));
                tokio::spawn(async move {
                    c.run(1, move || {
                        async move {
                            tokio::time::sleep(Duration::from_millis(200)).await;
                            finished.fetch_add(1, Ordering::SeqCst);
                            7
                        }
                        .boxed()
                    })
                    .await
                })
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(30)).await;
        assert_eq!(c.len(), 1);
        for w in &waiters {
            w.abort();
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(c.is_empty(), "the last waiter gone, the entry goes");
        assert_eq!(
            finished.load(Ordering::SeqCst),
            0,
            "and the work is stopped, not left holding what it took"
        );
    }
}

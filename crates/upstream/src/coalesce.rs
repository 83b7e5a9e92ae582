//! Identical calls in flight, made once. The first caller's future is shared: every caller
//! with the same key awaits the same outcome, and the work goes on as long as any of them
//! still waits, so one that goes away does not cancel it for the others.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Mutex;

use futures::FutureExt;
use futures::future::{BoxFuture, Shared};

/// Work in flight by key.
pub struct Coalesce<K, V: Clone> {
    in_flight: Mutex<HashMap<K, Shared<BoxFuture<'static, V>>>>,
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

impl<K, V> Coalesce<K, V>
where
    K: Hash + Eq + Clone + Send + 'static,
    V: Clone + Send + Sync + 'static,
{
    /// The outcome of the work for `key`: joined if it is in flight, else started with
    /// `start`. The flag says whether this caller joined work another started.
    pub async fn run(&self, key: K, start: impl FnOnce() -> BoxFuture<'static, V>) -> (V, bool) {
        let (work, joined) = {
            let mut map = self.in_flight.lock().unwrap_or_else(|p| p.into_inner());
            match map.get(&key) {
                Some(work) => (work.clone(), true),
                None => {
                    let work = start().shared();
                    map.insert(key.clone(), work.clone());
                    (work, false)
                }
            }
        };
        let value = work.clone().await;
        let mut map = self.in_flight.lock().unwrap_or_else(|p| p.into_inner());
        if map.get(&key).is_some_and(|w| w.ptr_eq(&work)) {
            map.remove(&key);
        }
        (value, joined)
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
            assert_eq!(s.await.unwrap(), (7, true));
        }
        assert_eq!(runs.load(Ordering::SeqCst), 1);
        assert!(c.is_empty(), "finished work leaves the map");
        // Other keys, and the same key later, run afresh.
        assert_eq!(c.run(2, start(Arc::clone(&runs))).await, (7, false));
        assert_eq!(c.run(1, start(Arc::clone(&runs))).await, (7, false));
        assert_eq!(runs.load(Ordering::SeqCst), 3);
    }
}

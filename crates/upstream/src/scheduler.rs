//! One scheduler for every upstream call of the process: at most `capacity` calls in
//! flight, handed out in turns.
//!
//! Each client request gets a [`Lane`]. When a call finishes, the next turn goes to the
//! next lane in round-robin order that has a call waiting, not to the oldest waiting call.
//! So a question of 3 calls that arrives behind one of 3,000 waits for about one call per
//! lane ahead of it, not for the 3,000: small questions stay fast while a big one runs,
//! and the big one still gets every turn nobody else wants. Round-robin by request (rather
//! than weighting by remaining calls) is simple, starves no one, and needs no estimate.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use tokio::sync::oneshot;
use tokio::time::Instant;

#[derive(Debug, Default)]
struct State {
    in_flight: usize,
    /// Lanes with waiting calls, in turn order.
    ring: VecDeque<u64>,
    /// Each lane's waiting calls, oldest first.
    waiting: HashMap<u64, VecDeque<oneshot::Sender<Turn>>>,
    /// Each lane's calls planned and not yet finished, and its question's deadline.
    planned: HashMap<u64, (usize, Instant)>,
    next_lane: u64,
}

#[derive(Debug)]
struct Inner {
    capacity: usize,
    state: Mutex<State>,
}

/// The shared scheduler.
#[derive(Debug, Clone)]
pub struct Scheduler {
    inner: Arc<Inner>,
}

/// One client request's place in the scheduler.
#[derive(Debug)]
pub struct Lane {
    id: u64,
    inner: Arc<Inner>,
}

/// The right to have one call in flight; the turn passes on when this is dropped.
#[derive(Debug)]
pub struct Turn {
    inner: Option<Arc<Inner>>,
    lane: u64,
}

impl Scheduler {
    /// A scheduler with `capacity` calls in flight at most.
    pub fn new(capacity: usize) -> Scheduler {
        Scheduler { inner: Arc::new(Inner { capacity: capacity.max(1), state: Mutex::default() }) }
    }

    /// A lane for one client request.
    pub fn lane(&self) -> Lane {
        self.lane_for(0, Instant::now())
    }

    /// A lane for a question that plans `calls` upstream calls, due by `deadline`.
    pub fn lane_for(&self, calls: usize, deadline: Instant) -> Lane {
        let mut s = self.inner.lock();
        s.next_lane += 1;
        let id = s.next_lane;
        s.planned.insert(id, (calls, deadline));
        Lane { id, inner: Arc::clone(&self.inner) }
    }

    /// Each lane's calls not yet finished (a call in flight may still be waiting for the
    /// rate budget, so it counts until it is done) and its deadline.
    pub fn backlog(&self) -> Vec<(usize, Instant)> {
        self.inner.lock().planned.values().copied().collect()
    }

    /// Calls in flight now.
    pub fn in_flight(&self) -> usize {
        self.inner.lock().in_flight
    }

    /// Calls in flight at most.
    pub fn capacity(&self) -> usize {
        self.inner.capacity
    }
}

impl Inner {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Hands free capacity to waiting calls, lane by lane in turn.
    fn grant(self: &Arc<Self>, s: &mut State) {
        while s.in_flight < self.capacity {
            let Some(lane) = s.ring.pop_front() else {
                return;
            };
            let Some(queue) = s.waiting.get_mut(&lane) else {
                continue;
            };
            let Some(waiter) = queue.pop_front() else {
                continue;
            };
            if queue.is_empty() {
                s.waiting.remove(&lane);
            } else {
                s.ring.push_back(lane);
            }
            match waiter.send(Turn { inner: Some(Arc::clone(self)), lane }) {
                Ok(()) => s.in_flight += 1,
                // The call was cancelled while it waited: its turn is not taken.
                Err(mut unused) => unused.inner = None,
            }
        }
    }
}

impl Lane {
    /// Waits for this lane's next turn.
    pub async fn turn(&self) -> Turn {
        let rx = {
            let mut guard = self.inner.lock();
            let s = &mut *guard;
            if s.in_flight < self.inner.capacity && s.ring.is_empty() {
                s.in_flight += 1;
                return Turn { inner: Some(Arc::clone(&self.inner)), lane: self.id };
            }
            let (tx, rx) = oneshot::channel();
            let queue = s.waiting.entry(self.id).or_default();
            if queue.is_empty() {
                s.ring.push_back(self.id);
            }
            queue.push_back(tx);
            rx
        };
        match rx.await {
            Ok(turn) => turn,
            // Senders are only dropped with their lane, which this borrow keeps alive.
            Err(_) => Box::pin(self.turn()).await,
        }
    }
}

impl Drop for Lane {
    fn drop(&mut self) {
        let mut s = self.inner.lock();
        s.waiting.remove(&self.id);
        s.planned.remove(&self.id);
        s.ring.retain(|l| *l != self.id);
    }
}

impl Drop for Turn {
    fn drop(&mut self) {
        if let Some(inner) = self.inner.take() {
            let mut guard = inner.lock();
            guard.in_flight -= 1;
            if let Some((left, _)) = guard.planned.get_mut(&self.lane) {
                *left = left.saturating_sub(1);
            }
            inner.grant(&mut guard);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex as StdMutex;

    /// Runs `calls` per lane through a scheduler of capacity 1; each call records its lane
    /// when it gets its turn and yields before giving the turn back.
    async fn order(calls: &[(usize, usize)]) -> Vec<usize> {
        let scheduler = Scheduler::new(1);
        let log = Arc::new(StdMutex::new(Vec::new()));
        let blocker = scheduler.lane();
        let held = blocker.turn().await;
        let mut tasks = Vec::new();
        for &(lane_name, n) in calls {
            let lane = Arc::new(scheduler.lane());
            for _ in 0..n {
                let (lane, log) = (Arc::clone(&lane), Arc::clone(&log));
                tasks.push(tokio::spawn(async move {
                    let _turn = lane.turn().await;
                    log.lock().unwrap().push(lane_name);
                    tokio::task::yield_now().await;
                }));
                tokio::task::yield_now().await;
            }
        }
        drop(held);
        for t in tasks {
            t.await.unwrap();
        }
        Arc::try_unwrap(log).unwrap().into_inner().unwrap()
    }

    #[tokio::test]
    async fn a_small_request_behind_a_big_one_gets_the_next_turns() {
        // Lane 1 queues 8 calls, then lane 2 queues 2: lane 2 alternates in at once.
        assert_eq!(order(&[(1, 8), (2, 2)]).await, [1, 2, 1, 2, 1, 1, 1, 1, 1, 1]);
    }

    #[tokio::test]
    async fn three_lanes_share_round_robin() {
        assert_eq!(order(&[(1, 3), (2, 3), (3, 1)]).await, [1, 2, 3, 1, 2, 1, 2]);
    }

    #[tokio::test]
    async fn the_backlog_counts_each_lanes_calls_until_they_finish() {
        let scheduler = Scheduler::new(4);
        let due = Instant::now();
        let big = scheduler.lane_for(1000, due);
        let small = scheduler.lane_for(3, due);
        let left = |s: &Scheduler| {
            let mut b: Vec<usize> = s.backlog().into_iter().map(|(n, _)| n).collect();
            b.sort_unstable();
            b
        };
        assert_eq!(left(&scheduler), [3, 1000]);
        let turn = small.turn().await;
        assert_eq!(left(&scheduler), [3, 1000], "a call in flight is still to be done");
        drop(turn);
        assert_eq!(left(&scheduler), [2, 1000], "a finished call is not");
        drop(big);
        assert_eq!(left(&scheduler), [2], "a finished question's lane is gone");
    }

    #[tokio::test]
    async fn capacity_bounds_calls_in_flight_and_cancelled_waiters_free_their_place() {
        let scheduler = Scheduler::new(2);
        let lane = scheduler.lane();
        let a = lane.turn().await;
        let _b = lane.turn().await;
        assert_eq!(scheduler.in_flight(), 2);
        let waiting = tokio::time::timeout(std::time::Duration::from_millis(20), lane.turn()).await;
        assert!(waiting.is_err(), "a third call waits");
        drop(a);
        assert_eq!(scheduler.in_flight(), 1, "the cancelled waiter took no turn");
        let _c = lane.turn().await;
        assert_eq!(scheduler.in_flight(), 2);
    }
}

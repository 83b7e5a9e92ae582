//! One scheduler for every upstream call of the process: at most `capacity` calls in
//! flight, handed out in turns.
//!
//! Each question gets a [`Lane`], which belongs to the client that asked. When a call
//! finishes, the next turn goes first to a client, then to a lane of that client:
//!
//! - Clients take turns weighted by their share (stride scheduling: each has a pass that
//!   grows by `1 / share` per turn, and the waiting client with the least pass goes next; a
//!   client that starts waiting joins at the others' pass, so idle time earns no credit).
//!   A client with 20 questions waiting gets no more turns than one with 1, and a share
//!   nobody uses goes to whoever waits: the turns are never left idle while anyone waits.
//! - Within a client, its lanes with a call waiting go round-robin, not oldest call first.
//!   So a question of 3 calls behind one of 3,000 waits for about one call per lane ahead
//!   of it, not for the 3,000, and the big one still gets every turn nobody else wants.
//! - Idle lanes (work nobody waits for, such as keeping watched Tweets warm) get a turn only
//!   when no client's call waits, round-robin among themselves: a question that comes while
//!   they run waits for no more than the calls already in flight.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use tokio::sync::oneshot;
use tokio::time::Instant;

#[derive(Debug, Default)]
struct State {
    in_flight: usize,
    /// Each client's lanes with waiting calls and its place in the turns.
    clients: HashMap<Arc<str>, Client>,
    /// The pass of the last client granted a turn: where a client that starts waiting joins.
    now_pass: f64,
    /// Each lane's client.
    lane_client: HashMap<u64, Arc<str>>,
    /// Each lane's waiting calls, oldest first.
    waiting: HashMap<u64, VecDeque<oneshot::Sender<Turn>>>,
    /// Each lane's calls planned and not yet finished, and its question's deadline.
    planned: HashMap<u64, (usize, Instant)>,
    /// Idle lanes with waiting calls, in turn order.
    idle: VecDeque<u64>,
    next_lane: u64,
}

/// One client in the scheduler.
#[derive(Debug)]
struct Client {
    /// Its lanes with waiting calls, in turn order.
    ring: VecDeque<u64>,
    /// Its weight among clients (`clients.NAME.share`).
    share: f64,
    /// Grows by `1 / share` per turn: the least goes next.
    pass: f64,
    /// Its lanes open now (it is forgotten once none is).
    lanes: usize,
}

impl Client {
    /// Brings the client's pass up to `now_pass` when it comes back: idle time earns no
    /// turns to spend later.
    fn join(&mut self, now_pass: f64) {
        self.pass = self.pass.max(now_pass);
    }

    /// Takes one turn: the pass it was taken at, which the others join at from now on.
    fn take_turn(&mut self) -> f64 {
        let taken = self.pass;
        self.pass += 1.0 / self.share;
        taken
    }
}

impl State {
    /// Whether any call waits.
    fn anyone_waits(&self) -> bool {
        self.clients.values().any(|c| !c.ring.is_empty())
    }

    /// The waiting client whose turn is next: the least pass, ties by name.
    fn next_client(&self) -> Option<Arc<str>> {
        self.clients
            .iter()
            .filter(|(_, c)| !c.ring.is_empty())
            .min_by(|(a, x), (b, y)| x.pass.total_cmp(&y.pass).then_with(|| a.cmp(b)))
            .map(|(name, _)| Arc::clone(name))
    }
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
    /// Its calls take only turns no client's call waits for.
    idle: bool,
    /// The client's own per-minute cap, if it has one: each call takes from it first.
    pub(crate) cap: Option<Arc<crate::RateBudget>>,
    /// The same question's place in the line for the per-minute budget, if the policy
    /// keeps one.
    pub(crate) budget_lane: Option<Box<Lane>>,
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

    /// A lane for one request of a client of its own.
    pub fn lane(&self) -> Lane {
        self.lane_for(0, Instant::now())
    }

    /// A lane for a question that plans `calls` upstream calls, due by `deadline`, of the
    /// one client that has no name.
    pub fn lane_for(&self, calls: usize, deadline: Instant) -> Lane {
        self.lane_of("", 1.0, calls, deadline)
    }

    /// A lane for a question of `client` (whose weight among clients is `share`) that plans
    /// `calls` upstream calls, due by `deadline`.
    pub fn lane_of(&self, client: &str, share: f64, calls: usize, deadline: Instant) -> Lane {
        let mut s = self.inner.lock();
        s.next_lane += 1;
        let id = s.next_lane;
        s.planned.insert(id, (calls, deadline));
        let name: Arc<str> = Arc::from(client);
        let now_pass = s.now_pass;
        let entry = s.clients.entry(Arc::clone(&name)).or_insert_with(|| Client {
            ring: VecDeque::new(),
            share,
            pass: now_pass,
            lanes: 0,
        });
        entry.lanes += 1;
        entry.share = if share.is_finite() && share > 0.0 { share } else { 1.0 };
        s.lane_client.insert(id, name);
        Lane { id, inner: Arc::clone(&self.inner), idle: false, cap: None, budget_lane: None }
    }

    /// An idle lane: its calls take turns only when no client's call waits, and it is in
    /// no backlog (a question never waits behind it beyond the calls it has in flight).
    pub fn idle_lane(&self) -> Lane {
        let mut s = self.inner.lock();
        s.next_lane += 1;
        Lane { id: s.next_lane, inner: Arc::clone(&self.inner), idle: true, cap: None, budget_lane: None }
    }

    /// Each lane's calls not yet finished (a call in flight may still be waiting for the
    /// rate budget, so it counts until it is done) and its deadline.
    pub fn backlog(&self) -> Vec<(usize, Instant)> {
        self.inner.lock().planned.values().copied().collect()
    }

    /// Like [`Scheduler::backlog`], with each lane's client and that client's share.
    pub fn backlog_by_client(&self) -> Vec<(Arc<str>, f64, usize, Instant)> {
        let s = self.inner.lock();
        s.planned
            .iter()
            .filter_map(|(lane, &(left, due))| {
                let client = s.lane_client.get(lane)?;
                let share = s.clients.get(client).map_or(1.0, |c| c.share);
                Some((Arc::clone(client), share, left, due))
            })
            .collect()
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

    /// Hands free capacity to waiting calls: client by client as their shares say, and
    /// lane by lane within a client; then, when no client's call waits, to idle lanes.
    fn grant(self: &Arc<Self>, s: &mut State) {
        while s.in_flight < self.capacity {
            let granted = match s.next_client() {
                Some(name) => self.grant_client(s, &name),
                None => self.grant_idle(s),
            };
            if granted.is_none() {
                return;
            }
        }
    }

    /// Hands a turn to the next lane of the client `name`; `None` if it has none waiting.
    fn grant_client(self: &Arc<Self>, s: &mut State, name: &Arc<str>) -> Option<()> {
        let lane = s.clients.get_mut(name)?.ring.pop_front()?;
        // A lane with nothing waiting leaves the ring.
        let Some((sent, more)) = self.send_turn(s, lane) else { return Some(()) };
        if let Some(client) = s.clients.get_mut(name) {
            if sent {
                s.now_pass = client.take_turn();
            }
            match (sent, more) {
                (true, true) => client.ring.push_back(lane),
                // The call was cancelled while it waited: its turn is not taken.
                (false, true) => client.ring.push_front(lane),
                _ => {}
            }
        }
        Some(())
    }

    /// Hands a turn to the next idle lane; `None` if none waits.
    fn grant_idle(self: &Arc<Self>, s: &mut State) -> Option<()> {
        let lane = s.idle.pop_front()?;
        let Some((sent, more)) = self.send_turn(s, lane) else { return Some(()) };
        match (sent, more) {
            (true, true) => s.idle.push_back(lane),
            (false, true) => s.idle.push_front(lane),
            _ => {}
        }
        Some(())
    }

    /// Sends `lane`'s oldest waiting call its turn: whether it took it (a cancelled call
    /// does not), and whether more of its calls wait.
    fn send_turn(self: &Arc<Self>, s: &mut State, lane: u64) -> Option<(bool, bool)> {
        let queue = s.waiting.get_mut(&lane)?;
        let waiter = queue.pop_front()?;
        let more = !queue.is_empty();
        if !more {
            s.waiting.remove(&lane);
        }
        match waiter.send(Turn { inner: Some(Arc::clone(self)), lane }) {
            Ok(()) => {
                s.in_flight += 1;
                Some((true, more))
            }
            Err(mut unused) => {
                unused.inner = None;
                Some((false, more))
            }
        }
    }
}

impl Lane {
    /// Whether its calls take only turns no client's call waits for.
    pub fn is_idle(&self) -> bool {
        self.idle
    }

    /// Waits for this lane's next turn.
    pub async fn turn(&self) -> Turn {
        let rx = {
            let mut guard = self.inner.lock();
            let s = &mut *guard;
            // Idle lanes wait behind anyone; a client's call only behind other clients'.
            let free =
                s.in_flight < self.inner.capacity && !s.anyone_waits() && (!self.idle || s.idle.is_empty());
            if free {
                s.in_flight += 1;
                let now_pass = s.now_pass;
                if let Some(client) = s.lane_client.get(&self.id).and_then(|c| s.clients.get_mut(c)) {
                    // A turn nobody else wanted moves the pass on for everyone: a client
                    // busy while nobody waited is not behind those who come later.
                    client.join(now_pass);
                    s.now_pass = client.take_turn();
                }
                return Turn { inner: Some(Arc::clone(&self.inner)), lane: self.id };
            }
            let (tx, rx) = oneshot::channel();
            let queue = s.waiting.entry(self.id).or_default();
            let first = queue.is_empty();
            queue.push_back(tx);
            if first && self.idle {
                s.idle.push_back(self.id);
            } else if first {
                let now_pass = s.now_pass;
                if let Some(client) = s.lane_client.get(&self.id).and_then(|c| s.clients.get_mut(c)) {
                    if client.ring.is_empty() {
                        client.join(now_pass);
                    }
                    client.ring.push_back(self.id);
                }
            }
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
        if self.idle {
            s.idle.retain(|l| *l != self.id);
        }
        if let Some(name) = s.lane_client.remove(&self.id)
            && let Some(client) = s.clients.get_mut(&name)
        {
            client.ring.retain(|l| *l != self.id);
            client.lanes -= 1;
            if client.lanes == 0 {
                s.clients.remove(&name);
            }
        }
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

    /// Runs `calls` per lane, all of one client, through a scheduler of capacity 1 (see
    /// `order_of`): the lanes in the order they got their turns.
    async fn order(calls: &[(usize, usize)]) -> Vec<usize> {
        let one_client: Vec<_> = calls.iter().map(|&(lane, n)| ("", 1.0, lane, n)).collect();
        order_of(&one_client).await.into_iter().map(|(_, lane)| lane).collect()
    }

    /// Runs `calls` (`(client, share, lane, calls)`) through a scheduler of capacity 1; each
    /// call records its client and lane when it gets its turn and yields before giving the
    /// turn back.
    async fn order_of(calls: &[(&'static str, f64, usize, usize)]) -> Vec<(&'static str, usize)> {
        let scheduler = Scheduler::new(1);
        let log = Arc::new(StdMutex::new(Vec::new()));
        let blocker = scheduler.lane_of("blocker", 1.0, 1, Instant::now());
        let held = blocker.turn().await;
        let mut tasks = Vec::new();
        for &(client, share, lane_name, n) in calls {
            let lane = Arc::new(scheduler.lane_of(client, share, n, Instant::now()));
            for _ in 0..n {
                let (lane, log) = (Arc::clone(&lane), Arc::clone(&log));
                tasks.push(tokio::spawn(async move {
                    let _turn = lane.turn().await;
                    log.lock().unwrap().push((client, lane_name));
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

    /// The log calls write their names to as they get their turns.
    type Log = Arc<StdMutex<Vec<&'static str>>>;

    /// Queues one call per `(name, lane)`, in order: each writes its name to the log when it
    /// gets its turn, and yields before giving the turn back.
    async fn queue<'a>(
        calls: impl IntoIterator<Item = (&'static str, &'a Arc<Lane>)>,
    ) -> (Log, Vec<tokio::task::JoinHandle<()>>) {
        let log = Log::default();
        let mut tasks = Vec::new();
        for (name, lane) in calls {
            let (lane, log) = (Arc::clone(lane), Arc::clone(&log));
            tasks.push(tokio::spawn(async move {
                let _turn = lane.turn().await;
                log.lock().unwrap().push(name);
                tokio::task::yield_now().await;
            }));
            tokio::task::yield_now().await;
        }
        (log, tasks)
    }

    #[tokio::test]
    async fn clients_take_turns_by_share_whatever_their_questions() {
        // "batch" has four questions of 6 calls, "dash" one of 4: equal shares alternate
        // the clients, and batch's questions take batch's turns round-robin.
        let got = order_of(&[
            ("batch", 1.0, 1, 6),
            ("batch", 1.0, 2, 6),
            ("batch", 1.0, 3, 6),
            ("batch", 1.0, 4, 6),
            ("dash", 1.0, 9, 4),
        ])
        .await;
        let clients: Vec<&str> = got.iter().map(|(c, _)| *c).collect();
        assert_eq!(
            &clients[..8],
            ["batch", "dash", "batch", "dash", "batch", "dash", "batch", "dash"],
            "{got:?}"
        );
        assert!(clients[8..].iter().all(|c| *c == "batch"), "once dash is done, batch has every turn");
        let batch_lanes: Vec<usize> =
            got.iter().filter(|(c, _)| *c == "batch").map(|(_, l)| *l).take(8).collect();
        assert_eq!(batch_lanes, [1, 2, 3, 4, 1, 2, 3, 4], "round-robin within the client");
    }

    #[tokio::test]
    async fn turns_nobody_else_wanted_leave_a_busy_client_no_debt() {
        // "dash" takes 50 turns while nobody waits; then "batch" and dash both wait.
        let scheduler = Scheduler::new(1);
        let dash = Arc::new(scheduler.lane_of("dash", 1.0, 100, Instant::now()));
        for _ in 0..50 {
            drop(dash.turn().await);
        }
        let held = dash.turn().await;
        let batch = Arc::new(scheduler.lane_of("batch", 1.0, 10, Instant::now()));
        let (log, tasks) = queue([("batch", &batch), ("dash", &dash)].repeat(4)).await;
        drop(held);
        for t in tasks {
            t.await.unwrap();
        }
        let got = log.lock().unwrap().clone();
        // Were its 51 turns a debt, batch would take its 4 before dash's first.
        assert!(got[..3].contains(&"dash"), "dash is not starved for turns it took alone: {got:?}");
    }

    #[tokio::test]
    async fn a_share_of_two_gets_two_turns_to_one() {
        let got = order_of(&[("big", 2.0, 1, 12), ("small", 1.0, 2, 12)]).await;
        let first: Vec<&str> = got.iter().take(12).map(|(c, _)| *c).collect();
        let big = first.iter().filter(|c| **c == "big").count();
        assert_eq!(big, 8, "two thirds of the turns while both wait: {first:?}");
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

    #[tokio::test]
    async fn idle_lanes_take_only_turns_no_client_waits_for() {
        // Capacity 2, both held by an idle lane; an idle lane queues 4 more, then a client's
        // question queues 2: each turn freed goes to the question first.
        let scheduler = Scheduler::new(2);
        let idle = Arc::new(scheduler.idle_lane());
        let held = [idle.turn().await, idle.turn().await];
        let asked = Arc::new(scheduler.lane_of("dash", 1.0, 2, Instant::now()));
        let calls = [("idle", &idle), ("idle", &idle), ("idle", &idle), ("idle", &idle)];
        let (log, tasks) = queue(calls.into_iter().chain([("dash", &asked), ("dash", &asked)])).await;
        assert!(log.lock().unwrap().is_empty(), "all wait for the two in flight");
        assert_eq!(scheduler.backlog().len(), 1, "an idle lane is in no backlog");
        drop(held);
        for t in tasks {
            t.await.unwrap();
        }
        let got = log.lock().unwrap().clone();
        assert_eq!(got, ["dash", "dash", "idle", "idle", "idle", "idle"]);
        // With nobody else waiting, an idle lane takes free capacity at once.
        let quiet = tokio::time::timeout(std::time::Duration::from_millis(50), idle.turn()).await;
        assert!(quiet.is_ok(), "an idle lane is not kept from capacity nobody wants");
    }
}

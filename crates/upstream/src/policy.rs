//! The call policy, in one place: every upstream call of the process takes a fair turn
//! ([`Scheduler`]), waits for the per-minute budget ([`RateBudget`]), and is retried with
//! backoff ([`retry`]), all within its question's deadline. A question asks for a [`Lane`]
//! and then one [`CallPolicy::call`] per slice.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use engagement::{Endpoint, RawRequest, Response};
use tokio::time::Instant;

use crate::blocking::off_the_workers;
use crate::budget::RateBudget;
use crate::classify::{AttemptError, read_answer};
use crate::credentials::HandleCredentials;
use crate::retry::{Retried, RetryPolicy, retry};
use crate::scheduler::{Lane, Scheduler, Turn};
use crate::{Body, Upstream};

/// The pace of the per-minute budget: its rate, whether the service set it (else the
/// upstream's headers told it), the calls that may go at once, and the time between calls.
struct Pacing {
    per_minute: u32,
    configured: bool,
    burst: usize,
    interval: Duration,
}

/// One attempt of a call, as the policy made it: its number (the first is 1), how long it
/// waited for its client's cap, its turn in the budget's line and the budget, and how long
/// the upstream took.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attempt {
    pub number: u32,
    pub waited: Duration,
    pub took: Duration,
}

/// What one client may take of the upstream's calls: its weight in the turns among
/// clients (`clients.NAME.share`) and, if it has one, a per-minute cap of its own
/// (`clients.NAME.max_calls_per_minute`, shared with the other replicas when they share a
/// budget).
#[derive(Debug, Clone)]
pub struct ClientShare {
    pub share: f64,
    pub cap: Option<Arc<RateBudget>>,
}

impl Default for ClientShare {
    fn default() -> Self {
        ClientShare { share: 1.0, cap: None }
    }
}

/// How the process calls the upstream.
#[derive(Debug)]
pub struct CallPolicy {
    upstream: Arc<dyn Upstream>,
    scheduler: Scheduler,
    /// The line for the per-minute budget: calls wait for the budget, and then for a place
    /// in flight, one at a time, taking turns by the same shares, so the shares hold at the
    /// budget too (places taken while the budget is spent would otherwise go to whoever had
    /// calls waiting then).
    budget_line: Scheduler,
    budget: Arc<RateBudget>,
    retry: RetryPolicy,
    /// Each client's share and cap; a client not named has a share of 1 and no cap.
    clients: std::collections::HashMap<String, ClientShare>,
    /// How long an answered call took lately, in microseconds (a moving average; 0 before
    /// the first).
    latency_us: std::sync::atomic::AtomicU64,
}

/// One call as the policy makes it: on a question's lane, to an endpoint, as a handle, by
/// the question's deadline.
#[derive(Debug, Clone, Copy)]
pub struct Calling<'a> {
    pub lane: &'a Lane,
    pub endpoint: Endpoint,
    pub handle: &'a HandleCredentials,
    pub body: &'a RawRequest,
    pub deadline: Instant,
}

/// Why a question cannot be answered within its time by the per-minute budget.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BudgetRefusal {
    /// Not even with the budget to itself.
    #[error(
        "this question needs {calls} upstream calls, but at {per_minute} calls a minute ({rate_from}) at most {fit} fit in {} s",
        within.as_secs()
    )]
    Never { calls: usize, fit: usize, per_minute: u32, rate_from: String, within: Duration },
    /// Not beside the questions already running; it would fit after `wait`.
    #[error("the per-minute budget is busy: {ahead} calls go before the last of this question's {calls}")]
    Busy { calls: usize, ahead: usize, wait: Duration },
}

impl BudgetRefusal {
    /// The time the question's calls would take with the budget to itself, rounded up to
    /// whole seconds (for a refusal that says "not now", the wait).
    pub fn time_needed(&self) -> Duration {
        match self {
            BudgetRefusal::Never { calls, per_minute, .. } => {
                let secs = (*calls as u64 * 60).div_ceil(u64::from((*per_minute).max(1)));
                Duration::from_secs(secs)
            }
            BudgetRefusal::Busy { wait, .. } => *wait,
        }
    }
}

impl CallPolicy {
    /// Calls `upstream` with at most `max_in_flight` calls at once, paced by `budget` and
    /// retried as `retry` says.
    pub fn new(
        upstream: Arc<dyn Upstream>,
        budget: Arc<RateBudget>,
        max_in_flight: usize,
        retry: RetryPolicy,
    ) -> CallPolicy {
        CallPolicy {
            upstream,
            scheduler: Scheduler::new(max_in_flight),
            budget_line: Scheduler::new(1),
            budget,
            retry,
            clients: Default::default(),
            latency_us: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// The same policy, with each client's share and cap.
    pub fn with_clients(mut self, clients: std::collections::HashMap<String, ClientShare>) -> CallPolicy {
        self.clients = clients;
        self
    }

    /// `client`'s share and cap.
    pub fn client(&self, client: &str) -> ClientShare {
        self.clients.get(client).cloned().unwrap_or_default()
    }

    /// A lane for one question of `calls` calls due by `deadline`: its turns alternate with
    /// other questions'.
    pub fn lane(&self, calls: usize, deadline: Instant) -> Lane {
        self.scheduler.lane_for(calls, deadline)
    }

    /// A lane for one question of `client` of `calls` calls due by `deadline`: its turns
    /// come by the client's share among clients, then round-robin among the client's
    /// questions, and each call takes from the client's cap first.
    pub fn lane_of(&self, client: &str, calls: usize, deadline: Instant) -> Lane {
        let ClientShare { share, cap } = self.client(client);
        let mut lane = self.scheduler.lane_of(client, share, calls, deadline);
        lane.cap = cap;
        lane.budget_lane = Some(Box::new(self.budget_line.lane_of(client, share, calls, deadline)));
        lane
    }

    /// An idle lane of `client` (work nobody waits for): its calls take turns, in flight and
    /// at the per-minute budget, only when no question's call waits, and each takes from the
    /// client's cap first.
    pub fn idle_lane_of(&self, client: &str) -> Lane {
        let mut lane = self.scheduler.idle_lane();
        lane.cap = self.client(client).cap;
        lane.budget_lane = Some(Box::new(self.budget_line.idle_lane()));
        lane
    }

    /// The upstream called.
    pub fn upstream(&self) -> &dyn Upstream {
        self.upstream.as_ref()
    }

    /// The per-minute budget.
    pub fn budget(&self) -> &RateBudget {
        &self.budget
    }

    /// Calls in flight now.
    pub fn in_flight(&self) -> usize {
        self.scheduler.in_flight()
    }

    /// Calls at once at most.
    pub fn max_in_flight(&self) -> usize {
        self.scheduler.capacity()
    }

    /// One call, as `call` says: attempts until one succeeds, one is refused, the attempts
    /// run out, or the next would pass its deadline; its answer read as a tree of counts.
    /// `attempted` hears of each attempt: its outcome, and the [`Attempt`] it was.
    pub async fn call(
        &self,
        call: Calling<'_>,
        attempted: impl Fn(&Result<Body, AttemptError>, Attempt),
    ) -> Retried<Response> {
        self.call_then(call, attempted, |body| {
            off_the_workers("reading the answer", move || read_answer(&body.text()?))
        })
        .await
    }

    /// Like [`CallPolicy::call`], but `then` reads of an answer's body what the caller needs,
    /// while the call still holds its place among the calls in flight: answers that wait for
    /// that work never pile up beyond the calls in flight. An error from `then` (an answer
    /// that is not what was asked for) counts as the attempt's.
    pub async fn call_then<T, Fut>(
        &self,
        call: Calling<'_>,
        attempted: impl Fn(&Result<Body, AttemptError>, Attempt),
        then: impl Fn(Body) -> Fut,
    ) -> Retried<T>
    where
        Fut: Future<Output = Result<T, AttemptError>>,
    {
        let Calling { lane, endpoint, handle, body, deadline } = call;
        let (attempted, then) = (&attempted, &then);
        retry(&self.retry, deadline, |number| async move {
            let (_turn, result, waited, took) = match self.room(lane, deadline).await {
                Ok((turn, waited)) => {
                    let sent = Instant::now();
                    let result = self.upstream.call(endpoint, handle, body, deadline).await;
                    if result.is_ok() {
                        self.learn_latency(sent.elapsed());
                    }
                    (Some(turn), result, waited, sent.elapsed())
                }
                Err(wait) => (None, Err(AttemptError::Budget { wait }), Duration::ZERO, Duration::ZERO),
            };
            attempted(&result, Attempt { number, waited, took });
            then(result?).await
        })
        .await
    }

    /// Refuses, before any call, a question of `calls` calls that the per-minute budget
    /// cannot carry by `deadline`: never, or not now beside the questions in flight (its own
    /// calls would end too late, or it would make one of theirs end too late).
    ///
    /// Turns go round-robin, so a lane with `r` calls left finishes after, from every lane,
    /// its calls left up to `r`; a new lane of `n` calls adds up to `n` of its own. Only a
    /// rate the service paces itself is known well enough to say "not now"; one learned from
    /// the upstream's headers says "never".
    pub fn check(&self, calls: usize, deadline: Instant) -> Result<(), BudgetRefusal> {
        self.check_for("", calls, deadline)
    }

    /// Like [`CallPolicy::check`], for a question of `client`: its own cap, if it has one,
    /// must carry its calls by `deadline` too.
    pub fn check_for(&self, client: &str, calls: usize, deadline: Instant) -> Result<(), BudgetRefusal> {
        let checked = self.check_cap(client, calls, deadline);
        checked.and_then(|()| self.check_budget(client, calls, deadline))
    }

    /// Refuses `calls` calls of `client` that its own cap cannot carry by `deadline`.
    fn check_cap(&self, client: &str, calls: usize, deadline: Instant) -> Result<(), BudgetRefusal> {
        if let Some(cap) = self.client(client).cap
            && let Some(per_minute) = cap.configured_per_minute()
        {
            let within = deadline.saturating_duration_since(Instant::now());
            let within = Duration::from_secs(within.as_secs() + u64::from(within.subsec_nanos() > 0));
            let fit = cap.burst() as usize + (within.as_secs_f64() * f64::from(per_minute) / 60.0) as usize;
            if calls > fit {
                let rate_from = format!("clients.{client}.max_calls_per_minute");
                return Err(BudgetRefusal::Never { calls, fit, per_minute, rate_from, within });
            }
        }
        Ok(())
    }

    /// The calls of other questions that go before the last of `calls` calls of a new
    /// question of `client`: its own client's questions take turns with it round-robin, and
    /// each other client gets its share of the turns the new question's client takes.
    fn ahead_of(&self, client: &str, calls: usize) -> usize {
        let backlog = self.scheduler.backlog_by_client();
        let share = self.client(client).share;
        let own: usize = backlog.iter().filter(|l| &*l.0 == client).map(|l| l.2.min(calls)).sum();
        let turns = (own + calls) as f64;
        let mut others: std::collections::HashMap<&str, (f64, usize)> = Default::default();
        for (name, their_share, left, _) in backlog.iter().filter(|l| &*l.0 != client) {
            others.entry(name).or_insert((*their_share, 0)).1 += left;
        }
        own + others.values().map(|&(s, left)| left.min((turns * s / share).ceil() as usize)).sum::<usize>()
    }

    fn check_budget(&self, client: &str, calls: usize, deadline: Instant) -> Result<(), BudgetRefusal> {
        let Some(Pacing { per_minute, configured, burst, interval }) = self.pacing() else {
            return Ok(());
        };
        let now = Instant::now();
        // The time left, in whole seconds rounded up: a question given 8 s has 8 s here,
        // not the 7.99 s left after reading it.
        let within = deadline.saturating_duration_since(now);
        let within = Duration::from_secs(within.as_secs() + u64::from(within.subsec_nanos() > 0));
        let fit = burst + (within.as_secs_f64() / interval.as_secs_f64()) as usize;
        if calls > fit {
            let source =
                if configured { "upstream.requests_per_minute" } else { "the upstream's x-per-minute-limit" };
            return Err(BudgetRefusal::Never { calls, fit, per_minute, rate_from: source.into(), within });
        }
        if !configured {
            return Ok(());
        }
        let backlog = self.scheduler.backlog();
        let pause = self.budget.paused_for();
        // When a lane of `left` calls ends, from now, with `extra` more calls going before.
        let ends = |left: usize, extra: usize| {
            let share: usize = backlog.iter().map(|&(r, _)| r.min(left)).sum::<usize>() + extra;
            now + pause + interval * share.saturating_sub(burst) as u32
        };
        let ahead = self.ahead_of(client, calls);
        let own_end = now + pause + interval * (ahead + calls).saturating_sub(burst) as u32;
        let mut wait = own_end.saturating_duration_since(now + within);
        for &(left, due) in &backlog {
            let before = ends(left, 0);
            if before <= due && before + interval * left.min(calls) as u32 > due {
                // It would push a question already running past its deadline: wait for it.
                wait = wait.max(before.saturating_duration_since(now));
            }
        }
        if wait > Duration::ZERO {
            return Err(BudgetRefusal::Busy { calls, ahead, wait });
        }
        Ok(())
    }

    /// Waits, for one attempt on `lane`, for its client's cap (without holding a place in
    /// flight others could use); then for its turn in the budget's line and the budget; then
    /// for a place in flight, still holding its turn in the line. The place, and the time
    /// waited for the cap, the line and the budget; or the wait that would pass `deadline`.
    ///
    /// The line comes before the place: while the budget is spent (the upstream's window
    /// used up), the calls waiting for it are all in the line, which gives the next window
    /// to them by their clients' shares. Were places taken first, those held through a
    /// pause would go to whichever client had calls queued when they came free.
    async fn room(&self, lane: &Lane, deadline: Instant) -> Result<(Turn, Duration), Duration> {
        let capped = match &lane.cap {
            // Idle work takes from its client's cap only while the cap has room now, so
            // the client's questions never queue behind idle calls waiting for the cap.
            Some(cap) if lane.is_idle() => clear_of_use(cap, deadline).await? + cap.acquire(deadline).await?,
            Some(cap) => cap.acquire(deadline).await?,
            None => Duration::ZERO,
        };
        let line_started = Instant::now();
        let _in_line = match &lane.budget_lane {
            // The calls ahead in line may take the time left.
            Some(line) => {
                Some(tokio::time::timeout_at(deadline, line.turn()).await.map_err(|_| Duration::ZERO)?)
            }
            None => None,
        };
        self.budget.acquire(deadline).await?;
        // With no budget known the line only orders the places in flight: its wait is not
        // the budget's.
        let budgeted = self.budget.per_minute().is_some();
        let waited = capped + if budgeted { line_started.elapsed() } else { Duration::ZERO };
        Ok((lane.turn().await, waited))
    }

    /// Adds one answered call's time to the moving average (an eighth of the new time).
    fn learn_latency(&self, took: Duration) {
        use std::sync::atomic::Ordering;
        let took = took.as_micros().min(u128::from(u64::MAX)) as u64;
        let _ = self.latency_us.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |before| {
            Some(if before == 0 { took.max(1) } else { (before * 7 + took) / 8 })
        });
    }

    /// How long an answered call took lately, if any was answered yet.
    pub fn typical_latency(&self) -> Option<Duration> {
        match self.latency_us.load(std::sync::atomic::Ordering::Relaxed) {
            0 => None,
            us => Some(Duration::from_micros(us)),
        }
    }

    /// How long the last of `calls` calls of a question asked now would wait for the
    /// per-minute budget, its turns alternating with the calls already waiting: zero when
    /// the service knows no rate.
    pub fn budget_wait(&self, calls: usize) -> Duration {
        self.queue_wait("", calls)
    }

    /// How long the last of `calls` calls of a question of `client` would wait for the
    /// per-minute budget beside the calls already waiting, turns going by client shares.
    fn queue_wait(&self, client: &str, calls: usize) -> Duration {
        let Some(Pacing { burst, interval, configured, .. }) = self.pacing() else {
            return Duration::ZERO;
        };
        let ahead = self.ahead_of(client, calls);
        let paced = (ahead + calls) as f64 - burst as f64;
        // The rate this process paces itself by may be spent ahead of now already.
        let spent = if configured { self.budget.spent_ahead().as_secs_f64() } else { 0.0 };
        let wait = (spent + interval.as_secs_f64() * paced).max(0.0);
        self.budget.paused_for() + Duration::from_secs_f64(wait)
    }

    /// Like [`CallPolicy::budget_wait`], for a question of `client`: its own cap, if it has
    /// one, may hold its calls longer.
    pub fn budget_wait_for(&self, client: &str, calls: usize) -> Duration {
        let wait = self.queue_wait(client, calls);
        let Some(cap) = self.client(client).cap else { return wait };
        let Some(per_minute) = cap.configured_per_minute() else { return wait };
        let interval = 60.0 / f64::from(per_minute);
        let own = cap.spent_ahead().as_secs_f64() + interval * (calls as f64 - f64::from(cap.burst()));
        wait.max(Duration::from_secs_f64(own.max(0.0)))
    }

    /// The pace of the per-minute budget, when the service knows one.
    fn pacing(&self) -> Option<Pacing> {
        let per_minute = self.budget.per_minute()?;
        let configured = self.budget.configured_per_minute().is_some();
        // A configured rate lets `burst` go at once; the upstream's own minute lets its
        // whole limit go at the start of a window.
        let burst = if configured { self.budget.burst() } else { per_minute } as usize;
        Some(Pacing { per_minute, configured, burst, interval: Duration::from_secs(60) / per_minute })
    }

    /// How long `calls` more calls of one question may take at the per-minute budget, when
    /// there is one (a question's own pace, once it has one, says better).
    pub fn eta(&self, calls: usize) -> Option<Duration> {
        self.budget
            .per_minute()
            .map(|per_minute| self.budget.paused_for() + Duration::from_secs(60) / per_minute * calls as u32)
    }
}

/// Waits, taking nothing, until `budget` has room for a whole burst: the time waited, or
/// the wait that would pass `deadline`.
async fn clear_of_use(budget: &RateBudget, deadline: Instant) -> Result<Duration, Duration> {
    let started = Instant::now();
    loop {
        let ahead = budget.spent_ahead();
        if ahead.is_zero() {
            return Ok(started.elapsed());
        }
        if Instant::now() + ahead > deadline {
            return Err(ahead);
        }
        tokio::time::sleep(ahead).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use async_trait::async_trait;

    #[derive(Debug)]
    struct Never;

    #[async_trait]
    impl Upstream for Never {
        async fn call(
            &self,
            _: Endpoint,
            _: &HandleCredentials,
            _: &RawRequest,
            _: Instant,
        ) -> Result<Body, AttemptError> {
            Err(AttemptError::Refused { status: 400, errors: vec![] })
        }
    }

    fn policy(per_minute: u32, burst: u32) -> CallPolicy {
        CallPolicy::new(
            Arc::new(Never),
            Arc::new(RateBudget::new(per_minute, burst)),
            8,
            RetryPolicy::default(),
        )
    }

    #[tokio::test]
    async fn the_wait_for_the_budget_counts_what_was_spent_and_what_goes_before() {
        // One call a second, one at a time.
        let p = policy(60, 1);
        assert_eq!(p.budget_wait(1), Duration::ZERO, "room now");
        assert!(p.budget().acquire(soon(10)).await.is_ok());
        let wait = p.budget_wait(1).as_secs_f64();
        assert!((0.9..=1.0).contains(&wait), "the second second: {wait}");
        let wait = p.budget_wait(3).as_secs_f64();
        assert!((2.9..=3.0).contains(&wait), "three more: {wait}");
        let _big = p.lane(5, soon(3600));
        let wait = p.budget_wait(3).as_secs_f64();
        assert!((5.9..=6.0).contains(&wait), "three of its calls go before the last of three: {wait}");
    }

    #[test]
    fn the_calls_ahead_of_a_question_go_by_the_clients_shares() {
        let shares = |dash: f64| {
            let clients = [("batch", 1.0), ("dash", dash)]
                .into_iter()
                .map(|(name, share)| (name.to_string(), ClientShare { share, cap: None }))
                .collect();
            policy(60, 1).with_clients(clients)
        };
        let p = shares(1.0);
        let _jobs: Vec<Lane> = (0..4).map(|_| p.lane_of("batch", 400, soon(3600))).collect();
        assert_eq!(p.ahead_of("dash", 150), 150, "batch takes one turn for each of dash's");
        assert_eq!(p.ahead_of("batch", 10), 40, "among batch's own questions, round-robin");
        let p = shares(3.0);
        let _jobs: Vec<Lane> = (0..4).map(|_| p.lane_of("batch", 400, soon(3600))).collect();
        assert_eq!(p.ahead_of("dash", 150), 50, "one turn for every three of dash's");
        let _mine = p.lane_of("dash", 20, soon(60));
        assert_eq!(p.ahead_of("dash", 10), 10 + 7, "dash's other question, then batch's third of 20");
    }

    #[test]
    fn without_a_rate_everything_fits() {
        assert_eq!(policy(0, 1).check(100_000, soon(1)), Ok(()));
    }

    #[test]
    fn a_question_larger_than_the_deadline_allows_never_fits() {
        // 60 a minute, burst 1, 10 s: 1 + 10 calls.
        let p = policy(60, 1);
        assert_eq!(p.check(11, soon(10)), Ok(()));
        assert!(matches!(
            p.check(12, soon(10)),
            Err(BudgetRefusal::Never { calls: 12, fit: 11, per_minute: 60, .. })
        ));
    }

    /// `secs` seconds from now (a check a moment later rounds what is left up to them).
    fn soon(secs: u64) -> Instant {
        Instant::now() + Duration::from_secs(secs)
    }

    #[test]
    fn beside_running_questions_it_waits_for_its_share() {
        let p = policy(60, 1);
        let _big = p.lane(1000, soon(3600));
        // 8 of the big one's calls go before the last of 8 new ones: 15 s at 1 a second.
        match p.check(8, soon(10)) {
            Err(BudgetRefusal::Busy { calls: 8, ahead: 8, wait }) => {
                assert!(wait > Duration::from_millis(4800) && wait <= Duration::from_secs(5), "{wait:?}");
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(p.check(5, soon(10)), Ok(()), "5 + 5 - 1 s fit");
    }

    #[test]
    fn a_newcomer_may_not_push_a_running_question_past_its_deadline() {
        let p = policy(60, 1);
        // 6 calls left, due in 6 s: it ends at 5 s alone, at 7 s beside 2 more calls.
        let _running = p.lane(6, soon(6));
        match p.check(2, soon(30)) {
            Err(BudgetRefusal::Busy { wait, .. }) => assert!(wait >= Duration::from_secs(4), "{wait:?}"),
            other => panic!("{other:?}"),
        }
        let relaxed = policy(60, 1);
        let _later = relaxed.lane(6, soon(60));
        assert_eq!(relaxed.check(2, soon(30)), Ok(()), "a question with room to spare is not pushed out");
    }

    #[test]
    fn a_learned_limit_only_says_never() {
        let p = policy(0, 1);
        p.budget().learn_limit(6);
        let _big = p.lane(1000, soon(3600));
        assert_eq!(p.check(7, soon(10)), Ok(()), "6 at once and one more in 10 s");
        assert!(matches!(p.check(8, soon(10)), Err(BudgetRefusal::Never { .. })));
    }

    #[test]
    fn the_eta_is_the_budgets_pace() {
        let p = policy(60, 1);
        assert_eq!(p.eta(10), Some(Duration::from_secs(10)));
        assert_eq!(policy(0, 1).eta(16), None);
    }

    #[tokio::test(start_paused = true)]
    async fn idle_work_takes_from_a_cap_only_once_it_has_room_for_a_burst() {
        let cap = RateBudget::new(60, 1);
        let far = Instant::now() + Duration::from_secs(30);
        assert_eq!(clear_of_use(&cap, far).await, Ok(Duration::ZERO), "an unused cap is clear");
        cap.acquire(far).await.unwrap();
        let ahead = cap.spent_ahead();
        assert!(
            ahead > Duration::from_millis(500),
            "one call spends a second of a 60-a-minute cap: {ahead:?}"
        );
        let soon = Instant::now() + Duration::from_millis(100);
        assert!(clear_of_use(&cap, soon).await.is_err(), "not clear before the deadline");
        let waited = clear_of_use(&cap, far).await.unwrap();
        assert!(waited >= ahead - Duration::from_millis(100), "waited for the cap to clear: {waited:?}");
        assert!(cap.spent_ahead().is_zero());
    }
}

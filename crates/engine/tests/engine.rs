//! The engine in-process, against an upstream that answers each call as the simulator's
//! model does: no HTTP, no server. What it answers is compared with the one unlimited call
//! the simulator's oracle makes, and the calls it makes are counted.

#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use chrono::Utc;
use engagement::{Endpoint, Limits, RawRequest, TweetId};
use engine::config::{CapPolicy, LedgerSettings};
use engine::ports::{Claim, FactsTier, Fetched, Held, Leases, Told, Wanted};
use engine::{Ask, Engine, EngineError, NativeQuestion, Question, Reading};
use serde_json::{Value, json};
use simulator::config::Config;
use simulator::model::Model;
use tokio_util::sync::CancellationToken;
use upstream::{AttemptError, CallPolicy, HandleCredentials, RateBudget, RetryPolicy, Upstream};

/// Answers every call as the simulator would, and counts them.
#[derive(Debug)]
struct Modelled {
    config: Config,
    model: Model,
    calls: AtomicUsize,
    /// How long each call takes.
    latency: Duration,
}

#[async_trait]
impl Upstream for Modelled {
    async fn call(
        &self,
        endpoint: Endpoint,
        _: &HandleCredentials,
        body: &RawRequest,
        _: tokio::time::Instant,
    ) -> Result<upstream::Body, AttemptError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        tokio::time::sleep(self.latency).await;
        let body = serde_json::to_value(body).unwrap();
        simulator::answer::answer(&self.config, &self.model, endpoint, &body, &Limits::of(endpoint))
            .map(|answer| upstream::Body::Text(serde_json::to_vec(&answer).unwrap().into()))
            .map_err(|r| AttemptError::Refused { status: r.status, errors: r.error.errors })
    }
}

/// An engine over `upstream`, with a store of its own in `dir` when `store_enabled`.
fn engine(upstream: &Arc<Modelled>, dir: &tempfile::TempDir, store_enabled: bool) -> Arc<Engine> {
    engine_sharing(upstream, dir, store_enabled, None)
}

/// Like [`engine`], sharing facts and leases through `replicas` when given.
fn engine_sharing(
    upstream: &Arc<Modelled>,
    dir: &tempfile::TempDir,
    store_enabled: bool,
    replicas: Option<Arc<Replicas>>,
) -> Arc<Engine> {
    let calls = CallPolicy::new(
        Arc::clone(upstream) as Arc<dyn Upstream>,
        Arc::new(RateBudget::new(0, 1)),
        4,
        RetryPolicy::default(),
    );
    let store = store::Store::open(store::Config {
        path: dir.path().to_path_buf(),
        settle_after: Duration::from_secs(48 * 3600),
        fresh_ttl: Duration::from_secs(60),
        status_ttl: Duration::from_secs(3600),
        max_bytes: 1 << 30,
    })
    .unwrap();
    let store = Arc::new(store);
    let ledger = LedgerSettings { handle_cap: None, policy: CapPolicy::Refuse };
    let mut shared = engine::ports::Shared::alone(Arc::clone(&store), Duration::from_secs(600));
    if let Some(replicas) = replicas {
        shared.facts = Arc::clone(&replicas) as Arc<dyn FactsTier>;
        shared.leases = replicas;
    }
    let clock = Arc::new(engine::ports::SystemClock);
    Arc::new(Engine::new(calls, store, store_enabled, ledger, shared, clock))
}

/// Other replicas as the engine's ports see them: a facts tier that holds nothing, and
/// leases that are always this replica's, with what was asked of them counted.
#[derive(Debug, Default)]
struct Replicas {
    claims: AtomicUsize,
    renewals: AtomicUsize,
    releases: AtomicUsize,
}

#[async_trait]
impl FactsTier for Replicas {
    fn reachable(&self) -> bool {
        true
    }

    async fn read(&self, _: &str, _: Wanted<'_>, _: &[TweetId]) -> Option<Held> {
        Some(Held::default())
    }

    async fn give(&self, _: Fetched<'_>) {}

    async fn tell(&self, _: Told<'_>) {}
}

#[async_trait]
impl Leases for Replicas {
    fn term(&self) -> Duration {
        Duration::from_secs(30)
    }

    async fn claim(&self, _: &str, _: Duration) -> Claim {
        self.claims.fetch_add(1, Ordering::SeqCst);
        Claim::Ours { holder: "this replica".into() }
    }

    async fn held(&self, _: &str) -> Option<bool> {
        Some(false)
    }

    async fn renew(&self, _: &str, holder: &str, _: Duration) -> bool {
        assert_eq!(holder, "this replica");
        self.renewals.fetch_add(1, Ordering::SeqCst);
        true
    }

    async fn release(&self, _: &str, _: &str) {
        self.releases.fetch_add(1, Ordering::SeqCst);
    }
}

fn modelled(config: Config) -> Arc<Modelled> {
    let model = Model { seed: config.seed, now: Utc::now(), settle_hours: config.settle_hours };
    Arc::new(Modelled { config, model, calls: AtomicUsize::new(0), latency: Duration::ZERO })
}

fn ask() -> Ask {
    let handle = HandleCredentials { handle: "demo".into(), token: "t".into(), token_secret: "s".into() };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    Ask::new("tests", Arc::new(handle), deadline, CancellationToken::new())
}

/// Tweet IDs created `days_old` days before now, `n` of them.
fn tweets(n: u64, days_old: i64) -> Vec<String> {
    let first = TweetId::minted_at(Utc::now() - chrono::Duration::days(days_old)).0;
    (0..n).map(|i| TweetId(first + (i << 12)).to_string()).collect()
}

fn body(ids: &[String], days: (i64, i64)) -> Value {
    let day = |ago: i64| (Utc::now() - chrono::Duration::days(ago)).format("%Y-%m-%d").to_string();
    json!({
        "tweet_ids": ids,
        "engagement_types": ["impressions", "favorites"],
        "groupings": {"per": {"group_by": ["tweet.id", "engagement.type", "engagement.day"]}},
        "start": day(days.0),
        "end": day(days.1),
    })
}

fn question(body: &Value) -> Question {
    let text = serde_json::to_vec(body).unwrap();
    let limits = Limits { max_tweet_ids: 1000, max_span_hours: None, clamp_future_end: true };
    NativeQuestion::read(&text, Reading::NATIVE)
        .unwrap()
        .historical(Reading::NATIVE, &limits, Utc::now())
        .unwrap()
}

fn oracle(upstream: &Modelled, body: &Value) -> Value {
    let answer = simulator::answer::oracle(&upstream.config, &upstream.model, body).unwrap();
    serde_json::to_value(answer.styled(engagement::CountStyle::Integers)).unwrap()
}

fn data(answer: &engine::Answer) -> Value {
    serde_json::to_value(answer.response.styled(engagement::CountStyle::Integers)).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_question_over_batches_and_windows_is_the_one_unlimited_call_and_a_repeat_costs_nothing() {
    let upstream = modelled(Config::default());
    let dir = tempfile::tempdir().unwrap();
    let engine = engine(&upstream, &dir, true);
    // 30 Tweets (two batches of at most 25) over 40 settled days (two windows of 28).
    let asked = body(&tweets(30, 200), (60, 20));
    let answer = engine.answer(&ask(), &question(&asked)).await.unwrap();
    assert_eq!(data(&answer), oracle(&upstream, &asked));
    assert_eq!(upstream.calls.load(Ordering::SeqCst), 4, "2 batches × 2 windows");
    assert_eq!(answer.meta.batches, 2);

    let again = engine.answer(&ask(), &question(&asked)).await.unwrap();
    assert_eq!(data(&again), data(&answer));
    assert_eq!(upstream.calls.load(Ordering::SeqCst), 4, "settled hours are held: no call");
    assert_eq!(again.meta.upstream_calls, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_store_every_slice_of_the_grid_is_fetched_and_merged_the_same() {
    let upstream = modelled(Config::default());
    let dir = tempfile::tempdir().unwrap();
    let engine = engine(&upstream, &dir, false);
    let asked = body(&tweets(30, 200), (60, 20));
    let answer = engine.answer(&ask(), &question(&asked)).await.unwrap();
    assert_eq!(data(&answer), oracle(&upstream, &asked));
    let fetched = answer.meta.slices_fetched;
    assert_eq!(upstream.calls.load(Ordering::SeqCst), fetched);
    engine.answer(&ask(), &question(&asked)).await.unwrap();
    assert_eq!(upstream.calls.load(Ordering::SeqCst), 2 * fetched, "nothing is held: a repeat calls again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_protected_tweet_fails_the_question_with_the_upstreams_refusal() {
    let ids = tweets(3, 200);
    let protected = TweetId::parse(&ids[1]).unwrap();
    let upstream = modelled(Config { protected_ids: [protected].into(), ..Config::default() });
    let dir = tempfile::tempdir().unwrap();
    let engine = engine(&upstream, &dir, true);
    let asked = body(&ids, (30, 20));
    match engine.answer(&ask(), &question(&asked)).await {
        Err(EngineError::UpstreamRefused { status, errors, .. }) => {
            assert_eq!(status, 400);
            assert!(errors.iter().any(|e| e.contains(&ids[1])), "{errors:?}");
        }
        other => panic!("expected the upstream's refusal, got {other:?}"),
    }
}

#[tokio::test(start_paused = true)]
async fn a_slow_call_keeps_renewing_its_lease_so_no_other_replica_makes_it_again() {
    let mut upstream = modelled(Config::default());
    // A call that takes 100 s, more than three times the lease's 30.
    Arc::get_mut(&mut upstream).unwrap().latency = Duration::from_secs(100);
    let dir = tempfile::tempdir().unwrap();
    let replicas = Arc::new(Replicas::default());
    let engine = engine_sharing(&upstream, &dir, true, Some(Arc::clone(&replicas)));
    let asked = body(&tweets(3, 200), (30, 20));
    let handle = HandleCredentials { handle: "demo".into(), token: "t".into(), token_secret: "s".into() };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(600);
    let ask = Ask::new("tests", Arc::new(handle), deadline, CancellationToken::new());
    let answer = engine.answer(&ask, &question(&asked)).await.unwrap();
    assert_eq!(data(&answer), oracle(&upstream, &asked));
    assert_eq!(upstream.calls.load(Ordering::SeqCst), 1);
    assert_eq!(replicas.claims.load(Ordering::SeqCst), 1);
    let renewals = replicas.renewals.load(Ordering::SeqCst);
    assert!((3..=10).contains(&renewals), "renewed every 10 s while the call ran: {renewals}");
    assert_eq!(replicas.releases.load(Ordering::SeqCst), 1, "given up once the facts are kept");
}

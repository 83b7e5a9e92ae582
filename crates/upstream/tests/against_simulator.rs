//! The HTTP client against the simulator: signatures it accepts, refusals it classifies.

#![allow(clippy::unwrap_used)]

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use engagement::{Endpoint, RawRequest, TweetId};
use simulator::faults::Faults;
use simulator::{Clock, Config, Simulator};
use tokio::time::Instant;
use upstream::{
    AppCredentials, AttemptError, CallPolicy, Calling, HandleCredentials, HttpUpstream, RateBudget,
    RetryPolicy, Upstream,
};

fn now() -> chrono::DateTime<chrono::Utc> {
    engagement::parse_instant("2024-06-01T00:00:00Z").unwrap()
}

async fn start(config: Config) -> (HttpUpstream, Arc<Simulator>) {
    start_with_budget(config, Arc::new(RateBudget::new(0, 1))).await
}

/// A simulator with `config`, and a client of it that tells `budget` what it hears.
async fn start_with_budget(config: Config, budget: Arc<RateBudget>) -> (HttpUpstream, Arc<Simulator>) {
    let sim = Simulator::new(Config { clock: Clock::Fixed(now()), ..config });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(Arc::clone(&sim).serve(listener));
    let app = AppCredentials {
        consumer_key: "sim-consumer-key".into(),
        consumer_secret: "sim-consumer-secret".into(),
    };
    let client = HttpUpstream::new(&base, app, budget, Duration::from_secs(5)).unwrap();
    (client, sim)
}

fn demo() -> HandleCredentials {
    HandleCredentials {
        handle: "demo".into(),
        token: "demo-token".into(),
        token_secret: "demo-token-secret".into(),
    }
}

fn body(ids: &[TweetId]) -> RawRequest {
    let v = serde_json::json!({
        "tweet_ids": ids.iter().map(|i| i.to_string()).collect::<Vec<_>>(),
        "engagement_types": ["impressions"],
        "groupings": {"g": {"group_by": ["tweet.id", "engagement.type"]}},
        "start": "2024-05-01T00:00:00Z", "end": "2024-05-02T00:00:00Z"
    });
    RawRequest {
        tweet_ids: ids.iter().map(|i| i.to_string()).collect(),
        engagement_types: vec!["impressions".into()],
        groupings: v["groupings"].as_object().unwrap().clone(),
        start: Some("2024-05-01T00:00:00Z".into()),
        end: Some("2024-05-02T00:00:00Z".into()),
    }
}

fn deadline() -> Instant {
    Instant::now() + Duration::from_secs(10)
}

#[tokio::test]
async fn signed_calls_are_answered() {
    let (client, _) = start(Config::default()).await;
    let id = TweetId::minted_at(now() - chrono::Duration::days(40));
    let body = client.call(Endpoint::Historical, &demo(), &body(&[id]), deadline()).await.unwrap();
    let r = upstream::read_answer(&body.text().unwrap()).unwrap();
    assert_eq!(r.start.as_deref(), Some("2024-05-01T00:00:00Z"));
    assert!(r.groupings["g"].get(&id.to_string()).is_some());
}

#[tokio::test]
async fn refusals_keep_the_upstreams_words() {
    let foreign = TweetId::minted_at(now() - chrono::Duration::days(40));
    let (client, _) = start(Config { foreign_ids: HashSet::from([foreign]), ..Config::default() }).await;
    let err = client.call(Endpoint::Historical, &demo(), &body(&[foreign]), deadline()).await.unwrap_err();
    assert_eq!(
        err,
        AttemptError::Refused { status: 403, errors: vec![format!("Forbidden to access tweets: {foreign}")] }
    );
    let wrong = HandleCredentials { token_secret: "wrong".into(), ..demo() };
    let err = client.call(Endpoint::Historical, &wrong, &body(&[foreign]), deadline()).await.unwrap_err();
    assert_eq!(err.status(), Some(401));
}

#[tokio::test]
async fn faults_are_transient() {
    let (client, _) =
        start(Config { faults: Faults { error_rate: 1.0, ..Faults::default() }, ..Config::default() }).await;
    let id = TweetId::minted_at(now() - chrono::Duration::days(40));
    assert!(
        client
            .call(Endpoint::Historical, &demo(), &body(&[id]), deadline())
            .await
            .unwrap_err()
            .is_transient()
    );
    let (client, _) =
        start(Config { faults: Faults { truncate_rate: 1.0, ..Faults::default() }, ..Config::default() })
            .await;
    assert!(
        client
            .call(Endpoint::Historical, &demo(), &body(&[id]), deadline())
            .await
            .unwrap_err()
            .is_transient()
    );
}

#[tokio::test]
async fn a_spent_minute_pauses_the_budget() {
    let budget = Arc::new(RateBudget::new(0, 1));
    let (client, sim) =
        start_with_budget(Config { rate_limit_per_minute: 1, ..Config::default() }, Arc::clone(&budget))
            .await;
    let policy = CallPolicy::new(Arc::new(client), budget, 8, RetryPolicy::default());
    let lane = policy.lane(2, deadline());
    let id = TweetId::minted_at(now() - chrono::Duration::days(40));
    let first = policy
        .call(
            Calling {
                lane: &lane,
                endpoint: Endpoint::Historical,
                handle: &demo(),
                body: &body(&[id]),
                deadline: deadline(),
            },
            |_, _| {},
        )
        .await;
    assert!(first.result.is_ok());
    assert_eq!(policy.budget().per_minute(), Some(1), "the upstream's limit is learned");
    // The answer said 0 remaining: the next call waits for the reset rather than drawing a
    // 429, and a deadline before the reset makes it give up without calling.
    let soon = Instant::now() + Duration::from_millis(50);
    let second = policy
        .call(
            Calling {
                lane: &lane,
                endpoint: Endpoint::Historical,
                handle: &demo(),
                body: &body(&[id]),
                deadline: soon,
            },
            |_, _| {},
        )
        .await;
    assert!(matches!(second.result, Err(AttemptError::Budget { .. })), "{:?}", second.result);
    assert_eq!(sim.stats().requests_total, 1);
}

//! The shared state against a real Redis (`REDIS_URL`, default the local one), each test
//! under a key prefix of its own.

#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use engine::ports::{Admission, LedgerEntry, SharedRate};
use replicas::Redis;
use replicas::rate::RedisRate;

fn redis(test: &str) -> Arc<Redis> {
    let url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let prefix = format!("stitcher-test:{}:{}:{test}:", std::process::id(), Utc::now().timestamp_micros());
    Redis::connect(&url, &prefix).unwrap()
}

#[tokio::test]
async fn the_rate_is_one_for_every_replica_and_a_pause_holds_them_all() {
    let shared = redis("rate");
    // Two replicas: two connections to the same keys.
    let (a, b) = (RedisRate::new(Arc::clone(&shared)), RedisRate::new(shared));
    assert_eq!(a.take(60, 2).await.unwrap(), Duration::ZERO);
    assert_eq!(b.take(60, 2).await.unwrap(), Duration::ZERO, "a burst of 2");
    let wait = a.take(60, 2).await.unwrap();
    assert!(wait > Duration::from_millis(900) && wait <= Duration::from_secs(1), "{wait:?}");
    let wait = b.take(60, 2).await.unwrap();
    assert!(wait > Duration::from_millis(900), "the other replica waits as long: {wait:?}");

    a.pause(Duration::from_secs(30)).await.unwrap();
    let wait = b.take(0, 1).await.unwrap();
    assert!(wait > Duration::from_secs(29), "a pause holds even unpaced calls: {wait:?}");
}

#[tokio::test]
async fn a_nonce_is_used_once_across_replicas() {
    let shared = redis("nonce");
    assert!(shared.first_use_of_nonce("token:abc", Duration::from_secs(60)).await.unwrap());
    assert!(!shared.first_use_of_nonce("token:abc", Duration::from_secs(60)).await.unwrap());
    assert!(shared.first_use_of_nonce("token:abd", Duration::from_secs(60)).await.unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ledger_admits_no_more_than_the_cap_at_once() {
    let shared = redis("ledger");
    // Whole seconds, as the ledger keeps first calls.
    let now = chrono::DateTime::from_timestamp(Utc::now().timestamp(), 0).unwrap();
    let asks: Vec<_> = (0..12)
        .map(|n| {
            let shared = Arc::clone(&shared);
            tokio::spawn(
                async move { shared.admit_handle(&format!("h{n}"), now, Some(5), true).await.unwrap() },
            )
        })
        .collect();
    let mut added = 0;
    for ask in asks {
        match ask.await.unwrap() {
            Admission::Added { over_cap, .. } => {
                assert!(!over_cap);
                added += 1;
            }
            Admission::Refused { cap } => assert_eq!(cap, 5),
            Admission::Counted => panic!("no handle was asked twice"),
        }
    }
    assert_eq!(added, 5);
    let listed = shared.handles_in_month(now).await.unwrap();
    assert_eq!(listed.len(), 5);
    assert_eq!(shared.admit_handle(&listed[0].handle, now, Some(5), true).await.unwrap(), Admission::Counted);
    // Under warn, a handle past the cap is counted and said to be over it.
    let warned = shared.admit_handle("late", now, Some(5), false).await.unwrap();
    assert_eq!(warned, Admission::Added { used: 6, over_cap: true });

    // Handles counted elsewhere while Redis was away are added, first calls kept.
    let earlier = LedgerEntry { handle: "h-away".into(), first_call: now - chrono::Duration::hours(1) };
    let kept = listed[0].clone();
    let moved = LedgerEntry { handle: kept.handle.clone(), first_call: now - chrono::Duration::days(3) };
    shared.catch_up(now, &[earlier.clone(), moved]).await.unwrap();
    let after = shared.handles_in_month(now).await.unwrap();
    assert!(after.contains(&earlier));
    assert!(after.contains(&kept), "a first call Redis held is kept");
}

#[tokio::test]
async fn an_unreachable_redis_is_said_so_quickly() {
    // Nothing listens on port 1.
    let away = Redis::connect("redis://127.0.0.1:1", "stitcher-test:away:").unwrap();
    let started = std::time::Instant::now();
    assert!(away.first_use_of_nonce("n", Duration::from_secs(1)).await.is_err());
    assert!(!away.is_up());
    assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());
    assert!(Redis::connect("http://example.com", "p:").is_err());
    // Managed Redis speaks TLS.
    assert!(Redis::connect("rediss://user:secret@redis.example.com:6380/0", "p:").is_ok());
}

#[tokio::test]
async fn a_lease_is_held_by_one_and_given_up_only_by_its_holder() {
    let shared = redis("lease");
    let ttl = Duration::from_secs(30);
    assert!(shared.take_lease("call", "a", ttl).await.unwrap());
    assert!(!shared.take_lease("call", "b", ttl).await.unwrap(), "held by a");
    shared.release_lease("call", "b").await.unwrap();
    assert!(shared.lease_held("call").await.unwrap(), "b cannot give up a's lease");
    shared.release_lease("call", "a").await.unwrap();
    assert!(!shared.lease_held("call").await.unwrap());
    // A holder that died leaves a lease that expires.
    assert!(shared.take_lease("short", "dead", Duration::from_millis(50)).await.unwrap());
    tokio::time::sleep(Duration::from_millis(120)).await;
    assert!(shared.take_lease("short", "b", ttl).await.unwrap());
}

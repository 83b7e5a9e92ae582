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

/// Hours of every type as a call of the types in `slots` brings them.
fn compact(slots: u32, hours: &replicas::facts::TweetHours) -> engine::ports::CallHours {
    hours.iter().map(|(t, hours)| (*t, engine::ports::Hours::of(slots, hours))).collect()
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
    // A holder whose call runs long keeps its lease; nobody else can.
    assert!(shared.take_lease("slow", "a", Duration::from_millis(100)).await.unwrap());
    assert!(!shared.renew_lease("slow", "b", ttl).await.unwrap(), "only the holder renews");
    assert!(shared.renew_lease("slow", "a", ttl).await.unwrap());
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(shared.lease_held("slow").await.unwrap(), "renewed past its first 100 ms");
    assert!(!shared.take_lease("slow", "b", ttl).await.unwrap());
}

#[tokio::test]
async fn a_big_read_of_facts_comes_back_whole_in_chunks_and_redis_stays_up() {
    let shared = redis("big");
    let slots = engagement::slots::types_mask(&[
        engagement::EngagementType::Impressions,
        engagement::EngagementType::Engagements,
        engagement::EngagementType::Favorites,
    ]);
    let first = 400_000i64;
    let (tweets, days) = (40u64, 300i64);
    let mut hours = replicas::facts::TweetHours::new();
    for t in 0..tweets {
        let mut held = Vec::new();
        for h in first..first + days * 24 {
            let mut counts = [0u64; engagement::slots::SLOTS];
            for s in engagement::slots::slots_in(slots) {
                counts[s] = t * 1_000_000 + (h - first) as u64 * 10 + s as u64;
            }
            held.push((h, counts));
        }
        hours.insert(engagement::TweetId(1_000 + t), held);
    }
    let unsettled_from = first + days * 24;
    shared
        .put_facts("h", slots, &compact(slots, &hours), unsettled_from, Duration::from_secs(60))
        .await
        .unwrap();
    let wanted: std::collections::HashMap<_, Vec<i64>> =
        hours.iter().map(|(t, h)| (*t, h.iter().map(|(hour, _)| *hour).collect())).collect();
    // 12,000 Tweet-days: far more than one round trip holds.
    assert!(tweets as usize * days as usize > 40 * replicas::CHUNK);
    let read = shared.get_facts("h", &wanted, slots, unsettled_from).await.unwrap();
    assert_eq!(read.len(), hours.len());
    for (tweet, held) in &hours {
        let mut got = read[tweet].clone();
        got.sort_by_key(|(h, _)| *h);
        assert_eq!(&got, held, "Tweet {tweet}");
    }
    assert!(shared.is_up(), "a big read is not an outage");
}

#[tokio::test]
async fn a_slow_answer_fails_that_operation_alone_and_only_a_probe_says_redis_is_away() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut own = std::process::Command::new("redis-server")
        .args([
            "--port",
            &port.to_string(),
            "--save",
            "",
            "--appendonly",
            "no",
            "--enable-debug-command",
            "yes",
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("redis-server is installed (scripts/redis installs it)");
    let url = format!("redis://127.0.0.1:{port}");
    let mut ready = false;
    for _ in 0..200 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(ready, "redis-server came up on port {port}");
    let shared = Redis::connect(&url, "slow:").unwrap();
    assert!(shared.first_use_of_nonce("n1", Duration::from_secs(60)).await.unwrap());

    // Redis busy for 1.5 s: an operation waiting on it runs out of time, alone.
    // A connection that waits for the sleep to end.
    let patient = redis::aio::ConnectionManagerConfig::new().set_response_timeout(None);
    let client = redis::Client::open(url.as_str()).unwrap();
    let mut busy = redis::aio::ConnectionManager::new_with_config(client, patient).await.unwrap();
    let sleeper =
        tokio::spawn(
            async move { redis::cmd("DEBUG").arg("SLEEP").arg(1.5).query_async::<()>(&mut busy).await },
        );
    tokio::time::sleep(Duration::from_millis(100)).await;
    let slow = shared.first_use_of_nonce("n2", Duration::from_secs(60)).await;
    assert!(slow.is_err(), "the slow operation fails: {slow:?}");
    assert!(shared.is_up(), "a slow answer does not make Redis away");
    // A probe that goes unanswered does.
    let (up, _) = shared.probe().await;
    assert!(!up && !shared.is_up(), "an unanswered probe makes Redis away");
    sleeper.await.unwrap().unwrap();
    let (up, was_away) = shared.probe().await;
    assert!(up && was_away, "a probe finds it back");
    assert!(!shared.first_use_of_nonce("n1", Duration::from_secs(60)).await.unwrap(), "n1 was used");
    let _ = own.kill();
    let _ = own.wait();
}

#[tokio::test]
async fn a_value_that_cannot_be_read_is_taken_as_missing() {
    let url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let prefix = format!("stitcher-test:{}:{}:junk:", std::process::id(), Utc::now().timestamp_micros());
    let shared = Redis::connect(&url, &prefix).unwrap();
    let slots = engagement::slots::types_mask(&[engagement::EngagementType::Impressions]);
    let tweet = engagement::TweetId(77);
    // Two days in two blocks of settled facts.
    let block = replicas::facts::BLOCK_HOURS;
    let (first, second) = (700 * block, 701 * block);
    let hours_of = |from: i64| from..from + 24;
    let held: Vec<(i64, engagement::slots::Hour)> =
        hours_of(first).chain(hours_of(second)).map(|h| (h, [h as u64; engagement::slots::SLOTS])).collect();
    let hours: replicas::facts::TweetHours = [(tweet, held.clone())].into();
    shared
        .put_facts("h", slots, &compact(slots, &hours), second + 24, Duration::from_secs(60))
        .await
        .unwrap();
    let learned = chrono::DateTime::from_timestamp(Utc::now().timestamp(), 0).unwrap();
    shared.put_statuses("h", &[(tweet, false)], (learned, learned), Duration::from_secs(600)).await.unwrap();

    // Another writer leaves junk: a hash where the first block's counts were, and a
    // status that is not one.
    let slot = engagement::slots::slots_in(slots).next().unwrap();
    let mut raw =
        redis::Client::open(url.as_str()).unwrap().get_multiplexed_async_connection().await.unwrap();
    let block_key = format!("{prefix}settled:h:{tweet}:700");
    let exists: u32 = redis::cmd("EXISTS").arg(&block_key).query_async(&mut raw).await.unwrap();
    assert_eq!(exists, 1, "the first block is one value, whatever its types");
    let _: () = redis::cmd("DEL").arg(&block_key).query_async(&mut raw).await.unwrap();
    let _: () = redis::cmd("HSET").arg(&block_key).arg("5").arg("many").query_async(&mut raw).await.unwrap();
    let _: () = redis::cmd("SET")
        .arg(format!("{prefix}status:h:{tweet}"))
        .arg("perhaps")
        .query_async(&mut raw)
        .await
        .unwrap();

    let wanted: std::collections::HashMap<_, Vec<i64>> =
        [(tweet, hours_of(first).chain(hours_of(second)).collect())].into();
    let mut read = shared.get_facts("h", &wanted, slots, second + 24).await.unwrap().remove(&tweet).unwrap();
    read.sort_by_key(|(h, _)| *h);
    assert_eq!(
        read.iter().map(|(h, _)| *h).collect::<Vec<_>>(),
        hours_of(second).collect::<Vec<_>>(),
        "the junk block's hours are missing, the rest read"
    );
    assert!(read.iter().all(|(h, counts)| counts[slot] == *h as u64));
    assert!(
        shared.get_statuses("h", &[tweet]).await.unwrap().is_empty(),
        "a status that is not one is missing"
    );
    assert!(shared.is_up());
}

#[tokio::test]
async fn replicas_that_fetched_different_hours_and_types_of_a_block_both_find_all_of_them() {
    let a = redis("merge");
    use engagement::EngagementType::{Favorites, Impressions};
    let (impressions, favorites) =
        (engagement::slots::types_mask(&[Impressions]), engagement::slots::types_mask(&[Favorites]));
    let both = impressions | favorites;
    let tweet = engagement::TweetId(5);
    let start = 702 * replicas::facts::BLOCK_HOURS + 30;
    let hour = |h: i64| -> (i64, engagement::slots::Hour) {
        (h, std::array::from_fn(|s| h as u64 * 100 + s as u64))
    };
    let settled = start + 200;
    // One replica fetched both types of hours 0..100; another favorites of 50..150 and
    // impressions of 100..150, and a count too large to share.
    let mut huge = hour(start + 120);
    huge.1[engagement::slots::slot(Impressions).unwrap()] = u64::from(u32::MAX);
    let early: replicas::facts::TweetHours = [(tweet, (start..start + 100).map(hour).collect())].into();
    let late_favorites: replicas::facts::TweetHours =
        [(tweet, (start + 50..start + 150).map(hour).collect())].into();
    let late_impressions: replicas::facts::TweetHours = [(
        tweet,
        (start + 100..start + 150).map(|h| if h == start + 120 { huge } else { hour(h) }).collect(),
    )]
    .into();
    a.put_facts("h", both, &compact(both, &early), settled, Duration::from_secs(60)).await.unwrap();
    a.put_facts("h", favorites, &compact(favorites, &late_favorites), settled, Duration::from_secs(60))
        .await
        .unwrap();
    a.put_facts("h", impressions, &compact(impressions, &late_impressions), settled, Duration::from_secs(60))
        .await
        .unwrap();

    let wanted: std::collections::HashMap<_, Vec<i64>> = [(tweet, (start..start + 160).collect())].into();
    let mut read = a.get_facts("h", &wanted, both, settled).await.unwrap().remove(&tweet).unwrap();
    read.sort_by_key(|(h, _)| *h);
    let expected: Vec<i64> = (start..start + 150).filter(|h| *h != start + 120).collect();
    assert_eq!(read.iter().map(|(h, _)| *h).collect::<Vec<_>>(), expected);
    for (h, counts) in &read {
        for s in engagement::slots::slots_in(both) {
            assert_eq!(counts[s], *h as u64 * 100 + s as u64, "hour {h}, slot {s}");
        }
    }
}

#[tokio::test]
async fn a_type_written_past_the_end_of_its_block_grows_it_and_both_types_are_found() {
    let a = redis("grow");
    use engagement::EngagementType::{Impressions, UserProfileClicks};
    let (first, last) =
        (engagement::slots::types_mask(&[Impressions]), engagement::slots::types_mask(&[UserProfileClicks]));
    let tweet = engagement::TweetId(6);
    let start = 703 * replicas::facts::BLOCK_HOURS + 5;
    let hours: replicas::facts::TweetHours = [(
        tweet,
        (start..start + 30).map(|h| (h, std::array::from_fn(|s| h as u64 * 100 + s as u64))).collect(),
    )]
    .into();
    // The block is made for the first type alone; the last type's run lies past its end.
    a.put_facts("h", first, &compact(first, &hours), start + 40, Duration::from_secs(60)).await.unwrap();
    a.put_facts("h", last, &compact(last, &hours), start + 40, Duration::from_secs(60)).await.unwrap();
    let wanted: std::collections::HashMap<_, Vec<i64>> = [(tweet, (start..start + 40).collect())].into();
    let mut read = a.get_facts("h", &wanted, first | last, start + 40).await.unwrap().remove(&tweet).unwrap();
    read.sort_by_key(|(h, _)| *h);
    assert_eq!(read.iter().map(|(h, _)| *h).collect::<Vec<_>>(), (start..start + 30).collect::<Vec<_>>());
    for (h, counts) in &read {
        for s in engagement::slots::slots_in(first | last) {
            assert_eq!(counts[s], *h as u64 * 100 + s as u64, "hour {h}, slot {s}");
        }
    }
}

/// A machine's clock that is `behind` the true time.
#[derive(Debug)]
struct Slow {
    behind: chrono::TimeDelta,
}

impl engine::ports::Clock for Slow {
    fn now(&self) -> chrono::DateTime<Utc> {
        Utc::now() - self.behind
    }
}

#[tokio::test]
async fn a_replica_whose_clock_is_off_judges_time_by_redis_and_keeps_it_while_redis_is_away() {
    use engine::ports::Clock;
    use replicas::clock::RedisClock;
    let slow: Arc<dyn Clock> = Arc::new(Slow { behind: chrono::TimeDelta::hours(1) });
    let clock = RedisClock::new(Arc::clone(&slow), slow);
    let off = |clock: &RedisClock| (clock.now() - Utc::now()).abs();
    assert!(off(&clock) > chrono::TimeDelta::minutes(59), "unread, it is this machine's clock");

    clock.read(&redis("clock")).await.unwrap();
    // The Redis of these tests runs on this machine, whose clock is right.
    assert!(off(&clock) < chrono::TimeDelta::seconds(2), "read, it is Redis's: {}", off(&clock));

    let away = Redis::connect("redis://127.0.0.1:1", "stitcher-test:away:").unwrap();
    assert!(clock.read(&away).await.is_err());
    assert!(off(&clock) < chrono::TimeDelta::seconds(2), "Redis away, the last correction holds");
}

#[tokio::test]
async fn redis_time_does_not_undo_a_clock_moved_ahead() {
    use engine::ports::{Clock, MovedClock, SystemClock};
    use replicas::clock::RedisClock;
    let moved = Arc::new(MovedClock::default());
    moved.advance(Duration::from_secs(3600));
    let clock = RedisClock::new(Arc::clone(&moved) as Arc<dyn Clock>, Arc::new(SystemClock));
    clock.read(&redis("moved")).await.unwrap();
    let ahead = clock.now() - Utc::now();
    assert!((ahead - chrono::TimeDelta::hours(1)).abs() < chrono::TimeDelta::seconds(2), "{ahead}");
}

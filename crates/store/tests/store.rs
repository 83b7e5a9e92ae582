//! The store against its promises: what is kept is what is read back, per handle; settled
//! hours survive a reopen and unsettled ones do not; eviction keeps the bound and spares
//! pinned Tweets; the ledger counts each handle once a month and refuses past its cap.

#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use engagement::{EngagementType, TimeRange, TweetId, parse_instant};
use store::facts::hour_of;
use store::row::Hour;
use store::{Admission, CallFacts, Config, Store};

const ALL: [EngagementType; 2] = [EngagementType::Impressions, EngagementType::Retweets];

fn at(s: &str) -> DateTime<Utc> {
    parse_instant(s).unwrap()
}

fn config(dir: &tempfile::TempDir) -> Config {
    Config {
        path: dir.path().to_path_buf(),
        settle_after: Duration::from_secs(72 * 3600),
        fresh_ttl: Duration::from_secs(60),
        status_ttl: Duration::from_secs(900),
        max_bytes: 1 << 30,
    }
}

/// A Tweet created long before the ranges used here.
fn tweet(n: u64) -> TweetId {
    TweetId(TweetId::minted_at(at("2019-01-01T00:00:00Z")).0 + n)
}

/// Made-up counts: every hour, type and Tweet distinct.
fn counts(t: TweetId, hour: i64) -> Hour {
    std::array::from_fn(|s| (t.0 % 1000) * 1_000_000 + (hour as u64 % 10_000) * 100 + s as u64)
}

fn fetched(tweets: &[TweetId], range: TimeRange, deleted: &[TweetId]) -> CallFacts {
    let mut facts = CallFacts {
        window: Some(range),
        tweets: tweets.to_vec(),
        deleted: deleted.to_vec(),
        slots: (1 << store::row::SLOTS) - 1,
        ..CallFacts::default()
    };
    for &t in tweets.iter().filter(|t| !deleted.contains(t)) {
        let hours: Vec<(i64, Hour)> =
            (hour_of(range.start)..hour_of(range.end)).map(|h| (h, counts(t, h))).collect();
        facts.hours.insert(t, store::Hours::of(facts.slots, &hours));
    }
    facts
}

fn range(a: &str, b: &str) -> TimeRange {
    TimeRange { start: at(a), end: at(b) }
}

#[test]
fn kept_hours_read_back_exactly_and_only_for_their_handle() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(config(&dir)).unwrap());
    let now = at("2020-03-01T12:30:00Z");
    let r = range("2020-01-30T05:00:00Z", "2020-02-03T00:00:00Z");
    let tweets = [tweet(1), tweet(2)];
    store.keep("alice", &fetched(&tweets, r, &[tweet(2)]), now).unwrap();

    let known = store.known("alice", &tweets, &ALL, r, now).unwrap();
    assert!(known.held[&tweet(1)].iter().all(|h| *h));
    assert!(known.held[&tweet(2)].iter().all(|h| !*h), "a deleted Tweet has no facts");
    assert_eq!(known.status[&tweet(2)], store::TweetStatus::Deleted);
    assert_eq!(known.status[&tweet(1)], store::TweetStatus::Live);

    let types = [EngagementType::Retweets, EngagementType::Impressions];
    let held = store.held("alice", &[tweet(1)], &types, &known, &[], now).unwrap();
    let series = types.map(|ty| {
        let mut out = vec![u64::MAX; r.hours()];
        engagement::HourlyCounts::fill(&held, tweet(1), ty, r.start, &mut out);
        out
    });
    held.intact().unwrap();
    for (i, h) in (hour_of(r.start)..hour_of(r.end)).enumerate() {
        let c = counts(tweet(1), h);
        assert_eq!(series[0][i], c[store::row::slot(EngagementType::Retweets).unwrap()]);
        assert_eq!(series[1][i], c[0]);
    }

    // Every type at once reads the same as each on its own.
    let mut each = vec![vec![u64::MAX; r.hours()]; 2];
    engagement::HourlyCounts::fill_each(&held, tweet(1), &types, r.start, &mut each);
    assert_eq!(each, series);

    let other = store.known("bob", &tweets, &ALL, r, now).unwrap();
    assert!(other.held[&tweet(1)].iter().all(|h| !*h), "facts are kept per handle");
    assert!(other.status.is_empty());
}

#[test]
fn settled_hours_survive_a_reopen_unsettled_ones_do_not() {
    let dir = tempfile::tempdir().unwrap();
    let now = at("2020-03-10T12:30:00Z");
    // 2020-03-07T12 is 72 hours before 12:00, the last hour settled at 12:30 is 11:00.
    let r = range("2020-03-07T00:00:00Z", "2020-03-10T12:00:00Z");
    {
        let store = Arc::new(Store::open(config(&dir)).unwrap());
        store.keep("alice", &fetched(&[tweet(1)], r, &[]), now).unwrap();
        let known = store.known("alice", &[tweet(1)], &ALL, r, now).unwrap();
        assert!(known.held[&tweet(1)].iter().all(|h| *h), "unsettled hours are held in memory");
        assert!(store.bytes() > 0);
    }
    let store = Arc::new(Store::open(config(&dir)).unwrap());
    let known = store.known("alice", &[tweet(1)], &ALL, r, now).unwrap();
    let held = &known.held[&tweet(1)];
    let settled = (hour_of(at("2020-03-07T12:00:00Z")) - hour_of(r.start)) as usize;
    assert!(held[..settled].iter().all(|h| *h), "settled hours are on disk");
    assert!(held[settled..].iter().all(|h| !*h), "unsettled hours were only in memory");
    assert_eq!(known.status[&tweet(1)], store::TweetStatus::Live, "statuses are durable");
}

#[test]
fn unsettled_hours_expire_after_the_fresh_ttl() {
    let dir = tempfile::tempdir().unwrap();
    let store =
        Arc::new(Store::open(Config { fresh_ttl: Duration::from_millis(300), ..config(&dir) }).unwrap());
    let now = Utc::now();
    let r = TimeRange {
        start: engagement::time::floor_hour(now) - chrono::Duration::hours(3),
        end: engagement::time::floor_hour(now),
    };
    store.keep("alice", &fetched(&[tweet(1)], r, &[]), now).unwrap();
    assert!(store.known("alice", &[tweet(1)], &ALL, r, now).unwrap().held[&tweet(1)].iter().all(|h| *h));
    // The store judges freshness by the time it is given, not by the time it reads.
    let later = now + chrono::Duration::milliseconds(600);
    assert!(store.known("alice", &[tweet(1)], &ALL, r, later).unwrap().held[&tweet(1)].iter().all(|h| !*h));
}

#[test]
fn eviction_keeps_the_bound_drops_the_least_recent_and_spares_the_pinned() {
    let dir = tempfile::tempdir().unwrap();
    let now = at("2021-01-01T00:00:00Z");
    let r = range("2020-06-01T00:00:00Z", "2020-06-29T00:00:00Z");
    let one = {
        let probe = Store::open(config(&dir)).unwrap();
        probe.keep("a", &fetched(&[tweet(1)], r, &[]), now).unwrap();
        probe.bytes()
    };
    std::fs::remove_dir_all(dir.path()).unwrap();
    // Room for about three Tweets.
    let store = Arc::new(Store::open(Config { max_bytes: one * 3 + one / 2, ..config(&dir) }).unwrap());
    let pinned = store.pin("a", &[tweet(1)]);
    for n in 1..=6 {
        let t = now + chrono::Duration::seconds(n as i64);
        store.keep("a", &fetched(&[tweet(n)], r, &[]), t).unwrap();
        assert!(store.bytes() <= one * 3 + one / 2 + one, "bound kept after {n} Tweets");
    }
    assert!(store.evictions() >= 2);
    let held = |n: u64| store.known("a", &[tweet(n)], &ALL, r, now).unwrap().held[&tweet(n)][0];
    assert!(held(1), "pinned Tweet kept though least recently used");
    assert!(held(6), "most recent kept");
    assert!(!held(2), "least recent unpinned evicted");
    drop(pinned);
}

#[test]
fn a_store_written_before_the_eviction_index_is_indexed_when_opened_and_evicts_the_least_recent() {
    let dir = tempfile::tempdir().unwrap();
    let now = at("2021-01-01T00:00:00Z");
    let r = range("2020-06-01T00:00:00Z", "2020-06-29T00:00:00Z");
    let one = {
        let store = Store::open(config(&dir)).unwrap();
        for n in 1..=4 {
            store
                .keep("a", &fetched(&[tweet(n)], r, &[]), now + chrono::Duration::seconds(n as i64))
                .unwrap();
        }
        // Tweet 1, the oldest, used last.
        store.mark_used("a", &[tweet(1)], now + chrono::Duration::seconds(10)).unwrap();
        store.bytes() / 4
    };
    // As a store written before the index: no index, and nothing saying it was built.
    {
        let file = dir.path().join("stitcher.redb");
        let db = redb::Database::create(&file).unwrap();
        let txn = db.begin_write().unwrap();
        let by_use: redb::TableDefinition<(u64, &str, u64), ()> = redb::TableDefinition::new("tweets_by_use");
        assert!(txn.delete_table(by_use).unwrap(), "the store keeps an eviction index");
        let meta: redb::TableDefinition<&str, u64> = redb::TableDefinition::new("meta");
        assert!(txn.open_table(meta).unwrap().remove("tweets_by_use_built").unwrap().is_some());
        txn.commit().unwrap();
    }
    // Room for about three Tweets: keeping a fifth evicts the least recently used two.
    let store = Store::open(Config { max_bytes: one * 3 + one / 2, ..config(&dir) }).unwrap();
    store.keep("a", &fetched(&[tweet(5)], r, &[]), now + chrono::Duration::seconds(20)).unwrap();
    let held = |n: u64| store.known("a", &[tweet(n)], &ALL, r, now).unwrap().held[&tweet(n)][0];
    assert!(!held(2) && !held(3), "least recently used evicted");
    assert!(held(1) && held(4) && held(5), "recently used kept");
    assert_eq!(store.evictions(), 2);
}

#[test]
fn the_ledger_counts_a_handle_once_a_month_and_refuses_past_the_cap() {
    let dir = tempfile::tempdir().unwrap();
    let now = at("2026-11-05T10:00:00Z");
    {
        let store = Store::open(config(&dir)).unwrap();
        assert_eq!(
            store.admit_handle("a", now, Some(2), true).unwrap(),
            Admission::Added { used: 1, over_cap: false }
        );
        assert_eq!(store.admit_handle("a", now, Some(2), true).unwrap(), Admission::Counted);
        assert_eq!(
            store.admit_handle("b", now, Some(2), true).unwrap(),
            Admission::Added { used: 2, over_cap: false }
        );
        assert_eq!(store.admit_handle("c", now, Some(2), true).unwrap(), Admission::Refused { cap: 2 });
        assert_eq!(
            store.admit_handle("c", now, Some(2), false).unwrap(),
            Admission::Added { used: 3, over_cap: true }
        );
    }
    let store = Store::open(config(&dir)).unwrap();
    let names: Vec<String> = store.handles_in_month(now).unwrap().into_iter().map(|e| e.handle).collect();
    assert_eq!(names, ["a", "b", "c"], "the month survives a reopen");
    assert_eq!(store.handles_in_month(now).unwrap()[0].first_call, now);
    let december = at("2026-12-01T00:00:00Z");
    assert!(store.handles_in_month(december).unwrap().is_empty(), "a new month starts empty");
    assert_eq!(
        store.admit_handle("c", december, Some(2), true).unwrap(),
        Admission::Added { used: 1, over_cap: false }
    );
}

#[test]
fn types_are_held_each_on_their_own() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(config(&dir)).unwrap());
    let now = at("2020-03-01T12:30:00Z");
    let r = range("2020-01-30T05:00:00Z", "2020-02-03T00:00:00Z");
    let mut facts = fetched(&[tweet(1)], r, &[]);
    facts.slots = 1 << store::row::slot(EngagementType::Favorites).unwrap();
    store.keep("alice", &facts, now).unwrap();
    let favorites = [EngagementType::Favorites];
    assert!(
        store.known("alice", &[tweet(1)], &favorites, r, now).unwrap().held[&tweet(1)].iter().all(|h| *h)
    );
    let both = [EngagementType::Favorites, EngagementType::Replies];
    assert!(
        store.known("alice", &[tweet(1)], &both, r, now).unwrap().held[&tweet(1)].iter().all(|h| !*h),
        "an hour is held for a question only when every type it asks is"
    );
}

#[test]
fn calls_kept_at_once_are_all_held_and_counted_exactly() {
    let now = at("2021-01-01T00:00:00Z");
    let r = range("2020-06-01T00:00:00Z", "2020-06-29T00:00:00Z");
    let alone = tempfile::tempdir().unwrap();
    let expected = {
        let store = Store::open(config(&alone)).unwrap();
        for n in 0..16 {
            store.keep("a", &fetched(&[tweet(n)], r, &[]), now).unwrap();
        }
        store.bytes()
    };
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(config(&dir)).unwrap());
    let threads: Vec<_> = (0..16)
        .map(|n| {
            let store = Arc::clone(&store);
            std::thread::spawn(move || store.keep("a", &fetched(&[tweet(n)], r, &[]), now).unwrap())
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(store.bytes(), expected, "the byte count is exact however the writes were grouped");
    let tweets: Vec<TweetId> = (0..16).map(tweet).collect();
    let known = store.known("a", &tweets, &ALL, r, now).unwrap();
    assert!(
        tweets.iter().all(|t| known.held[t].iter().all(|h| *h)),
        "every write is read back once keep returns"
    );
    drop(store);
    assert_eq!(Store::open(config(&dir)).unwrap().bytes(), expected, "and so is the count");
}

#[test]
fn every_type_at_once_reads_as_each_type_alone_from_disk_and_memory() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(config(&dir)).unwrap());
    // The range's last 72 hours are unsettled: those come from memory, the rest from disk.
    let r = range("2020-01-30T05:00:00Z", "2020-02-06T00:00:00Z");
    let now = r.end;
    store.keep("alice", &fetched(&[tweet(1)], r, &[]), now).unwrap();
    let types = [EngagementType::Retweets, EngagementType::Impressions, EngagementType::Favorites];
    let known = store.known("alice", &[tweet(1)], &types, r, now).unwrap();
    assert!(!known.fresh.is_empty(), "some hours are held in memory");
    let held = store.held("alice", &[tweet(1)], &types, &known, &[], now).unwrap();
    // From an hour before the range (left zero) to its end.
    let from = r.start - chrono::Duration::hours(1);
    let hours = r.hours() + 1;
    let alone: Vec<Vec<u64>> = types
        .iter()
        .map(|ty| {
            let mut out = vec![u64::MAX; hours];
            engagement::HourlyCounts::fill(&held, tweet(1), *ty, from, &mut out);
            out
        })
        .collect();
    let mut at_once = vec![vec![u64::MAX; hours]; types.len()];
    engagement::HourlyCounts::fill_each(&held, tweet(1), &types, from, &mut at_once);
    assert_eq!(at_once, alone);
    // A type asked twice fills both of its series.
    let twice = [types[0], types[1], types[0]];
    let mut each_twice = vec![vec![u64::MAX; hours]; 3];
    engagement::HourlyCounts::fill_each(&held, tweet(1), &twice, from, &mut each_twice);
    assert_eq!(each_twice, [alone[0].clone(), alone[1].clone(), alone[0].clone()]);
    held.intact().unwrap();
    for (k, ty) in types.iter().enumerate() {
        assert_eq!(at_once[k][0], 0, "before the range: nothing held");
        let last = hour_of(r.end) - 1;
        assert_eq!(at_once[k][hours - 1], counts(tweet(1), last)[store::row::slot(*ty).unwrap()]);
        // Every hour of the range, from disk and from memory, is the count kept.
        for (i, h) in (hour_of(r.start)..hour_of(r.end)).enumerate() {
            assert_eq!(
                at_once[k][i + 1],
                counts(tweet(1), h)[store::row::slot(*ty).unwrap()],
                "{ty:?} hour {i}"
            );
        }
    }
}

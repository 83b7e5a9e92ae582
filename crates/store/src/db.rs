//! The store itself: settled facts, statuses and the ledger in redb; unsettled hours in
//! memory; the Tweets of questions in flight pinned against eviction.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use engagement::{EngagementType, TimeRange, TweetId};
use moka::sync::Cache;
use redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition};

use crate::block::block_of;
use crate::facts::{
    CallFacts, FreshHour, Held, Known, Refused, TweetStatus, Unshown, born_hour, full_hour, hour_of,
};
use crate::row::{decode_slots, encode_hours_into, held_hours, slot_mask, slots_of};
use crate::sync::Syncer;
use crate::{Config, StoreError};

/// (handle, Tweet, block number) → the block's days, each its [`DayRow`] encoded (see
/// [`crate::block`]).
const FACTS: TableDefinition<(&str, u64, i64), &[u8]> = TableDefinition::new("facts_by_16_days");
/// The same in blocks of [`crate::block::OLD_BLOCK_DAYS`]: stores of format 3, moved into
/// [`FACTS`] when opened.
const FACTS_BY_8_DAYS: TableDefinition<(&str, u64, i64), &[u8]> = TableDefinition::new("facts_by_block");
/// (handle, Tweet, day number) → the day's [`DayRow`], encoded: stores before format 3,
/// moved into [`FACTS`] when opened.
const FACTS_BY_DAY: TableDefinition<(&str, u64, i64), &[u8]> = TableDefinition::new("facts");
/// (handle, Tweet) → (last used: asked for by a question, or else first written; seconds since
/// the epoch; bytes of facts held).
const TWEETS: TableDefinition<(&str, u64), (u64, u64)> = TableDefinition::new("tweets");
/// (last used, handle, Tweet) for every row of [`TWEETS`]: the order eviction takes them
/// in, so it reads only what it evicts.
const BY_USE: TableDefinition<(u64, &str, u64), ()> = TableDefinition::new("tweets_by_use");
/// Set in [`META`] once [`BY_USE`] holds every Tweet (stores written before it had none).
const BY_USE_BUILT: &str = "tweets_by_use_built";
/// (handle, Tweet) → (learned at, seconds since the epoch; 1 if deleted).
const STATUS: TableDefinition<(&str, u64), (i64, u8)> = TableDefinition::new("status");
/// (handle, Tweet) → (learned at, seconds since the epoch; what a refused call told of it,
/// as [`Refused`] by [`Refused::code`], and the upstream's words). A later answer showing the
/// Tweet removes it.
const REFUSED: TableDefinition<(&str, u64), (i64, u8, &str)> = TableDefinition::new("refused");
/// Totals kept beside the tables.
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const BYTES: &str = "fact_bytes";
/// The layout of the tables; a store written in another is refused, never misread. Format 4
/// keeps a Tweet's days in blocks of 16 (see [`crate::block`]); format 3 kept them in blocks
/// of 8; format 2 wrote a row per day, compact (see [`crate::row`]), and format 1 wide. A
/// store of an older format has its days moved into blocks of 16 when opened, its rows as
/// they were written, and is marked 4, so a service from before refuses it rather than
/// misread it.
const FORMAT_KEY: &str = "format";
const FORMAT: u64 = 4;
/// Formats this service opens and moves into blocks.
const READS_FORMATS: [u64; 3] = [1, 2, 3];

/// The database's page cache: enough for the rows of a few dashboards, bounded so memory
/// does not grow with the file (the kernel's page cache holds the rest).
const CACHE_BYTES: usize = 16 << 20;

/// Unsettled Tweet-hours kept in memory at most (about 400 bytes each): a thousand
/// Tweets' last three weeks.
const FRESH_HOURS: u64 = 500_000;

/// The unsettled hours kept in memory: (handle, Tweet, hour number) → the types the last
/// call for it asked, and their counts.
type Fresh = Cache<(Arc<str>, u64, i64), Arc<FreshHour>>;

/// What one call brings to disk.
struct Write {
    handle: String,
    /// (Tweet, block number) → the block's days of settled hours, encoded.
    rows: Vec<((u64, i64), Vec<u8>)>,
    /// (Tweet, deleted).
    statuses: Vec<(u64, bool)>,
    /// What refused calls told of Tweets.
    refused: Vec<(u64, Refused)>,
    at: DateTime<Utc>,
}

/// Writes waiting to be committed together.
#[derive(Default)]
struct Group {
    /// The sequence number of the last write queued.
    next: u64,
    queue: Vec<Write>,
    /// Every write up to this number is committed (or failed).
    done: u64,
    committing: bool,
    /// Why writes that failed did, by number, until their writers read it.
    failed: HashMap<u64, String>,
    /// When the last transaction was committed.
    last: Option<std::time::Instant>,
}

/// The least time between two transactions of kept facts.
const COMMIT_GAP: std::time::Duration = std::time::Duration::from_millis(10);

/// Facts, statuses and the ledger of one service.
pub struct Store {
    pub(crate) db: Arc<Database>,
    syncer: Syncer,
    config: Config,
    fresh: Option<Fresh>,
    pins: Mutex<HashMap<(String, u64), usize>>,
    group: Mutex<Group>,
    committed: std::sync::Condvar,
    bytes: AtomicU64,
    evictions: AtomicU64,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("config", &self.config).finish_non_exhaustive()
    }
}

/// A call's facts queued to be written ([`Store::queue`]); [`Store::written`] waits for them.
#[derive(Debug)]
#[must_use = "queued facts are written only once waited for"]
pub struct Queued(u64);

/// Keeps a question's Tweets from being evicted while it runs.
#[derive(Debug)]
pub struct Pin {
    store: Arc<Store>,
    keys: Vec<(String, u64)>,
}

impl Drop for Pin {
    fn drop(&mut self) {
        let mut pins = self.store.pins.lock().unwrap_or_else(|p| p.into_inner());
        for key in &self.keys {
            if let Some(n) = pins.get_mut(key) {
                *n -= 1;
                if *n == 0 {
                    pins.remove(key);
                }
            }
        }
    }
}

fn days(range: TimeRange) -> (i64, i64) {
    (hour_of(range.start).div_euclid(24), (hour_of(range.end) - 1).div_euclid(24))
}

fn seconds(t: DateTime<Utc>) -> u64 {
    t.timestamp().max(0) as u64
}

/// Moves the days of a store of an older `format` into [`FACTS`], their rows as they were
/// written (a row a day in [`FACTS_BY_DAY`] for formats 1 and 2, blocks of 8 days in
/// [`FACTS_BY_8_DAYS`] for 3), and counts each Tweet's bytes again; the bytes of facts held
/// in all. An old block that cannot be read is left out from where it stops making sense,
/// and said so: its days are fetched again when asked for.
fn into_blocks(txn: &redb::WriteTransaction, format: u64) -> Result<u64, StoreError> {
    let mut blocks = txn.open_table(FACTS)?;
    let mut tweets = txn.open_table(TWEETS)?;
    let mut moving = Moving::default();
    if format == 3 {
        let old = txn.open_table(FACTS_BY_8_DAYS)?;
        for entry in old.iter()? {
            let (key, value) = entry?;
            let (handle, tweet, block) = key.value();
            for day in crate::block::days_of(block, crate::block::OLD_BLOCK_DAYS, value.value()) {
                match day {
                    Ok((day, row)) => moving.day(&mut blocks, (handle, tweet, day), row)?,
                    Err(e) => {
                        tracing::warn!(error = %e, tweet, block, "a stored block of facts could not be read; its days are left to be fetched again")
                    }
                }
            }
        }
        drop(old);
        txn.delete_table(FACTS_BY_8_DAYS)?;
    } else {
        let by_day = txn.open_table(FACTS_BY_DAY)?;
        for entry in by_day.iter()? {
            let (key, value) = entry?;
            moving.day(&mut blocks, key.value(), value.value())?;
        }
        drop(by_day);
        txn.delete_table(FACTS_BY_DAY)?;
    }
    moving.flush(&mut blocks)?;
    let mut total = 0;
    for ((handle, tweet), held) in moving.bytes {
        let used = tweets.get((handle.as_str(), tweet))?.map(|v| v.value().0);
        if let Some(used) = used {
            tweets.insert((handle.as_str(), tweet), (used, held))?;
        }
        total += held;
    }
    Ok(total)
}

/// Days of an older store on their way into blocks, taken in key order: the days of the
/// block being gathered, written once it is whole, and the bytes written per Tweet.
#[derive(Default)]
struct Moving {
    block: Option<(String, u64, i64)>,
    days: Vec<(i64, Vec<u8>)>,
    bytes: HashMap<(String, u64), u64>,
}

impl Moving {
    /// Takes `day`'s `row` of `tweet` of `handle`.
    fn day(
        &mut self,
        blocks: &mut redb::Table<'_, (&'static str, u64, i64), &'static [u8]>,
        (handle, tweet, day): (&str, u64, i64),
        row: &[u8],
    ) -> Result<(), StoreError> {
        let key = (handle.to_string(), tweet, block_of(day));
        if self.block.as_ref() != Some(&key) {
            self.flush(blocks)?;
            self.block = Some(key);
        }
        self.days.push((day, row.to_vec()));
        Ok(())
    }

    /// Writes the block gathered so far.
    fn flush(
        &mut self,
        blocks: &mut redb::Table<'_, (&'static str, u64, i64), &'static [u8]>,
    ) -> Result<(), StoreError> {
        let Some((handle, tweet, block)) = self.block.take() else { return Ok(()) };
        let encoded = crate::block::encode(&std::mem::take(&mut self.days));
        *self.bytes.entry((handle.clone(), tweet)).or_default() += encoded.len() as u64;
        blocks.insert((handle.as_str(), tweet, block), encoded.as_slice())?;
        Ok(())
    }
}

/// Which hours of `range` `table` holds of `tweet` of `handle`, every slot of `slots` (or
/// are before the Tweet existed), one flag per hour; and `each(day, row)` for every day of
/// the range it holds, ascending.
fn hours_held(
    table: &impl ReadableTable<(&'static str, u64, i64), &'static [u8]>,
    (handle, tweet): (&str, TweetId),
    slots: &[usize],
    range: TimeRange,
    mut each: impl FnMut(i64, &[u8]),
) -> Result<Vec<bool>, StoreError> {
    let first = hour_of(range.start);
    let born = born_hour(tweet);
    let mut held: Vec<bool> = (0..range.hours() as i64).map(|i| first + i < born).collect();
    let (d0, d1) = days(range);
    for entry in table.range((handle, tweet.0, block_of(d0))..=(handle, tweet.0, block_of(d1)))? {
        let (key, value) = entry?;
        for day in crate::block::days(key.value().2, value.value()) {
            let (day, row) = day?;
            if !(d0..=d1).contains(&day) {
                continue;
            }
            let masks = decode_slots(row, slots, false, |_, _, _| {})?;
            let all = masks[..slots.len()].iter().fold(0x00ff_ffff, |m, x| m & x);
            let midnight = day * 24 - first;
            match usize::try_from(midnight).ok().and_then(|at| held.get_mut(at..at + 24)) {
                // Commonly the whole day, within the range.
                Some(whole) if all == 0x00ff_ffff => whole.fill(true),
                _ => {
                    for h in held_hours(all) {
                        if let Some(held) =
                            usize::try_from(midnight + h as i64).ok().and_then(|i| held.get_mut(i))
                        {
                            *held = true;
                        }
                    }
                }
            }
            each(day, row);
        }
    }
    Ok(held)
}

/// Builds [`BY_USE`] from [`TWEETS`] in a store written before it, once.
fn build_by_use(txn: &redb::WriteTransaction) -> Result<(), StoreError> {
    let mut meta = txn.open_table(META)?;
    if meta.get(BY_USE_BUILT)?.is_some() {
        return Ok(());
    }
    let tweets = txn.open_table(TWEETS)?;
    let mut by_use = txn.open_table(BY_USE)?;
    for entry in tweets.iter()? {
        let (key, value) = entry?;
        let (handle, tweet) = key.value();
        by_use.insert((value.value().0, handle, tweet), ())?;
    }
    meta.insert(BY_USE_BUILT, 1)?;
    Ok(())
}

/// [`TWEETS`] and [`BY_USE`], open for writing.
type TweetTables<'t, 'a> = (
    &'a mut redb::Table<'t, (&'static str, u64), (u64, u64)>,
    &'a mut redb::Table<'t, (u64, &'static str, u64), ()>,
);

/// Sets the row of `tweet` in [`TWEETS`] to (`used`, `bytes`), moving it in [`BY_USE`].
fn set_tweet(
    (tweets, by_use): TweetTables<'_, '_>,
    (handle, tweet): (&str, u64),
    (used, bytes): (u64, u64),
) -> Result<(), StoreError> {
    if let Some(before) = tweets.insert((handle, tweet), (used, bytes))? {
        by_use.remove((before.value().0, handle, tweet))?;
    }
    by_use.insert((used, handle, tweet), ())?;
    Ok(())
}

impl Store {
    /// Opens (or creates) the store under `config.path`.
    pub fn open(config: Config) -> Result<Store, StoreError> {
        std::fs::create_dir_all(&config.path)
            .map_err(|source| StoreError::Directory { path: config.path.clone(), source })?;
        let file: PathBuf = config.path.join("stitcher.redb");
        let db = match Database::builder().set_cache_size(CACHE_BYTES).create(&file) {
            Ok(db) => db,
            Err(redb::DatabaseError::DatabaseAlreadyOpen) => return Err(StoreError::InUse { path: file }),
            Err(e) => return Err(StoreError::Database(e.into())),
        };
        let db = Arc::new(db);
        let txn = db.begin_write()?;
        {
            txn.open_table(FACTS)?;
            txn.open_table(TWEETS)?;
            txn.open_table(STATUS)?;
            txn.open_table(REFUSED)?;
            txn.open_table(crate::ledger::LEDGER)?;
            txn.open_table(crate::watches::WATCHES)?;
            build_by_use(&txn)?;
            let mut meta = txn.open_table(META)?;
            let format = meta.get(FORMAT_KEY)?.map(|v| v.value());
            match format {
                None => {
                    meta.insert(FORMAT_KEY, FORMAT)?;
                }
                Some(older) if READS_FORMATS.contains(&older) => {
                    let total = into_blocks(&txn, older)?;
                    meta.insert(BYTES, total)?;
                    meta.insert(FORMAT_KEY, FORMAT)?;
                }
                Some(FORMAT) => {}
                Some(other) => return Err(StoreError::Format { path: file, found: other, expected: FORMAT }),
            }
        }
        txn.commit()?;
        let bytes = db.begin_read()?.open_table(META)?.get(BYTES)?.map(|v| v.value()).unwrap_or(0);
        let fresh = (!config.fresh_ttl.is_zero())
            .then(|| Cache::builder().max_capacity(FRESH_HOURS).time_to_live(config.fresh_ttl).build());
        let syncer = Syncer::start(Arc::clone(&db))
            .map_err(|e| StoreError::Commit(format!("cannot start the thread that syncs the store: {e}")))?;
        Ok(Store {
            db,
            syncer,
            config,
            fresh,
            pins: Mutex::new(HashMap::new()),
            group: Mutex::new(Group::default()),
            committed: std::sync::Condvar::new(),
            bytes: AtomicU64::new(bytes),
            evictions: AtomicU64::new(0),
        })
    }

    /// How the store was set up.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Encoded bytes of settled facts held.
    pub fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }

    /// Tweets evicted since the store was opened.
    pub fn evictions(&self) -> u64 {
        self.evictions.load(Ordering::Relaxed)
    }

    /// The first hour that is not settled if fetched at `now`.
    pub fn unsettled_from(&self, now: DateTime<Utc>) -> i64 {
        hour_of(now - self.config.settle_after)
    }

    /// Pins `tweets` of `handle` against eviction until the guard drops.
    pub fn pin(self: &Arc<Self>, handle: &str, tweets: &[TweetId]) -> Pin {
        let keys: Vec<(String, u64)> = tweets.iter().map(|t| (handle.to_string(), t.0)).collect();
        let mut pins = self.pins.lock().unwrap_or_else(|p| p.into_inner());
        for key in &keys {
            *pins.entry(key.clone()).or_default() += 1;
        }
        drop(pins);
        Pin { store: Arc::clone(self), keys }
    }

    /// Marks `tweets` of `handle` used at `now`, for eviction.
    pub fn mark_used(&self, handle: &str, tweets: &[TweetId], now: DateTime<Utc>) -> Result<(), StoreError> {
        // Use only orders eviction: losing it in a crash costs nothing, so it is not synced.
        let mut txn = self.db.begin_write()?;
        txn.set_durability(Durability::None)?;
        {
            let mut table = txn.open_table(TWEETS)?;
            let mut by_use = txn.open_table(BY_USE)?;
            for t in tweets {
                let bytes = table.get((handle, t.0))?.map(|v| v.value().1);
                if let Some(bytes) = bytes {
                    set_tweet((&mut table, &mut by_use), (handle, t.0), (seconds(now), bytes))?;
                }
            }
        }
        txn.commit()?;
        Ok(())
    }

    /// What is held of `types` for `tweets` over `range` as `handle`, at `now`: which
    /// hours, the unsettled hours themselves, and the statuses still trusted.
    pub fn known(
        &self,
        handle: &str,
        tweets: &[TweetId],
        types: &[EngagementType],
        range: TimeRange,
        now: DateTime<Utc>,
    ) -> Result<Known, StoreError> {
        let slots = slots_of(types);
        let wanted = slot_mask(&slots);
        let first = hour_of(range.start);
        let txn = self.db.begin_read()?;
        let facts = txn.open_table(FACTS)?;
        let status = txn.open_table(STATUS)?;
        let refused = txn.open_table(REFUSED)?;
        let trusted = |at: i64| now.timestamp() < at.saturating_add(self.config.status_ttl.as_secs() as i64);
        let mut known = Known { range: Some(range), ..Known::default() };
        // Only hours fetched within the fresh TTL can be in memory.
        let fresh_from = self.unsettled_from(now - self.config.fresh_ttl);
        let handle_key: Arc<str> = Arc::from(handle);
        for &tweet in tweets {
            let mut held = hours_held(&facts, (handle, tweet), &slots, range, |_, _| {})?;
            if let Some(fresh) = &self.fresh {
                for (i, h) in held.iter_mut().enumerate() {
                    let hour = first + i as i64;
                    if *h || hour < fresh_from {
                        continue;
                    }
                    if let Some(found) = fresh.get(&(Arc::clone(&handle_key), tweet.0, hour))
                        && found.fresh_slots(now, self.config.fresh_ttl) & wanted == wanted
                    {
                        known.fresh.insert((tweet, hour), found);
                        *h = true;
                    }
                }
            }
            let mut refused_for = false;
            if let Some(r) = refused.get((handle, tweet.0))? {
                let (at, code, message) = r.value();
                match Refused::from_code(code, message) {
                    Some(r) if trusted(at) => {
                        refused_for = r.refusal().is_some();
                        known.refused.insert(tweet, r);
                    }
                    Some(r) if r.refusal().is_some() => {
                        // Refused too long ago to trust: most likely still so.
                        refused_for = true;
                        known.unshown.insert(tweet, Unshown::Refused);
                    }
                    _ => {}
                }
            }
            if refused_for {
                // Refused since it was last shown: what was learned then no longer holds.
            } else if let Some(s) = status.get((handle, tweet.0))? {
                let (at, deleted) = s.value();
                if trusted(at) {
                    known.status.insert(tweet, TweetStatus::of(deleted == 1));
                    let learned = DateTime::from_timestamp(at, 0).unwrap_or(now);
                    known.oldest_status = Some(known.oldest_status.map_or(learned, |o| o.min(learned)));
                } else if deleted == 1 {
                    known.unshown.insert(tweet, Unshown::Deleted);
                }
            }
            known.held.insert(tweet, held);
        }
        Ok(known)
    }

    /// Keeps what a call fetched at `fetched_at` as `handle`: unsettled hours in memory,
    /// settled ones on disk with the statuses. Returns once they are committed: every later
    /// read sees them, and they are synced within [`crate::SYNC_EVERY`]. Calls that finish
    /// together are written in one transaction, so a cold question is not held to a
    /// transaction per call.
    pub fn keep(&self, handle: &str, facts: &CallFacts, fetched_at: DateTime<Utc>) -> Result<(), StoreError> {
        let queued = self.queue(handle, facts, fetched_at);
        self.written(queued)
    }

    /// [`Store::keep`]'s first part: the unsettled hours are in memory, the settled ones
    /// wait to be written with the next transaction; [`Store::written`] waits for it. The
    /// writer is free meanwhile (its place among the calls in flight is for the next
    /// call), and the writes that queue up while one transaction syncs go in the next.
    pub fn queue(&self, handle: &str, facts: &CallFacts, fetched_at: DateTime<Utc>) -> Queued {
        let unsettled_from = self.unsettled_from(fetched_at);
        let mut rows: Vec<((u64, i64), Vec<u8>)> = Vec::new();
        let handle_key: Arc<str> = Arc::from(handle);
        for (tweet, hours) in &facts.hours {
            let mut settled: Vec<(i64, &[u64])> = Vec::with_capacity(hours.len());
            for (hour, counts) in hours.iter() {
                if hour < unsettled_from {
                    settled.push((hour, counts));
                } else if let Some(fresh) = &self.fresh {
                    // The types other calls brought of this hour stay, each while it is fresh.
                    let ttl = self.config.fresh_ttl;
                    let counts = full_hour(facts.slots, counts);
                    fresh.entry((Arc::clone(&handle_key), tweet.0, hour)).and_upsert_with(|held| {
                        Arc::new(match held {
                            Some(held) => held.value().with(facts.slots, &counts, fetched_at, ttl),
                            None => FreshHour::new(facts.slots, counts, fetched_at),
                        })
                    });
                }
            }
            if !settled.is_sorted_by_key(|(hour, _)| *hour) {
                settled.sort_by_key(|(hour, _)| *hour);
            }
            // Of an hour given twice, the later counts win.
            settled.dedup_by(|later, earlier| {
                let same = later.0 == earlier.0;
                if same {
                    *earlier = *later;
                }
                same
            });
            // Each day's row is encoded into one buffer and copied into its block's bytes.
            let (mut of_day, mut row): (Vec<(usize, &[u64])>, Vec<u8>) = (Vec::with_capacity(24), Vec::new());
            let mut block: Option<(i64, Vec<u8>)> = None;
            // Days cut by comparing with the next midnight (a division per day, not per hour).
            let mut rest = settled.as_slice();
            while let Some(&(first, _)) = rest.first() {
                let number = first.div_euclid(24);
                let midnight = number * 24;
                let (day, after) = rest.split_at(rest.partition_point(|(hour, _)| *hour < midnight + 24));
                rest = after;
                of_day.clear();
                of_day.extend(day.iter().map(|(hour, counts)| ((hour - midnight) as usize, *counts)));
                row.clear();
                encode_hours_into(&mut row, facts.slots, &of_day);
                if let Some((n, bytes)) = block.take_if(|(n, _)| *n != block_of(number)) {
                    rows.push(((tweet.0, n), bytes));
                }
                let (_, bytes) = block.get_or_insert_with(|| (block_of(number), Vec::new()));
                crate::block::put_day(bytes, number, &row);
            }
            rows.extend(block.map(|(n, bytes)| ((tweet.0, n), bytes)));
        }
        // In key order, as the table keeps them.
        rows.sort_unstable_by_key(|(key, _)| *key);
        let write = Write {
            handle: handle.to_string(),
            rows,
            statuses: facts.tweets.iter().map(|t| (t.0, facts.deleted.contains(t))).collect(),
            refused: Vec::new(),
            at: fetched_at,
        };
        Queued(self.enqueue(write))
    }

    /// Keeps what a call as `handle` the upstream refused at `at` told of its Tweets, so
    /// questions holding them are refused alike without a call while it is trusted.
    pub fn refuse(
        &self,
        handle: &str,
        told: Vec<(TweetId, Refused)>,
        at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let write = Write {
            handle: handle.to_string(),
            rows: Vec::new(),
            statuses: Vec::new(),
            refused: told.into_iter().map(|(t, r)| (t.0, r)).collect(),
            at,
        };
        self.in_group(write)
    }

    /// Queues `write` and waits until a transaction holding it is committed.
    fn in_group(&self, write: Write) -> Result<(), StoreError> {
        let queued = Queued(self.enqueue(write));
        self.written(queued)
    }

    /// Queues `write` for the next transaction; its number.
    fn enqueue(&self, write: Write) -> u64 {
        let mut g = self.group.lock().unwrap_or_else(|p| p.into_inner());
        g.next += 1;
        g.queue.push(write);
        g.next
    }

    /// Waits until a transaction holding the `queued` write is committed: by this thread if
    /// no other is committing (then with everything queued), else by the one that is.
    pub fn written(&self, queued: Queued) -> Result<(), StoreError> {
        let Queued(seq) = queued;
        loop {
            let mut g = self.group.lock().unwrap_or_else(|p| p.into_inner());
            while g.committing && g.done < seq {
                g = self.committed.wait(g).unwrap_or_else(|p| p.into_inner());
            }
            if g.done >= seq {
                return g.failed.remove(&seq).map_or(Ok(()), |m| Err(StoreError::Commit(m)));
            }
            g.committing = true;
            // Writes that come while the last commit is fresh wait out the rest of the gap and
            // go together: one transaction, and one copy of the pages they share.
            if let Some(wait) = g.last.and_then(|at| COMMIT_GAP.checked_sub(at.elapsed())) {
                drop(g);
                std::thread::sleep(wait);
                g = self.group.lock().unwrap_or_else(|p| p.into_inner());
            }
            let writes = std::mem::take(&mut g.queue);
            let upto = g.next;
            drop(g);
            // A panic here must still fail these writes and free the group, or every later
            // writer would wait for good.
            let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.commit(&writes)))
                .unwrap_or_else(|_| Err(StoreError::Commit("writing the facts panicked".into())));
            let mut g = self.group.lock().unwrap_or_else(|p| p.into_inner());
            g.committing = false;
            g.last = Some(std::time::Instant::now());
            if let Err(e) = &result {
                let message = e.to_string();
                for s in (upto + 1 - writes.len() as u64)..=upto {
                    g.failed.insert(s, message.clone());
                }
            }
            g.done = upto;
            drop(g);
            self.committed.notify_all();
        }
    }

    /// Puts every write committed so far on disk now (they get there within
    /// [`crate::SYNC_EVERY`] anyway): for a service that is about to stop.
    pub fn sync(&self) -> Result<(), StoreError> {
        self.syncer.sync()
    }

    /// Writes `writes` in one transaction, synced if none was for [`crate::SYNC_EVERY`]
    /// (else the syncer syncs it within that), then evicts if the bound is passed.
    fn commit(&self, writes: &[Write]) -> Result<(), StoreError> {
        let mut txn = self.db.begin_write()?;
        let synced = self.syncer.due();
        if !synced {
            txn.set_durability(Durability::None)?;
        }
        let total;
        {
            let mut table = txn.open_table(FACTS)?;
            let mut tweets = txn.open_table(TWEETS)?;
            let mut by_use = txn.open_table(BY_USE)?;
            let mut status = txn.open_table(STATUS)?;
            let mut refused = txn.open_table(REFUSED)?;
            let mut grown: i64 = 0;
            // Each Tweet's bytes and last use, counted once however many writes hold it.
            let mut per_tweet: HashMap<(&str, u64), (i64, DateTime<Utc>)> = HashMap::new();
            for w in writes {
                let handle = w.handle.as_str();
                for ((tweet, block), encoded) in &w.rows {
                    // Most blocks are new: written at once, and merged only when one was there.
                    let key = (handle, *tweet, *block);
                    let old = table.insert(key, encoded.as_slice())?.map(|v| v.value().to_vec());
                    let grown = match old {
                        Some(bytes) => match crate::block::merge(*block, &bytes, encoded) {
                            Ok(merged) => {
                                table.insert(key, merged.as_slice())?;
                                merged.len() as i64 - bytes.len() as i64
                            }
                            // What was there cannot be read: the new days take its place,
                            // and the writes kept with this one are not failed for it.
                            Err(e) => {
                                tracing::warn!(error = %e, tweet, block, "a stored block of facts could not be read; replaced by the newer one");
                                encoded.len() as i64 - bytes.len() as i64
                            }
                        },
                        None => encoded.len() as i64,
                    };
                    let (delta, used) = per_tweet.entry((handle, *tweet)).or_insert((0, w.at));
                    *delta += grown;
                    *used = (*used).max(w.at);
                }
                for (tweet, deleted) in &w.statuses {
                    status.insert((handle, *tweet), (w.at.timestamp(), u8::from(*deleted)))?;
                    refused.remove((handle, *tweet))?;
                }
                for (tweet, r) in &w.refused {
                    let before = refused.get((handle, *tweet))?.map(|v| {
                        let (at, code, message) = v.value();
                        (at, Refused::from_code(code, message))
                    });
                    // "Not the handle's" says less than a trusted "protected" or "neither".
                    let says_more = matches!(before, Some((at, Some(Refused::Protected { .. } | Refused::Neither)))
                        if w.at.timestamp() < at.saturating_add(self.config.status_ttl.as_secs() as i64));
                    if *r == Refused::NotForeign && says_more {
                        continue;
                    }
                    let (code, message) = r.code();
                    refused.insert((handle, *tweet), (w.at.timestamp(), code, message))?;
                }
            }
            for ((handle, tweet), (delta, used)) in per_tweet {
                let before = tweets.get((handle, tweet))?.map(|v| v.value());
                match before {
                    // A Tweet held already was marked used by the question that asked for it
                    // (`mark_used`): a write counts its bytes and leaves its place in BY_USE.
                    Some((used, bytes)) => {
                        tweets.insert((handle, tweet), (used, (bytes as i64 + delta).max(0) as u64))?;
                    }
                    None => set_tweet(
                        (&mut tweets, &mut by_use),
                        (handle, tweet),
                        (seconds(used), delta.max(0) as u64),
                    )?,
                }
                grown += delta;
            }
            // Read within the transaction: writers are serialized, so the total is exact.
            let mut meta = txn.open_table(META)?;
            let before = meta.get(BYTES)?.map(|v| v.value()).unwrap_or(0);
            total = (before as i64 + grown).max(0) as u64;
            meta.insert(BYTES, total)?;
        }
        txn.commit()?;
        self.syncer.committed(synced);
        self.bytes.store(total, Ordering::Relaxed);
        self.shrink()
    }

    /// Evicts down to the bound if the store holds more than it: what a write could not
    /// evict while the Tweets were pinned by questions in flight.
    pub fn shrink(&self) -> Result<(), StoreError> {
        if self.bytes() > self.config.max_bytes { self.evict() } else { Ok(()) }
    }

    /// Whether the store holds more than its bound.
    pub fn over_bound(&self) -> bool {
        self.bytes() > self.config.max_bytes
    }

    /// Drops the facts of the least recently used Tweets (never those pinned) until the
    /// store holds at most nine tenths of its bound.
    fn evict(&self) -> Result<(), StoreError> {
        let target = self.config.max_bytes / 10 * 9;
        let txn = self.db.begin_write()?;
        let evicted;
        let total;
        {
            let mut tweets = txn.open_table(TWEETS)?;
            let mut facts = txn.open_table(FACTS)?;
            let mut meta = txn.open_table(META)?;
            let mut total_now = meta.get(BYTES)?.map(|v| v.value()).unwrap_or(0);
            let mut by_use = txn.open_table(BY_USE)?;
            let pins = self.pins.lock().unwrap_or_else(|p| p.into_inner()).clone();
            // Least recently used first, read only as far as eviction goes.
            let mut gone: Vec<(u64, String, u64)> = Vec::new();
            for entry in by_use.iter()? {
                if total_now <= target {
                    break;
                }
                let (key, _) = entry?;
                let (used, handle, tweet) = key.value();
                if pins.contains_key(&(handle.to_string(), tweet)) {
                    continue;
                }
                let bytes = tweets.get((handle, tweet))?.map_or(0, |v| v.value().1);
                total_now = total_now.saturating_sub(bytes);
                gone.push((used, handle.to_string(), tweet));
            }
            for (used, handle, tweet) in &gone {
                facts.retain_in(
                    (handle.as_str(), *tweet, i64::MIN)..=(handle.as_str(), *tweet, i64::MAX),
                    |_, _| false,
                )?;
                tweets.remove((handle.as_str(), *tweet))?;
                by_use.remove((*used, handle.as_str(), *tweet))?;
            }
            evicted = gone.len() as u64;
            meta.insert(BYTES, total_now)?;
            total = total_now;
        }
        txn.commit()?;
        self.bytes.store(total, Ordering::Relaxed);
        self.evictions.fetch_add(evicted, Ordering::Relaxed);
        Ok(())
    }

    /// The counts of `types` for `tweets` over the question's range: settled hours from
    /// disk, the rest from what the question kept in `known`. Every hour must be held but
    /// those in `holes` (windows a partial answer leaves out).
    pub fn held(
        &self,
        handle: &str,
        tweets: &[TweetId],
        types: &[EngagementType],
        known: &Known,
        holes: &[TimeRange],
        now: DateTime<Utc>,
    ) -> Result<Held, StoreError> {
        let range = known.range.ok_or(StoreError::Vanished { tweet: 0 })?;
        let first = hour_of(range.start);
        let slots = slots_of(types);
        let mask = slot_mask(&slots);
        let txn = self.db.begin_read()?;
        let table = txn.open_table(FACTS)?;
        let mut held = Held {
            no_video_views: tweets.iter().copied().filter(|t| !t.reports_video_views_at(now)).collect(),
            ..Held::default()
        };
        for &tweet in tweets {
            let mut rows = crate::facts::DayRows::default();
            let have = hours_held(&table, (handle, tweet), &slots, range, |day, row| rows.push(day, row))?;
            let mut fresh = Vec::new();
            for (i, _) in have.iter().enumerate().filter(|(_, h)| !**h) {
                let at = range.start + chrono::Duration::hours(i as i64);
                if holes.iter().any(|w| w.start <= at && at < w.end) {
                    continue;
                }
                let hour = first + i as i64;
                let found = known
                    .fresh
                    .get(&(tweet, hour))
                    .filter(|f| f.slots & mask == mask)
                    .ok_or(StoreError::Vanished { tweet: tweet.0 })?;
                fresh.push((hour, Arc::clone(found)));
            }
            held.rows.insert(tweet, rows);
            if !fresh.is_empty() {
                held.fresh.insert(tweet, fresh);
            }
        }
        Ok(held)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::block::BLOCK_DAYS;
    use crate::row::DayRow;
    use engagement::{TimeRange, parse_instant};

    fn config(dir: &tempfile::TempDir) -> Config {
        Config {
            path: dir.path().to_path_buf(),
            settle_after: std::time::Duration::from_secs(72 * 3600),
            fresh_ttl: std::time::Duration::from_secs(60),
            status_ttl: std::time::Duration::from_secs(900),
            max_bytes: 1 << 30,
        }
    }

    /// Two days of hours for one Tweet, of the slots in `slots`.
    fn facts(slots: u32, from: &str) -> CallFacts {
        let start = parse_instant(from).unwrap();
        let window = TimeRange { start, end: start + chrono::Duration::days(2) };
        let hours: Vec<(i64, crate::row::Hour)> = (hour_of(window.start)..hour_of(window.end))
            .map(|h| (h, std::array::from_fn(|s| (h as u64 % 1000) * 100 + s as u64)))
            .collect();
        CallFacts {
            window: Some(window),
            tweets: vec![TweetId(5)],
            slots,
            hours: [(TweetId(5), crate::Hours::of(slots, &hours))].into(),
            ..CallFacts::default()
        }
    }

    /// Midnight of the last day of a block in January 2024: two days from it cross blocks.
    fn across() -> String {
        let day = block_of(hour_of(parse_instant("2024-01-10T00:00:00Z").unwrap()) / 24) * BLOCK_DAYS
            + BLOCK_DAYS
            - 1;
        engagement::time::format_instant(DateTime::from_timestamp(day * 86_400, 0).unwrap())
    }

    /// The bytes of every block held.
    fn block_bytes(txn: &redb::ReadTransaction) -> u64 {
        let table = txn.open_table(FACTS).unwrap();
        table.iter().unwrap().map(|e| e.unwrap().1.value().len() as u64).sum()
    }

    /// Every day held, in key order: (day number, its row).
    fn rows(store: &Store) -> Vec<(i64, DayRow)> {
        let txn = store.db.begin_read().unwrap();
        let table = txn.open_table(FACTS).unwrap();
        let mut out = Vec::new();
        for entry in table.iter().unwrap() {
            let (key, value) = entry.unwrap();
            for day in crate::block::days(key.value().2, value.value()) {
                let (day, row) = day.unwrap();
                out.push((day, DayRow::decode(row).unwrap()));
            }
        }
        out
    }

    #[test]
    fn a_stored_block_that_cannot_be_read_is_replaced_by_the_newer_and_fails_no_write() {
        let dir = tempfile::tempdir().unwrap();
        let later = parse_instant("2024-06-01T00:00:00Z").unwrap();
        let store = Store::open(config(&dir)).unwrap();
        store.keep("h", &facts(0b11, &across()), later).unwrap();
        let txn = store.db.begin_write().unwrap();
        {
            let mut table = txn.open_table(FACTS).unwrap();
            let first: Vec<(u64, i64)> = table
                .iter()
                .unwrap()
                .map(|e| {
                    let (k, _) = e.unwrap();
                    (k.value().1, k.value().2)
                })
                .collect();
            let was = table.insert(("h", first[0].0, first[0].1), [0xff, 0xff, 0xff].as_slice()).unwrap();
            // Counted as what is there now, as a writer of those bytes would have.
            let was = was.unwrap().value().len() as u64;
            txn.open_table(META).unwrap().insert(BYTES, store.bytes() - was + 3).unwrap();
        }
        txn.commit().unwrap();
        let store = {
            drop(store);
            Store::open(config(&dir)).unwrap()
        };
        store.keep("h", &facts(0b100, &across()), later).unwrap();
        let days = rows(&store);
        assert_eq!(days.len(), 2);
        assert_eq!(days[0].1.held[..3], [0, 0, 0x00ff_ffff], "the spoilt block holds the newer type only");
        assert_eq!(days[1].1.held[..3], [0x00ff_ffff; 3], "the other block is merged");
        assert_eq!(
            store.bytes(),
            block_bytes(&store.db.begin_read().unwrap()),
            "the bytes held still add up"
        );
    }

    #[test]
    fn stores_of_a_row_a_day_are_moved_into_blocks_as_written_and_marked_so_older_services_refuse_them() {
        let later = parse_instant("2024-06-01T00:00:00Z").unwrap();
        // Two days of two types, kept by this service: what the older stores must read as.
        let kept = {
            let dir = tempfile::tempdir().unwrap();
            let store = Store::open(config(&dir)).unwrap();
            store.keep("h", &facts(0b11, &across()), later).unwrap();
            rows(&store)
        };
        assert_eq!(kept.len(), 2);
        assert_ne!(block_of(kept[0].0), block_of(kept[1].0), "the two days cross blocks");
        // A day in a block of 8 of a store of format 3: its place, its length and its row.
        let in_old_block = |day: i64, row: &[u8]| {
            let mut out = vec![day.rem_euclid(crate::block::OLD_BLOCK_DAYS) as u8];
            crate::row::put_varint(&mut out, row.len() as u64);
            out.extend_from_slice(row);
            out
        };
        for (format, encode) in
            [(1, crate::row::tests::wide as fn(&DayRow) -> Vec<u8>), (2, DayRow::encode), (3, DayRow::encode)]
        {
            let dir = tempfile::tempdir().unwrap();
            drop(Store::open(config(&dir)).unwrap());
            // Written as a store of that format would have: a row a day (or a block of 8 days
            // a value), and its totals.
            let txn = Database::open(dir.path().join("stitcher.redb")).unwrap().begin_write().unwrap();
            {
                let mut bytes = 0;
                if format == 3 {
                    let mut table = txn.open_table(FACTS_BY_8_DAYS).unwrap();
                    // A block before, that cannot be read: left out.
                    let spoilt = [0xff, 0, 0];
                    let before = kept[0].0.div_euclid(crate::block::OLD_BLOCK_DAYS) - 1;
                    table.insert(("h", 5, before), spoilt.as_slice()).unwrap();
                    bytes += spoilt.len() as u64;
                    for (day, row) in &kept {
                        let block = in_old_block(*day, &encode(row));
                        bytes += block.len() as u64;
                        let key = ("h", 5, day.div_euclid(crate::block::OLD_BLOCK_DAYS));
                        let before = table.get(key).unwrap().map(|v| v.value().to_vec()).unwrap_or_default();
                        table.insert(key, [before, block].concat().as_slice()).unwrap();
                    }
                } else {
                    let mut table = txn.open_table(FACTS_BY_DAY).unwrap();
                    for (day, row) in &kept {
                        let row = encode(row);
                        bytes += row.len() as u64;
                        table.insert(("h", 5, *day), row.as_slice()).unwrap();
                    }
                }
                let mut tweets = txn.open_table(TWEETS).unwrap();
                let mut by_use = txn.open_table(BY_USE).unwrap();
                set_tweet((&mut tweets, &mut by_use), ("h", 5), (7, bytes)).unwrap();
                let mut meta = txn.open_table(META).unwrap();
                meta.insert(FORMAT_KEY, format).unwrap();
                meta.insert(BYTES, bytes).unwrap();
            }
            txn.commit().unwrap();

            let store = Store::open(config(&dir)).unwrap();
            assert_eq!(rows(&store), kept, "format {format}: the days read as they were written");
            let txn = store.db.begin_read().unwrap();
            assert!(txn.open_table(FACTS_BY_DAY).is_err(), "the table of days is gone");
            assert!(txn.open_table(FACTS_BY_8_DAYS).is_err(), "the table of blocks of 8 is gone");
            let meta = txn.open_table(META).unwrap();
            assert_eq!(meta.get(FORMAT_KEY).unwrap().unwrap().value(), FORMAT);
            let blocks = block_bytes(&txn);
            assert_eq!(meta.get(BYTES).unwrap().unwrap().value(), blocks, "the bytes held counted again");
            assert_eq!(txn.open_table(TWEETS).unwrap().get(("h", 5)).unwrap().unwrap().value(), (7, blocks));
            drop((meta, txn));
            // Another type of the same days: merged with what was moved.
            store.keep("h", &facts(0b100, &across()), later).unwrap();
            for ((day, row), (before_day, before)) in rows(&store).iter().zip(&kept) {
                assert_eq!(day, before_day);
                assert_eq!(row.held[..2], before.held[..2]);
                assert_eq!(row.counts[..2], before.counts[..2]);
                assert_eq!(row.held[2], 0x00ff_ffff);
            }
            drop(store);

            let txn = Database::open(dir.path().join("stitcher.redb")).unwrap().begin_write().unwrap();
            txn.open_table(META).unwrap().insert(FORMAT_KEY, FORMAT + 1).unwrap();
            txn.commit().unwrap();
            assert!(matches!(
                Store::open(config(&dir)),
                Err(StoreError::Format { found: 5, expected: 4, .. })
            ));
        }
    }
}

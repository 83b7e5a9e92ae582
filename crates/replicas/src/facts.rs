//! The shared tier of the store of facts: what one replica fetched, every replica finds.
//! Settled hours are kept per (handle, Tweet, block of 28 days) as one string of fixed-width
//! cells, a run of one per hour of the block for each type up to the last one written (in
//! slot order, so the common impressions, engagements and favorites come first), for
//! [`SETTLED_TTL`]; unsettled hours per (handle, Tweet, hour, type), each for exactly the
//! store's fresh TTL from when it was fetched; what a call told of a Tweet (deleted or not)
//! with the time it was learned, for the status TTL. Each replica's own store stays in
//! front of it.
//!
//! A block's cell holds its hour's count plus one, in [`CELL`] bytes (little-endian); zero
//! is an hour not held, and so is a cell past the string's end. Writers set only the cells
//! of the hours they fetched (`SETRANGE`), so two replicas that fetched different hours or
//! types of one block merge without reading it, and settled counts never change, so two
//! that fetched the same hours write the same bytes. A block is made whole when first
//! written, up to the last type then asked; a later writer of a type past its end grows it
//! (Redis then keeps room to spare). A count too large for a cell is not shared (a replica
//! that lacks it calls).

use std::collections::HashMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use engagement::TweetId;
use engagement::slots::{Hour, SLOTS, slots_in};

use crate::{CHUNK, Redis, Unreachable};
use engine::off_the_workers;
pub use engine::ports::TweetHours;
use engine::ports::{CallHours, Refusals, Refused};

/// How long settled facts are kept in Redis after they were last written (they never
/// change; this bounds what a deployment leaves in Redis).
pub const SETTLED_TTL: Duration = Duration::from_secs(30 * 24 * 3600);

/// Hours in a block of settled facts: 28 days, what one call asks at most.
pub const BLOCK_HOURS: i64 = 28 * 24;

/// Bytes of one hour's cell in a block.
pub const CELL: usize = 4;

/// Bytes of one type's run of cells in a block.
pub const RUN: usize = BLOCK_HOURS as usize * CELL;

/// An hour's cell: its count plus one (zero is an hour not held), if it fits.
fn cell(count: u64) -> Option<[u8; CELL]> {
    u32::try_from(count.checked_add(1)?).ok().map(u32::to_le_bytes)
}

/// The count in a cell, or none for an hour not held.
fn count_in(cell: [u8; CELL]) -> Option<u64> {
    u64::from(u32::from_le_bytes(cell)).checked_sub(1)
}

impl Redis {
    fn block_key(&self, handle: &str, tweet: TweetId, block: i64) -> String {
        self.key(&format!("settled:{handle}:{tweet}:{block}"))
    }

    /// One type of one unsettled hour: a key of its own, so each lives exactly its TTL.
    fn fresh_key(&self, handle: &str, tweet: TweetId, hour: i64, slot: usize) -> String {
        self.key(&format!("fresh:{handle}:{tweet}:{hour}:{slot}"))
    }

    fn status_key(&self, handle: &str, tweet: TweetId) -> String {
        self.key(&format!("status:{handle}:{tweet}"))
    }

    fn refused_key(&self, handle: &str, tweet: TweetId) -> String {
        self.key(&format!("refused:{handle}:{tweet}"))
    }

    /// Keeps the counts of the slots in `slots` for `hours` fetched as `handle`: hours from
    /// `unsettled_from` on for `fresh_ttl`, earlier ones as settled.
    pub async fn put_facts(
        &self,
        handle: &str,
        slots: u32,
        hours: &CallHours,
        unsettled_from: i64,
        fresh_ttl: Duration,
    ) -> Result<(), Unreachable> {
        // A block is made with its expiry, and each run's write is followed by its block's,
        // so however round trips part them and whichever runs first (they run at once),
        // every block has one.
        let mut commands: Vec<redis::Cmd> = Vec::new();
        let mut fresh: Vec<redis::Cmd> = Vec::new();
        // A block is made whole at once, empty, up to the last type written: one that grew
        // write by write would hold twice its size (Redis grows a string greedily).
        let empty = vec![0u8; slots_in(slots).last().map_or(0, |last| (last + 1) * RUN)];
        for (&tweet, hours) in hours {
            let mut settled: Vec<(i64, &[u64])> =
                hours.iter().filter(|(hour, _)| *hour < unsettled_from).collect();
            settled.sort_unstable_by_key(|(hour, _)| *hour);
            let mut made = std::collections::HashSet::new();
            for (k, slot) in slots_in(slots).enumerate() {
                for (block, from, cells) in runs(&settled, k) {
                    let key = self.block_key(handle, tweet, block);
                    if made.insert(block) {
                        let mut make = redis::cmd("SET");
                        make.arg(&key).arg(empty.as_slice()).arg("NX").arg("EX").arg(SETTLED_TTL.as_secs());
                        commands.push(make);
                    }
                    let mut write = redis::cmd("SETRANGE");
                    write.arg(&key).arg(slot * RUN + from * CELL).arg(cells);
                    let mut expire = redis::cmd("EXPIRE");
                    expire.arg(&key).arg(SETTLED_TTL.as_secs());
                    commands.extend([write, expire]);
                }
            }
            if fresh_ttl.is_zero() {
                continue;
            }
            for (hour, counts) in hours.iter().filter(|(hour, _)| *hour >= unsettled_from) {
                for (s, count) in slots_in(slots).zip(counts) {
                    let mut set = redis::cmd("SET");
                    set.arg(self.fresh_key(handle, tweet, hour, s))
                        .arg(*count)
                        .arg("PX")
                        .arg(fresh_ttl.as_millis() as u64);
                    fresh.push(set);
                }
            }
        }
        commands.extend(fresh);
        self.write_chunked(commands).await
    }

    /// The hours of `wanted` (per Tweet, hour numbers) held as `handle` with every slot of
    /// `slots`: from `unsettled_from` on among the unsettled ones, before it among the
    /// settled ones.
    pub async fn get_facts(
        &self,
        handle: &str,
        wanted: &HashMap<TweetId, Vec<i64>>,
        slots: u32,
        unsettled_from: i64,
    ) -> Result<TweetHours, Unreachable> {
        let asked = Asked::new(wanted, slots, unsettled_from);
        let cells = self.read_settled(handle, &asked).await?;
        let counts = self.read_fresh(handle, &asked).await?;
        // A batch's hours over years are millions of cells: matched off the workers.
        let read = off_the_workers("reading the shared facts", move || {
            let mut asked = asked;
            let bad = (asked.settled(cells), asked.fresh(counts));
            Ok::<_, NotRead>((asked.complete(), bad))
        });
        let (held, (bad_settled, bad_fresh)) = read.await.map_err(|NotRead(e)| Unreachable(e.to_string()))?;
        self.bad_values("facts", bad_settled);
        self.bad_values("fresh", bad_fresh);
        Ok(held)
    }

    /// Reads the cells of the settled hours `asked` wants: one read per (Tweet, type,
    /// block), from the first hour wanted to the last of that type's run.
    async fn read_settled(
        &self,
        handle: &str,
        asked: &Asked,
    ) -> Result<Vec<redis::RedisResult<Vec<u8>>>, Unreachable> {
        if asked.ranges.is_empty() {
            return Ok(Vec::new());
        }
        let reads = asked.ranges.iter().map(|r| {
            let (first, last) = (asked.tweets[r.tweet].1[r.from], asked.tweets[r.tweet].1[r.to - 1]);
            let mut read = redis::cmd("GETRANGE");
            let run = r.slot * RUN;
            read.arg(self.block_key(handle, asked.tweets[r.tweet].0, r.block))
                .arg(run + cell_at(first) * CELL)
                .arg(run + cell_at(last) * CELL + CELL - 1);
            read
        });
        self.read_chunked(reads.collect()).await
    }

    /// Reads the counts of the unsettled hours `asked` wants: one read per (Tweet, hour).
    async fn read_fresh(&self, handle: &str, asked: &Asked) -> Result<Vec<Vec<Option<String>>>, Unreachable> {
        if asked.fresh.is_empty() {
            return Ok(Vec::new());
        }
        let slots = asked.slots;
        let reads = asked.fresh.iter().map(|&(tweet, j)| {
            let (id, hour) = (asked.tweets[tweet].0, asked.tweets[tweet].1[j]);
            let mut read = redis::cmd("MGET");
            read.arg(slots_in(slots).map(|s| self.fresh_key(handle, id, hour, s)).collect::<Vec<_>>());
            read
        });
        self.read_chunked(reads.collect()).await
    }

    /// Keeps whether each of `statuses`' Tweets is deleted, as learned at `learned_at`, for
    /// `ttl` from then (what is left of it at `now`).
    pub async fn put_statuses(
        &self,
        handle: &str,
        statuses: &[(TweetId, bool)],
        (learned_at, now): (DateTime<Utc>, DateTime<Utc>),
        ttl: Duration,
    ) -> Result<(), Unreachable> {
        let values = statuses.iter().map(|(tweet, deleted)| {
            (self.status_key(handle, *tweet), format!("{}:{}", u8::from(*deleted), learned_at.timestamp()))
        });
        self.set_each(values.collect(), (learned_at, now), ttl).await
    }

    /// Whether each of `tweets` is deleted, and when that was learned, for those held.
    pub async fn get_statuses(
        &self,
        handle: &str,
        tweets: &[TweetId],
    ) -> Result<HashMap<TweetId, (bool, DateTime<Utc>)>, Unreachable> {
        let key = |t: &TweetId| self.status_key(handle, *t);
        self.get_per_tweet(tweets, key, "status", |value| {
            let (deleted, at) = value.split_once(':')?;
            let deleted = match deleted {
                "1" => true,
                "0" => false,
                _ => return None,
            };
            Some((deleted, DateTime::from_timestamp(at.parse::<i64>().ok()?, 0)?))
        })
        .await
    }
}

/// A read whose matching failed (its task panicked).
struct NotRead(engine::TaskFailed);

impl From<engine::TaskFailed> for NotRead {
    fn from(e: engine::TaskFailed) -> NotRead {
        NotRead(e)
    }
}

/// An hour's place among the cells of its block.
fn cell_at(hour: i64) -> usize {
    hour.rem_euclid(BLOCK_HOURS) as usize
}

/// The settled cells of one read: the `tweet`-th Tweet's wanted hours `from..to` (all in
/// `block`), of `slot`.
#[derive(Debug, Clone, Copy)]
struct Range {
    tweet: usize,
    slot: usize,
    block: i64,
    from: usize,
    to: usize,
}

/// A read of facts: per Tweet its hours wanted (ascending) and, beside each, the slots found
/// and their counts; the settled cells to read, and the unsettled (Tweet, hour)s.
struct Asked {
    slots: u32,
    tweets: Vec<(TweetId, Vec<i64>)>,
    seen: Vec<Vec<u32>>,
    counts: Vec<Vec<Hour>>,
    ranges: Vec<Range>,
    fresh: Vec<(usize, usize)>,
}

impl Asked {
    fn new(wanted: &HashMap<TweetId, Vec<i64>>, slots: u32, unsettled_from: i64) -> Asked {
        let mut asked = Asked {
            slots,
            tweets: Vec::with_capacity(wanted.len()),
            seen: Vec::with_capacity(wanted.len()),
            counts: Vec::with_capacity(wanted.len()),
            ranges: Vec::new(),
            fresh: Vec::new(),
        };
        for (tweet, (&id, hours)) in wanted.iter().enumerate() {
            let mut hours = hours.clone();
            hours.sort_unstable();
            hours.dedup();
            let settled = hours.partition_point(|h| *h < unsettled_from);
            let mut from = 0;
            for in_block in
                hours[..settled].chunk_by(|a, b| a.div_euclid(BLOCK_HOURS) == b.div_euclid(BLOCK_HOURS))
            {
                let (block, to) = (in_block[0].div_euclid(BLOCK_HOURS), from + in_block.len());
                asked.ranges.extend(slots_in(slots).map(|slot| Range { tweet, slot, block, from, to }));
                from = to;
            }
            asked.fresh.extend((settled..hours.len()).map(|j| (tweet, j)));
            asked.seen.push(vec![0; hours.len()]);
            asked.counts.push(vec![[0; SLOTS]; hours.len()]);
            asked.tweets.push((id, hours));
        }
        asked
    }

    /// Takes what the reads of [`Asked::ranges`] found, in their order; how many could not
    /// be read.
    fn settled(&mut self, found: Vec<redis::RedisResult<Vec<u8>>>) -> u64 {
        let mut bad = 0;
        for (i, cells) in found.into_iter().enumerate() {
            let Range { tweet, slot, from, to, .. } = self.ranges[i];
            // Another kind of value at a block's key (another writer's) holds nothing.
            let Ok(cells) = cells else {
                bad += 1;
                continue;
            };
            let (hours, seen, counts) =
                (&self.tweets[tweet].1, &mut self.seen[tweet], &mut self.counts[tweet]);
            let start = cell_at(hours[from]);
            for j in from..to {
                let at = (cell_at(hours[j]) - start) * CELL;
                let cell = cells.get(at..at + CELL).and_then(|c| c.try_into().ok());
                if let Some(count) = cell.and_then(count_in) {
                    seen[j] |= 1 << slot;
                    counts[j][slot] = count;
                }
            }
        }
        bad
    }

    /// Takes what the reads of [`Asked::fresh`] found, in their order; how many counts
    /// could not be read.
    fn fresh(&mut self, found: Vec<Vec<Option<String>>>) -> u64 {
        let mut bad = 0;
        for (i, counts) in found.into_iter().enumerate() {
            let (tweet, j) = self.fresh[i];
            for (s, count) in slots_in(self.slots).zip(counts) {
                match count.map(|c| c.parse::<u64>()) {
                    Some(Ok(count)) => {
                        self.seen[tweet][j] |= 1 << s;
                        self.counts[tweet][j][s] = count;
                    }
                    Some(Err(_)) => bad += 1,
                    None => {}
                }
            }
        }
        bad
    }

    /// The hours found with every slot asked.
    fn complete(self) -> TweetHours {
        let mut out = TweetHours::new();
        for (((id, hours), seen), counts) in self.tweets.into_iter().zip(self.seen).zip(self.counts) {
            let held: Vec<(i64, Hour)> = hours
                .into_iter()
                .zip(seen)
                .zip(counts)
                .filter(|((_, seen), _)| seen & self.slots == self.slots)
                .map(|((hour, _), counts)| (hour, counts))
                .collect();
            if !held.is_empty() {
                out.insert(id, held);
            }
        }
        out
    }
}

/// The runs of consecutive `settled` hours (ascending) within one block whose `k`-th
/// counts fit a cell: (block, the first hour's place in it, the run's cells).
fn runs(settled: &[(i64, &[u64])], k: usize) -> Vec<(i64, usize, Vec<u8>)> {
    let mut out: Vec<(i64, usize, Vec<u8>)> = Vec::new();
    let mut last: Option<i64> = None;
    for (hour, counts) in settled {
        let Some(cell) = cell(counts[k]) else {
            last = None;
            continue;
        };
        let block = hour.div_euclid(BLOCK_HOURS);
        let follows = last.is_some_and(|l| l + 1 == *hour && l.div_euclid(BLOCK_HOURS) == block);
        match out.last_mut() {
            Some((_, _, cells)) if follows => cells.extend_from_slice(&cell),
            _ => out.push((block, (hour - block * BLOCK_HOURS) as usize, cell.to_vec())),
        }
        last = Some(*hour);
    }
    out
}

impl Redis {
    /// Sets each of `values` (key, value) for what is left at `now` of `ttl` from `at`;
    /// nothing once it is over.
    async fn set_each(
        &self,
        values: Vec<(String, String)>,
        (at, now): (DateTime<Utc>, DateTime<Utc>),
        ttl: Duration,
    ) -> Result<(), Unreachable> {
        let left = ttl.as_secs() as i64 - (now - at).num_seconds();
        if values.is_empty() || left <= 0 {
            return Ok(());
        }
        let writes = values.into_iter().map(|(key, value)| {
            let mut set = redis::cmd("SET");
            set.arg(key).arg(value).arg("EX").arg(left);
            set
        });
        self.write_chunked(writes.collect()).await
    }

    /// The value of each of `tweets` at its `key` under `prefix`, read by `decode`, for
    /// those held. A value `decode` cannot read is taken as missing, and counted.
    async fn get_per_tweet<T>(
        &self,
        tweets: &[TweetId],
        key: impl Fn(&TweetId) -> String,
        prefix: &'static str,
        decode: impl Fn(&str) -> Option<T>,
    ) -> Result<HashMap<TweetId, T>, Unreachable> {
        let keys: Vec<String> = tweets.iter().map(key).collect();
        let reads = keys.chunks(CHUNK).map(|keys| {
            let mut read = redis::cmd("MGET");
            read.arg(keys);
            read
        });
        let found: Vec<Vec<Option<String>>> = self.read_chunked(reads.collect()).await?;
        let mut bad = 0;
        let mut held = HashMap::new();
        for (tweet, value) in tweets.iter().zip(found.into_iter().flatten()) {
            match value.as_deref().map(&decode) {
                Some(Some(read)) => {
                    held.insert(*tweet, read);
                }
                Some(None) => bad += 1,
                None => {}
            }
        }
        self.bad_values(prefix, bad);
        Ok(held)
    }

    /// Keeps what a call refused at `at` told of each of `refused`'s Tweets, for `ttl` from
    /// then (what is left of it at `now`).
    pub async fn put_refusals(
        &self,
        handle: &str,
        refused: &[(TweetId, Refused)],
        (at, now): (DateTime<Utc>, DateTime<Utc>),
        ttl: Duration,
    ) -> Result<(), Unreachable> {
        let values = refused.iter().map(|(tweet, r)| {
            let (code, message) = r.code();
            (self.refused_key(handle, *tweet), format!("{code}:{}:{message}", at.timestamp()))
        });
        self.set_each(values.collect(), (at, now), ttl).await
    }

    /// What calls were told of `tweets` they were refused for, and when, for those held.
    pub async fn get_refusals(&self, handle: &str, tweets: &[TweetId]) -> Result<Refusals, Unreachable> {
        let key = |t: &TweetId| self.refused_key(handle, *t);
        self.get_per_tweet(tweets, key, "refused", |value| {
            let mut parts = value.splitn(3, ':');
            let (code, at, message) = (parts.next()?, parts.next()?, parts.next()?);
            let at = DateTime::from_timestamp(at.parse::<i64>().ok()?, 0)?;
            Some((Refused::from_code(code.parse::<u8>().ok()?, message)?, at))
        })
        .await
    }
}

/// Gives up a lease only if it is still the holder's (it may have expired and been taken).
const RELEASE: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
";

/// Keeps a lease ARGV[2] milliseconds more, only if it is still the holder's ARGV[1].
const RENEW: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
";

impl Redis {
    fn lease_key(&self, call: &str) -> String {
        self.key(&format!("lease:{call}"))
    }

    /// Takes the lease on `call` for `ttl` as `holder`: whether it was free. The holder
    /// makes the call and writes its facts; the others wait for the lease to go.
    pub async fn take_lease(&self, call: &str, holder: &str, ttl: Duration) -> Result<bool, Unreachable> {
        let mut cmd = redis::cmd("SET");
        cmd.arg(self.lease_key(call)).arg(holder).arg("NX").arg("PX").arg(ttl.as_millis().max(1) as u64);
        let set: Option<String> = self.run(&cmd).await?;
        Ok(set.is_some())
    }

    /// Whether some replica holds the lease on `call` (it expires if that replica died).
    pub async fn lease_held(&self, call: &str) -> Result<bool, Unreachable> {
        let mut cmd = redis::cmd("EXISTS");
        cmd.arg(self.lease_key(call));
        let n: u32 = self.run(&cmd).await?;
        Ok(n > 0)
    }

    /// Keeps the lease on `call` for `ttl` more if `holder` still holds it; whether it does.
    pub async fn renew_lease(&self, call: &str, holder: &str, ttl: Duration) -> Result<bool, Unreachable> {
        static SCRIPT: std::sync::LazyLock<redis::Script> =
            std::sync::LazyLock::new(|| redis::Script::new(RENEW));
        let mut invocation = SCRIPT.key(self.lease_key(call));
        invocation.arg(holder).arg(ttl.as_millis().max(1) as u64);
        self.invoke::<i64>(&invocation).await.map(|renewed| renewed == 1)
    }

    /// Gives up the lease on `call` if `holder` still holds it.
    pub async fn release_lease(&self, call: &str, holder: &str) -> Result<(), Unreachable> {
        static SCRIPT: std::sync::LazyLock<redis::Script> =
            std::sync::LazyLock::new(|| redis::Script::new(RELEASE));
        let mut invocation = SCRIPT.key(self.lease_key(call));
        invocation.arg(holder);
        self.invoke::<i64>(&invocation).await.map(|_| ())
    }
}

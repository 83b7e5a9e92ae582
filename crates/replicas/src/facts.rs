//! The shared tier of the store of facts: what one replica fetched, every replica finds.
//! Settled hours are kept per (handle, Tweet, day) as a hash of `slot:hour` → count, for
//! [`SETTLED_TTL`]; unsettled hours per (handle, Tweet, hour, type), each for exactly the
//! store's fresh TTL from when it was fetched; what a call told of a Tweet (deleted or not) with the time it
//! was learned, for the status TTL. Each replica's own store stays in front of it.

use std::collections::HashMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use engagement::TweetId;
use engagement::slots::{Hour, SLOTS, slots_in};

use crate::{CHUNK, Redis, Unreachable};
use engine::ports::{Refusals, Refused};

/// How long settled facts are kept in Redis after they were last written (they never
/// change; this bounds what a deployment leaves in Redis).
pub const SETTLED_TTL: Duration = Duration::from_secs(30 * 24 * 3600);

/// Hours of Tweets as the store keeps them: per Tweet, (hour number, counts by slot).
pub type TweetHours = HashMap<TweetId, Vec<(i64, Hour)>>;

impl Redis {
    fn day_key(&self, handle: &str, tweet: TweetId, day: i64) -> String {
        self.key(&format!("facts:{handle}:{tweet}:{day}"))
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
        hours: &TweetHours,
        unsettled_from: i64,
        fresh_ttl: Duration,
    ) -> Result<(), Unreachable> {
        let mut fresh: Vec<redis::Cmd> = Vec::new();
        let mut days: HashMap<(TweetId, i64), Vec<(String, u64)>> = HashMap::new();
        for (&tweet, hours) in hours {
            for (hour, counts) in hours {
                if *hour < unsettled_from {
                    let fields = days.entry((tweet, hour.div_euclid(24))).or_default();
                    let h = hour.rem_euclid(24);
                    fields.extend(slots_in(slots).map(|s| (format!("{s}:{h}"), counts[s])));
                } else if !fresh_ttl.is_zero() {
                    for s in slots_in(slots) {
                        let mut set = redis::cmd("SET");
                        set.arg(self.fresh_key(handle, tweet, *hour, s))
                            .arg(counts[s])
                            .arg("PX")
                            .arg(fresh_ttl.as_millis() as u64);
                        fresh.push(set);
                    }
                }
            }
        }
        // Each day's write and its expiry side by side, first, so no round trip parts them
        // (round trips run at once, and an expiry before its write would be lost).
        let mut commands: Vec<redis::Cmd> = Vec::with_capacity(2 * days.len() + fresh.len());
        for ((tweet, day), fields) in days {
            let key = self.day_key(handle, tweet, day);
            let mut set = redis::cmd("HSET");
            set.arg(&key).arg(fields);
            let mut expire = redis::cmd("EXPIRE");
            expire.arg(&key).arg(SETTLED_TTL.as_secs());
            commands.extend([set, expire]);
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
        let mut found: HashMap<(TweetId, i64), (u32, Hour)> = HashMap::new();
        let mut found_one = |tweet: TweetId, hour: i64, slot: usize, count: u64| {
            let entry = found.entry((tweet, hour)).or_insert((0, [0; SLOTS]));
            entry.0 |= 1 << slot;
            entry.1[slot] = count;
        };
        // Settled hours: one read per (Tweet, day); unsettled ones: one per (Tweet, hour).
        let mut days: Vec<(TweetId, i64)> = Vec::new();
        let mut fresh: Vec<(TweetId, i64)> = Vec::new();
        for (&tweet, hours) in wanted {
            let mut d: Vec<i64> =
                hours.iter().filter(|h| **h < unsettled_from).map(|h| h.div_euclid(24)).collect();
            d.sort_unstable();
            d.dedup();
            days.extend(d.into_iter().map(|d| (tweet, d)));
            fresh.extend(hours.iter().filter(|h| **h >= unsettled_from).map(|h| (tweet, *h)));
        }
        if !days.is_empty() {
            let reads = days.iter().map(|(tweet, day)| {
                let mut read = redis::cmd("HGETALL");
                read.arg(self.day_key(handle, *tweet, *day));
                read
            });
            let rows: Vec<HashMap<String, String>> = self.read_chunked(reads.collect()).await?;
            let mut bad = 0;
            for ((tweet, day), fields) in days.into_iter().zip(rows) {
                for (field, count) in fields {
                    let read = field.split_once(':').and_then(|(s, h)| {
                        Some((s.parse::<usize>().ok().filter(|s| *s < SLOTS)?, h.parse::<i64>().ok()?))
                    });
                    match (read, count.parse::<u64>()) {
                        (Some((s, h)), Ok(count)) if (0..24).contains(&h) => {
                            found_one(tweet, day * 24 + h, s, count)
                        }
                        _ => bad += 1,
                    }
                }
            }
            self.bad_values("facts", bad);
        }
        if !fresh.is_empty() {
            let reads = fresh.iter().map(|(tweet, hour)| {
                let mut read = redis::cmd("MGET");
                read.arg(
                    slots_in(slots).map(|s| self.fresh_key(handle, *tweet, *hour, s)).collect::<Vec<_>>(),
                );
                read
            });
            let counts: Vec<Vec<Option<String>>> = self.read_chunked(reads.collect()).await?;
            let mut bad = 0;
            for ((tweet, hour), counts) in fresh.into_iter().zip(counts) {
                for (s, count) in slots_in(slots).zip(counts) {
                    match count.map(|c| c.parse::<u64>()) {
                        Some(Ok(count)) => found_one(tweet, hour, s, count),
                        Some(Err(_)) => bad += 1,
                        None => {}
                    }
                }
            }
            self.bad_values("fresh", bad);
        }
        let mut out = TweetHours::new();
        for ((tweet, hour), (present, counts)) in found {
            if present & slots == slots && wanted[&tweet].contains(&hour) {
                out.entry(tweet).or_default().push((hour, counts));
            }
        }
        Ok(out)
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

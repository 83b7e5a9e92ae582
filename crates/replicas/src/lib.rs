//! What the replicas of one service share through Redis, so that together they behave as
//! one: the per-minute call budget ([`rate`]), the facts fetched and leases on calls
//! ([`facts`]), the OAuth nonces of drop-in clients ([`nonces`]) and the month's handle
//! ledger ([`ledger`]), and the time of day they judge facts by ([`clock`]). Every key starts with the deployment's prefix, so several
//! deployments can share one Redis.
//!
//! Redis may be away. Every operation says so ([`Unreachable`]) instead of waiting for it,
//! and [`Redis::is_up`] tells what the last operation or probe found. Redis is judged away
//! only when a connection fails or a probe goes unanswered: an operation that is merely
//! slow fails alone. Big reads and writes go in bounded, pipelined chunks, each with a
//! timeout that fits its size. [`sharing`] implements
//! the engine's ports on them, with what to do meanwhile (`redis.on_failure`: a local
//! share, or refusing).

pub mod clock;
pub mod facts;
pub mod ledger;
pub mod nonces;
pub mod rate;
pub mod sharing;
pub mod watches;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};

pub use engine::ports::Unreachable;
pub use sharing::Sharing;

/// How long an attempt to connect, a probe, or an operation of one command may take.
const TIMEOUT: Duration = Duration::from_millis(500);

/// What each further command of a pipelined round trip adds to its timeout.
const PER_COMMAND: Duration = Duration::from_millis(2);

/// Commands sent in one round trip, at most.
pub const CHUNK: usize = 256;

/// How often bad values under one key prefix are logged.
const BAD_VALUES_LOGGED_EVERY: Duration = Duration::from_secs(60);

/// Round trips of one operation in flight at once.
const ROUND_TRIPS_AT_ONCE: usize = 4;

/// How long a round trip of `commands` commands may take.
fn timeout_for(commands: usize) -> Duration {
    TIMEOUT + PER_COMMAND * u32::try_from(commands.saturating_sub(1)).unwrap_or(u32::MAX)
}

/// A Redis shared by the replicas, under a key prefix.
pub struct Redis {
    connection: ConnectionManager,
    prefix: String,
    up: AtomicBool,
    /// When a bad value under each key prefix was last logged.
    warned: std::sync::Mutex<std::collections::HashMap<&'static str, std::time::Instant>>,
}

impl std::fmt::Debug for Redis {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The URL may hold a password: it is not kept.
        f.debug_struct("Redis").field("prefix", &self.prefix).field("up", &self.is_up()).finish()
    }
}

/// A Redis URL that cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("redis.url is not a Redis URL (redis://[user:password@]host[:port][/db]): {0}")]
pub struct BadUrl(String);

impl Redis {
    /// Prepares the connection to the Redis at `url` (it is made on first use, and made
    /// again whenever it drops), keys under `prefix`.
    pub fn connect(url: &str, prefix: &str) -> Result<Arc<Redis>, BadUrl> {
        let client = redis::Client::open(url).map_err(|e| BadUrl(format!("{:?}", e.kind())))?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(TIMEOUT))
            // Each operation has a timeout of its own, fitted to its size.
            .set_response_timeout(None)
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_millis(200));
        let connection = ConnectionManager::new_lazy_with_config(client, config)
            .map_err(|e| BadUrl(format!("{:?}", e.kind())))?;
        Ok(Arc::new(Redis {
            connection,
            prefix: prefix.to_string(),
            up: AtomicBool::new(true),
            warned: std::sync::Mutex::default(),
        }))
    }

    /// Whether the last operation or probe reached Redis.
    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Relaxed)
    }

    /// Asks Redis whether it is there; returns whether it was, and whether it was away
    /// before (so the caller can catch up on what it kept meanwhile). While Redis is away,
    /// only the probe asks it: every other operation says so at once instead of waiting for
    /// a timeout, until a probe finds it back.
    pub async fn probe(&self) -> (bool, bool) {
        let was_up = self.is_up();
        let mut connection = self.connection.clone();
        let ping = redis::cmd("PING");
        let up = match tokio::time::timeout(TIMEOUT, ping.query_async::<String>(&mut connection)).await {
            Ok(pong) => self.noted(pong).is_ok(),
            Err(_) => {
                self.away(&format!("a probe had no answer within {} ms", TIMEOUT.as_millis()));
                false
            }
        };
        (up, !was_up)
    }

    /// Every key under this deployment's prefix.
    async fn keys(&self) -> Result<Vec<String>, Unreachable> {
        let mut keys = Vec::new();
        let mut cursor = 0u64;
        loop {
            let mut scan = redis::cmd("SCAN");
            scan.arg(cursor).arg("MATCH").arg(format!("{}*", self.prefix)).arg("COUNT").arg(1000);
            let (next, found): (u64, Vec<String>) = self.run(&scan).await?;
            keys.extend(found);
            if next == 0 {
                return Ok(keys);
            }
            cursor = next;
        }
    }

    /// The memory Redis gives every key under this deployment's prefix (`MEMORY USAGE`),
    /// in bytes: what the deployment costs its Redis.
    pub async fn memory_under_prefix(&self) -> Result<u64, Unreachable> {
        let reads = self.keys().await?.into_iter().map(|key| {
            let mut usage = redis::cmd("MEMORY");
            usage.arg("USAGE").arg(key).arg("SAMPLES").arg(0);
            usage
        });
        let sizes: Vec<Option<u64>> = self.read_chunked(reads.collect()).await?;
        Ok(sizes.into_iter().flatten().sum())
    }

    /// Deletes every key under this deployment's prefix.
    pub async fn forget_prefix(&self) -> Result<(), Unreachable> {
        let deletes = self.keys().await?.into_iter().map(|key| {
            let mut unlink = redis::cmd("UNLINK");
            unlink.arg(key);
            unlink
        });
        self.write_chunked(deletes.collect()).await
    }

    /// Notes `n` values under `prefix` (`facts`, `fresh`, `status`, `refused`) that could not be
    /// decoded and are taken as missing: counted, and logged at WARN once a minute per
    /// prefix.
    fn bad_values(&self, prefix: &'static str, n: u64) {
        if n == 0 {
            return;
        }
        engine::metrics::redis_bad_values(prefix, n);
        let now = std::time::Instant::now();
        let mut warned = self.warned.lock().unwrap_or_else(|p| p.into_inner());
        let last = warned.get(prefix).copied();
        if last.is_none_or(|at| now.duration_since(at) >= BAD_VALUES_LOGGED_EVERY) {
            warned.insert(prefix, now);
            tracing::warn!(
                prefix = %format!("{}{prefix}:", self.prefix),
                values = n,
                "values in Redis could not be read and are taken as missing (another writer, or a different version?)"
            );
        }
    }

    /// Notes that Redis is away, saying why the first time.
    fn away(&self, why: &str) {
        if self.up.swap(false, Ordering::Relaxed) {
            tracing::warn!(error = why, "Redis cannot be reached: falling back as redis.on_failure says");
        }
    }

    /// An operation's connection, or that Redis is away.
    fn connection(&self) -> Result<ConnectionManager, Unreachable> {
        if self.is_up() {
            Ok(self.connection.clone())
        } else {
            Err(Unreachable("Redis is away (a probe each second tells when it is back)".into()))
        }
    }

    /// The key `name` under this deployment's prefix.
    fn key(&self, name: &str) -> String {
        format!("{}{name}", self.prefix)
    }

    /// Runs `cmd`, noting whether Redis answered.
    async fn run<T: redis::FromRedisValue>(&self, cmd: &redis::Cmd) -> Result<T, Unreachable> {
        let mut connection = self.connection()?;
        self.within(1, cmd.query_async(&mut connection)).await
    }

    /// Runs `pipe` of `commands` commands in one round trip, noting whether Redis answered.
    async fn run_all<T: redis::FromRedisValue>(
        &self,
        pipe: &redis::Pipeline,
        commands: usize,
    ) -> Result<T, Unreachable> {
        let mut connection = self.connection()?;
        self.within(commands, pipe.query_async(&mut connection)).await
    }

    /// Runs `commands` in pipelined round trips of at most [`CHUNK`], a few at once; their
    /// answers in order.
    async fn read_chunked<T: redis::FromRedisValue + Send>(
        &self,
        commands: Vec<redis::Cmd>,
    ) -> Result<Vec<T>, Unreachable> {
        let answers: Vec<Vec<T>> = self.chunked(commands, false).await?;
        Ok(answers.into_iter().flatten().collect())
    }

    /// Runs `commands` as [`Redis::read_chunked`] does, their answers not wanted.
    async fn write_chunked(&self, commands: Vec<redis::Cmd>) -> Result<(), Unreachable> {
        self.chunked::<()>(commands, true).await.map(|_| ())
    }

    async fn chunked<T: redis::FromRedisValue + Send>(
        &self,
        commands: Vec<redis::Cmd>,
        ignored: bool,
    ) -> Result<Vec<T>, Unreachable> {
        use futures::{StreamExt, TryStreamExt};
        let round_trips: Vec<(redis::Pipeline, usize)> = commands
            .chunks(CHUNK)
            .map(|chunk| {
                let mut pipe = redis::pipe();
                if !ignored {
                    // A command Redis refuses (a key of another type) is that answer's
                    // error, not the round trip's: readers decide what it means.
                    pipe.ignore_errors();
                }
                for cmd in chunk {
                    pipe.add_command(cmd.clone());
                    if ignored {
                        pipe.ignore();
                    }
                }
                (pipe, chunk.len())
            })
            .collect();
        futures::stream::iter(round_trips)
            .map(|(pipe, n)| async move { self.run_all::<T>(&pipe, n).await })
            .buffered(ROUND_TRIPS_AT_ONCE)
            .try_collect()
            .await
    }

    /// Runs `script`, noting whether Redis answered.
    async fn invoke<T: redis::FromRedisValue>(
        &self,
        script: &redis::ScriptInvocation<'_>,
    ) -> Result<T, Unreachable> {
        let mut connection = self.connection()?;
        self.within(1, script.invoke_async(&mut connection)).await
    }

    /// What `work`, an operation of `commands` commands, came to within its time. One that
    /// takes too long fails alone: it does not make Redis away.
    async fn within<T>(
        &self,
        commands: usize,
        work: impl std::future::Future<Output = redis::RedisResult<T>>,
    ) -> Result<T, Unreachable> {
        let limit = timeout_for(commands);
        match tokio::time::timeout(limit, work).await {
            Ok(answered) => self.noted(answered),
            Err(_) => Err(Unreachable(format!(
                "Redis did not answer {commands} commands within {} ms",
                limit.as_millis()
            ))),
        }
    }

    fn noted<T>(&self, result: redis::RedisResult<T>) -> Result<T, Unreachable> {
        match result {
            Ok(value) => {
                if !self.up.swap(true, Ordering::Relaxed) {
                    tracing::info!("Redis is back: shared state is used again");
                }
                Ok(value)
            }
            // An error Redis itself answered (a script's, a type's) means it is there, and a
            // slow answer is that operation's alone.
            Err(e) if !(e.is_io_error() || e.is_connection_refusal() || e.is_connection_dropped()) => {
                Err(Unreachable(format!("Redis refused an operation: {e}")))
            }
            Err(e) => {
                self.away(&e.to_string());
                Err(Unreachable(e.to_string()))
            }
        }
    }
}

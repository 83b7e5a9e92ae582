//! What the replicas of one service share through Redis, so that together they behave as
//! one: the per-minute call budget ([`rate`]), the facts fetched and leases on calls
//! ([`facts`]), the OAuth nonces of drop-in clients ([`nonces`]) and the month's handle
//! ledger ([`ledger`]). Every key starts with the deployment's prefix, so several
//! deployments can share one Redis.
//!
//! Redis may be away. Every operation says so ([`Unreachable`]) instead of waiting for it,
//! and [`Redis::is_up`] tells what the last operation or probe found. [`sharing`] implements
//! the engine's ports on them, with what to do meanwhile (`redis.on_failure`: a local
//! share, or refusing).

pub mod facts;
pub mod ledger;
pub mod nonces;
pub mod rate;
pub mod sharing;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};

pub use engine::ports::Unreachable;
pub use sharing::Sharing;

/// How long one operation, or one attempt to connect, may take before Redis counts as away.
const TIMEOUT: Duration = Duration::from_millis(500);

/// A Redis shared by the replicas, under a key prefix.
pub struct Redis {
    connection: ConnectionManager,
    prefix: String,
    up: AtomicBool,
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
            .set_response_timeout(Some(TIMEOUT))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_millis(200));
        let connection = ConnectionManager::new_lazy_with_config(client, config)
            .map_err(|e| BadUrl(format!("{:?}", e.kind())))?;
        Ok(Arc::new(Redis { connection, prefix: prefix.to_string(), up: AtomicBool::new(true) }))
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
        let pong: redis::RedisResult<String> = redis::cmd("PING").query_async(&mut connection).await;
        let up = self.noted(pong).is_ok();
        (up, !was_up)
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
        self.noted(cmd.query_async(&mut connection).await)
    }

    /// Runs `pipe`, noting whether Redis answered.
    async fn run_all<T: redis::FromRedisValue>(&self, pipe: &redis::Pipeline) -> Result<T, Unreachable> {
        let mut connection = self.connection()?;
        self.noted(pipe.query_async(&mut connection).await)
    }

    /// Runs `script`, noting whether Redis answered.
    async fn invoke<T: redis::FromRedisValue>(
        &self,
        script: &redis::ScriptInvocation<'_>,
    ) -> Result<T, Unreachable> {
        let mut connection = self.connection()?;
        self.noted(script.invoke_async(&mut connection).await)
    }

    fn noted<T>(&self, result: redis::RedisResult<T>) -> Result<T, Unreachable> {
        match result {
            Ok(value) => {
                if !self.up.swap(true, Ordering::Relaxed) {
                    tracing::info!("Redis is back: shared state is used again");
                }
                Ok(value)
            }
            // An error Redis itself answered (a script's, a type's) means it is there.
            Err(e)
                if !(e.is_io_error()
                    || e.is_timeout()
                    || e.is_connection_refusal()
                    || e.is_connection_dropped()) =>
            {
                Err(Unreachable(format!("Redis refused an operation: {e}")))
            }
            Err(e) => {
                if self.up.swap(false, Ordering::Relaxed) {
                    tracing::warn!(error = %e, "Redis cannot be reached: falling back as redis.on_failure says");
                }
                Err(Unreachable(e.to_string()))
            }
        }
    }
}

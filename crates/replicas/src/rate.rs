//! The per-minute call budget of every replica together: one GCRA limiter in Redis, on
//! Redis's own clock (`TIME`), so replicas whose clocks differ still share one rate; and
//! the pause the upstream asked for (a `429`, or the minute spent), which holds every
//! replica's calls.

use std::sync::Arc;
use std::time::Duration;

use engine::ports::{BoxFuture, SharedRate, Unreachable};

use crate::Redis;

/// Takes a call, or says how long (in microseconds) until one is free. KEYS: the limiter's
/// theoretical arrival time, the pause's end (both microseconds on Redis's clock). ARGV: the
/// interval between calls and the burst's tolerance, in microseconds (interval 0: no rate).
const TAKE: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local pause = tonumber(redis.call('GET', KEYS[2]) or '0')
if pause > now then return pause - now end
local interval = tonumber(ARGV[1])
if interval == 0 then return 0 end
local tolerance = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat < now then tat = now end
if now < tat - tolerance then return tat - tolerance - now end
local next = tat + interval
redis.call('SET', KEYS[1], string.format('%.0f', next), 'PX', math.ceil((next - now) / 1000) + 1000)
return 0
";

/// Holds every replica's calls until ARGV[1] microseconds from now, unless a longer pause
/// holds them already.
const PAUSE: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local until_ = now + tonumber(ARGV[1])
local current = tonumber(redis.call('GET', KEYS[1]) or '0')
if until_ > current then
  redis.call('SET', KEYS[1], string.format('%.0f', until_), 'PX', math.ceil(tonumber(ARGV[1]) / 1000) + 1000)
end
return 0
";

/// The budget every replica of the deployment paces its calls by (or one client's cap).
#[derive(Debug)]
pub struct RedisRate {
    redis: Arc<Redis>,
    take: redis::Script,
    pause: redis::Script,
    /// The limiter's and the pause's keys.
    keys: (String, String),
}

impl RedisRate {
    /// The deployment's budget.
    pub fn new(redis: Arc<Redis>) -> Arc<RedisRate> {
        RedisRate::keyed(redis, "rate:tat", "rate:pause")
    }

    /// The per-minute cap of `client` across every replica.
    pub fn of_client(redis: Arc<Redis>, client: &str) -> Arc<RedisRate> {
        RedisRate::keyed(redis, &format!("rate:client:{client}:tat"), &format!("rate:client:{client}:pause"))
    }

    fn keyed(redis: Arc<Redis>, tat: &str, pause: &str) -> Arc<RedisRate> {
        let keys = (redis.key(tat), redis.key(pause));
        Arc::new(RedisRate { redis, take: redis::Script::new(TAKE), pause: redis::Script::new(PAUSE), keys })
    }
}

impl SharedRate for RedisRate {
    fn take(&self, per_minute: u32, burst: u32) -> BoxFuture<'static, Result<Duration, Unreachable>> {
        let (redis, script) = (Arc::clone(&self.redis), self.take.clone());
        let (tat, pause) = self.keys.clone();
        Box::pin(async move {
            let interval = if per_minute == 0 { 0 } else { 60_000_000 / u64::from(per_minute) };
            let tolerance = interval * u64::from(burst.max(1) - 1);
            let mut call = script.key(&tat);
            call.key(&pause).arg(interval).arg(tolerance);
            let wait: i64 = redis.invoke(&call).await?;
            Ok(Duration::from_micros(wait.max(0) as u64))
        })
    }

    fn pause(&self, wait: Duration) -> BoxFuture<'static, Result<(), Unreachable>> {
        let (redis, script) = (Arc::clone(&self.redis), self.pause.clone());
        let key = self.keys.1.clone();
        Box::pin(async move {
            let mut call = script.key(&key);
            call.arg(wait.as_micros() as u64);
            redis.invoke::<i64>(&call).await.map(|_| ())
        })
    }
}

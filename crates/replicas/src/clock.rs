//! The time of day every replica judges facts by, read from Redis: what is settled, what is
//! still fresh, which month a handle is counted in. Replicas on machines whose clocks
//! disagree would otherwise settle the same hour at different times and count a handle
//! in two months. Redis's `TIME` is read at each probe; between readings, and while Redis
//! is away, this machine's clock carries on, corrected by the last difference seen.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use chrono::{DateTime, TimeDelta, Utc};
use engine::ports::{Clock, Unreachable};

use crate::Redis;

/// A difference from Redis's clock this large is logged when it is first found.
const SKEW_LOGGED: TimeDelta = TimeDelta::seconds(1);

/// The time of day on Redis's clock.
#[derive(Debug)]
pub struct RedisClock {
    /// The clock the service was given (tests move it ahead); Redis's correction is added.
    given: Arc<dyn Clock>,
    /// This machine's own clock, which the correction is measured against.
    machine: Arc<dyn Clock>,
    /// Redis's clock minus this machine's, in microseconds, as last read.
    ahead_us: AtomicI64,
}

impl RedisClock {
    /// `given`'s time, corrected by how far Redis's clock is from `machine`'s.
    pub fn new(given: Arc<dyn Clock>, machine: Arc<dyn Clock>) -> RedisClock {
        RedisClock { given, machine, ahead_us: AtomicI64::new(0) }
    }

    /// Reads Redis's clock and keeps the correction; until the next reading, the last one
    /// holds.
    pub async fn read(&self, redis: &Redis) -> Result<(), Unreachable> {
        let asked = self.machine.now();
        let (secs, micros): (i64, i64) = redis.run(&redis::cmd("TIME")).await?;
        let answered = self.machine.now();
        let Some(theirs) = DateTime::from_timestamp(secs, 0)
            .and_then(|t| t.checked_add_signed(TimeDelta::microseconds(micros)))
        else {
            return Err(Unreachable(format!("Redis's TIME said {secs} s {micros} µs, which is no time")));
        };
        // Redis read its clock about halfway through the round trip.
        let ours = asked + (answered - asked) / 2;
        let ahead = theirs - ours;
        let before = TimeDelta::microseconds(self.ahead_us.load(Ordering::Relaxed));
        if ahead.abs() >= SKEW_LOGGED && before.abs() < SKEW_LOGGED {
            tracing::warn!(
                seconds = ahead.num_milliseconds() as f64 / 1000.0,
                "this machine's clock is off from Redis's: time is judged by Redis's"
            );
        }
        self.ahead_us.store(ahead.num_microseconds().unwrap_or(0), Ordering::Relaxed);
        Ok(())
    }
}

impl Clock for RedisClock {
    fn now(&self) -> DateTime<Utc> {
        let ahead = TimeDelta::microseconds(self.ahead_us.load(Ordering::Relaxed));
        let given = self.given.now();
        given.checked_add_signed(ahead).unwrap_or(given)
    }
}

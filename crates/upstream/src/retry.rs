//! Retries of transient failures: exponential backoff with full jitter, the upstream's own
//! wait when it gives one, and never past the request's deadline.

use std::future::Future;
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};
use tokio::time::Instant;

use crate::classify::AttemptError;

/// How often and how patiently to retry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in all, the first included.
    pub max_attempts: u32,
    /// The backoff ceiling before the first retry; it doubles each time.
    pub base_delay: Duration,
    /// No backoff waits longer than this.
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 6,
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(10),
        }
    }
}

impl RetryPolicy {
    /// The backoff ceilings between attempts: base, 2×base, 4×base ... up to `max_delay`.
    pub fn ceilings(&self) -> impl Iterator<Item = Duration> {
        ExponentialBuilder::default()
            .with_min_delay(self.base_delay)
            .with_max_delay(self.max_delay)
            .with_factor(2.0)
            .with_max_times(self.max_attempts.saturating_sub(1) as usize)
            .build()
    }

    /// The wait before the next attempt: the upstream's `retry_after` if it gave one,
    /// else a uniform draw in `[0, ceiling)` ("full jitter", which spreads the retries of
    /// many callers that failed together).
    pub fn wait(ceiling: Duration, retry_after: Option<Duration>, draw: f64) -> Duration {
        match retry_after {
            Some(wait) => wait,
            None => ceiling.mul_f64(draw.clamp(0.0, 1.0)),
        }
    }
}

/// What retrying gave: the outcome of the last attempt and how many attempts were made.
#[derive(Debug)]
pub struct Retried<T> {
    pub result: Result<T, AttemptError>,
    pub attempts: u32,
}

/// Runs `attempt` until it succeeds, fails for good, runs out of attempts, or the next
/// wait would pass `deadline`.
pub async fn retry<T, F, Fut>(policy: &RetryPolicy, deadline: Instant, mut attempt: F) -> Retried<T>
where
    F: FnMut(u32) -> Fut,
    Fut: Future<Output = Result<T, AttemptError>>,
{
    let mut ceilings = policy.ceilings();
    let mut attempts = 0;
    loop {
        attempts += 1;
        let result = attempt(attempts).await;
        let retry_after = match &result {
            Err(AttemptError::Transient { retry_after, .. }) => *retry_after,
            Err(AttemptError::Unreachable { .. }) => None,
            _ => return Retried { result, attempts },
        };
        let Some(ceiling) = ceilings.next() else {
            return Retried { result, attempts };
        };
        let wait = RetryPolicy::wait(ceiling, retry_after, fastrand::f64());
        if Instant::now() + wait >= deadline {
            // The deadline, not the retries, ran out.
            let last = result.err().map(|e| e.to_string());
            return Retried { result: Err(AttemptError::Deadline { last }), attempts };
        }
        tracing::debug!(attempt = attempts, wait_ms = wait.as_millis() as u64, error = %result.as_ref().err().map(ToString::to_string).unwrap_or_default(), "retrying upstream call");
        tokio::time::sleep(wait).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    fn transient(retry_after: Option<Duration>) -> AttemptError {
        AttemptError::Transient { reason: "503".into(), status: Some(503), retry_after }
    }

    #[test]
    fn ceilings_double_up_to_the_maximum_and_stop() {
        let p = RetryPolicy {
            max_attempts: 6,
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_millis(500),
        };
        let c: Vec<u128> = p.ceilings().map(|d| d.as_millis()).collect();
        assert_eq!(c, [100, 200, 400, 500, 500]);
    }

    #[test]
    fn full_jitter_stays_under_the_ceiling_and_retry_after_wins() {
        let ceiling = Duration::from_millis(800);
        assert_eq!(RetryPolicy::wait(ceiling, None, 0.0), Duration::ZERO);
        assert_eq!(RetryPolicy::wait(ceiling, None, 0.5), Duration::from_millis(400));
        assert_eq!(RetryPolicy::wait(ceiling, Some(Duration::from_secs(3)), 0.5), Duration::from_secs(3));
    }

    #[tokio::test(start_paused = true)]
    async fn transient_failures_are_retried_until_success() {
        let calls = AtomicU32::new(0);
        let r = retry(&RetryPolicy::default(), Instant::now() + Duration::from_secs(60), |_| async {
            if calls.fetch_add(1, Ordering::SeqCst) < 2 { Err(transient(None)) } else { Ok(7) }
        })
        .await;
        assert_eq!((r.result, r.attempts), (Ok(7), 3));
    }

    #[tokio::test(start_paused = true)]
    async fn refusals_are_not_retried_and_attempts_are_capped() {
        let r: Retried<()> =
            retry(&RetryPolicy::default(), Instant::now() + Duration::from_secs(600), |_| async {
                Err(AttemptError::Refused { status: 403, errors: vec![] })
            })
            .await;
        assert_eq!(r.attempts, 1);
        let r: Retried<()> = retry(
            &RetryPolicy { max_attempts: 4, ..RetryPolicy::default() },
            Instant::now() + Duration::from_secs(600),
            |_| async { Err(transient(None)) },
        )
        .await;
        assert_eq!(r.attempts, 4);
    }

    #[tokio::test(start_paused = true)]
    async fn a_wait_past_the_deadline_ends_the_retries() {
        let start = Instant::now();
        let r: Retried<()> = retry(&RetryPolicy::default(), start + Duration::from_secs(5), |_| async {
            Err(transient(Some(Duration::from_secs(30))))
        })
        .await;
        assert_eq!(r.attempts, 1);
        assert_eq!(r.result, Err(AttemptError::Deadline { last: Some("503".into()) }));
        assert!(Instant::now() - start < Duration::from_secs(1));
    }
}

//! How far a question has come, for whoever watches it (a job's status and event stream,
//! the CLI's bar). Slices are counted as the answer's `meta` counts them, so the last
//! progress and the result agree; the time left is learned from the question's own pace.

use std::sync::atomic::{AtomicU8, AtomicU32, AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use serde::Serialize;
use stitch::Plan;
use tokio::sync::watch;
use tokio::time::Instant;
use upstream::CallPolicy;

/// How far a question has come; shared with whoever watches it. Every change wakes the
/// watchers.
#[derive(Debug)]
pub struct Progress {
    slices_total: AtomicUsize,
    slices_done: AtomicUsize,
    slices_synthesized: AtomicUsize,
    slices_from_store: AtomicUsize,
    upstream_calls: AtomicU32,
    retries: AtomicU32,
    /// The spans of time some call of the question waited for the budget.
    waits: Mutex<Waits>,
    /// Calls the question set out to make, and those finished (answered or failed).
    calls_planned: AtomicUsize,
    calls_finished: AtomicUsize,
    /// When its first call was planned: the start of its pace.
    fetching_since: OnceLock<Instant>,
    stage: AtomicU8,
    changed: watch::Sender<()>,
}

/// What a question is doing.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum Stage {
    /// Reading what the store holds and planning its calls.
    #[default]
    Planning,
    /// Making its calls.
    Fetching,
    /// Its calls are done: the answer (and what is derived from it) is being made.
    Answering,
}

/// A moment's copy of [`Progress`].
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ProgressSnapshot {
    /// The plan's slices (batches of 25 Tweets × 28-day grid cells), as `meta.slices_planned`.
    pub slices_total: usize,
    /// Slices fetched so far (`meta.slices_fetched` once done).
    pub slices_done: usize,
    /// Slices before the Tweets existed, rendered as zeros without a call.
    pub slices_synthesized: usize,
    /// Slices whose every hour the store held, so no call was made for them.
    pub slices_from_store: usize,
    pub upstream_calls: u32,
    pub retries: u32,
    /// Time during which some call of the question waited for the per-minute budget, in
    /// milliseconds (calls waiting together count once).
    pub budget_wait_ms: u64,
    pub stage: Stage,
}

impl Default for Progress {
    fn default() -> Self {
        Progress {
            slices_total: AtomicUsize::new(0),
            slices_done: AtomicUsize::new(0),
            slices_synthesized: AtomicUsize::new(0),
            slices_from_store: AtomicUsize::new(0),
            upstream_calls: AtomicU32::new(0),
            retries: AtomicU32::new(0),
            waits: Mutex::new(Waits::default()),
            calls_planned: AtomicUsize::new(0),
            calls_finished: AtomicUsize::new(0),
            fetching_since: OnceLock::new(),
            stage: AtomicU8::new(Stage::Planning as u8),
            changed: watch::Sender::new(()),
        }
    }
}

impl Progress {
    /// The counts now.
    pub fn snapshot(&self) -> ProgressSnapshot {
        ProgressSnapshot {
            slices_total: self.slices_total.load(Ordering::Relaxed),
            slices_done: self.slices_done.load(Ordering::Relaxed),
            slices_synthesized: self.slices_synthesized.load(Ordering::Relaxed),
            slices_from_store: self.slices_from_store.load(Ordering::Relaxed),
            upstream_calls: self.upstream_calls.load(Ordering::Relaxed),
            retries: self.retries.load(Ordering::Relaxed),
            budget_wait_ms: self.lock_waits().total.as_millis() as u64,
            stage: match self.stage.load(Ordering::Relaxed) {
                0 => Stage::Planning,
                1 => Stage::Fetching,
                _ => Stage::Answering,
            },
        }
    }

    /// Wakes on every change.
    pub fn subscribe(&self) -> watch::Receiver<()> {
        self.changed.subscribe()
    }

    /// Tells the watchers something changed (also when the question's state does).
    pub fn wake_watchers(&self) {
        self.changed.send_replace(());
    }

    /// The time left: from the question's own pace once calls have finished (the time
    /// since its first call per call finished, times the calls left), else from `policy`'s
    /// per-minute budget. `None` while nothing is planned or nothing can be said.
    pub fn eta(&self, policy: &CallPolicy) -> Option<Duration> {
        let planned = self.calls_planned.load(Ordering::Relaxed);
        let finished = self.calls_finished.load(Ordering::Relaxed).min(planned);
        let left = planned - finished;
        if left == 0 {
            return None;
        }
        match self.fetching_since.get() {
            Some(since) if finished > 0 => {
                let per_call = since.elapsed().as_secs_f64() / finished as f64;
                Some(Duration::from_secs_f64(per_call * left as f64))
            }
            _ => policy.eta(left),
        }
    }

    /// Sets out `plan`: its slices, those synthesized and those the store holds.
    pub(crate) fn planned(&self, plan: &Plan, from_store: usize) {
        self.slices_total.store(plan.planned(), Ordering::Relaxed);
        self.slices_synthesized.store(plan.synthesized_slices(), Ordering::Relaxed);
        self.slices_from_store.store(from_store, Ordering::Relaxed);
        self.wake_watchers();
    }

    /// `calls` more calls are to be made.
    pub(crate) fn calls_ahead(&self, calls: usize) {
        if calls > 0 {
            self.fetching_since.get_or_init(Instant::now);
            self.calls_planned.fetch_add(calls, Ordering::Relaxed);
            self.stage.store(Stage::Fetching as u8, Ordering::Relaxed);
            self.wake_watchers();
        }
    }

    /// The calls are done; the answer is being made.
    pub(crate) fn answering(&self) {
        self.stage.store(Stage::Answering as u8, Ordering::Relaxed);
        self.wake_watchers();
    }

    /// A call finished, answered or not; `slices` more slices are fetched whole by it.
    pub(crate) fn call_finished(&self, slices: usize) {
        self.calls_finished.fetch_add(1, Ordering::Relaxed);
        self.slices_done.fetch_add(slices, Ordering::Relaxed);
        self.wake_watchers();
    }

    /// The slices fetched, as the answer's `meta` counts them once it is made.
    pub(crate) fn fetched(&self, slices: usize) {
        self.slices_done.store(slices, Ordering::Relaxed);
        self.wake_watchers();
    }

    /// One attempt of a call ended: a retry if not the first, after waiting for the budget
    /// and for the upstream.
    pub(crate) fn attempt(&self, attempt: upstream::Attempt) {
        let upstream::Attempt { number, waited, took } = attempt;
        let retry = number > 1;
        self.upstream_calls.fetch_add(1, Ordering::Relaxed);
        if retry {
            self.retries.fetch_add(1, Ordering::Relaxed);
        }
        if !waited.is_zero() {
            let now = Instant::now();
            let until = now.checked_sub(took).unwrap_or(now);
            let from = until.checked_sub(waited).unwrap_or(until);
            self.lock_waits().add(from, until);
        }
        self.wake_watchers();
    }

    fn lock_waits(&self) -> std::sync::MutexGuard<'_, Waits> {
        self.waits.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Spans of time, counted once however many overlap.
#[derive(Debug, Default)]
struct Waits {
    /// Disjoint spans, by start; those that can no longer grow are folded into `total`.
    open: Vec<(Instant, Instant)>,
    total: Duration,
}

impl Waits {
    /// Spans kept apart at most: older ones are folded into the total (a wait that began
    /// before them all is rare, and then counted in full).
    const KEPT: usize = 64;

    fn add(&mut self, from: Instant, until: Instant) {
        let mut span = (from, until);
        let mut kept = Vec::with_capacity(self.open.len() + 1);
        for &(s, e) in &self.open {
            if e < span.0 || span.1 < s {
                kept.push((s, e));
            } else {
                // Overlapping: the span grows to hold both; what was counted is taken back.
                self.total -= e - s;
                span = (span.0.min(s), span.1.max(e));
            }
        }
        self.total += span.1 - span.0;
        kept.push(span);
        kept.sort_unstable_by_key(|(s, _)| *s);
        if kept.len() > Self::KEPT {
            kept.drain(..kept.len() - Self::KEPT);
        }
        self.open = kept;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_that_overlap_count_once() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let mut waits = Waits::default();
        waits.add(at(0), at(100));
        waits.add(at(50), at(150));
        waits.add(at(20), at(30));
        assert_eq!(waits.total, Duration::from_millis(150));
        waits.add(at(200), at(300));
        assert_eq!(waits.total, Duration::from_millis(250));
        waits.add(at(140), at(210));
        assert_eq!(waits.total, Duration::from_millis(300), "the gap between them is filled");
        assert_eq!(waits.open.len(), 1);
    }
}

//! The one executor every question's calls go through, whatever the question: checked
//! against the per-minute budget, the handle counted in the month's ledger (before the
//! first call, and by each call, so a question that runs into a new month counts there),
//! a lane among the calls in flight, each call made and collected (a question that fails
//! still judging every batch, [`super::in_flight`]), and what the calls took counted for
//! `meta`.

use std::future::Future;
use std::sync::Arc;

use stitch::{Plan, Slice};
use upstream::{AttemptError, Lane};

use crate::error::EngineError;
use crate::failure::refusal;
use crate::in_flight::{InFlight, Told, collect};
use crate::needs::Need;
use crate::{Ask, Engine};

/// One call of a question: what it asks for, and the slice of the plan it is about.
pub(crate) trait Call: Copy + Send + 'static {
    fn slice(&self) -> Slice;
}

impl Call for Slice {
    fn slice(&self) -> Slice {
        *self
    }
}

impl Call for Need {
    fn slice(&self) -> Slice {
        self.slice
    }
}

/// How one call ended, as the executor hears it: what it brought or why not, the attempts
/// it took, and whether another question made it.
#[derive(Debug)]
pub(crate) struct Ended<C, T> {
    pub call: C,
    pub result: Result<T, AttemptError>,
    pub attempts: u32,
    pub joined: bool,
}

/// What a question's calls took, and the slices that could not be had.
#[derive(Debug, Default)]
pub(crate) struct Made {
    pub failed: Vec<(Slice, AttemptError, u32)>,
    /// Attempts of the calls this question made, and those calls.
    pub attempts: u32,
    pub made: u32,
    /// Calls another question made, which this one shared.
    pub joined: u32,
}

impl Made {
    /// The attempts beyond each call's first.
    pub(crate) fn retries(&self) -> u32 {
        self.attempts.saturating_sub(self.made)
    }

    /// Adds what another round of calls took.
    pub(crate) fn add(&mut self, other: Made) {
        self.failed.extend(other.failed);
        self.attempts += other.attempts;
        self.made += other.made;
        self.joined += other.joined;
    }
}

/// A round of calls of one question over `plan`.
#[derive(Clone, Copy)]
pub(crate) struct Round<'a> {
    pub ask: &'a Ask,
    pub plan: &'a Plan,
    /// Slices that fail are listed rather than failing the question.
    pub partial: bool,
    /// The calls are first checked against the per-minute budget (calls that only judge a
    /// question failing anyway are not: they wait their turn within its deadline).
    pub checked: bool,
}

impl Engine {
    /// Makes `calls` for `round`'s question: each started by `start` on the question's
    /// lane, and each one that brings something handed to `each`, which says how many of
    /// the plan's slices it completes. The slices that could not be had are returned with
    /// the attempts made; a cut-off (the question stopped) is the question's error.
    pub(crate) async fn execute<C, T, Fut>(
        self: &Arc<Self>,
        round: Round<'_>,
        calls: &[C],
        start: impl Fn(C, Arc<Lane>) -> Fut,
        mut each: impl FnMut(C, T) -> Result<usize, EngineError>,
    ) -> Result<Made, EngineError>
    where
        C: Call,
        T: Send + 'static,
        Fut: Future<Output = Ended<C, T>> + Send + 'static,
    {
        let Round { ask, plan, partial, checked } = round;
        let mut made = Made::default();
        if calls.is_empty() {
            return Ok(made);
        }
        if checked && !ask.idle {
            self.calls.check_for(&ask.client, calls.len(), ask.deadline).map_err(refusal)?;
        }
        self.admit_handle(&ask.handle.handle, true).await?;
        ask.progress.calls_ahead(calls.len());
        let lane = if ask.idle {
            self.calls.idle_lane_of(&ask.client)
        } else {
            self.calls.lane_of(&ask.client, calls.len(), ask.deadline)
        };
        let lane = Arc::new(lane);
        let mut tasks = InFlight::new();
        for &call in calls {
            let calling = start(call, Arc::clone(&lane));
            let (engine, handle) = (Arc::clone(self), ask.handle.handle.clone());
            tasks.spawn(call.slice().batch, async move {
                if let Err(e) = engine.admit_handle(&handle, false).await {
                    let reason = format!("the handle ledger could not be written: {e}");
                    let result = Err(AttemptError::Transient { reason, status: None, retry_after: None });
                    return Ended { call, result, attempts: 0, joined: false };
                }
                calling.await
            });
        }
        let expected: Vec<Slice> = calls.iter().map(Call::slice).collect();
        let progress = &ask.progress;
        let cut_off = collect(&mut tasks, plan, &expected, (ask.deadline, partial), &ask.cancel, |ended| {
            let Ended { call, result, attempts, joined } = ended;
            if joined {
                made.joined += 1;
            } else {
                made.attempts += attempts;
                made.made += 1;
            }
            let told = Told::of(&result);
            match result {
                Ok(brought) => progress.call_finished(each(call, brought)?),
                Err(error) => {
                    progress.call_finished(0);
                    made.failed.push((call.slice(), error, attempts));
                }
            }
            Ok((call.slice(), told))
        })
        .await?;
        made.failed.extend(cut_off);
        Ok(made)
    }
}

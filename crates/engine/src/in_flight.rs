//! A question's calls in flight, and collecting them. A question that cannot be answered
//! any more (a batch refused, or a call failed for good, without `"partial": true`) still
//! learns what each of its batches would be told, because one unlimited call would have been
//! judged on all of its Tweets: the refusal it gets must not depend on which call failed
//! first. Calls of batches already judged are dropped then, so no budget is spent on them.

use std::collections::{HashMap, HashSet};

use stitch::{Plan, Slice};
use tokio::task::{AbortHandle, JoinSet};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use upstream::AttemptError;

use crate::error::EngineError;
use crate::failure::failed_slice;

/// What one finished call told of its batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Told {
    /// It was answered: the batch's Tweets are judged, and none is refused.
    Answered,
    /// It was refused for the batch's Tweets (`400`, `403`): the batch is judged, and the
    /// question fails unless it is partial.
    Refused,
    /// It failed otherwise (retries, budget, deadline): the batch is not judged by it, and
    /// the question fails unless it is partial.
    Failed,
    /// No connection to the upstream could be made: no other call will learn more.
    Unreachable,
}

impl Told {
    /// What the outcome of a call tells.
    pub(crate) fn of<T>(result: &Result<T, AttemptError>) -> Told {
        match result {
            Ok(_) => Told::Answered,
            Err(AttemptError::Refused { status: 400 | 403, .. }) => Told::Refused,
            Err(AttemptError::Unreachable { .. }) => Told::Unreachable,
            Err(_) => Told::Failed,
        }
    }
}

/// A question's calls in flight, each for one batch of its plan.
pub(crate) struct InFlight<T> {
    tasks: JoinSet<T>,
    by_batch: HashMap<usize, Vec<AbortHandle>>,
}

impl<T: Send + 'static> InFlight<T> {
    pub(crate) fn new() -> InFlight<T> {
        InFlight { tasks: JoinSet::new(), by_batch: HashMap::new() }
    }

    /// Runs `call`, a call for `batch`.
    pub(crate) fn spawn(&mut self, batch: usize, call: impl Future<Output = T> + Send + 'static) {
        // The call's spans and logs are the question's, whichever task runs it.
        let handle = self.tasks.spawn(tracing::Instrument::in_current_span(call));
        self.by_batch.entry(batch).or_default().push(handle);
    }
}

impl<T> InFlight<T> {
    /// Drops the calls still running for `batch`.
    fn abort_batch(&mut self, batch: usize) {
        for handle in self.by_batch.remove(&batch).unwrap_or_default() {
            handle.abort();
        }
    }
}

/// Where collecting stands: which batches are still waited for, and whether the question
/// can still be answered.
struct Judging {
    /// Batches of `expected` none of whose calls has ended yet.
    open: HashSet<usize>,
    doomed: bool,
}

impl Judging {
    /// Takes in that a call for `batch` ended, telling `told`, in a question that is not
    /// partial; whether to stop waiting.
    fn ended(&mut self, batch: usize, told: Told) -> bool {
        // A batch is judged by a call answered or refused; one whose call failed for good is
        // given up (its other calls would mostly add retries).
        self.open.remove(&batch);
        if told == Told::Unreachable {
            self.open.clear();
        }
        self.doomed |= told != Told::Answered;
        self.doomed && self.open.is_empty()
    }
}

/// Waits for a question's calls, handing each finished one to `each`, which says which
/// slice it was and what it told. Without `partial`, a refusal or a failure dooms the
/// question: from then on only the batches none of whose calls has ended are waited for,
/// and the calls of the others are dropped; an upstream that cannot be reached stops it at
/// once. Stops early at the deadline (the slices of `expected` not finished are returned as
/// failed by it) or when `cancel` fires (the question is cut off, naming them). Calls still
/// running at the end are dropped.
pub(crate) async fn collect<T: 'static>(
    calls: &mut InFlight<T>,
    plan: &Plan,
    expected: &[Slice],
    (deadline, partial): (Instant, bool),
    cancel: &CancellationToken,
    mut each: impl FnMut(T) -> Result<(Slice, Told), EngineError>,
) -> Result<Vec<(Slice, AttemptError, u32)>, EngineError> {
    let mut done = HashSet::with_capacity(expected.len());
    let mut judging = Judging { open: expected.iter().map(|s| s.batch).collect(), doomed: false };
    let collecting = tokio::time::timeout_at(deadline, async {
        while let Some(joined) = calls.tasks.join_next().await {
            let finished = match joined {
                Ok(finished) => finished,
                Err(e) if e.is_cancelled() => continue,
                Err(e) => return Err(EngineError::internal("a call's task failed", Some(Box::new(e)))),
            };
            let (slice, told) = each(finished)?;
            done.insert(slice);
            if partial {
                continue;
            }
            if judging.ended(slice.batch, told) {
                break;
            }
            if judging.doomed {
                let settled: Vec<usize> =
                    calls.by_batch.keys().copied().filter(|b| !judging.open.contains(b)).collect();
                for batch in settled {
                    calls.abort_batch(batch);
                }
            }
        }
        Ok::<(), EngineError>(())
    });
    let stopped = tokio::select! {
        collected = collecting => match collected {
            Ok(collected) => { collected?; None }
            Err(_) => Some(false),
        },
        () = cancel.cancelled() => Some(true),
    };
    calls.tasks.abort_all();
    // The calls dropped for batches already settled are no failures of their own.
    let dropped = |s: &Slice| judging.doomed && !judging.open.contains(&s.batch);
    let not_done = expected.iter().filter(|s| !done.contains(*s) && !dropped(s)).copied();
    match stopped {
        None => Ok(Vec::new()),
        Some(false) => Ok(not_done.map(|s| (s, AttemptError::Deadline { last: None }, 0)).collect()),
        Some(true) => Err(EngineError::CutOff {
            failed: not_done
                .map(|s| failed_slice(plan, s, vec!["not fetched: the question was stopped".into()], None, 0))
                .collect(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn judging(batches: &[usize]) -> Judging {
        Judging { open: batches.iter().copied().collect(), doomed: false }
    }

    #[test]
    fn a_doomed_question_waits_only_for_the_batches_not_yet_judged() {
        let mut j = judging(&[0, 1, 2]);
        assert!(!j.ended(0, Told::Answered) && !j.doomed, "answered: nothing to stop for");
        assert!(!j.ended(1, Told::Refused) && j.doomed, "refused: batch 2 is still to be judged");
        assert!(j.ended(2, Told::Answered), "every batch judged");

        let mut j = judging(&[0, 1, 2]);
        assert!(!j.ended(0, Told::Failed) && j.doomed, "a failure gives its batch up, not the others");
        assert!(!j.ended(0, Told::Answered));
        assert!(!j.ended(1, Told::Failed));
        assert!(j.ended(2, Told::Refused));

        let mut j = judging(&[0, 1, 2]);
        assert!(j.ended(1, Told::Unreachable), "no call would connect: nothing more to learn");
    }
}

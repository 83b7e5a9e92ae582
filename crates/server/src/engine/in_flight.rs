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

use super::failure::failed_slice;
use crate::error::ServiceError;

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
}

impl Told {
    /// What the outcome of a call tells.
    pub(crate) fn of<T>(result: &Result<T, AttemptError>) -> Told {
        match result {
            Ok(_) => Told::Answered,
            Err(AttemptError::Refused { status: 400 | 403, .. }) => Told::Refused,
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
        let handle = self.tasks.spawn(call);
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

/// Where collecting stands: which batches are judged, and whether the question can still
/// be answered.
struct Judging {
    /// Batches of `expected` not yet judged.
    open: HashSet<usize>,
    doomed: bool,
}

/// Waits for a question's calls, handing each finished one to `each`, which says which
/// slice it was and what it told. Without `partial`, a refusal or a failure dooms the
/// question: from then on only the batches not yet judged are waited for, and the calls of
/// the others are dropped. Stops early at the deadline (the slices of `expected` not
/// finished are returned as failed by it) or when `cancel` fires (the question is cut off,
/// naming them). Calls still running at the end are dropped.
pub(crate) async fn collect<T: 'static>(
    calls: &mut InFlight<T>,
    plan: &Plan,
    expected: &[Slice],
    (deadline, partial): (Instant, bool),
    cancel: &CancellationToken,
    mut each: impl FnMut(T) -> Result<(Slice, Told), ServiceError>,
) -> Result<Vec<(Slice, AttemptError, u32)>, ServiceError> {
    let mut done = HashSet::with_capacity(expected.len());
    let mut judging = Judging { open: expected.iter().map(|s| s.batch).collect(), doomed: false };
    let collecting = tokio::time::timeout_at(deadline, async {
        while let Some(joined) = calls.tasks.join_next().await {
            let finished = match joined {
                Ok(finished) => finished,
                Err(e) if e.is_cancelled() => continue,
                Err(e) => return Err(ServiceError::internal("a call's task failed", Some(Box::new(e)))),
            };
            let (slice, told) = each(finished)?;
            done.insert(slice);
            if told != Told::Failed && judging.open.remove(&slice.batch) && judging.doomed {
                calls.abort_batch(slice.batch);
            }
            if told != Told::Answered && !partial && !judging.doomed {
                judging.doomed = true;
                let judged: Vec<usize> =
                    calls.by_batch.keys().copied().filter(|b| !judging.open.contains(b)).collect();
                for batch in judged {
                    calls.abort_batch(batch);
                }
            }
            if judging.doomed && judging.open.is_empty() {
                break;
            }
        }
        Ok::<(), ServiceError>(())
    });
    let stopped = tokio::select! {
        collected = collecting => match collected {
            Ok(collected) => { collected?; None }
            Err(_) => Some(false),
        },
        () = cancel.cancelled() => Some(true),
    };
    calls.tasks.abort_all();
    // The calls dropped for batches already judged are no failures of their own.
    let dropped = |s: &Slice| judging.doomed && !judging.open.contains(&s.batch);
    let not_done = expected.iter().filter(|s| !done.contains(*s) && !dropped(s)).copied();
    match stopped {
        None => Ok(Vec::new()),
        Some(false) => Ok(not_done.map(|s| (s, AttemptError::Deadline { last: None }, 0)).collect()),
        Some(true) => Err(ServiceError::CutOff {
            failed: not_done
                .map(|s| failed_slice(plan, s, vec!["not fetched: the question was stopped".into()], None, 0))
                .collect(),
        }),
    }
}

//! Answering without a store: every slice of the fixed grid is fetched with the question's
//! own types and groupings, and the answers are deep-summed as they arrive. A question the
//! API's groupings cannot answer (local days of a zone, weeks, months) has its slices asked
//! for every hour, and each answer is cut again into its groupings before it is summed.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, mpsc};

use engagement::tree::TreeError;
use engagement::{Endpoint, Response};
use stitch::{Plan, Slice, absorb, absorb_zeros, finish, rebucket};
use tokio::time::Instant;
use tracing::Instrument;
use upstream::Calling;

use crate::error::EngineError;
use crate::execute::{Ended, Round};
use crate::failure::{failed_attempt, failed_slice, failure};
use crate::{Answer, Ask, Engine, Meta, Question, TaskFailed, off_the_workers};

/// Answers merged by one blocking task as they arrive, then the synthesized zeros, so
/// merging a big question never holds up the workers that serve small ones.
struct Merger {
    to_merge: mpsc::Sender<(Slice, Response)>,
    merged: Pin<Box<dyn Future<Output = Result<Response, MergeFailed>> + Send + Sync>>,
}

/// Why the merger gave no answer.
enum MergeFailed {
    /// The answer for this slice does not add up with those before it.
    Answer(Slice, TreeError),
    /// The synthesized zeros do not fit the answers.
    Zeros(TreeError),
    Task(TaskFailed),
}

impl From<TaskFailed> for MergeFailed {
    fn from(e: TaskFailed) -> MergeFailed {
        MergeFailed::Task(e)
    }
}

impl Merger {
    fn start(plan: &Arc<Plan>, question: &Question) -> Merger {
        let (to_merge, merging) = mpsc::channel::<(Slice, Response)>();
        let (plan, query, range) = (Arc::clone(plan), question.query.clone(), question.range);
        let merged = off_the_workers("merging the answers", move || {
            let mut merged = Response::default();
            let hourly = query.needs_hours();
            for (slice, mut response) in merging {
                if hourly {
                    let (tweets, types) = (&plan.batches[slice.batch], &query.types);
                    response = rebucket(response, tweets, types, &query.groupings, slice.window, &query.zone);
                }
                absorb(&mut merged, response).map_err(|e| MergeFailed::Answer(slice, e))?;
            }
            absorb_zeros(&mut merged, &plan, &query.types, &query.groupings, &query.zone)
                .map_err(MergeFailed::Zeros)?;
            finish(&mut merged, &query.groupings, range);
            Ok(merged)
        });
        Merger { to_merge, merged: Box::pin(merged) }
    }

    /// Adds the answer for `slice`.
    fn send(&self, slice: Slice, response: Response) {
        // The merger only stops early on an error, which `finish` returns.
        let _ = self.to_merge.send((slice, response));
    }

    /// The merged answer, once every answer sent is in.
    async fn finish(self, plan: &Plan) -> Result<Response, EngineError> {
        drop(self.to_merge);
        self.merged.await.map_err(|failed| match failed {
            MergeFailed::Answer(slice, e) => EngineError::UpstreamFailed {
                failed: vec![failed_slice(
                    plan,
                    slice,
                    vec![format!("the upstream's answers do not add up: {e}")],
                    None,
                    0,
                )],
            },
            MergeFailed::Zeros(e) => {
                EngineError::internal("synthesized zeros do not fit the answers", Some(Box::new(e)))
            }
            MergeFailed::Task(e) => e.into(),
        })
    }
}

impl Engine {
    /// Answers `question` on the fixed grid, every slice fetched.
    pub(super) async fn by_grid(
        self: &Arc<Self>,
        ask: &Ask,
        question: &Question,
    ) -> Result<Answer, EngineError> {
        let started = Instant::now();
        let Question { query, range, partial, .. } = question;
        let plan = Arc::new(stitch::plan(&query.tweet_ids, *range, Endpoint::Historical.max_tweet_ids()));
        ask.progress.planned(&plan, 0);
        let merger = Merger::start(&plan, question);
        let asked =
            if query.needs_hours() { vec![stitch::hourly_grouping()] } else { query.groupings.clone() };
        let start = |slice: Slice, lane: Arc<upstream::Lane>| {
            let body = plan.slice_request(slice, &query.types, &asked);
            let (engine, ask) = (Arc::clone(self), ask.clone());
            async move {
                let calling = Calling {
                    lane: &lane,
                    endpoint: Endpoint::Historical,
                    handle: &ask.handle,
                    body: &body,
                    deadline: ask.deadline,
                };
                let retried = engine
                    .calls
                    .call(calling, |result, attempt| {
                        engine.attempted(&ask.client, result, attempt);
                        ask.progress.attempt(attempt);
                    })
                    .instrument(crate::call_span(slice.batch, Some(slice.window)))
                    .await;
                Ended { call: slice, result: retried.result, attempts: retried.attempts, joined: false }
            }
        };
        let round = Round { ask, plan: &plan, partial: *partial, checked: true };
        let mut fetched = 0;
        let calling = Instant::now();
        let made = self
            .execute(round, &plan.fetched, start, |slice, response| {
                merger.send(slice, response);
                fetched += 1;
                Ok(1)
            })
            .await?;
        ask.progress.answering();
        if !made.failed.is_empty() && !partial {
            return Err(failure(&plan, &ask.deadline.saturating_duration_since(started), made.failed));
        }
        let calling = calling.elapsed();
        let merging = Instant::now();
        let merged = merger.finish(&plan).await?;
        let took = crate::Took::of(&ask.progress, calling, merging.elapsed(), made.joined);
        let meta = Meta {
            slices_fetched: fetched,
            upstream_calls: made.attempts,
            retries: made.retries(),
            ..Meta::planned(&plan, &question.query, question.range, started)
        };
        meta.answered(&ask.handle.handle, question, made.failed.len());
        let incomplete = made
            .failed
            .iter()
            .map(|(slice, error, attempts)| failed_attempt(&plan, *slice, error, *attempts))
            .collect();
        let mut answer = Answer::stitched(Arc::new(merged), meta, incomplete, None);
        answer.reuse_until = self.reuse_until(*range, None, self.clock.now());
        answer.took = took;
        Ok(answer)
    }
}

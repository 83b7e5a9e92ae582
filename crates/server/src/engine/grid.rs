//! Answering without a store: every slice of the fixed grid is fetched with the question's
//! own types and groupings, and the answers are deep-summed.

use std::sync::atomic::Ordering;
use std::sync::{Arc, mpsc};

use engagement::tree::TreeError;
use engagement::{Endpoint, Response};
use stitch::{Slice, absorb, absorb_zeros, finish};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use upstream::{AttemptError, HandleCredentials, Retried};

use super::failure::{failed_attempt, failed_slice, failure, outcome, refusal};
use super::in_flight::{InFlight, Told, collect};
use super::{Answer, Engine, Meta, Progress, Question};
use crate::error::ServiceError;
use crate::metrics;

/// The outcome of one real slice.
struct Fetched {
    slice: Slice,
    retried: Retried<Response>,
}

impl Engine {
    /// Answers `question` on the fixed grid, every slice fetched.
    pub(super) async fn by_grid(
        self: &Arc<Self>,
        handle: &Arc<HandleCredentials>,
        question: &Question,
        deadline: Instant,
        progress: &Arc<Progress>,
        cancel: &CancellationToken,
    ) -> Result<Answer, ServiceError> {
        let started = Instant::now();
        let Question { query, range, partial, .. } = question;
        let plan = Arc::new(stitch::plan(&query.tweet_ids, *range, Endpoint::Historical.max_tweet_ids()));
        let calls = plan.fetched.len();
        self.calls.check(calls, deadline).map_err(refusal)?;
        self.admit_handle(&handle.handle, true).await?;
        progress.planned(&plan, 0);
        progress.calls_ahead(calls);

        let lane = Arc::new(self.calls.lane(calls, deadline));
        let mut tasks = InFlight::new();
        for &slice in &plan.fetched {
            let body = plan.slice_request(slice, &query.types, &query.groupings);
            let (engine, lane, handle, progress) =
                (Arc::clone(self), Arc::clone(&lane), Arc::clone(handle), Arc::clone(progress));
            tasks.spawn(slice.batch, async move {
                // Each call counts its handle, so a question that runs into a new month
                // counts there too.
                if let Err(e) = engine.admit_handle(&handle.handle, false).await {
                    tracing::error!(error = %e, handle = %handle.handle, "the handle ledger could not be written");
                }
                let sent = std::sync::atomic::AtomicU32::new(0);
                let retried = engine
                    .calls
                    .call(&lane, Endpoint::Historical, &handle, &body, deadline, |result, waited, took| {
                        let retry = sent.fetch_add(1, Ordering::Relaxed) > 0;
                        metrics::upstream_call(&outcome(result));
                        progress.attempt(retry, waited, took);
                    })
                    .await;
                Fetched { slice, retried }
            });
        }

        // Answers are merged by one blocking task as they arrive.
        let (to_merge, merging) = mpsc::channel::<(Slice, Response)>();
        let merger = {
            let (plan, types, groupings, range) =
                (Arc::clone(&plan), query.types.clone(), query.groupings.clone(), *range);
            tokio::task::spawn_blocking(move || -> Result<Response, (Option<Slice>, TreeError)> {
                let mut merged = Response::default();
                for (slice, response) in merging {
                    absorb(&mut merged, response).map_err(|e| (Some(slice), e))?;
                }
                absorb_zeros(&mut merged, &plan, &types, &groupings).map_err(|e| (None, e))?;
                finish(&mut merged, &groupings, range);
                Ok(merged)
            })
        };

        let mut failed: Vec<(Slice, AttemptError, u32)> = Vec::new();
        let (mut attempts, mut fetched, mut made) = (0u32, 0usize, 0u32);
        let cut_off = collect(
            &mut tasks,
            &plan,
            &plan.fetched,
            (deadline, *partial),
            cancel,
            |Fetched { slice, retried }| {
                attempts += retried.attempts;
                made += 1;
                let told = Told::of(&retried.result);
                match retried.result {
                    Ok(response) => {
                        fetched += 1;
                        progress.call_finished(1);
                        // The merger only stops early on an error, which it returns below.
                        let _ = to_merge.send((slice, response));
                    }
                    Err(error) => {
                        progress.call_finished(0);
                        failed.push((slice, error, retried.attempts));
                    }
                }
                Ok((slice, told))
            },
        )
        .await?;
        drop(to_merge);
        progress.answering();
        failed.extend(cut_off);
        if !failed.is_empty() && !partial {
            let timeout = deadline.saturating_duration_since(started);
            return Err(failure(&plan, &timeout, failed));
        }
        let merged = match merger.await {
            Ok(Ok(merged)) => merged,
            Ok(Err((Some(slice), e))) => {
                return Err(ServiceError::UpstreamFailed {
                    failed: vec![failed_slice(
                        &plan,
                        slice,
                        vec![format!("the upstream's answers do not add up: {e}")],
                        None,
                        0,
                    )],
                });
            }
            Ok(Err((None, e))) => {
                return Err(ServiceError::internal(
                    "synthesized zeros do not fit the answers",
                    Some(Box::new(e)),
                ));
            }
            Err(e) => return Err(ServiceError::internal("merging the answers failed", Some(Box::new(e)))),
        };

        let meta = Meta {
            slices_fetched: fetched,
            upstream_calls: attempts,
            retries: attempts.saturating_sub(made),
            ..Meta::planned(&plan, question, started)
        };
        meta.record();
        tracing::info!(
            handle = %handle.handle,
            tweets = meta.tweets,
            range = %range.describe(),
            slices_planned = meta.slices_planned,
            slices_synthesized = meta.slices_synthesized,
            upstream_calls = meta.upstream_calls,
            retries = meta.retries,
            incomplete = failed.len(),
            duration_ms = meta.duration_ms,
            "question answered"
        );
        let incomplete = failed
            .iter()
            .map(|(slice, error, attempts)| failed_attempt(&plan, *slice, error, *attempts))
            .collect();
        Ok(Answer::stitched(Arc::new(merged), meta, incomplete, None))
    }
}

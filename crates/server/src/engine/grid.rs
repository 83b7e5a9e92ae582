//! Answering without a store: every slice of the fixed grid is fetched with the question's
//! own types and groupings, and the answers are deep-summed.

use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::sync::{Arc, mpsc};

use engagement::time::format_instant;
use engagement::tree::TreeError;
use engagement::{Endpoint, Response};
use stitch::{Slice, absorb, absorb_zeros, finish};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use upstream::{AttemptError, HandleCredentials, Retried};

use super::{
    Answer, Engine, Meta, Progress, Question, Stopped, failed_attempt, failed_slice, failure, outcome,
    refusal,
};
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
        let Question { query, range, partial } = question;
        let plan = Arc::new(stitch::plan(&query.tweet_ids, *range, Endpoint::Historical.max_tweet_ids()));
        let calls = plan.fetched.len();
        self.calls.check(calls, deadline).map_err(refusal)?;
        self.admit_handle(&handle.handle, true).await?;
        progress.slices_total.store(plan.planned(), Ordering::Relaxed);
        progress.slices_synthesized.store(plan.synthesized_slices(), Ordering::Relaxed);
        progress.touch();

        let lane = Arc::new(self.calls.lane(calls, deadline));
        let mut tasks = JoinSet::new();
        for &slice in &plan.fetched {
            let body = plan.slice_request(slice, &query.types, &query.groupings);
            let (engine, lane, handle, progress) =
                (Arc::clone(self), Arc::clone(&lane), Arc::clone(handle), Arc::clone(progress));
            tasks.spawn(async move {
                // Each call counts its handle, so a question that runs into a new month
                // counts there too.
                if let Err(e) = engine.admit_handle(&handle.handle, false).await {
                    tracing::error!(error = %e, handle = %handle.handle, "the handle ledger could not be written");
                }
                let sent = std::sync::atomic::AtomicU32::new(0);
                let retried = engine
                    .calls
                    .call(&lane, &handle, &body, deadline, |result, waited, took| {
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

        let mut done = HashSet::with_capacity(calls);
        let mut failed: Vec<(Slice, AttemptError, u32)> = Vec::new();
        let mut attempts = 0u32;
        let mut fetched = 0usize;
        let collecting = tokio::time::timeout_at(deadline, async {
            while let Some(joined) = tasks.join_next().await {
                let Fetched { slice, retried } =
                    joined.map_err(|e| ServiceError::internal("a slice task failed", Some(Box::new(e))))?;
                done.insert(slice);
                attempts += retried.attempts;
                match retried.result {
                    Ok(response) => {
                        fetched += 1;
                        progress.slices_done.fetch_add(1, Ordering::Relaxed);
                        progress.touch();
                        // The merger only stops early on an error, which it returns below.
                        let _ = to_merge.send((slice, response));
                    }
                    Err(error) => {
                        failed.push((slice, error, retried.attempts));
                        if !partial {
                            break;
                        }
                    }
                }
            }
            Ok(())
        });
        let collected = tokio::select! {
            collected = collecting => collected.map_err(|_| Stopped::Deadline),
            () = cancel.cancelled() => Err(Stopped::Cancelled),
        };
        tasks.abort_all();
        drop(to_merge);
        let not_done = || plan.fetched.iter().filter(|s| !done.contains(s)).copied().collect::<Vec<_>>();
        match collected {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(e),
            // Whatever did not finish is what the deadline cut off.
            Err(Stopped::Deadline) => {
                failed.extend(
                    not_done().into_iter().map(|slice| (slice, AttemptError::Deadline { last: None }, 0)),
                );
            }
            Err(Stopped::Cancelled) => {
                let missing = not_done()
                    .into_iter()
                    .map(|slice| {
                        failed_slice(
                            &plan,
                            slice,
                            vec!["not fetched: the question was stopped".into()],
                            None,
                            0,
                        )
                    })
                    .collect();
                return Err(ServiceError::CutOff { failed: missing });
            }
        }
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
            start: format_instant(range.start),
            end: format_instant(range.end),
            end_clamped: query.end_clamped,
            tweets: query.tweet_ids.len(),
            batches: plan.batches.len(),
            windows: plan.windows.len(),
            slices_planned: plan.planned(),
            slices_fetched: fetched,
            slices_synthesized: plan.synthesized_slices(),
            slices_from_store: 0,
            upstream_calls: attempts,
            retries: attempts.saturating_sub(done.len() as u32),
            duration_ms: started.elapsed().as_millis() as u64,
        };
        metrics::slices(meta.slices_planned, meta.slices_fetched, meta.slices_synthesized, 0, meta.retries);
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
        Ok(Answer { response: Arc::new(merged), meta, incomplete, written: None })
    }
}

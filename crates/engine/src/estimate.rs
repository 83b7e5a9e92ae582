//! What a question would cost if it were asked now, told without asking it: the calls it
//! would make given what the store holds, its wait for the per-minute budget and its time,
//! the size of its answer, and whether it would count its handle in this month's ledger.

use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use store::facts::hour_of;

use crate::error::EngineError;
use crate::needs::judging;
use crate::recall::rendered_key;
use crate::{Engine, Question};

/// The time one call is taken to need before any call was answered.
const FIRST_CALL_GUESS: Duration = Duration::from_secs(1);

/// What asking a question now would cost.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Estimate {
    /// The upstream calls asking now would make, given what the store holds.
    pub upstream_calls: usize,
    /// The plan's slices (batches of 25 Tweets × 28-day grid cells).
    pub slices_planned: usize,
    /// Slices whose every hour the store holds: no call for them.
    pub slices_from_store: usize,
    /// Slices a call would fetch.
    pub slices_to_fetch: usize,
    /// Slices before the Tweets existed: zeros, no call.
    pub slices_synthesized: usize,
    /// How long its last call would wait for the per-minute budget, at the current rate and
    /// beside the calls already waiting.
    pub budget_wait_secs: f64,
    /// About how long the answer would take.
    pub eta_secs: f64,
    /// The counts (leaves) its answer holds.
    pub counts: u64,
    /// The handle it is asked as.
    pub handle: String,
    /// Whether asking would add the handle to this month's ledger (it is not in it, and a
    /// call would be made).
    pub handle_newly_counted: bool,
    /// The handles in this month's ledger now.
    pub handles_this_month: usize,
    /// The most handles the ledger takes in a month (`ledger.handle_cap`), if any.
    pub handle_cap: Option<usize>,
    /// Whether it fits a synchronous request (`server.request_timeout_secs`); if not, ask it
    /// as a job (`POST /v1/jobs`).
    pub fits_request: bool,
}

impl Engine {
    /// What `question`, asked now by `client` for `handle`, would cost; `request_timeout` is
    /// the time a synchronous request has. No upstream call is made.
    pub async fn estimate(
        self: &Arc<Self>,
        (client, handle): (&str, &str),
        question: &Question,
        request_timeout: Duration,
    ) -> Result<Estimate, EngineError> {
        let plan = question.plan();
        let (calls, from_store) = if self.store_enabled {
            self.calls_with_store(handle, question, &plan).await?
        } else {
            // Every real slice, and again for numbers derived from an answer of another shape.
            let again = question.derive.any()
                && engagement::derive::totals_grouping(&question.query.groupings).is_none();
            (plan.fetched.len() * if again { 2 } else { 1 }, 0)
        };
        let budget_wait = self.calls.budget_wait_for(client, calls);
        let eta = self.time_for(calls, budget_wait);
        let (handles_this_month, counted) = self.ledger_standing(handle).await?;
        let fits = eta <= request_timeout
            && self.calls.check_for(client, calls, tokio::time::Instant::now() + request_timeout).is_ok();
        Ok(Estimate {
            upstream_calls: calls,
            slices_planned: plan.planned(),
            slices_from_store: from_store,
            slices_to_fetch: plan.fetched.len() - from_store,
            slices_synthesized: plan.synthesized_slices(),
            budget_wait_secs: budget_wait.as_secs_f64(),
            eta_secs: eta.as_secs_f64(),
            counts: question.query.answer_counts(),
            handle: handle.to_string(),
            handle_newly_counted: calls > 0 && !counted,
            handles_this_month,
            handle_cap: self.ledger_settings.handle_cap,
            fits_request: fits,
        })
    }

    /// The calls `question` would make with the store, and the grid slices it holds: none
    /// for an answer kept rendered, else what the store (and the shared tier) lacks.
    async fn calls_with_store(
        self: &Arc<Self>,
        handle: &str,
        question: &Question,
        plan: &stitch::Plan,
    ) -> Result<(usize, usize), EngineError> {
        let now = self.clock.now();
        let settled = hour_of(question.range.end) <= self.store.unsettled_from(now);
        if settled && self.rendered.repeat(&rendered_key(handle, plan, question), now).is_some() {
            return Ok((0, plan.fetched.len()));
        }
        let mut known = self.known(handle, plan.batches.concat(), question, now).await?;
        let needs = self.needs_of(handle, plan, &mut known, &question.query.types).await;
        let calls = if !question.partial && !needs.refused.is_empty() {
            judging(plan, &known, &needs.refused).len()
        } else {
            needs.calls.len()
        };
        Ok((calls, needs.held.len()))
    }

    /// About how long `calls` calls take: the wait for the budget or the rounds of calls
    /// in flight, whichever is longer, and one call more.
    fn time_for(&self, calls: usize, budget_wait: Duration) -> Duration {
        if calls == 0 {
            return Duration::ZERO;
        }
        let latency = self.calls.typical_latency().unwrap_or(FIRST_CALL_GUESS);
        let rounds = calls.div_ceil(self.calls.max_in_flight().max(1)) as u32;
        budget_wait.max(latency * (rounds - 1)) + latency
    }
}

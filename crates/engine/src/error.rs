//! Every way the engine can fail to answer a question, each with the words a person can act
//! on and the slices that could not be had. Which status each is over HTTP is the server's
//! to say.

use std::time::Duration;

use serde::Serialize;

/// A slice (a batch of Tweets over one window) that could not be had.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct FailedSlice {
    pub start: String,
    pub end: String,
    pub tweet_ids: Vec<String>,
    /// The upstream's last status, if it answered.
    pub status: Option<u16>,
    /// What the upstream said, or what went wrong on the way.
    pub errors: Vec<String>,
    pub attempts: u32,
}

/// Why a question got no full answer.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The upstream refused a batch: its status, its words and the slices it refused.
    #[error("the upstream refused a batch ({status})")]
    UpstreamRefused { status: u16, errors: Vec<String>, failed: Vec<FailedSlice> },
    #[error("the month's handle cap is reached")]
    HandleCap { cap: usize, month: String, handle: String },
    #[error("the upstream rate budget has no room before the deadline")]
    RateBudget { retry_after: Duration, failed: Vec<FailedSlice> },
    #[error("{refusal}")]
    TooBigForDeadline { refusal: upstream::BudgetRefusal },
    #[error("the upstream rate budget is busy with other questions")]
    BudgetBusy { retry_after: Duration, calls: usize, ahead: usize },
    #[error("the service shut down before the question was answered")]
    CutOff { failed: Vec<FailedSlice> },
    #[error("upstream calls kept failing after retries")]
    UpstreamFailed { failed: Vec<FailedSlice> },
    #[error("{reason}")]
    UpstreamUnreachable { reason: String, failed: Vec<FailedSlice> },
    #[error("the request's deadline passed")]
    DeadlineExceeded { timeout: Duration, failed: Vec<FailedSlice> },
    #[error(
        "the state this service shares with its other replicas (Redis) cannot be reached, and redis.on_failure is refuse; retry in {} s",
        whole_secs(*retry_after)
    )]
    SharedStateAway { retry_after: Duration },
    #[error("the service is shutting down and takes no new questions; retry against another instance")]
    ShuttingDown,
    /// A fault of the service's own, with what caused it when something did.
    #[error("{context}")]
    Internal {
        context: String,
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },
}

impl EngineError {
    /// A fault of the service's own, caused by `source` if given.
    pub fn internal(
        context: impl Into<String>,
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    ) -> EngineError {
        EngineError::Internal { context: context.into(), source }
    }

    /// What the client is told.
    pub fn messages(&self) -> Vec<String> {
        let slices = |failed: &[FailedSlice]| {
            let n = failed.len();
            format!("{n} slice{} could not be had; see failed_slices", if n == 1 { "" } else { "s" })
        };
        match self {
            EngineError::TooBigForDeadline { refusal } => vec![format!(
                "{refusal}, its deadline: ask it as a job (POST /v1/jobs, which has hours), or ask for a shorter range or fewer Tweets"
            )],
            EngineError::UpstreamRefused { errors, .. } => errors.clone(),
            EngineError::HandleCap { cap, month, handle } => vec![format!(
                "the handle \"{handle}\" would be handle {} this month ({month}, UTC), past the contract's cap of {cap} handles (ledger.handle_cap); no call was made. Ask for handles already used this month (GET /v1/usage), or wait for the next month",
                cap + 1
            )],
            EngineError::RateBudget { retry_after, failed } => vec![format!(
                "the upstream's per-minute budget has no room for this question before its deadline; retry in {} s ({})",
                whole_secs(*retry_after),
                slices(failed)
            )],
            EngineError::BudgetBusy { retry_after, calls, ahead } => vec![format!(
                "the upstream's per-minute budget is busy with other questions: {ahead} of their calls go before the last of this question's {calls}, which would pass its deadline; retry in {} s",
                whole_secs(*retry_after)
            )],
            EngineError::CutOff { failed } => vec![format!(
                "the service shut down before this question was answered ({}); ask again, another instance will answer",
                slices(failed)
            )],
            EngineError::UpstreamFailed { failed } => vec![format!(
                "the Engagement API kept failing after retries ({}); retry later, or send \"partial\": true to /v1/historical for the rest",
                slices(failed)
            )],
            EngineError::UpstreamUnreachable { reason, failed } => vec![format!(
                "{reason} ({}); check upstream.base_url (its scheme, host and port) and that the API is up there",
                slices(failed)
            )],
            EngineError::DeadlineExceeded { timeout, failed } => vec![format!(
                "the question was not answered within {} s ({}); ask for fewer Tweets or a shorter range, or retry",
                whole_secs(*timeout),
                slices(failed)
            )],
            other => vec![other.to_string()],
        }
    }

    /// The slices that could not be had, when the failure is about slices.
    pub fn failed(&self) -> &[FailedSlice] {
        match self {
            EngineError::UpstreamRefused { failed, .. }
            | EngineError::RateBudget { failed, .. }
            | EngineError::UpstreamFailed { failed }
            | EngineError::UpstreamUnreachable { failed, .. }
            | EngineError::CutOff { failed }
            | EngineError::DeadlineExceeded { failed, .. } => failed,
            _ => &[],
        }
    }

    /// How long the client should wait before asking again, when waiting would help.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            EngineError::RateBudget { retry_after, .. }
            | EngineError::BudgetBusy { retry_after, .. }
            | EngineError::SharedStateAway { retry_after } => Some(*retry_after),
            EngineError::ShuttingDown | EngineError::CutOff { .. } => Some(Duration::from_secs(1)),
            _ => None,
        }
    }
}

/// A wait in whole seconds, rounded up, at least one: a client that waits that long is not
/// early.
pub fn whole_secs(wait: Duration) -> u64 {
    (wait.as_secs() + u64::from(wait.subsec_nanos() > 0)).max(1)
}

impl From<crate::TaskFailed> for EngineError {
    fn from(e: crate::TaskFailed) -> EngineError {
        EngineError::internal(format!("{}: the task failed", e.what), Some(Box::new(e.source)))
    }
}

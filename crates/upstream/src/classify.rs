//! Why an attempt gave no answer, and reading a successful answer's body as a tree.

use std::time::Duration;

use engagement::Response;

/// Why an attempt gave no answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AttemptError {
    /// Worth trying again: `429`, `5xx`, timeouts, resets, cut or unreadable bodies.
    #[error("{reason}")]
    Transient {
        reason: String,
        status: Option<u16>,
        /// How long the upstream asked us to wait, if it said.
        retry_after: Option<Duration>,
    },
    /// The upstream could not be reached at all: no connection (refused, no such host, a
    /// TLS handshake that failed). Retried like a transient failure, but said as it is.
    #[error("{reason}")]
    Unreachable { reason: String },
    /// The upstream refused the call; trying again changes nothing.
    #[error("upstream answered {status}: {}", errors.join("; "))]
    Refused { status: u16, errors: Vec<String> },
    /// The per-minute budget has no call free before the deadline.
    #[error("no upstream call is free in the per-minute budget before the deadline")]
    Budget { wait: Duration },
    /// The request's deadline passed (or would have before the next attempt); `last` is the
    /// failure that attempt was to retry.
    #[error("the deadline passed{}", last.as_ref().map(|l| format!(" (last failure: {l})")).unwrap_or_default())]
    Deadline { last: Option<String> },
}

impl AttemptError {
    /// Whether another attempt could succeed.
    pub fn is_transient(&self) -> bool {
        matches!(self, AttemptError::Transient { .. } | AttemptError::Unreachable { .. })
    }

    /// The upstream status, if there was an answer.
    pub fn status(&self) -> Option<u16> {
        match self {
            AttemptError::Transient { status, .. } => *status,
            AttemptError::Refused { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// An answer that could not be read or kept because the task doing it failed: the attempt
/// failed, and is retried like any transient failure.
impl From<crate::blocking::TaskFailed> for AttemptError {
    fn from(e: crate::blocking::TaskFailed) -> AttemptError {
        let reason = format!("{}: {}", e.what, e.source);
        AttemptError::Transient { reason, status: None, retry_after: None }
    }
}

/// A successful answer's body read as a tree of counts; one that is not an answer is worth
/// another attempt.
pub fn read_answer(body: &[u8]) -> Result<Response, AttemptError> {
    serde_json::from_slice(body).map_err(|e| unreadable(&e))
}

/// An answer whose body is not what was asked for, as `what` says: the attempt failed, and
/// is retried like any transient failure.
pub fn unreadable(what: &dyn std::fmt::Display) -> AttemptError {
    AttemptError::Transient {
        reason: format!("the upstream sent an unreadable answer ({what})"),
        status: Some(200),
        retry_after: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_answer_that_is_not_json_is_worth_another_attempt() {
        assert!(read_answer(br#"{"g": {"1": "2"}}"#).is_ok());
        let cut = read_answer(br#"{"g": {"1"#).unwrap_err();
        assert!(cut.is_transient());
        assert_eq!(cut.status(), Some(200));
    }
}

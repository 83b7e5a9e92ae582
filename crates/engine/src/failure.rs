//! How a question's failed slices become the client's error: the upstream's refusals as one
//! unlimited call would have given them, then the budget, the deadline, transient failures.

use std::time::Duration;

use engagement::TweetId;
use engagement::time::format_instant;
use stitch::{Plan, Slice};
use upstream::{AttemptError, BudgetRefusal};

use crate::error::{EngineError, FailedSlice};

/// The client's error for a question the budget cannot carry.
pub(crate) fn refusal(refused: BudgetRefusal) -> EngineError {
    match refused {
        BudgetRefusal::Never { .. } => EngineError::TooBigForDeadline { refusal: refused },
        BudgetRefusal::Busy { calls, ahead, wait } => {
            EngineError::BudgetBusy { retry_after: wait, calls, ahead }
        }
    }
}

/// The label of one attempt's outcome: the upstream's status, or what kept it from one.
pub(crate) fn outcome<T>(result: &Result<T, AttemptError>) -> String {
    match result {
        Ok(_) => "200".into(),
        Err(e) => match (e, e.status()) {
            (_, Some(status)) => status.to_string(),
            (AttemptError::Budget { .. }, None) => "budget".into(),
            (AttemptError::Deadline { .. }, None) => "deadline".into(),
            (_, None) => "error".into(),
        },
    }
}

/// `slice` of `plan` as the client is told it failed.
pub(crate) fn failed_slice(
    plan: &Plan,
    slice: Slice,
    errors: Vec<String>,
    status: Option<u16>,
    attempts: u32,
) -> FailedSlice {
    FailedSlice {
        start: format_instant(slice.window.start),
        end: format_instant(slice.window.end),
        tweet_ids: plan.batches[slice.batch].iter().map(ToString::to_string).collect(),
        status,
        errors,
        attempts,
    }
}

/// A slice whose last attempt failed with `error`: the upstream's own messages when it
/// refused, else what went wrong.
pub(crate) fn failed_attempt(plan: &Plan, slice: Slice, error: &AttemptError, attempts: u32) -> FailedSlice {
    let errors = match error {
        AttemptError::Refused { errors, .. } => errors.clone(),
        other => vec![other.to_string()],
    };
    failed_slice(plan, slice, errors, error.status(), attempts)
}

/// The client's error for a question whose slices failed, by the worst failure: a refusal
/// by the upstream, then the rate budget, then the deadline, then an upstream that cannot be
/// reached at all, then transient failures.
pub(crate) fn failure(
    plan: &Plan,
    timeout: &Duration,
    failed: Vec<(Slice, AttemptError, u32)>,
) -> EngineError {
    let slices: Vec<FailedSlice> = failed
        .iter()
        .map(|(slice, error, attempts)| failed_attempt(plan, *slice, error, *attempts))
        .collect();
    let refused: Vec<(u16, &[String])> = failed
        .iter()
        .filter_map(|(_, e, _)| match e {
            AttemptError::Refused { status, errors } => Some((*status, errors.as_slice())),
            _ => None,
        })
        .collect();
    if let Some((status, errors)) = as_one_call(&refused) {
        return EngineError::UpstreamRefused { status, errors, failed: slices };
    }
    if let Some((_, AttemptError::Budget { wait }, _)) =
        failed.iter().find(|(_, e, _)| matches!(e, AttemptError::Budget { .. }))
    {
        return EngineError::RateBudget { retry_after: *wait, failed: slices };
    }
    if failed.iter().any(|(_, e, _)| matches!(e, AttemptError::Deadline { .. })) {
        return EngineError::DeadlineExceeded { timeout: *timeout, failed: slices };
    }
    if let Some((_, AttemptError::Unreachable { reason }, _)) =
        failed.iter().find(|(_, e, _)| matches!(e, AttemptError::Unreachable { .. }))
    {
        return EngineError::UpstreamUnreachable { reason: reason.clone(), failed: slices };
    }
    EngineError::UpstreamFailed { failed: slices }
}

/// The refusal one unlimited call would have got, from the refusals of the batches' calls:
/// its status and messages. A refusal of the service's own call (a `401` for the handle's
/// credentials) comes first and is the service's problem (`502`), as the API judges
/// credentials before Tweets. Then `403` (Tweets not the handle's, judged first) over `400`
/// (protected Tweets), with every Tweet refused for named once, in ascending order, as the
/// API lists them.
fn as_one_call(refused: &[(u16, &[String])]) -> Option<(u16, Vec<String>)> {
    if let Some((status, errors)) = refused.iter().find(|(s, _)| !matches!(s, 400 | 403)) {
        let errors = errors
            .iter()
            .map(|e| format!("the Engagement API refused the service's call ({status}): {e}"))
            .collect();
        return Some((502, errors));
    }
    let status = refused.iter().map(|(s, _)| *s).max_by_key(|s| *s == 403)?;
    let messages = refused.iter().filter(|(s, _)| *s == status).flat_map(|(_, errors)| errors.iter());
    Some((status, merged_messages(messages)))
}

/// The upstream's words and the Tweets a message of the form `words: id, id, …` names
/// (`Forbidden to access tweets: 111, 222`), if it is of that form.
pub(crate) fn tweets_named(message: &str) -> Option<(&str, Vec<TweetId>)> {
    let (words, list) = message.rsplit_once(": ")?;
    let ids = list.split(',').map(|id| TweetId::parse(id.trim())).collect::<Option<Vec<_>>>()?;
    Some((words, ids))
}

/// Messages of the form `words: id, id, …` with the same words made one, naming the
/// Tweets of them all once each in ascending order; other messages once each.
pub(crate) fn merged_messages<'a>(messages: impl IntoIterator<Item = &'a String>) -> Vec<String> {
    let mut merged: Vec<(String, Option<Vec<TweetId>>)> = Vec::new();
    for message in messages {
        match tweets_named(message) {
            Some((words, ids)) => match merged.iter_mut().find(|(w, n)| w == words && n.is_some()) {
                Some((_, Some(all))) => all.extend(ids),
                _ => merged.push((words.to_string(), Some(ids))),
            },
            None if !merged.iter().any(|(w, n)| w == message && n.is_none()) => {
                merged.push((message.clone(), None));
            }
            None => {}
        }
    }
    merged
        .into_iter()
        .map(|(words, ids)| match ids {
            Some(mut ids) => {
                ids.sort_unstable();
                ids.dedup();
                let named: Vec<String> = ids.iter().map(ToString::to_string).collect();
                format!("{words}: {}", named.join(", "))
            }
            None => words,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn refusals_of_batches_read_as_one_calls() {
        let (protected, foreign) =
            (strings(&["Tweet ID(s) are unavailable: 7"]), strings(&["Forbidden to access tweets: 9"]));
        // Whichever batch came first, 403 wins and names its Tweets.
        for refused in [
            vec![(400, protected.as_slice()), (403, foreign.as_slice())],
            vec![(403, foreign.as_slice()), (400, protected.as_slice())],
        ] {
            assert_eq!(as_one_call(&refused), Some((403, foreign.clone())));
        }
        let more = strings(&["Forbidden to access tweets: 3, 12"]);
        assert_eq!(
            as_one_call(&[(403, foreign.as_slice()), (400, protected.as_slice()), (403, more.as_slice())]),
            Some((403, strings(&["Forbidden to access tweets: 3, 9, 12"])))
        );
        let other = strings(&["Tweet ID(s) are unavailable: 2"]);
        assert_eq!(
            as_one_call(&[(400, protected.as_slice()), (400, other.as_slice())]),
            Some((400, strings(&["Tweet ID(s) are unavailable: 2, 7"])))
        );
        let unauthorized = strings(&["Unauthorized"]);
        let (status, errors) =
            as_one_call(&[(403, foreign.as_slice()), (401, unauthorized.as_slice())]).unwrap();
        assert_eq!(status, 502);
        assert!(errors[0].contains("(401): Unauthorized"), "{errors:?}");
        assert_eq!(as_one_call(&[]), None);
    }

    #[test]
    fn messages_without_tweets_are_kept_once() {
        let messages = strings(&["bad start", "Forbidden to access tweets: 5", "bad start"]);
        assert_eq!(merged_messages(&messages), strings(&["bad start", "Forbidden to access tweets: 5"]));
    }
}

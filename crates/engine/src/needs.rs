//! What a question needs of the upstream, given what the store knows: for each batch of 25,
//! the fewest windows covering the hours some Tweet lacks; one call of one hour when only
//! what is known of its Tweets is too old; or no call, when a remembered refusal settles
//! what the upstream would say.

use std::collections::{HashMap, HashSet};

use engagement::time::HOUR;
use engagement::{EngagementType, TimeRange, TweetId};
use stitch::cover::runs;
use stitch::{Plan, Slice, cover};
use store::facts::{born_hour, hour_of};
use store::{Known, Refused};
use upstream::AttemptError;

use crate::failure::{merged_messages, tweets_named};

/// One call a question needs: a batch over a window, for facts or only for the status of
/// its Tweets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct Need {
    pub slice: Slice,
    pub status_only: bool,
}

impl Need {
    /// The call of one hour (the range's last) that asks only what the upstream says of
    /// `batch`'s Tweets.
    fn status_of(plan: &Plan, batch: usize) -> Need {
        let window = engagement::TimeRange { start: plan.range.end - HOUR, end: plan.range.end };
        Need { slice: Slice { batch, window }, status_only: true }
    }
}

/// What makes two calls the same call.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct CallKey {
    pub handle: String,
    pub tweets: Vec<TweetId>,
    pub types: Vec<EngagementType>,
    pub window: TimeRange,
    pub status_only: bool,
}

/// The calls a question needs, and what the store saved it.
#[derive(Debug, Default)]
pub(crate) struct Needs {
    pub calls: Vec<Need>,
    /// Batches holding a Tweet the upstream refused while that is trusted, and settled by
    /// it: they get no call, and the same refusal.
    pub refused: Vec<(Slice, AttemptError)>,
    /// Grid slices (not synthesized) whose every hour was held.
    pub held: HashSet<Slice>,
    pub hits: u64,
    pub misses: u64,
}

/// For each batch, the fewest windows covering the hours some Tweet of it lacks; or one
/// call of one hour when nothing is missing but what the store knows of a Tweet is too old,
/// or when a Tweet of it is refused for, or was when last asked (its calls would all be
/// refused alike). Tweets the
/// upstream is expected to show nothing of (deleted, refused for, or last seen so) lack no
/// hours. Calls come batch by batch, each batch's first window first: a question's first
/// calls tell what every batch's Tweets are.
pub(crate) fn needs(plan: &Plan, known: &Known) -> Needs {
    let range = plan.range;
    let first = hour_of(range.start);
    let mut out = Needs::default();
    let mut by_batch: Vec<Vec<Need>> = Vec::with_capacity(plan.batches.len());
    for (b, batch) in plan.batches.iter().enumerate() {
        if let Some(refusal) = remembered_refusal(batch, known) {
            out.refused.push((Slice { batch: b, window: range }, refusal));
            continue;
        }
        let mut missing = vec![false; range.hours()];
        for t in batch {
            if known.shows_nothing_of(t) {
                continue;
            }
            let born = born_hour(*t);
            for (i, held) in known.held.get(t).map(Vec::as_slice).unwrap_or_default().iter().enumerate() {
                missing[i] |= !held;
                if first + i as i64 >= born {
                    if *held {
                        out.hits += 1;
                    } else {
                        out.misses += 1;
                    }
                }
            }
        }
        let windows = cover(&runs(range, &missing));
        let stale = batch.iter().any(|t| !known.status.contains_key(t));
        let refused_for = batch.iter().any(|t| known.refuses(t));
        by_batch.push(if refused_for || (windows.is_empty() && stale) {
            vec![Need::status_of(plan, b)]
        } else {
            windows
                .into_iter()
                .map(|window| Need { slice: Slice { batch: b, window }, status_only: false })
                .collect()
        });
        out.held.extend(plan.fetched.iter().filter(|s| s.batch == b).filter(|s| {
            let from = (hour_of(s.window.start) - first) as usize;
            missing[from..from + s.window.hours()].iter().all(|m| !m)
        }));
    }
    let longest = by_batch.iter().map(Vec::len).max().unwrap_or(0);
    for i in 0..longest {
        out.calls.extend(by_batch.iter().filter_map(|calls| calls.get(i)));
    }
    out
}

/// For a question that fails anyway (a batch refused from memory), one call of one hour for
/// each other batch whose Tweets are not all known to be shown: what the upstream says of
/// them decides the refusal one call for the whole question would get.
pub(crate) fn judging(plan: &Plan, known: &Known, refused: &[(Slice, AttemptError)]) -> Vec<Need> {
    plan.batches
        .iter()
        .enumerate()
        .filter(|(b, _)| !refused.iter().any(|(s, _)| s.batch == *b))
        .filter(|(_, batch)| batch.iter().any(|t| !known.status.contains_key(t)))
        .map(|(b, _)| Need::status_of(plan, b))
        .collect()
}

/// The refusal a call for `batch` would get, when what refused calls told of its Tweets
/// settles it: `403` (not the handle's) once every Tweet's ownership is known, else `400`
/// (protected) once every Tweet is known to be the handle's and protected or not. The
/// errors name the batch's Tweets refused, as the upstream does.
pub(crate) fn remembered_refusal(batch: &[TweetId], known: &Known) -> Option<AttemptError> {
    let told = |t: &TweetId| known.refused.get(t);
    let shown = |t: &TweetId| known.status.contains_key(t);
    let status = batch
        .iter()
        .filter_map(|t| told(t)?.refusal())
        .map(|(status, _)| status)
        .max_by_key(|s| *s == 403)?;
    let settled = if status == 403 {
        batch.iter().all(|t| shown(t) || told(t).is_some())
    } else {
        let judged =
            |t: &TweetId| shown(t) || matches!(told(t), Some(Refused::Protected { .. } | Refused::Neither));
        batch.iter().all(judged)
    };
    if !settled {
        return None;
    }
    let messages: Vec<String> = batch
        .iter()
        .filter_map(|t| {
            let (s, message) = told(t)?.refusal()?;
            (s == status).then(|| format!("{message}: {t}"))
        })
        .collect();
    Some(AttemptError::Refused { status, errors: merged_messages(&messages) })
}

/// What a refusal of a call for `batch` tells of its Tweets. `403` (not the handle's) and
/// `400` (protected) name the Tweets refused for after a colon, as in `Forbidden to access
/// tweets: 111, 222`; the batch's others are then the handle's (and, after a `400`, not
/// protected). A refusal that names none of the batch's Tweets tells nothing.
pub(crate) fn refusal_told(batch: &[TweetId], error: &AttemptError) -> Vec<(TweetId, Refused)> {
    let AttemptError::Refused { status: status @ (400 | 403), errors } = error else {
        return Vec::new();
    };
    let mut told = Vec::new();
    for (message, named) in errors.iter().filter_map(|e| tweets_named(e)) {
        let message = message.to_string();
        for t in named.into_iter().filter(|t| batch.contains(t)) {
            let r = match status {
                403 => Refused::Foreign { message: message.clone() },
                _ => Refused::Protected { message: message.clone() },
            };
            told.push((t, r));
        }
    }
    if told.is_empty() {
        return told;
    }
    let other = if *status == 403 { Refused::NotForeign } else { Refused::Neither };
    for t in batch {
        if !told.iter().any(|(named, _)| named == t) {
            told.push((*t, other.clone()));
        }
    }
    told
}

/// Which slices of the plan's grid each call fetches part of, so a question's progress
/// counts slices as its `meta` does: a slice is fetched once every call covering part of
/// it is answered.
#[derive(Debug, Default)]
pub(crate) struct Coverage {
    of_call: HashMap<Need, Vec<Slice>>,
    calls_left: HashMap<Slice, usize>,
}

impl Coverage {
    /// The slices of `plan` not `held` that `calls` cover.
    pub(crate) fn of(plan: &Plan, calls: &[Need], held: &HashSet<Slice>) -> Coverage {
        let mut by_batch: HashMap<usize, Vec<Slice>> = HashMap::new();
        for s in plan.fetched.iter().filter(|s| !held.contains(s)) {
            by_batch.entry(s.batch).or_default().push(*s);
        }
        let mut coverage = Coverage::default();
        for need in calls.iter().filter(|n| !n.status_only) {
            let w = need.slice.window;
            let covered: Vec<Slice> = by_batch
                .get(&need.slice.batch)
                .into_iter()
                .flatten()
                .filter(|s| s.window.overlaps(&w))
                .copied()
                .collect();
            for s in &covered {
                *coverage.calls_left.entry(*s).or_default() += 1;
            }
            coverage.of_call.insert(*need, covered);
        }
        coverage
    }

    /// `need` was answered: the slices it completes.
    pub(crate) fn answered(&mut self, need: &Need) -> usize {
        let mut done = 0;
        for s in self.of_call.remove(need).unwrap_or_default() {
            if let Some(left) = self.calls_left.get_mut(&s) {
                *left -= 1;
                if *left == 0 {
                    self.calls_left.remove(&s);
                    done += 1;
                }
            }
        }
        done
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use store::Unshown;

    fn refused(status: u16, errors: &[&str]) -> AttemptError {
        AttemptError::Refused { status, errors: errors.iter().map(ToString::to_string).collect() }
    }

    #[test]
    fn a_refusal_tells_of_the_tweets_it_names_and_of_the_batchs_others() {
        let batch = [TweetId(11), TweetId(22), TweetId(33)];
        let told = refusal_told(&batch, &refused(403, &["Forbidden to access tweets: 22, 99"]));
        let foreign = Refused::Foreign { message: "Forbidden to access tweets".into() };
        assert_eq!(
            told,
            [(TweetId(22), foreign), (TweetId(11), Refused::NotForeign), (TweetId(33), Refused::NotForeign)]
        );
        let told = refusal_told(&batch, &refused(400, &["Tweet ID(s) are unavailable: 33"]));
        assert!(told.contains(&(TweetId(11), Refused::Neither)));

        // Nothing is learned from a refusal that names no Tweet of the batch, or no Tweet.
        assert!(refusal_told(&batch, &refused(400, &["Tweet ID(s) are unavailable"])).is_empty());
        assert!(refusal_told(&batch, &refused(400, &["bad start: 2020-13-01"])).is_empty());
        assert!(refusal_told(&batch, &refused(403, &["Forbidden to access tweets: 99"])).is_empty());
        assert!(refusal_told(&batch, &refused(401, &["Unauthorized: 11"])).is_empty());
    }

    #[test]
    fn a_remembered_refusal_is_given_only_when_it_is_what_the_upstream_would_say() {
        let batch = [TweetId(11), TweetId(22), TweetId(33)];
        let mut known = Known::default();
        let protected = Refused::Protected { message: "Tweet ID(s) are unavailable".into() };
        known.refused.insert(TweetId(33), protected.clone());
        known.refused.insert(TweetId(11), Refused::Neither);
        assert!(remembered_refusal(&batch, &known).is_none(), "whether 22 is the handle's is not known");
        known.status.insert(TweetId(22), store::TweetStatus::Live);
        let Some(AttemptError::Refused { status, errors }) = remembered_refusal(&batch, &known) else {
            panic!("every Tweet is judged")
        };
        assert_eq!((status, errors), (400, vec!["Tweet ID(s) are unavailable: 33".to_string()]));

        known.refused.insert(TweetId(22), Refused::Foreign { message: "Forbidden to access tweets".into() });
        known.refused.insert(TweetId(11), Refused::Foreign { message: "Forbidden to access tweets".into() });
        let Some(AttemptError::Refused { status, errors }) = remembered_refusal(&batch, &known) else {
            panic!("every Tweet's owner is known")
        };
        assert_eq!((status, errors), (403, vec!["Forbidden to access tweets: 11, 22".to_string()]));
        assert!(remembered_refusal(&[TweetId(44)], &known).is_none());
    }

    /// A plan of two batches of `TweetId(1..=50)` over `days` days from 2020-07-27 (a line of
    /// the grid), and what a store holding every hour of them knows, statuses trusted.
    fn held_everywhere(days: i64) -> (Plan, Known) {
        let start = engagement::parse_instant("2020-07-27T00:00:00Z").unwrap();
        let range = engagement::TimeRange { start, end: start + chrono::Duration::days(days) };
        let tweets: Vec<TweetId> = (1..=50).map(TweetId).collect();
        let plan = stitch::plan(&tweets, range, 25);
        let mut known = Known { range: Some(range), ..Known::default() };
        for t in &tweets {
            known.held.insert(*t, vec![true; range.hours()]);
            known.status.insert(*t, store::TweetStatus::Live);
        }
        (plan, known)
    }

    #[test]
    fn a_tweet_last_seen_deleted_costs_one_hour_not_its_range() {
        let (plan, mut known) = held_everywhere(50);
        assert!(needs(&plan, &known).calls.is_empty());
        // Its status too old to trust, it was deleted then, and holds no hours.
        known.status.remove(&TweetId(3));
        known.held.insert(TweetId(3), vec![false; plan.range.hours()]);
        known.unshown.insert(TweetId(3), Unshown::Deleted);
        let calls = needs(&plan, &known).calls;
        assert_eq!(calls, [Need::status_of(&plan, 0)]);
        // A Tweet refused for too long ago to trust: its batch's other Tweets lack hours, but
        // the calls for them would be refused too.
        known.unshown.insert(TweetId(30), Unshown::Refused);
        known.status.remove(&TweetId(30));
        known.held.insert(TweetId(30), vec![false; plan.range.hours()]);
        known.held.insert(TweetId(31), vec![false; plan.range.hours()]);
        assert_eq!(needs(&plan, &known).calls, [Need::status_of(&plan, 0), Need::status_of(&plan, 1)]);
    }

    #[test]
    fn a_batch_with_a_tweet_refused_for_gets_one_call_and_others_are_judged_alike() {
        let (plan, mut known) = held_everywhere(60);
        // Tweet 7 is protected, and nothing is known of Tweet 8: a call is refused anyway.
        known
            .refused
            .insert(TweetId(7), Refused::Protected { message: "Tweet ID(s) are unavailable".into() });
        known.status.remove(&TweetId(7));
        known.status.remove(&TweetId(8));
        known.held.insert(TweetId(8), vec![false; plan.range.hours()]);
        let needs = needs(&plan, &known);
        assert_eq!(needs.calls, [Need::status_of(&plan, 0)]);
        assert!(needs.refused.is_empty());
        // Once Tweet 8 is judged, the batch is refused from memory; the other batch's
        // Tweets are all shown, so nothing needs asking to judge it.
        known.refused.insert(TweetId(8), Refused::Neither);
        let needs = super::needs(&plan, &known);
        assert_eq!(needs.refused.len(), 1);
        assert!(judging(&plan, &known, &needs.refused).is_empty());
        known.status.remove(&TweetId(40));
        assert_eq!(judging(&plan, &known, &needs.refused), [Need::status_of(&plan, 1)]);
    }

    #[test]
    fn every_batchs_first_call_comes_before_any_batchs_second() {
        let (plan, mut known) = held_everywhere(60);
        for t in [TweetId(1), TweetId(30)] {
            known.held.insert(t, vec![false; plan.range.hours()]);
        }
        let batches: Vec<usize> = needs(&plan, &known).calls.iter().map(|n| n.slice.batch).collect();
        assert_eq!(batches, [0, 1, 0, 1, 0, 1]);
    }

    #[test]
    fn a_slice_is_fetched_once_every_call_covering_it_is_answered() {
        let (plan, _) = held_everywhere(56);
        let day = chrono::Duration::days(1);
        let start = plan.range.start;
        let call = |from: i64, to: i64| Need {
            slice: Slice {
                batch: 0,
                window: engagement::TimeRange {
                    start: start + day * from as i32,
                    end: start + day * to as i32,
                },
            },
            status_only: false,
        };
        // Two calls over the first cell, one over the second.
        let calls = [call(0, 10), call(10, 40), call(40, 56)];
        let mut coverage = Coverage::of(&plan, &calls, &HashSet::new());
        assert_eq!(coverage.answered(&calls[0]), 0);
        assert_eq!(coverage.answered(&calls[2]), 0);
        assert_eq!(coverage.answered(&calls[1]), 2);
    }
}

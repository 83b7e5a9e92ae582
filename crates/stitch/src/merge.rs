//! Adding answers of disjoint slices into one. Slices never overlap in (Tweet, hour), so
//! one rule serves every grouping shape: equal paths add up, new paths are inserted.

use std::collections::HashSet;
use std::collections::btree_map::Entry;

use engagement::render::Zeros;
use engagement::time::format_instant;
use engagement::tree::{TreeError, is_unavailable_error, unavailable_error};
use engagement::{EngagementType, Grouping, Response, TimeRange, TweetId, Zone, render};

use crate::plan::Plan;

/// Adds `other` into `acc`: trees are deep-summed, ID lists unioned and sorted, `errors`
/// unioned (the count of deleted Tweets recomputed from the merged list), and `start`/`end`
/// widened to cover both.
pub fn absorb(acc: &mut Response, other: Response) -> Result<(), TreeError> {
    for (name, tree) in other.groupings {
        match acc.groupings.entry(name) {
            Entry::Vacant(slot) => {
                slot.insert(tree);
            }
            Entry::Occupied(mut slot) => slot.get_mut().absorb(tree)?,
        }
    }
    let Response {
        unavailable_tweet_ids,
        unsupported_for_video_views_tweet_ids,
        unsupported_for_impressions_engagements_tweet_ids,
        errors,
        start,
        end,
        ..
    } = other;
    union(&mut acc.unavailable_tweet_ids, unavailable_tweet_ids);
    union(&mut acc.unsupported_for_video_views_tweet_ids, unsupported_for_video_views_tweet_ids);
    union(
        &mut acc.unsupported_for_impressions_engagements_tweet_ids,
        unsupported_for_impressions_engagements_tweet_ids,
    );
    acc.errors.extend(errors);
    acc.errors.retain(|e| !is_unavailable_error(e));
    acc.errors.sort();
    acc.errors.dedup();
    if !acc.unavailable_tweet_ids.is_empty() {
        acc.errors.insert(0, unavailable_error(acc.unavailable_tweet_ids.len()));
    }
    acc.start = [acc.start.take(), start].into_iter().flatten().min();
    acc.end = [acc.end.take(), end].into_iter().flatten().max();
    Ok(())
}

/// The merge of two answers (see [`absorb`]); associative and commutative.
pub fn merge(mut a: Response, b: Response) -> Result<Response, TreeError> {
    absorb(&mut a, b)?;
    Ok(a)
}

fn union(into: &mut Vec<TweetId>, more: Vec<TweetId>) {
    into.extend(more);
    into.sort_unstable();
    into.dedup();
}

/// The answer the API gives for `tweets` over a range before any of them existed: every
/// bucket present (the buckets of `zone`), every count zero. Leave out the Tweets the API
/// reports as deleted.
pub fn synthesize(
    tweets: &[TweetId],
    types: &[EngagementType],
    groupings: &[Grouping],
    range: TimeRange,
    zone: &Zone,
) -> Response {
    Response {
        start: Some(format_instant(range.start)),
        end: Some(format_instant(range.end)),
        groupings: render(tweets, types, groupings, range, zone, &Zeros),
        ..Response::default()
    }
}

/// Adds to `merged` (the answers of a plan's real calls) the zeros of every batch's
/// synthesized part in `zone`'s buckets, leaving out the Tweets the API said are deleted (it
/// leaves those out of every grouping).
pub fn absorb_zeros(
    merged: &mut Response,
    plan: &Plan,
    types: &[EngagementType],
    groupings: &[Grouping],
    zone: &Zone,
) -> Result<(), TreeError> {
    let deleted: HashSet<TweetId> = merged.unavailable_tweet_ids.iter().copied().collect();
    for (batch, zeros) in plan.batches.iter().zip(&plan.synthesized) {
        if let Some(range) = zeros {
            let shown: Vec<TweetId> = batch.iter().copied().filter(|id| !deleted.contains(id)).collect();
            absorb(merged, synthesize(&shown, types, groupings, *range, zone))?;
        }
    }
    Ok(())
}

/// Makes a merged answer read as one call over `range` would: every grouping present (an
/// empty one when nothing fell in it) and the range's normalized `start` and `end`.
pub fn finish(merged: &mut Response, groupings: &[Grouping], range: TimeRange) {
    for g in groupings {
        merged.groupings.entry(g.name.clone()).or_insert_with(engagement::Node::branch);
    }
    merged.start = Some(format_instant(range.start));
    merged.end = Some(format_instant(range.end));
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn response(v: serde_json::Value) -> Response {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn lists_union_and_the_deleted_count_is_recomputed() {
        let a = response(json!({"start": "2015-01-29T00:00:00Z", "end": "2015-02-26T00:00:00Z",
            "unavailable_tweet_ids": ["30"], "errors": ["1 Tweet ID(s) are unavailable", "x"],
            "g": {"1": {"impressions": "3"}}}));
        let b = response(json!({"start": "2015-01-01T00:00:00Z", "end": "2015-01-29T00:00:00Z",
            "unavailable_tweet_ids": ["4", "30"], "errors": ["2 Tweet ID(s) are unavailable", "x"],
            "unsupported_for_video_views_tweet_ids": ["9"],
            "g": {"1": {"impressions": "4"}, "2": {"impressions": "1"}}}));
        let m = merge(a, b).unwrap();
        assert_eq!(
            serde_json::to_value(&m).unwrap(),
            json!({"start": "2015-01-01T00:00:00Z", "end": "2015-02-26T00:00:00Z",
                "unavailable_tweet_ids": ["4", "30"], "unsupported_for_video_views_tweet_ids": ["9"],
                "errors": ["2 Tweet ID(s) are unavailable", "x"],
                "g": {"1": {"impressions": "7"}, "2": {"impressions": "1"}}})
        );
    }

    #[test]
    fn overflow_is_an_error_not_a_wrap() {
        let a = response(json!({"g": {"1": "18446744073709551615"}}));
        let b = response(json!({"g": {"1": "1"}}));
        assert!(matches!(merge(a, b), Err(TreeError::Overflow { .. })));
    }
}

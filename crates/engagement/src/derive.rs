//! Numbers an answer implies but no endpoint returns: the engagement rate (engagements over
//! impressions, as the API's documentation defines it) and the Top Tweets of a type.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::error::ApiError;
use crate::request::Sent;
use crate::tree::Response;
use crate::tweet_id::TweetId;
use crate::vocabulary::{EngagementType, GroupBy, Grouping};

/// The derivation that divides engagements by impressions.
pub const ENGAGEMENT_RATE: &str = "engagement_rate";

/// The most Top Tweets one question may ask for.
pub const MAX_TOP: u64 = 10_000;

/// `"top"` as a client sent it.
#[derive(Debug, Clone, Default, PartialEq, serde::Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema), schema(as = TopSpec))]
pub struct TopBody {
    /// The engagement type to rank by; one of the question's types.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(value_type = String, required = true))]
    pub by: Sent<String>,
    /// How many Tweets to list (1 to 10000).
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(value_type = u64, required = true, minimum = 1, maximum = 10000))]
    pub n: Sent<u64>,
}

/// The N Tweets with the most of one type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Top {
    pub by: EngagementType,
    pub n: usize,
}

/// What a question asks to be derived from its answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Derivations {
    pub engagement_rate: bool,
    pub top: Option<Top>,
}

impl Derivations {
    /// Reads `derive` and `top` for a question of `types`, reporting every problem at once.
    pub fn read(
        derive: &Sent<Option<Vec<Sent<String>>>>,
        top: &Sent<Option<TopBody>>,
        types: &[EngagementType],
    ) -> Result<Derivations, ApiError> {
        let mut errors = Vec::new();
        let mut wanted = Derivations::default();
        match derive {
            Sent::Absent | Sent::Given(None) => {}
            Sent::Given(Some(names)) => {
                for name in names {
                    match name {
                        Sent::Given(n) if n == ENGAGEMENT_RATE => wanted.engagement_rate = true,
                        other => errors.push(format!(
                            "derive: {other} is not a derived number; the one there is is \"{ENGAGEMENT_RATE}\""
                        )),
                    }
                }
            }
            Sent::Other(other) => errors.push(format!(
                "derive must be a list of derived numbers, e.g. [\"{ENGAGEMENT_RATE}\"], not {other}"
            )),
        }
        if wanted.engagement_rate {
            let missing: Vec<&str> = [EngagementType::Impressions, EngagementType::Engagements]
                .into_iter()
                .filter(|t| !types.contains(t))
                .map(EngagementType::name)
                .collect();
            if !missing.is_empty() {
                errors.push(format!(
                    "derive: the engagement rate is engagements / impressions, so engagement_types must include both impressions and engagements (missing: {})",
                    missing.join(", ")
                ));
            }
        }
        match top {
            Sent::Absent | Sent::Given(None) => {}
            Sent::Given(Some(body)) => {
                let by = match &body.by {
                    Sent::Given(name) => match name.parse::<EngagementType>() {
                        Ok(t) if types.contains(&t) => Some(t),
                        _ => {
                            errors.push(format!(
                                "top.by must be one of the question's engagement_types ({}), not {:?}",
                                types.iter().map(|t| t.name()).collect::<Vec<_>>().join(", "),
                                name
                            ));
                            None
                        }
                    },
                    other => {
                        errors.push(format!("top.by must name an engagement type, not {other}"));
                        None
                    }
                };
                let n = match body.n {
                    Sent::Given(n) if (1..=MAX_TOP).contains(&n) => Some(n as usize),
                    ref other => {
                        errors.push(format!("top.n must be a whole number from 1 to {MAX_TOP}, not {other}"));
                        None
                    }
                };
                if let (Some(by), Some(n)) = (by, n) {
                    wanted.top = Some(Top { by, n });
                }
            }
            Sent::Other(other) => errors.push(format!(
                "top must be an object such as {{\"by\": \"impressions\", \"n\": 10}}, not {other}"
            )),
        }
        if errors.is_empty() { Ok(wanted) } else { Err(ApiError { errors }) }
    }

    /// Whether anything is to be derived.
    pub fn any(&self) -> bool {
        self.engagement_rate || self.top.is_some()
    }

    /// The types the derivations read.
    pub fn types(&self) -> Vec<EngagementType> {
        let mut types = Vec::new();
        if self.engagement_rate {
            types.extend([EngagementType::Impressions, EngagementType::Engagements]);
        }
        if let Some(top) = self.top
            && !types.contains(&top.by)
        {
            types.push(top.by);
        }
        types
    }

    /// The derived numbers from `totals`, each Tweet's counts over the question's range.
    pub fn compute(&self, totals: &Totals) -> Derived {
        let engagement_rate = self.engagement_rate.then(|| {
            let of = |counts: &BTreeMap<EngagementType, u64>, t| counts.get(&t).copied().unwrap_or(0);
            let (mut engagements, mut impressions) = (0u64, 0u64);
            let by_tweet = totals
                .0
                .iter()
                .map(|(id, counts)| {
                    let (e, i) =
                        (of(counts, EngagementType::Engagements), of(counts, EngagementType::Impressions));
                    engagements = engagements.saturating_add(e);
                    impressions = impressions.saturating_add(i);
                    (id.to_string(), rate(e, i))
                })
                .collect();
            EngagementRate { overall: rate(engagements, impressions), by_tweet }
        });
        let top = self.top.map(|Top { by, n }| {
            let mut ranked: Vec<Ranked> = totals
                .0
                .iter()
                .map(|(id, counts)| Ranked { tweet_id: *id, value: counts.get(&by).copied().unwrap_or(0) })
                .collect();
            // Most first; ties by Tweet ID ascending (the map is in ID order and the sort is stable).
            ranked.sort_by_key(|r| std::cmp::Reverse(r.value));
            ranked.truncate(n);
            ranked
        });
        Derived { derived: engagement_rate.map(|engagement_rate| Numbers { engagement_rate }), top }
    }
}

fn rate(engagements: u64, impressions: u64) -> Option<f64> {
    (impressions > 0).then(|| engagements as f64 / impressions as f64)
}

/// Each Tweet's counts per type over a whole range.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Totals(pub BTreeMap<TweetId, BTreeMap<EngagementType, u64>>);

impl Totals {
    /// Sums the counts of `grouping` in `response` per Tweet and type; `None` unless the
    /// grouping has both a `tweet.id` and an `engagement.type` level.
    pub fn of(response: &Response, grouping: &Grouping) -> Option<Totals> {
        let level = |g| grouping.group_by.iter().position(|l| *l == g);
        let (tweet, ty) = (level(GroupBy::TweetId)?, level(GroupBy::EngagementType)?);
        let mut totals = Totals::default();
        if let Some(tree) = response.groupings.get(&grouping.name) {
            tree.for_each_count(&mut |path, count| {
                let id = path.get(tweet).and_then(|k| k.parse::<u64>().ok()).map(TweetId);
                let t = path.get(ty).and_then(|k| k.parse::<EngagementType>().ok());
                if let (Some(id), Some(t)) = (id, t) {
                    let slot = totals.0.entry(id).or_default().entry(t).or_default();
                    *slot = slot.saturating_add(count);
                }
            });
        }
        Some(totals)
    }
}

/// A grouping whose counts [`Totals::of`] can sum, among `groupings`.
pub fn totals_grouping(groupings: &[Grouping]) -> Option<&Grouping> {
    groupings
        .iter()
        .find(|g| g.group_by.contains(&GroupBy::TweetId) && g.group_by.contains(&GroupBy::EngagementType))
}

/// The derived numbers of an answer, as the native answer carries them beside `data`.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Derived {
    /// With `"derive"`: the numbers asked for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub derived: Option<Numbers>,
    /// With `"top"`: the Tweets with the most of its type, most first, ties by Tweet ID.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub top: Option<Vec<Ranked>>,
}

/// Numbers derived from an answer.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Numbers {
    pub engagement_rate: EngagementRate,
}

/// Engagements divided by impressions over the question's range (organic impressions, as
/// `/historical` counts them); `null` where there were no impressions.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct EngagementRate {
    /// Over every Tweet answered for.
    pub overall: Option<f64>,
    /// Per Tweet ID (deleted Tweets are not listed).
    pub by_tweet: BTreeMap<String, Option<f64>>,
}

/// One of the Top Tweets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Ranked {
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub tweet_id: TweetId,
    pub value: u64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tree::Node;

    fn totals(rows: &[(u64, u64, u64)]) -> Totals {
        let mut t = Totals::default();
        for (id, impressions, engagements) in rows {
            let counts = t.0.entry(TweetId(*id)).or_default();
            counts.insert(EngagementType::Impressions, *impressions);
            counts.insert(EngagementType::Engagements, *engagements);
        }
        t
    }

    #[test]
    fn rate_is_engagements_over_impressions_and_null_without_impressions() {
        let d = Derivations { engagement_rate: true, top: None };
        let out = d.compute(&totals(&[(5, 200, 10), (7, 0, 3)]));
        let rate = out.derived.expect("asked").engagement_rate;
        assert_eq!(rate.overall, Some(13.0 / 200.0));
        assert_eq!(rate.by_tweet["5"], Some(0.05));
        assert_eq!(rate.by_tweet["7"], None);
        let none = d.compute(&totals(&[(5, 0, 0)]));
        assert_eq!(none.derived.expect("asked").engagement_rate.overall, None);
    }

    #[test]
    fn top_ranks_most_first_and_ties_by_id() {
        let d =
            Derivations { engagement_rate: false, top: Some(Top { by: EngagementType::Engagements, n: 3 }) };
        let out = d.compute(&totals(&[(30, 0, 4), (10, 0, 9), (20, 0, 4), (5, 0, 1)]));
        let ids: Vec<(u64, u64)> = out.top.expect("asked").iter().map(|r| (r.tweet_id.0, r.value)).collect();
        assert_eq!(ids, vec![(10, 9), (20, 4), (30, 4)]);
        assert!(out.derived.is_none());
    }

    #[test]
    fn both_types_are_needed_for_the_rate_and_top_must_rank_an_asked_type() {
        let names = |v: &[&str]| Sent::Given(Some(v.iter().map(|s| Sent::Given(s.to_string())).collect()));
        let err =
            Derivations::read(&names(&["engagement_rate"]), &Sent::Absent, &[EngagementType::Impressions])
                .unwrap_err();
        assert!(err.errors[0].contains("missing: engagements"), "{err:?}");
        let top = Sent::Given(Some(TopBody { by: Sent::Given("favorites".into()), n: Sent::Given(0) }));
        let err = Derivations::read(&Sent::Absent, &top, &[EngagementType::Impressions]).unwrap_err();
        assert_eq!(err.errors.len(), 2, "{err:?}");
        let err = Derivations::read(&names(&["reach"]), &Sent::Absent, &[]).unwrap_err();
        assert!(err.errors[0].contains("\"reach\""), "{err:?}");
    }

    #[test]
    fn totals_sum_any_grouping_with_tweet_and_type_levels() {
        let grouping = Grouping {
            name: "g".into(),
            group_by: vec![GroupBy::EngagementType, GroupBy::TweetId, GroupBy::EngagementDay],
        };
        let day = |a, b| {
            Node::Branch(crate::tree::Branch::from_entries(vec![
                ("2024-01-01".into(), Node::Count(a)),
                ("2024-01-02".into(), Node::Count(b)),
            ]))
        };
        let tree = Node::Branch(crate::tree::Branch::from_entries(vec![(
            "impressions".into(),
            Node::Branch(crate::tree::Branch::from_entries(vec![("42".into(), day(3, 4))])),
        )]));
        let mut response = Response::default();
        response.groupings.insert("g".into(), tree);
        let t = Totals::of(&response, &grouping).expect("has both levels");
        assert_eq!(t.0[&TweetId(42)][&EngagementType::Impressions], 7);
        let flat = Grouping { name: "g".into(), group_by: vec![GroupBy::EngagementDay] };
        assert!(Totals::of(&response, &flat).is_none());
    }
}

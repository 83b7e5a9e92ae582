//! Answers of questions over settled time, kept rendered so an exact repeat (a dashboard
//! reloaded) is served without reading or rendering facts again. They live as long as the
//! statuses they were rendered with are trusted.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use engagement::{EngagementType, Grouping, Response, TimeRange, TweetId};

use crate::Written;

/// A question over settled time, as the rendered answers are kept by.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct RenderedKey {
    pub handle: String,
    pub tweets: Vec<TweetId>,
    pub types: Vec<EngagementType>,
    pub groupings: Vec<Grouping>,
    pub range: TimeRange,
    pub zone: engagement::Zone,
}

/// A rendered answer, and what it depended on besides settled facts.
#[derive(Debug)]
pub(crate) struct RenderedAnswer {
    pub response: Arc<Response>,
    /// Until when the statuses it was rendered with are trusted.
    pub valid_until: DateTime<Utc>,
    /// The Tweets whose video views were reported as zero (a rule of the Tweet's age now).
    pub no_video_views: Vec<TweetId>,
    pub from_store: usize,
    /// Its text, once a repeat has written it.
    pub written: Arc<Written>,
}

/// The most counts the rendered answers kept may hold together (about 100 MB).
const RENDERED_COUNTS: u64 = 1_000_000;

/// The rendered answers kept.
pub(crate) struct Rendered {
    answers: moka::sync::Cache<RenderedKey, Arc<RenderedAnswer>>,
}

impl std::fmt::Debug for Rendered {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rendered").field("answers", &self.answers.entry_count()).finish()
    }
}

impl Rendered {
    /// Kept answers live at most `ttl` (the statuses' trust).
    pub(crate) fn new(ttl: std::time::Duration) -> Rendered {
        let answers = moka::sync::Cache::builder()
            .max_capacity(RENDERED_COUNTS)
            // A count weighs its tree and, once repeated, its text in two styles.
            .weigher(|_, a: &Arc<RenderedAnswer>| counts(&a.response).min(u64::from(u32::MAX)) as u32)
            .time_to_live(ttl.max(std::time::Duration::from_millis(1)))
            .build();
        Rendered { answers }
    }

    /// The answer kept for `key`, if it still holds at `now`.
    pub(crate) fn repeat(&self, key: &RenderedKey, now: DateTime<Utc>) -> Option<Arc<RenderedAnswer>> {
        let kept = self.answers.get(key)?;
        (now < kept.valid_until && kept.no_video_views == no_video_views(&key.tweets, &key.types, now))
            .then_some(kept)
    }

    /// Keeps `answer` for `key`.
    pub(crate) fn keep(&self, key: RenderedKey, answer: RenderedAnswer) {
        self.answers.insert(key, Arc::new(answer));
    }
}

/// The leaves of an answer's trees.
fn counts(response: &Response) -> u64 {
    fn leaves(node: &engagement::Node) -> u64 {
        match node {
            engagement::Node::Count(_) => 1,
            engagement::Node::Branch(b) => b.iter().map(|(_, n)| leaves(n)).sum(),
        }
    }
    response.groupings.values().map(leaves).sum()
}

/// The Tweets of `tweets` whose video views are not reported at `now`.
pub(crate) fn no_video_views(
    tweets: &[TweetId],
    types: &[EngagementType],
    now: DateTime<Utc>,
) -> Vec<TweetId> {
    if !types.contains(&EngagementType::VideoViews) {
        return Vec::new();
    }
    tweets.iter().copied().filter(|t| !t.reports_video_views_at(now)).collect()
}

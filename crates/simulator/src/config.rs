//! What a simulator is set up with: credentials, special Tweets, limits and faults.

use std::collections::HashSet;

use chrono::{DateTime, Utc};
use engagement::TweetId;

use crate::faults::Faults;

/// The clock the simulator reads.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Clock {
    #[default]
    System,
    /// Always this instant (tests, reproducible benchmarks).
    Fixed(DateTime<Utc>),
}

impl Clock {
    /// The current instant by this clock.
    pub fn now(&self) -> DateTime<Utc> {
        match self {
            Clock::System => Utc::now(),
            Clock::Fixed(t) => *t,
        }
    }
}

/// An @handle that has authorized the app: its access token and secret.
#[derive(Clone, PartialEq, Eq)]
pub struct Handle {
    pub name: String,
    pub token: String,
    pub token_secret: String,
}

impl std::fmt::Debug for Handle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Handle").field("name", &self.name).field("token", &self.token).finish_non_exhaustive()
    }
}

/// The app's consumer key and secret and the handles that authorized it.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub consumer_key: String,
    pub consumer_secret: String,
    pub handles: Vec<Handle>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("consumer_key", &self.consumer_key)
            .field("handles", &self.handles)
            .finish_non_exhaustive()
    }
}

/// The default consumer key.
pub const DEMO_CONSUMER_KEY: &str = "sim-consumer-key";
/// The default consumer secret.
pub const DEMO_CONSUMER_SECRET: &str = "sim-consumer-secret";
/// The default handle.
pub const DEMO_HANDLE: &str = "demo";
/// The default handle's access token.
pub const DEMO_TOKEN: &str = "demo-token";
/// The default handle's access token secret.
pub const DEMO_TOKEN_SECRET: &str = "demo-token-secret";

impl Default for Credentials {
    fn default() -> Self {
        Credentials {
            consumer_key: DEMO_CONSUMER_KEY.into(),
            consumer_secret: DEMO_CONSUMER_SECRET.into(),
            handles: vec![Handle {
                name: DEMO_HANDLE.into(),
                token: DEMO_TOKEN.into(),
                token_secret: DEMO_TOKEN_SECRET.into(),
            }],
        }
    }
}

/// Everything a simulator is set up with. Every handle owns every Tweet that is not foreign.
#[derive(Debug, Clone, Default)]
pub struct Config {
    /// Varies the counts; the same seed gives the same counts.
    pub seed: u64,
    pub credentials: Credentials,
    /// Tweets of another handle: a batch holding one is refused with `403`.
    pub foreign_ids: HashSet<TweetId>,
    /// Protected Tweets: a batch holding one is refused with `400`.
    pub protected_ids: HashSet<TweetId>,
    /// Deleted Tweets: listed under `unavailable_tweet_ids`.
    pub deleted_ids: HashSet<TweetId>,
    /// Tweets deleted from an instant on, by the simulator's clock: shown before it, listed
    /// under `unavailable_tweet_ids` from it.
    pub deleted_at: std::collections::HashMap<TweetId, chrono::DateTime<chrono::Utc>>,
    /// Calls allowed per minute across all handles; 0 for no limit.
    pub rate_limit_per_minute: u32,
    /// The limit's window in seconds: 60, as the API counts; tests shorten it. 0 means 60.
    pub rate_window_secs: u64,
    pub faults: Faults,
    /// The clock the simulator starts with; `POST /_clock` moves it afterwards.
    pub clock: Clock,
    /// How many hours after its end an hour's count keeps growing to its final value; 0 for
    /// counts that are final once the hour is over. See [`crate::Model`].
    pub settle_hours: u32,
    /// The URL clients sign against, if not `http://` + the `Host` header.
    pub public_url: Option<String>,
}

impl Config {
    /// Whether `tweet` is deleted at `now`.
    pub fn deleted(&self, tweet: TweetId, now: chrono::DateTime<chrono::Utc>) -> bool {
        self.deleted_ids.contains(&tweet) || self.deleted_at.get(&tweet).is_some_and(|at| now >= *at)
    }
}

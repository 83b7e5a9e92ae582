//! The Engagement API's vocabulary: what a question may ask, how it is validated, and the
//! shape of an answer. No I/O happens here; the simulator, the stitching logic and the
//! service all speak through these types.

pub mod calendar;
pub mod csv;
pub mod derive;
pub mod error;
pub mod members;
pub mod oauth;
#[cfg(feature = "openapi")]
pub mod openapi;
pub mod render;
pub mod request;
pub mod slots;
pub mod time;
pub mod tree;
pub mod tweet_id;
pub mod vocabulary;
pub mod zone;

pub use error::ApiError;
pub use render::{HourlyCounts, render};
pub use request::{Limits, Query, RawRequest};
pub use time::{TimeRange, parse_instant};
pub use tree::{CountStyle, Node, Response};
pub use tweet_id::TweetId;
pub use vocabulary::{Endpoint, EngagementType, GroupBy, Grouping};
pub use zone::Zone;

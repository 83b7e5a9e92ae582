//! stitcher: answers Engagement API `/historical` questions over any range and any number
//! of Tweets by cutting them into the calls the API allows and merging the answers.

pub mod admission;
pub mod app;
pub mod auth;
pub mod caching;
pub mod cli;
pub mod connections;
pub mod current;
pub mod demo;
pub mod error;
pub mod estimate;
pub mod fallback;
pub mod format;
pub mod historical;
pub mod jobs;
pub mod metrics;
pub mod openapi;
pub mod page;
pub mod probes;
pub mod request_id;
pub mod schemas;
pub mod settings;
pub mod state;
pub mod streaming;
pub mod telemetry;
pub mod usage;
pub mod watches;

pub use app::Application;
pub use settings::Settings;

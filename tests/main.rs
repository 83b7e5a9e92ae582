//! End-to-end tests of the service, built by `Application::build` as `main` builds it,
//! against the simulator over HTTP. One test binary, so the suite links once.

// A test reads best as the story it tells, however long.
#![allow(clippy::too_many_lines)]

mod caching;
mod calendars;
mod derived_and_csv;
mod drop_in_oauth;
mod estimate;
mod jobs;
mod load;
mod modules;
mod now_endpoints;
mod observability;
mod shares;
mod stitching;
mod store;
mod watches;

//! The service as its users and operators meet it: the real `stitcher` binary as a child
//! process (and the router, where a test needs no process), against a simulator in the
//! test process. One test binary, so the suite links once.

// A test reads best as the story it tells, however long.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::too_many_lines)]

mod cli;
mod connections;
mod jobs;
mod openapi;
mod page;
mod refusals;
mod replicas;
mod secrets;
mod shutdown;
mod store;
mod support;
mod traces;
mod watches;

//! The pure logic of stitching: cutting a question into the calls the API allows
//! ([`plan`]) and adding their answers back into one ([`merge`]). No I/O happens here.

pub mod cover;
pub mod merge;
pub mod plan;
pub mod rebucket;

pub use cover::cover;
pub use merge::{absorb, absorb_zeros, finish, merge, synthesize};
pub use plan::{Plan, Slice, plan, windows};
pub use rebucket::{hourly_grouping, rebucket};

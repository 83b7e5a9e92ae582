//! Redis memory per settled Tweet-day of the shared tier: 100 Tweets × 112 days of three
//! types written as a replica writes a question's calls (four 28-day windows, which need
//! not start where Redis's blocks do), then every key under the run's prefix weighed with
//! `MEMORY USAGE` (needs the Redis at `REDIS_URL`, default the local one; `scripts/redis`
//! starts one).
//!
//!     cargo bench -p replicas --bench redis_memory

use std::time::Duration;

use engagement::TweetId;
use engagement::slots::{SLOTS, slots_in, types_mask};
use replicas::Redis;

#[tokio::main]
async fn main() {
    if std::env::args().any(|a| a == "--list" || a == "--test") {
        return;
    }
    let url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let prefix = format!("stitcher-bench:{}:", std::process::id());
    let shared = Redis::connect(&url, &prefix).expect("a Redis URL");
    let types = [
        engagement::EngagementType::Impressions,
        engagement::EngagementType::Engagements,
        engagement::EngagementType::Favorites,
    ];
    let slots = types_mask(&types);
    let (tweets, days, first) = (100u64, 112i64, 480_013i64);
    // Counts like a live Tweet's: mostly small, some in the thousands.
    let counts = |t: u64, h: i64| {
        let mut counts = [0u64; SLOTS];
        for s in slots_in(slots) {
            counts[s] = (t * 7919 + h as u64 * 104_729 + s as u64 * 31) % [9, 120, 4000][s % 3];
        }
        counts
    };
    let settled_from = first + days * 24;
    for window in 0..days / 28 {
        let from = first + window * 28 * 24;
        let hours: engine::ports::CallHours = (0..tweets)
            .map(|t| {
                let full: Vec<_> = (from..from + 28 * 24).map(|h| (h, counts(t, h))).collect();
                (TweetId(1_000 + t), engine::ports::Hours::of(slots, &full))
            })
            .collect();
        shared.put_facts("bench", slots, &hours, settled_from, Duration::from_secs(60)).await.expect("Redis");
    }
    let bytes = shared.memory_under_prefix().await.expect("Redis");
    let tweet_days = tweets * days as u64;
    let counts = tweet_days * 24 * types.len() as u64;
    println!("\n## Redis memory of settled facts (3 types, {tweets} Tweets × {days} days)\n");
    println!("| keys' memory | per Tweet-day | per hourly count |");
    println!("|---|---|---|");
    println!(
        "| {:.1} MB | {:.0} bytes | {:.1} bytes |",
        bytes as f64 / 1e6,
        bytes as f64 / tweet_days as f64,
        bytes as f64 / counts as f64
    );
    shared.forget_prefix().await.expect("Redis");
}

//! The largest legal call (25 Tweets, 17 types, 28 days, one 4-level hourly grouping):
//! answering it, and answering plus writing the gzip body as the simulator sends it.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use engagement::{Endpoint, Limits, TweetId};
use serde_json::json;
use simulator::{Clock, Config, Model};

fn largest_call(c: &mut Criterion) {
    let now = engagement::parse_instant("2024-06-01T00:00:00Z").expect("a valid instant");
    let config = Config { clock: Clock::Fixed(now), ..Config::default() };
    let model = Model { seed: 0, now, settle_hours: 0 };
    let ids: Vec<String> = (0..25)
        .map(|k| (TweetId::minted_at(now - chrono::Duration::days(20 + k)).0 + k as u64).to_string())
        .collect();
    let types: Vec<&str> = Endpoint::Historical.types().map(|t| t.name()).collect();
    let body = json!({
        "tweet_ids": ids, "engagement_types": types,
        "groupings": {"hourly": {"group_by": ["tweet.id", "engagement.type", "engagement.day", "engagement.hour"]}},
        "start": "2024-05-01", "end": "2024-05-29"
    });
    let limits = Limits::of(Endpoint::Historical);
    let mut group = c.benchmark_group("largest legal call");
    group.bench_function("answer", |b| {
        b.iter(|| simulator::answer(&config, &model, Endpoint::Historical, black_box(&body), &limits))
    });
    group.bench_function("answer + json + gzip", |b| {
        b.iter(|| {
            let r = simulator::answer(&config, &model, Endpoint::Historical, black_box(&body), &limits)
                .expect("a legal call");
            let json = serde_json::to_vec(&r).expect("serializable");
            let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            std::io::Write::write_all(&mut enc, &json).expect("in memory");
            enc.finish().expect("in memory").len()
        })
    });
    group.finish();
}

criterion_group!(benches, largest_call);
criterion_main!(benches);

//! Existing Engagement API clients work by changing only their host: OAuth 1.0a requests
//! signed with the app's consumer key and a handle's token are that handle's. The client
//! side here is the oauth1-request library, not the service's verifier.

#![allow(clippy::unwrap_used)]

use std::num::NonZeroU64;

use chrono::Duration;
use end_to_end::{World, tweet};
use engagement::time::format_instant;
use serde_json::{Value, json};
use simulator::Config;

fn signed(url: &str, timestamp: Option<u64>, token_secret: &str) -> String {
    let client = oauth1_request::Credentials::new("sim-consumer-key", "sim-consumer-secret");
    let mut b = oauth1_request::Builder::new(client, oauth1_request::HMAC_SHA1);
    b.token(oauth1_request::Credentials::new("demo-token", token_secret));
    b.version(true);
    if let Some(t) = timestamp {
        b.timestamp(NonZeroU64::new(t));
    }
    b.post(url, &())
}

async fn post(world: &World, authorization: &str, body: &Value) -> (u16, Value) {
    let resp = world
        .http
        .post(format!("{}/insights/engagement/historical", world.url))
        .header("authorization", authorization)
        .json(body)
        .send()
        .await
        .unwrap();
    (resp.status().as_u16(), resp.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn an_unmodified_oauth_client_gets_a_stitched_year() {
    let world = World::start(Config::default(), &[]).await;
    let url = format!("{}/insights/engagement/historical", world.url);
    let now = world.now;
    let body = json!({
        "tweet_ids": [tweet(now, 500.0, 1).to_string(), tweet(now, 200.0, 2).to_string()],
        "engagement_types": ["impressions", "engagements", "url_clicks"],
        "groupings": {"per tweet": {"group_by": ["tweet.id", "engagement.type"]}, "daily": {"group_by": ["engagement.day"]}},
        "start": format_instant(now - Duration::days(366)),
        "end": format_instant(now - Duration::days(1)),
    });
    let header = signed(&url, None, "demo-token-secret");
    let (status, answer) = post(&world, &header, &body).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer, world.oracle(&body).await);

    // The same signature again is a replay.
    let (status, answer) = post(&world, &header, &body).await;
    assert_eq!(status, 401);
    assert!(answer["errors"][0].as_str().unwrap().contains("already used"), "{answer}");

    // A timestamp 10 minutes off, a wrong secret, another URL: refused.
    let stale = (chrono::Utc::now().timestamp() - 600) as u64;
    let (status, answer) = post(&world, &signed(&url, Some(stale), "demo-token-secret"), &body).await;
    assert_eq!(status, 401);
    assert!(answer["errors"][0].as_str().unwrap().contains("Timestamp out of bounds"), "{answer}");
    assert_eq!(post(&world, &signed(&url, None, "wrong"), &body).await.0, 401);
    let elsewhere = signed(&format!("{}/v1/historical", world.url), None, "demo-token-secret");
    assert_eq!(post(&world, &elsewhere, &body).await.0, 401);
    assert!(world.upstream_calls() > 0);

    // Bearer keys keep working.
    assert_eq!(world.ask("/insights/engagement/historical", &body).await.0, 200);
}

//! Clients that hold connections without sending or reading, against the real binary: each
//! wait has its timeout, open connections have a cap, and what needs only the head is
//! refused before the body is read.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use crate::support::{self, HOURLY, PER_TWEET, against, question};
use simulator::Config;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Reads until the peer closes or `limit` passes; what was read, and whether it closed.
async fn read_until_closed(stream: &mut TcpStream, limit: Duration) -> (String, bool) {
    let mut seen = Vec::new();
    let deadline = tokio::time::Instant::now() + limit;
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Err(_) => return (String::from_utf8_lossy(&seen).into_owned(), false),
            Ok(Ok(0)) | Ok(Err(_)) => return (String::from_utf8_lossy(&seen).into_owned(), true),
            Ok(Ok(n)) => seen.extend_from_slice(&buf[..n]),
        }
    }
}

/// Reads one small response (to `GET /livez`) from a kept-alive connection.
async fn read_livez(stream: &mut TcpStream) -> String {
    let mut seen = Vec::new();
    let mut buf = [0u8; 1024];
    while !String::from_utf8_lossy(&seen).contains("\"ok\"}") {
        let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf)).await.unwrap().unwrap();
        assert!(n > 0, "closed before the answer: {}", String::from_utf8_lossy(&seen));
        seen.extend_from_slice(&buf[..n]);
    }
    String::from_utf8_lossy(&seen).into_owned()
}

const LIVEZ: &[u8] = b"GET /livez HTTP/1.1\r\nHost: stitcher\r\n\r\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heads_must_come_in_time_and_idle_connections_close() {
    let (_sim, stitcher) = against(
        Config::default(),
        &[("STITCHER__SERVER__HEADER_TIMEOUT_SECS", "1"), ("STITCHER__SERVER__IDLE_TIMEOUT_SECS", "4")],
    )
    .await;

    // A bare connect that sends nothing.
    let started = Instant::now();
    let mut bare = TcpStream::connect(&stitcher.addr).await.unwrap();
    let (_, closed) = read_until_closed(&mut bare, Duration::from_secs(8)).await;
    assert!(closed, "a connection that sends nothing is closed");
    assert!(started.elapsed() < Duration::from_secs(5), "closed after {:?}", started.elapsed());

    // Half a head, then nothing.
    let mut half = TcpStream::connect(&stitcher.addr).await.unwrap();
    half.write_all(b"POST /v1/historical HTTP/1.1\r\nHost: stitcher\r\n").await.unwrap();
    let (_, closed) = read_until_closed(&mut half, Duration::from_secs(8)).await;
    assert!(closed, "a head that never ends is cut off");

    // Kept alive: quiet longer than the head timeout is fine, longer than the idle one is not.
    let mut kept = TcpStream::connect(&stitcher.addr).await.unwrap();
    kept.write_all(LIVEZ).await.unwrap();
    assert!(read_livez(&mut kept).await.starts_with("HTTP/1.1 200"));
    tokio::time::sleep(Duration::from_secs(2)).await;
    kept.write_all(LIVEZ).await.unwrap();
    assert!(read_livez(&mut kept).await.starts_with("HTTP/1.1 200"), "idle 2 s is within the idle timeout");
    let quiet = Instant::now();
    let (_, closed) = read_until_closed(&mut kept, Duration::from_secs(10)).await;
    assert!(closed, "an idle kept-alive connection is closed");
    assert!(quiet.elapsed() >= Duration::from_secs(3), "not before its idle timeout: {:?}", quiet.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_max_connections_new_ones_are_closed_and_the_service_recovers() {
    let (_sim, stitcher) = against(
        Config::default(),
        &[("STITCHER__SERVER__HEADER_TIMEOUT_SECS", "2"), ("STITCHER__SERVER__MAX_CONNECTIONS", "4")],
    )
    .await;
    let mut held = Vec::new();
    for _ in 0..4 {
        held.push(TcpStream::connect(&stitcher.addr).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut fifth = TcpStream::connect(&stitcher.addr).await.unwrap();
    let _ = fifth.write_all(LIVEZ).await;
    let (seen, closed) = read_until_closed(&mut fifth, Duration::from_millis(1500)).await;
    assert!(closed && seen.is_empty(), "the fifth connection is closed unanswered: {seen:?}");

    // The held ones time out; the service answers again.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let live = reqwest::get(format!("{}/livez", stitcher.url)).await.unwrap();
    assert_eq!(live.status().as_u16(), 200);
    assert!(support::metric(&stitcher, "stitcher_connections_refused_total").await >= 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_nobody_reads_gives_its_place_back_after_the_write_timeout() {
    let (_sim, stitcher) = against(
        Config::default(),
        &[("STITCHER__SERVER__MAX_CONCURRENT_REQUESTS", "2"), ("STITCHER__SERVER__WRITE_TIMEOUT_SECS", "2")],
    )
    .await;
    // Two answers of about 1.6 million counts (tens of MB): far more than socket buffers
    // hold, sent to clients that never read.
    let body = serde_json::to_vec(&question(400, 3, &["impressions", "engagements"], HOURLY)).unwrap();
    let mut stuck = Vec::new();
    for _ in 0..2 {
        let mut s = TcpStream::connect(&stitcher.addr).await.unwrap();
        let head = format!(
            "POST /v1/historical HTTP/1.1\r\nHost: stitcher\r\nAuthorization: Bearer demo-key\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        s.write_all(head.as_bytes()).await.unwrap();
        s.write_all(&body).await.unwrap();
        stuck.push(s);
    }
    let small = question(1, 1, &["impressions"], PER_TWEET);
    let http = reqwest::Client::new();
    let ask =
        || http.post(format!("{}/v1/historical", stitcher.url)).bearer_auth("demo-key").json(&small).send();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(ask().await.unwrap().status().as_u16(), 503, "both places are taken");

    let mut answered = None;
    for _ in 0..120 {
        let status = ask().await.unwrap().status().as_u16();
        if status == 200 {
            answered = Some(status);
            break;
        }
        assert_eq!(status, 503);
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert_eq!(answered, Some(200), "the stuck answers gave their places back: {}", stitcher.logs());
    assert!(support::metric(&stitcher, "stitcher_connections_timed_out_total").await >= 1.0);
    drop(stuck);
}

/// Whether a whole response's `Content-Length` is the length of its body.
fn length_is_the_bodys(response: &str) -> bool {
    let Some((head, body)) = response.split_once("\r\n\r\n") else {
        return false;
    };
    head.lines()
        .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().to_owned()))
        .and_then(|v| v.parse::<usize>().ok())
        .is_some_and(|length| length == body.len() && length > 0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_in_the_error_shape_say_their_own_length() {
    let (_sim, stitcher) = against(Config::default(), &[]).await;
    for request in [
        "GET /v1/historical HTTP/1.1\r\nHost: stitcher\r\nConnection: close\r\n\r\n",
        "DELETE /livez HTTP/1.1\r\nHost: stitcher\r\nConnection: close\r\n\r\n",
        "POST /v1/historical HTTP/1.1\r\nHost: stitcher\r\nAuthorization: Bearer demo-key\r\nContent-Type: application/json\r\nContent-Encoding: br\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}",
        "GET /nowhere HTTP/1.1\r\nHost: stitcher\r\nConnection: close\r\n\r\n",
    ] {
        let mut s = TcpStream::connect(&stitcher.addr).await.unwrap();
        s.write_all(request.as_bytes()).await.unwrap();
        let (seen, _) = read_until_closed(&mut s, Duration::from_secs(5)).await;
        assert!(seen.contains("\"errors\""), "{request}: {seen}");
        assert!(length_is_the_bodys(&seen), "{request}: {seen}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_that_need_only_the_head_come_before_the_body() {
    let (_sim, stitcher) = against(Config::default(), &[]).await;

    // No credentials and a large body that is never sent: 401 at once.
    let mut s = TcpStream::connect(&stitcher.addr).await.unwrap();
    s.write_all(b"POST /v1/historical HTTP/1.1\r\nHost: stitcher\r\nContent-Type: application/json\r\nContent-Length: 900000\r\n\r\n{\"tweet_ids\"").await.unwrap();
    let (seen, _) = read_until_closed(&mut s, Duration::from_secs(3)).await;
    assert!(seen.starts_with("HTTP/1.1 401"), "{seen}");
    assert!(seen.contains("\"errors\""), "{seen}");

    // Over max_body_bytes, asking to continue: 413, and no 100 Continue first.
    let mut s = TcpStream::connect(&stitcher.addr).await.unwrap();
    s.write_all(b"POST /v1/historical HTTP/1.1\r\nHost: stitcher\r\nAuthorization: Bearer demo-key\r\nContent-Type: application/json\r\nContent-Length: 2000000\r\nExpect: 100-continue\r\n\r\n").await.unwrap();
    let (seen, _) = read_until_closed(&mut s, Duration::from_secs(3)).await;
    assert!(seen.starts_with("HTTP/1.1 413"), "{seen}");

    // Many unauthenticated clients sending most of a body each: nothing is buffered.
    let pid = stitcher.child.id();
    let peak = || {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap().to_owned();
        line.split_whitespace().nth(1).unwrap().parse::<u64>().unwrap()
    };
    let before = peak();
    let chunk = vec![b' '; 64 * 1024];
    let mut senders = Vec::new();
    for _ in 0..100 {
        let addr = stitcher.addr.clone();
        let chunk = chunk.clone();
        senders.push(tokio::spawn(async move {
            let mut s = TcpStream::connect(&addr).await.unwrap();
            s.write_all(b"POST /v1/historical HTTP/1.1\r\nHost: stitcher\r\nContent-Type: application/json\r\nContent-Length: 1000000\r\n\r\n").await.unwrap();
            for _ in 0..14 {
                if s.write_all(&chunk).await.is_err() {
                    break;
                }
            }
            read_until_closed(&mut s, Duration::from_secs(5)).await.0
        }));
    }
    for sender in senders {
        let seen = sender.await.unwrap();
        assert!(seen.is_empty() || seen.starts_with("HTTP/1.1 401"), "{seen}");
    }
    let grown_kb = peak().saturating_sub(before);
    assert!(grown_kb < 40 * 1024, "100 unauthenticated bodies of 900 kB grew the peak by {grown_kb} kB");
}

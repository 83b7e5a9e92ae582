//! The page at `GET /` in a real browser: headless Chromium (installed by scripts/chromium)
//! opens a link that carries a question and the key in its fragment against the real
//! binary on a simulator; the page runs the question as a job, draws the chart, and shows
//! the totals the API gives. The test drives Chromium over the DevTools protocol on a pipe,
//! reading the page's state until it is done (virtual time would run ahead of the job).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::{PER_TWEET, Stitcher, oracle, question, simulator};
use base64::Engine as _;
use serde_json::{Value, json};
use simulator::Config;

/// The Chromium on PATH; scripts/test installs one.
fn chromium() -> String {
    ["chromium", "chromium-browser"]
        .into_iter()
        .find(|name| Command::new(name).arg("--version").output().is_ok_and(|o| o.status.success()))
        .expect("no chromium on PATH: run scripts/chromium (scripts/test does) to install it")
        .to_string()
}

/// Headless Chromium showing one page, driven over `--remote-debugging-pipe` (its file
/// descriptors 3 and 4, given as FIFOs).
struct Browser {
    child: Child,
    to: std::fs::File,
    from: BufReader<std::fs::File>,
    next_id: u64,
    session: Option<String>,
}

impl Browser {
    fn open(link: &str, dir: &Path) -> Browser {
        let (to, from) = (dir.join("to-chromium"), dir.join("from-chromium"));
        for fifo in [&to, &from] {
            assert!(Command::new("mkfifo").arg(fifo).status().unwrap().success());
        }
        let script = r#"exec "$0" --headless --no-sandbox --disable-gpu --disable-dev-shm-usage --hide-scrollbars \
            --window-size=1200,1800 --user-data-dir="$1" --remote-debugging-pipe "$2" 3<"$3" 4>"$4" 2>/dev/null"#;
        let child = Command::new("sh")
            .args(["-c", script, &chromium()])
            .arg(dir.join("profile"))
            .arg(link)
            .args([&to, &from])
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        // The shell opens the first FIFO, then the second: open them in that order.
        let to = std::fs::OpenOptions::new().write(true).open(&to).unwrap();
        let from = BufReader::new(std::fs::File::open(&from).unwrap());
        let mut browser = Browser { child, to, from, next_id: 0, session: None };
        let targets = browser.call("Target.getTargets", json!({}));
        let page =
            targets["targetInfos"].as_array().unwrap().iter().find(|t| t["type"] == "page").expect("a page")
                ["targetId"]
                .clone();
        let attached = browser.call("Target.attachToTarget", json!({"targetId": page, "flatten": true}));
        browser.session = Some(attached["sessionId"].as_str().unwrap().to_string());
        browser
    }

    /// Sends a command (to the page once attached) and waits for its result.
    fn call(&mut self, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let mut message = json!({"id": self.next_id, "method": method, "params": params});
        if let Some(session) = &self.session {
            message["sessionId"] = json!(session);
        }
        let mut bytes = serde_json::to_vec(&message).unwrap();
        bytes.push(0);
        self.to.write_all(&bytes).unwrap();
        loop {
            let mut reply = Vec::new();
            self.from.read_until(0, &mut reply).unwrap();
            assert!(!reply.is_empty(), "chromium went away");
            reply.pop();
            let reply: Value = serde_json::from_slice(&reply).unwrap();
            if reply["id"] == self.next_id {
                assert!(reply.get("error").is_none(), "{method}: {reply}");
                return reply["result"].clone();
            }
        }
    }

    /// The value of a JavaScript expression in the page.
    fn eval(&mut self, expression: &str) -> Value {
        self.call("Runtime.evaluate", json!({"expression": expression, "returnByValue": true}))["result"]["value"]
            .clone()
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The values of `attribute` in every tag of `html` that holds `marker`.
fn attributes<'a>(html: &'a str, marker: &str, attribute: &str) -> Vec<&'a str> {
    html.split('<')
        .filter(|tag| tag.contains(marker))
        .filter_map(|tag| {
            let at = tag.find(&format!(" {attribute}=\""))? + attribute.len() + 3;
            tag[at..].split('"').next()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_draws_the_chart_and_shows_the_apis_totals() {
    let (_sim, sim_url) = simulator(Config::default()).await;
    let stitcher = Stitcher::start(&[("STITCHER__UPSTREAM__BASE_URL", &sim_url)]).await;
    let page = reqwest::get(format!("{}/", stitcher.url)).await.unwrap();
    assert_eq!(page.status().as_u16(), 200);
    assert!(page.headers()["content-security-policy"].to_str().unwrap().contains("default-src 'none'"));
    let html = page.text().await.unwrap();
    assert!(!html.contains("http://") && !html.contains("https://"), "nothing is loaded from elsewhere");

    let mut body = question(6, 2, &["impressions", "engagements", "favorites"], PER_TWEET);
    // Six Tweets from shortly before the range, so every type has counts.
    let born = engagement::TweetId::minted_at(engagement::parse_instant("2022-01-05").unwrap()).0;
    body["tweet_ids"] = json!((0..6u64).map(|n| (born + (n << 30)).to_string()).collect::<Vec<_>>());
    body["groupings"] = json!({
        "daily": {"group_by": ["engagement.type", "engagement.day"]},
        "per tweet": {"group_by": PER_TWEET},
    });
    body["derive"] = json!(["engagement_rate"]);
    body["top"] = json!({"by": "favorites", "n": 3});
    let truth = oracle(&sim_url, &body).await;

    let q: String = url::form_urlencoded::byte_serialize(body.to_string().as_bytes()).collect();
    let link = format!("{}/#key=demo-key&q={q}", stitcher.url);
    let dir = tempfile::tempdir().unwrap();
    let dir_path = dir.path().to_owned();
    let browsing = tokio::task::spawn_blocking(move || {
        let mut browser = Browser::open(&link, &dir_path);
        let started = Instant::now();
        let mut state = Value::Null;
        while started.elapsed() < Duration::from_secs(60) {
            state = browser.eval("document.body && document.body.dataset.state");
            if state != "idle" && state != "running" && !state.is_null() {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let dom = browser.eval("document.documentElement.outerHTML").as_str().unwrap_or_default().to_string();
        let address = browser.eval("location.href").as_str().unwrap_or_default().to_string();
        let shot = browser.call("Page.captureScreenshot", json!({"format": "png"}))["data"]
            .as_str()
            .map(|png| base64::engine::general_purpose::STANDARD.decode(png).unwrap());
        (dom, state, address, shot)
    });
    let (dom, state, address, shot) = tokio::time::timeout(Duration::from_secs(120), browsing)
        .await
        .expect("chromium answers in time")
        .unwrap();
    if let (Ok(keep), Some(png)) = (std::env::var("PAGE_SCREENSHOT"), &shot) {
        std::fs::write(keep, png).unwrap();
    }

    let said = |id: &str| {
        dom.split(&format!("id=\"{id}\"")).nth(1).and_then(|t| t.split('<').next().map(str::to_owned))
    };
    assert_eq!(state, "done", "status {:?}, error {:?}", said("status"), said("error"));
    assert!(shot.is_some_and(|png| png.starts_with(b"\x89PNG")));
    // The key is kept in the tab, not in the address bar.
    assert!(!address.contains("demo-key") && address.contains("#q="), "{address}");

    // The chart: one line per type, each through every day.
    let mut drawn = attributes(&dom, "class=\"series\"", "data-type");
    drawn.sort_unstable();
    assert_eq!(drawn, ["engagements", "favorites", "impressions"]);
    for d in attributes(&dom, "class=\"series\"", "d") {
        assert!(d.starts_with('M') && d.matches('L').count() == 28 * 2 - 1 && !d.contains("NaN"), "{d}");
    }
    // The totals table shows what the API counts, Tweet by Tweet.
    let rows: Vec<&str> = dom
        .split("<tr ")
        .skip(1)
        .filter(|r| r.starts_with("data-tweet-id"))
        .map(|r| r.split("</tr>").next().unwrap())
        .collect();
    assert_eq!(rows.len(), 6);
    for row in rows {
        let id = row.trim_start_matches("data-tweet-id=\"").split('"').next().unwrap();
        for ty in ["impressions", "engagements", "favorites"] {
            let cell = attributes(row, &format!("data-type=\"{ty}\""), "data-value");
            assert_eq!(cell, [truth["per tweet"][id][ty].as_str().unwrap()], "{id} {ty}");
        }
    }
    // The engagement rate and the Top Tweets.
    let count = |id: &str, ty: &str| truth["per tweet"][id][ty].as_str().unwrap().parse::<u64>().unwrap();
    let ids: Vec<&String> = truth["per tweet"].as_object().unwrap().keys().collect();
    let (e, i) =
        ids.iter().fold((0, 0), |(e, i), id| (e + count(id, "engagements"), i + count(id, "impressions")));
    let shown: f64 = attributes(&dom, "id=\"rate\"", "data-overall")[0].parse().unwrap();
    assert!((shown - e as f64 / i as f64).abs() < 1e-12, "{shown}");
    let mut ranked: Vec<(u64, &String)> = ids.iter().map(|id| (count(id, "favorites"), *id)).collect();
    ranked.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(b.1)));
    assert!(ranked[0].0 > 0 && e > 0, "counts to rank");
    let top: Vec<String> = ranked[..3].iter().map(|(_, id)| id.to_string()).collect();
    assert_eq!(attributes(&dom, "li data-tweet-id", "data-tweet-id"), top);
}

//! The page at `GET /` in a real browser: headless Chromium (installed by scripts/chromium)
//! opens a link that carries a question and the key in its fragment against the real
//! binary on a simulator, wide and narrow; the page runs the question as a job, brings the
//! answer into view, draws one chart per type on its own scale, and shows the totals the API
//! gives in a table that pages and sorts. The test drives Chromium over the DevTools
//! protocol on a pipe, reading the page's state until it is done (virtual time would run
//! ahead of the job).

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
    fn open(link: &str, dir: &Path, (width, height): (u32, u32)) -> Browser {
        let (to, from) = (dir.join("to-chromium"), dir.join("from-chromium"));
        for fifo in [&to, &from] {
            assert!(Command::new("mkfifo").arg(fifo).status().unwrap().success());
        }
        let script = r#"exec "$0" --headless --no-sandbox --disable-gpu --disable-dev-shm-usage --hide-scrollbars \
            --disable-background-networking --disable-component-update --disable-sync --no-first-run \
            --window-size="$5" --user-data-dir="$1" --remote-debugging-pipe "$2" 3<"$3" 4>"$4" 2>/dev/null"#;
        let child = Command::new("sh")
            .args(["-c", script, &chromium()])
            .arg(dir.join("profile"))
            .arg(link)
            .args([&to, &from])
            .arg(format!("{width},{height}"))
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

/// What the page showed once its question was answered, in a window of `size`.
struct Seen {
    state: Value,
    address: String,
    /// The DOM with the table's first page, then with all its rows.
    first_page: String,
    all_rows: String,
    shot: Option<Vec<u8>>,
    /// Everything else, read by one expression in the page.
    facts: Value,
}

/// What the page tells, read in it once the answer is drawn (and after sorting, paging and
/// pointing at a chart, in that order).
const FACTS: &str = r#"(() => {
  const q = (s) => document.querySelector(s);
  const rows = () => [...document.querySelectorAll('#totals tbody tr')];
  const results = q('#results').getBoundingClientRect();
  const charts = [...document.querySelectorAll('svg.chart')].map((c) => ({
    type: c.dataset.type, top: Number(c.dataset.top),
    ticks: c.querySelectorAll('text.tick').length,
    keys: c.dataset.keys.split(' '), values: c.dataset.values.split(' ').map(Number),
  }));
  const wrap = q('.table-wrap');
  wrap.scrollLeft = wrap.scrollWidth;
  const tweetCell = q('#totals tbody th').getBoundingClientRect();
  const facts = {
    resultsTop: results.top, innerHeight, innerWidth,
    charts, axisTitle: q('.axis-title') && q('.axis-title').textContent,
    topBeforeTable: Boolean(q('#top-box').compareDocumentPosition(q('#totals-box')) & 4),
    scrollsSideways: wrap.scrollWidth > wrap.clientWidth,
    tweetColumnInSight: tweetCell.left >= wrap.getBoundingClientRect().left - 1 && tweetCell.right <= innerWidth,
    pageRows: rows().length, pageInfo: q('#page-info').textContent,
    estimate: q('#estimate').textContent,
  };
  wrap.scrollLeft = 0;
  q('#totals button[data-sort="favorites"]').click();
  facts.byFavorites = rows().map((r) => Number(r.querySelector('td[data-type="favorites"]').dataset.value));
  facts.sortedColumn = q('#totals th[aria-sort]').dataset.column;
  const hit = q('svg.chart .hit').getBoundingClientRect();
  const at = { clientX: hit.left + hit.width / 2, clientY: hit.top + hit.height / 2, bubbles: true };
  q('svg.chart .hit').dispatchEvent(new PointerEvent('pointermove', at));
  facts.readout = q('#readout').textContent;
  return facts;
})()"#;

/// Opens `link` in Chromium with a window of `size` and reads what the page shows.
fn browse(link: String, size: (u32, u32)) -> Seen {
    let dir = tempfile::tempdir().unwrap();
    let mut browser = Browser::open(&link, dir.path(), size);
    let started = Instant::now();
    let mut state = Value::Null;
    while started.elapsed() < Duration::from_secs(60) {
        state = browser.eval("document.body && document.body.dataset.state");
        if state != "idle" && state != "running" && !state.is_null() {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let dom = |b: &mut Browser| {
        b.eval("document.documentElement.outerHTML").as_str().unwrap_or_default().to_string()
    };
    let first_page = dom(&mut browser);
    let address = browser.eval("location.href").as_str().unwrap_or_default().to_string();
    // The whole page, not only what the window shows.
    let size = browser.call("Page.getLayoutMetrics", json!({}))["cssContentSize"].clone();
    let clip = json!({"x": 0, "y": 0, "width": size["width"], "height": size["height"], "scale": 1});
    let shot = browser.call(
        "Page.captureScreenshot",
        json!({"format": "png", "captureBeyondViewport": true, "clip": clip}),
    )["data"]
        .as_str()
        .map(|png| base64::engine::general_purpose::STANDARD.decode(png).unwrap());
    let facts = if state == "done" { browser.eval(FACTS) } else { Value::Null };
    browser.eval("document.querySelector('#show-all').click()");
    let all_rows = dom(&mut browser);
    // A range the API cannot answer is caught in the form, at the field.
    let checked = browser.eval(
        "(() => { const q = (s) => document.querySelector(s); q('#start').value = '2014-08-01'; \
         q('#run').click(); return [q('#start').getAttribute('aria-invalid'), q('#start-error').textContent, \
         document.body.dataset.state]; })()",
    );
    let mut facts = facts;
    facts["checked"] = checked;
    Seen { state, address, first_page, all_rows, shot, facts }
}

/// The rows of the totals table in `dom`, each `(Tweet ID, its cells)`.
fn table_rows(dom: &str) -> Vec<(String, String)> {
    dom.split("<tr ")
        .skip(1)
        .filter(|r| r.starts_with("data-tweet-id"))
        .map(|r| r.split("</tr>").next().unwrap())
        .map(|r| {
            (r.trim_start_matches("data-tweet-id=\"").split('"').next().unwrap().to_string(), r.to_string())
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_brings_the_answer_into_view_with_a_chart_per_type_and_a_table_to_sort() {
    let (_sim, sim_url) = simulator(Config::default()).await;
    let stitcher = Stitcher::start(&[("STITCHER__UPSTREAM__BASE_URL", &sim_url)]).await;
    let page = reqwest::get(format!("{}/", stitcher.url)).await.unwrap();
    assert_eq!(page.status().as_u16(), 200);
    assert!(page.headers()["content-security-policy"].to_str().unwrap().contains("default-src 'none'"));
    let html = page.text().await.unwrap();
    assert!(!html.contains("http://") && !html.contains("https://"), "nothing is loaded from elsewhere");

    let mut body = question(60, 2, &["impressions", "engagements", "favorites"], PER_TWEET);
    // Sixty Tweets from shortly before the range, so every type has counts: more than a
    // page of the table.
    let born = engagement::TweetId::minted_at(engagement::parse_instant("2022-01-05").unwrap()).0;
    body["tweet_ids"] = json!((0..60u64).map(|n| (born + (n << 28)).to_string()).collect::<Vec<_>>());
    body["groupings"] = json!({
        "daily": {"group_by": ["engagement.type", "engagement.day"]},
        "per tweet": {"group_by": PER_TWEET},
    });
    body["derive"] = json!(["engagement_rate"]);
    body["top"] = json!({"by": "favorites", "n": 3});
    let truth = oracle(&sim_url, &body).await;
    let q: String = url::form_urlencoded::byte_serialize(body.to_string().as_bytes()).collect();
    let link = format!("{}/#key=demo-key&q={q}", stitcher.url);

    for size in [(1280, 900), (420, 900)] {
        let browsing = tokio::task::spawn_blocking({
            let link = link.clone();
            move || browse(link, size)
        });
        let seen = tokio::time::timeout(Duration::from_secs(120), browsing)
            .await
            .expect("chromium answers in time")
            .unwrap();
        if let (Ok(keep), Some(png)) = (std::env::var("PAGE_SCREENSHOT"), &seen.shot) {
            std::fs::write(format!("{keep}-{}.png", size.0), png).unwrap();
        }
        check(&seen, &truth, size);
    }
}

/// What `seen` at `size` must show of `truth`, the oracle's answer.
fn check(seen: &Seen, truth: &Value, size: (u32, u32)) {
    let dom = &seen.first_page;
    let said = |id: &str| {
        dom.split(&format!("id=\"{id}\"")).nth(1).and_then(|t| t.split('<').next().map(str::to_owned))
    };
    assert_eq!(seen.state, "done", "{size:?}: status {:?}, error {:?}", said("status"), said("error"));
    assert!(seen.shot.as_ref().is_some_and(|png| png.starts_with(b"\x89PNG")));
    // The key is kept in the tab, not in the address bar.
    assert!(!seen.address.contains("demo-key") && seen.address.contains("#q="), "{}", seen.address);
    let facts = &seen.facts;

    // The answer is brought into view.
    let top = facts["resultsTop"].as_f64().unwrap();
    assert!((-2.0..facts["innerHeight"].as_f64().unwrap() / 2.0).contains(&top), "{size:?}: {facts}");

    // One chart per type, each on its own scale, with readable ticks, over one time axis.
    let charts = facts["charts"].as_array().unwrap();
    let top_of = |ty: &str| charts.iter().find(|c| c["type"] == ty).unwrap()["top"].as_f64().unwrap();
    assert_eq!(charts.len(), 3, "{facts}");
    assert!(top_of("impressions") > top_of("engagements") && top_of("engagements") > 0.0, "{facts}");
    assert!(charts.iter().all(|c| c["ticks"].as_u64().unwrap() >= 5), "{facts}");
    assert_eq!(facts["axisTitle"], "day (UTC)");
    for d in attributes(dom, "class=\"series\"", "d") {
        assert!(d.starts_with('M') && d.matches('L').count() == 28 * 2 - 1 && !d.contains("NaN"), "{d}");
    }
    let readout = facts["readout"].as_str().unwrap();
    assert!(
        readout.starts_with("2022-") && readout.contains("impressions ") && readout.contains("favorites "),
        "{readout}"
    );

    // Top Tweets before the long table, which pages, sorts, and keeps its Tweets in sight.
    assert_eq!(facts["topBeforeTable"], true);
    assert_eq!(facts["pageRows"], 50, "{facts}");
    assert!(facts["pageInfo"].as_str().unwrap().contains("of 60"), "{facts}");
    let by_favorites: Vec<u64> =
        facts["byFavorites"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap()).collect();
    assert!(by_favorites.windows(2).all(|w| w[0] >= w[1]) && by_favorites.len() == 50, "{by_favorites:?}");
    assert_eq!(facts["sortedColumn"], "favorites");
    assert_eq!(facts["tweetColumnInSight"], true, "{size:?}: {facts}");
    if size.0 < 500 {
        assert_eq!(facts["scrollsSideways"], true, "a narrow table scrolls: {facts}");
    }
    assert_eq!(facts["checked"][0], "true", "{facts}");
    assert!(facts["checked"][1].as_str().unwrap().contains("2014-09-01"), "{facts}");

    // The totals table shows what the API counts, Tweet by Tweet: all of them once asked.
    let rows = table_rows(&seen.all_rows);
    assert_eq!(rows.len(), 60);
    for (id, row) in rows {
        for ty in ["impressions", "engagements", "favorites"] {
            let cell = attributes(&row, &format!("data-type=\"{ty}\""), "data-value");
            assert_eq!(cell, [truth["per tweet"][&id][ty].as_str().unwrap()], "{id} {ty}");
        }
    }
    // The engagement rate and the Top Tweets.
    let count = |id: &str, ty: &str| truth["per tweet"][id][ty].as_str().unwrap().parse::<u64>().unwrap();
    let ids: Vec<&String> = truth["per tweet"].as_object().unwrap().keys().collect();
    let (e, i) =
        ids.iter().fold((0, 0), |(e, i), id| (e + count(id, "engagements"), i + count(id, "impressions")));
    let shown: f64 = attributes(dom, "id=\"rate\"", "data-overall")[0].parse().unwrap();
    assert!((shown - e as f64 / i as f64).abs() < 1e-12, "{shown}");
    let mut ranked: Vec<(u64, &String)> = ids.iter().map(|id| (count(id, "favorites"), *id)).collect();
    ranked.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(b.1)));
    assert!(ranked[0].0 > 0 && e > 0, "counts to rank");
    let top: Vec<String> = ranked[..3].iter().map(|(_, id)| id.to_string()).collect();
    assert_eq!(attributes(dom, "li data-tweet-id", "data-tweet-id"), top);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_charts_local_days_as_the_oracle_counts_them_and_estimates_before_run() {
    let (_sim, sim_url) = simulator(Config::default()).await;
    let stitcher = Stitcher::start(&[("STITCHER__UPSTREAM__BASE_URL", &sim_url)]).await;
    let born = engagement::TweetId::minted_at(engagement::parse_instant("2022-01-05").unwrap()).0;
    let ids: Vec<String> = (0..40u64).map(|n| (born + (n << 28)).to_string()).collect();
    // New York's clocks went forward on 2022-03-13: a day of 23 hours.
    let body = json!({
        "tweet_ids": ids, "engagement_types": ["impressions", "favorites"],
        "groupings": {"daily": {"group_by": ["engagement.type", "engagement.day"]}, "per tweet": {"group_by": PER_TWEET}},
        "start": "2022-03-01", "end": "2022-03-20", "time_zone": "America/New_York",
    });
    let q: String = url::form_urlencoded::byte_serialize(body.to_string().as_bytes()).collect();
    let link = format!("{}/#key=demo-key&q={q}", stitcher.url);
    let seen = tokio::time::timeout(
        Duration::from_secs(120),
        tokio::task::spawn_blocking(move || browse(link, (1280, 900))),
    )
    .await
    .expect("chromium answers in time")
    .unwrap();
    assert_eq!(seen.state, "done");
    let facts = &seen.facts;
    assert_eq!(facts["axisTitle"], "day (America/New_York)", "{facts}");
    let estimate = facts["estimate"].as_str().unwrap();
    assert!(
        estimate.contains("upstream call") || estimate.contains("held"),
        "the cost before Run: {estimate:?}"
    );

    // The oracle's UTC hours, from New York's midnight of March 1 (05:00Z) to that of March 20
    // (04:00Z, daylight time), added up by New York's dates.
    let hourly = json!({
        "tweet_ids": body["tweet_ids"], "engagement_types": ["impressions", "favorites"],
        "groupings": {"h": {"group_by": ["engagement.type", "engagement.day", "engagement.hour"]}},
        "start": "2022-03-01T05:00:00Z", "end": "2022-03-20T04:00:00Z",
    });
    let truth = oracle(&sim_url, &hourly).await;
    for chart in facts["charts"].as_array().unwrap() {
        let ty = chart["type"].as_str().unwrap();
        let mut by_day = std::collections::BTreeMap::<String, u64>::new();
        for (day, hours) in truth["h"][ty].as_object().unwrap() {
            for (hour, count) in hours.as_object().unwrap() {
                let t = engagement::parse_instant(&format!("{day}T{hour}:00:00Z")).unwrap();
                let local = t.with_timezone(&chrono_tz::America::New_York).format("%Y-%m-%d").to_string();
                *by_day.entry(local).or_default() += count.as_str().unwrap().parse::<u64>().unwrap();
            }
        }
        let keys: Vec<String> =
            chart["keys"].as_array().unwrap().iter().map(|k| k.as_str().unwrap().into()).collect();
        let values: Vec<u64> =
            chart["values"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap()).collect();
        assert_eq!(keys, by_day.keys().cloned().collect::<Vec<_>>(), "{ty}: New York's 19 days");
        assert_eq!(values, by_day.values().copied().collect::<Vec<_>>(), "{ty}");
        assert!(values.iter().any(|v| *v > 0), "{ty}: counts to compare");
    }
}

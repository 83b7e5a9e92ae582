//! What the engine records, through the `metrics` facade (the server installs the
//! recorder and serves it).
//!
//! | metric | kind | labels |
//! |---|---|---|
//! | `stitcher_upstream_calls_total` | counter | `status` (`200`, `429`, `503`, ..., `timeout`, `error`) |
//! | `stitcher_upstream_retries_total` | counter | |
//! | `stitcher_client_upstream_calls_total` | counter (attempts of calls made for a client) | `client` |
//! | `stitcher_client_budget_wait_seconds` | gauge (seconds a client's calls waited for the budget and its cap, in all) | `client` |
//! | `stitcher_slices_total` | counter | `kind` (`planned`, `fetched`, `synthesized`, `from_store`) |
//! | `stitcher_store_hits_total` | counter (Tweet-hours a question found held) | |
//! | `stitcher_store_misses_total` | counter (Tweet-hours a question had to fetch) | |
//! | `stitcher_store_shared_hits_total` | counter (Tweet-hours found in the shared tier) | |
//! | `stitcher_upstream_calls_coalesced_total` | counter (calls a question shared with another instead of making) | |
//! | `stitcher_ledger_handles_total` | counter (handles counted for the month) | `cap` (`under`, `over`) |
//! | `stitcher_ledger_refused_total` | counter (questions refused for the month's handle cap) | |
//! | `stitcher_redis_up` | gauge (1: the shared Redis answers) | |
//! | `stitcher_redis_fallbacks_total` | counter (things done alone while Redis was away) | `what` |
//! | `stitcher_redis_bad_values_total` | counter (values in Redis that could not be read, taken as missing) | `prefix` (`facts`, `fresh`, `status`, `refused`) |

/// Records one upstream attempt by its outcome.
pub fn upstream_call(outcome: &str) {
    metrics::counter!("stitcher_upstream_calls_total", "status" => outcome.to_owned()).increment(1);
}

/// Records one attempt of a call for `client`, which waited `waited` for the budget.
pub fn client_call(client: &str, waited: std::time::Duration) {
    metrics::counter!("stitcher_client_upstream_calls_total", "client" => client.to_owned()).increment(1);
    // The seconds its calls waited for the budget (and its own cap), in all.
    metrics::gauge!("stitcher_client_budget_wait_seconds", "client" => client.to_owned())
        .increment(waited.as_secs_f64());
}

/// Records the slices of one question.
pub fn slices(planned: usize, fetched: usize, synthesized: usize, from_store: usize, retries: u32) {
    for (kind, n) in
        [("planned", planned), ("fetched", fetched), ("synthesized", synthesized), ("from_store", from_store)]
    {
        metrics::counter!("stitcher_slices_total", "kind" => kind).increment(n as u64);
    }
    metrics::counter!("stitcher_upstream_retries_total").increment(u64::from(retries));
}

/// Records the Tweet-hours one question found held and had to fetch.
pub fn store_lookups(hits: u64, misses: u64) {
    metrics::counter!("stitcher_store_hits_total").increment(hits);
    metrics::counter!("stitcher_store_misses_total").increment(misses);
}

/// Records a call a question shared instead of making.
pub fn coalesced() {
    metrics::counter!("stitcher_upstream_calls_coalesced_total").increment(1);
}

/// Records a handle counted for the month.
pub fn handle_counted(over_cap: bool) {
    let cap = if over_cap { "over" } else { "under" };
    metrics::counter!("stitcher_ledger_handles_total", "cap" => cap).increment(1);
}

/// Records a question refused for the month's handle cap.
pub fn handle_refused() {
    metrics::counter!("stitcher_ledger_refused_total").increment(1);
}

/// Records whether the shared Redis answered, as a gauge (1: up).
pub fn redis_up(up: bool) {
    metrics::gauge!("stitcher_redis_up").set(if up { 1.0 } else { 0.0 });
}

/// Records one time this replica did `what` (budget, facts, ledger, nonce, usage) on its own
/// because Redis was away.
pub fn redis_fallback(what: &'static str) {
    metrics::counter!("stitcher_redis_fallbacks_total", "what" => what).increment(1);
}

/// Records `n` values under the key prefix `prefix` that could not be decoded.
pub fn redis_bad_values(prefix: &'static str, n: u64) {
    metrics::counter!("stitcher_redis_bad_values_total", "prefix" => prefix).increment(n);
}

/// Records Tweet-hours a question found in the shared tier (fetched by another replica).
pub fn shared_hits(hours: u64) {
    metrics::counter!("stitcher_store_shared_hits_total").increment(hours);
}

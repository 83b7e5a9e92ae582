//! The service's settings: `config/default.toml` (built into the binary), then an optional
//! file (`--config` or `STITCHER_CONFIG`), then `STITCHER__SECTION__KEY` environment
//! variables.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use config::{Environment, File, FileFormat};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Deserializer};
use url::Url;

use crate::demo;
pub use engine::config::{CapPolicy, JobsSettings, LedgerSettings, OnFailure, RedisSettings, WatchSettings};
use simulator::config as sim;

/// The defaults, as shipped in `config/default.toml`.
pub const DEFAULT_TOML: &str = include_str!("../../../config/default.toml");

/// Everything the service is set up with.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    pub server: ServerSettings,
    pub upstream: UpstreamSettings,
    pub jobs: JobsSettings,
    pub store: StoreSettings,
    pub ledger: LedgerSettings,
    pub redis: RedisSettings,
    #[serde(default)]
    pub watches: WatchSettings,
    #[serde(default)]
    pub telemetry: TelemetrySettings,
    /// Handle name to its access token and secret.
    #[serde(default)]
    pub handles: BTreeMap<String, HandleSettings>,
    /// Client name to its key hash and granted handles.
    #[serde(default)]
    pub clients: BTreeMap<String, ClientSettings>,
}

/// Where traces go.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TelemetrySettings {
    /// The OTLP/HTTP endpoint spans are exported to; none: no export.
    pub otlp_endpoint: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerSettings {
    pub listen: SocketAddr,
    pub request_timeout_secs: u64,
    pub max_tweet_ids: usize,
    pub max_body_bytes: usize,
    pub max_concurrent_requests: usize,
    /// Counts (leaves of the answers) held by all questions in flight together: the bound
    /// on the memory answers take. A question whose answer alone is larger is refused.
    pub max_counts_in_flight: u64,
    /// After SIGTERM or Ctrl-C, how long questions in flight may take to finish.
    pub shutdown_grace_secs: u64,
    /// How long a connection may take to send a request head (and then its body).
    pub header_timeout_secs: u64,
    /// How long a keep-alive connection may wait for its next request.
    pub idle_timeout_secs: u64,
    /// How long an answer may wait for its client to read anything.
    pub write_timeout_secs: u64,
    /// Open client connections at most.
    pub max_connections: usize,
    /// The base URL clients see (e.g. `https://stitcher.example.com`), which OAuth 1.0a
    /// signatures cover; by default `http://` + the `Host` header.
    pub public_base_url: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamSettings {
    /// `None`: demo mode, with the simulator started in-process.
    pub base_url: Option<Url>,
    pub consumer_key: String,
    pub consumer_secret: SecretString,
    pub max_in_flight: usize,
    pub requests_per_minute: u32,
    pub rate_burst: u32,
    pub max_attempts: u32,
    pub retry_base_ms: u64,
    pub retry_max_ms: u64,
    pub call_timeout_secs: u64,
}

/// The store of facts: what was fetched, kept so it is not fetched again.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreSettings {
    /// Off: every question is fetched in full, on the fixed grid (the ledger is still kept).
    pub enabled: bool,
    /// The directory of the database (relative to the working directory if not absolute).
    pub path: std::path::PathBuf,
    /// An hour older than this when fetched is final, and kept until evicted.
    pub settle_after_hours: u64,
    /// How long hours that are not settled are kept.
    pub fresh_ttl_secs: u64,
    /// How long what a call told of a Tweet (deleted, protected, not the handle's) is trusted.
    pub status_ttl_secs: u64,
    /// The bound on settled facts' encoded size; the least recently used go first.
    pub max_bytes: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HandleSettings {
    pub token: String,
    pub token_secret: SecretString,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientSettings {
    /// SHA-256 of the client's API key, in hex.
    pub key_sha256: String,
    /// The handles it may ask as: a list, or names separated by commas (from the
    /// environment, `STITCHER__CLIENTS__NAME__HANDLES=brand,support`).
    #[serde(deserialize_with = "names")]
    pub handles: Vec<String>,
    /// Its weight in the turns among clients, at the calls in flight and so at the
    /// per-minute budget: a client of share 2 gets twice the turns of one of share 1 while
    /// both wait. A share nobody uses goes to whoever waits.
    #[serde(default = "one")]
    pub share: f64,
    /// A hard cap on its calls per minute, shared with the other replicas when `redis.url`
    /// is set; none by default.
    #[serde(default)]
    pub max_calls_per_minute: Option<u32>,
}

fn one() -> f64 {
    1.0
}

/// The least and the most a client's share may be: a million to one between clients is
/// already all or nothing, and further apart the turns' arithmetic loses precision.
const MIN_SHARE: f64 = 0.001;
const MAX_SHARE: f64 = 1000.0;

/// A list of names, or one string of names separated by commas.
fn names<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Names {
        List(Vec<String>),
        Joined(String),
    }
    Ok(match Names::deserialize(d)? {
        Names::List(list) => list,
        Names::Joined(joined) => {
            joined.split(',').map(str::trim).filter(|n| !n.is_empty()).map(str::to_owned).collect()
        }
    })
}

impl Settings {
    /// Reads the defaults, then `file` if given, then the environment (the process's, or
    /// `env` in tests).
    pub fn load_with(
        file: Option<&str>,
        env: Option<BTreeMap<String, String>>,
    ) -> Result<Settings, config::ConfigError> {
        let mut builder =
            config::Config::builder().add_source(File::from_str(DEFAULT_TOML, FileFormat::Toml));
        if let Some(path) = file {
            builder = builder.add_source(File::with_name(path).required(true));
        }
        let mut environment =
            Environment::with_prefix("STITCHER").prefix_separator("__").separator("__").try_parsing(true);
        if let Some(vars) = env {
            environment = environment.source(Some(vars.into_iter().collect()));
        }
        let mut settings: Settings = builder.add_source(environment).build()?.try_deserialize()?;
        fill_in_demo(&mut settings);
        settings.check()?;
        Ok(settings)
    }

    /// The defaults alone.
    pub fn defaults() -> Settings {
        Settings::load_with(None, Some(BTreeMap::new()))
            .unwrap_or_else(|e| panic!("config/default.toml is invalid: {e}"))
    }

    fn check(&self) -> Result<(), config::ConfigError> {
        let fail = |m: String| Err(config::ConfigError::Message(m));
        if self.upstream.max_in_flight == 0 {
            return fail("upstream.max_in_flight must be at least 1".into());
        }
        if self.upstream.max_attempts == 0 {
            return fail("upstream.max_attempts must be at least 1".into());
        }
        for (name, value) in [
            ("server.max_concurrent_requests", self.server.max_concurrent_requests as u64),
            ("server.max_connections", self.server.max_connections as u64),
            ("server.header_timeout_secs", self.server.header_timeout_secs),
            ("server.idle_timeout_secs", self.server.idle_timeout_secs),
            ("server.write_timeout_secs", self.server.write_timeout_secs),
            ("jobs.timeout_secs", self.jobs.timeout_secs),
            ("jobs.max_running", self.jobs.max_running as u64),
            ("jobs.result_ttl_secs", self.jobs.result_ttl_secs),
            ("jobs.max_result_bytes", self.jobs.max_result_bytes),
            ("redis.expected_replicas", u64::from(self.redis.expected_replicas)),
            ("redis.lease_secs", self.redis.lease_secs),
        ] {
            if value == 0 {
                return fail(format!("{name} must be at least 1"));
            }
        }
        // Beyond these, instants computed from them would leave the calendar.
        for (name, value, most) in [
            ("store.settle_after_hours", self.store.settle_after_hours, 24 * 365 * 20),
            ("store.fresh_ttl_secs", self.store.fresh_ttl_secs, 3600 * 24 * 365),
            ("store.status_ttl_secs", self.store.status_ttl_secs, 3600 * 24 * 365),
            ("redis.lease_secs", self.redis.lease_secs, 3600 * 24),
        ] {
            if value > most {
                return fail(format!("{name} is {value}; at most {most}"));
            }
        }
        if let Some(url) = &self.upstream.base_url {
            let demo = demo_credentials_in_use(self);
            if !demo::is_loopback(url) && !demo.is_empty() {
                return fail(format!(
                    "upstream.base_url {url} is not on this machine, but demo credentials would be used with it: {}; declare your own (see config/production.example.toml)",
                    demo.join(", ")
                ));
            }
            if self.upstream.consumer_secret.expose_secret().is_empty() {
                return fail(
                    "upstream.consumer_secret is empty: set STITCHER__UPSTREAM__CONSUMER_SECRET".into(),
                );
            }
            for (name, h) in &self.handles {
                if h.token_secret.expose_secret().is_empty() {
                    return fail(format!(
                        "handles.{name}.token_secret is empty: set STITCHER__HANDLES__{}__TOKEN_SECRET",
                        name.to_ascii_uppercase()
                    ));
                }
            }
        }
        self.check_clients().map_err(config::ConfigError::Message)
    }

    /// The clients' settings: a key, a share above 0, a cap of at least 1, known handles.
    fn check_clients(&self) -> Result<(), String> {
        let fail = |m: String| Err(m);
        if self.clients.is_empty() {
            return fail(
                "no client is declared under [clients], so nobody could ask: declare one (key_sha256 and handles) for each of your handles' users".into(),
            );
        }
        for (name, client) in &self.clients {
            if client.key_sha256.len() != 64 || !client.key_sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
                return fail(format!(
                    "clients.{name}.key_sha256 must be 64 hex digits (the SHA-256 of the key)"
                ));
            }
            if !(MIN_SHARE..=MAX_SHARE).contains(&client.share) {
                return fail(format!(
                    "clients.{name}.share must be a number from {MIN_SHARE} to {MAX_SHARE} (a weight among clients; 1 by default), not {}",
                    client.share
                ));
            }
            if client.max_calls_per_minute == Some(0) {
                return fail(format!(
                    "clients.{name}.max_calls_per_minute must be at least 1; leave it out for no cap"
                ));
            }
            for h in &client.handles {
                if !self.handles.contains_key(h) {
                    return fail(format!(
                        "clients.{name} is granted handle \"{h}\", which is not under [handles]"
                    ));
                }
            }
        }
        Ok(())
    }

    /// `server.max_counts_in_flight`, within what one semaphore can count.
    pub fn max_counts_in_flight(&self) -> u32 {
        self.server.max_counts_in_flight.min(u64::from(u32::MAX)) as u32
    }

    /// How long a connection may take to send its request head, and then its body.
    pub fn header_timeout(&self) -> Duration {
        Duration::from_secs(self.server.header_timeout_secs)
    }

    /// How calls are retried, as `upstream.max_attempts`, `retry_base_ms` and
    /// `retry_max_ms` say.
    pub fn retry_policy(&self) -> upstream::RetryPolicy {
        let u = &self.upstream;
        upstream::RetryPolicy {
            max_attempts: u.max_attempts,
            base_delay: Duration::from_millis(u.retry_base_ms),
            max_delay: Duration::from_millis(u.retry_max_ms),
        }
    }

    /// The store's setup.
    pub fn store_config(&self) -> store::Config {
        let s = &self.store;
        store::Config {
            path: s.path.clone(),
            settle_after: Duration::from_secs(s.settle_after_hours.saturating_mul(3600)),
            fresh_ttl: Duration::from_secs(s.fresh_ttl_secs),
            status_ttl: Duration::from_secs(s.status_ttl_secs),
            max_bytes: s.max_bytes,
        }
    }

    /// The per-request deadline.
    pub fn request_timeout(&self) -> Duration {
        Duration::from_secs(self.server.request_timeout_secs)
    }
}

/// The SHA-256 of an API key in lower-case hex: what `clients.NAME.key_sha256` holds.
pub fn key_hash(key: &str) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(key.as_bytes()))
}

/// Lays demo mode's handle over settings that declare no handle, and its client over
/// settings that declare no client (granted the demo handle, when that is there). Declared
/// ones always replace them, so a deployment's own clients never share the service with
/// the README's key.
fn fill_in_demo(settings: &mut Settings) {
    if settings.handles.is_empty() {
        settings.handles.insert(
            sim::DEMO_HANDLE.into(),
            HandleSettings {
                token: sim::DEMO_TOKEN.into(),
                token_secret: SecretString::from(sim::DEMO_TOKEN_SECRET),
            },
        );
    }
    if settings.clients.is_empty() && settings.handles.contains_key(sim::DEMO_HANDLE) {
        settings.clients.insert(
            "demo".into(),
            ClientSettings {
                key_sha256: key_hash(demo::DEMO_KEY),
                handles: vec![sim::DEMO_HANDLE.into()],
                share: 1.0,
                max_calls_per_minute: None,
            },
        );
    }
}

/// The demo credentials in use, by setting name.
pub fn demo_credentials_in_use(settings: &Settings) -> Vec<String> {
    let mut found = Vec::new();
    if settings.upstream.consumer_key == sim::DEMO_CONSUMER_KEY {
        found.push(format!("upstream.consumer_key (the simulator's, \"{}\")", sim::DEMO_CONSUMER_KEY));
    }
    if settings.upstream.consumer_secret.expose_secret() == sim::DEMO_CONSUMER_SECRET {
        found.push("upstream.consumer_secret (the simulator's)".to_string());
    }
    for (name, h) in &settings.handles {
        if h.token == sim::DEMO_TOKEN {
            found.push(format!("handles.{name}.token (the simulator's, \"{}\")", sim::DEMO_TOKEN));
        }
        if h.token_secret.expose_secret() == sim::DEMO_TOKEN_SECRET {
            found.push(format!("handles.{name}.token_secret (the simulator's)"));
        }
    }
    let demo_key = key_hash(demo::DEMO_KEY);
    for (name, c) in &settings.clients {
        if c.key_sha256.eq_ignore_ascii_case(&demo_key) {
            found.push(format!("clients.{name} (the API key \"{}\")", demo::DEMO_KEY));
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_demo_mode_on_8080() {
        let s = Settings::defaults();
        assert_eq!(s.server.listen.to_string(), "127.0.0.1:8080");
        assert!(s.upstream.base_url.is_none());
        assert_eq!(s.upstream.max_in_flight, 8);
        assert_eq!(s.server.request_timeout_secs, 120);
        assert_eq!(s.server.max_tweet_ids, 10_000);
        assert_eq!(s.clients["demo"].handles, ["demo"]);
        assert_eq!(s.handles["demo"].token_secret.expose_secret(), "demo-token-secret");
        let store = &s.store;
        assert!(store.enabled);
        assert_eq!(store.path, std::path::Path::new("stitcher-store"));
        assert_eq!((store.settle_after_hours, store.fresh_ttl_secs, store.status_ttl_secs), (72, 60, 900));
        assert_eq!(store.max_bytes, 1 << 30);
        assert_eq!((s.ledger.handle_cap, s.ledger.policy), (None, CapPolicy::Refuse));
    }

    #[test]
    fn the_environment_overrides_any_key() {
        let env = BTreeMap::from([
            ("STITCHER__SERVER__LISTEN".to_string(), "0.0.0.0:9000".to_string()),
            ("STITCHER__UPSTREAM__BASE_URL".to_string(), "https://data-api.x.com".to_string()),
            ("STITCHER__UPSTREAM__MAX_IN_FLIGHT".to_string(), "32".to_string()),
            ("STITCHER__UPSTREAM__REQUESTS_PER_MINUTE".to_string(), "450".to_string()),
            ("STITCHER__UPSTREAM__MAX_ATTEMPTS".to_string(), "3".to_string()),
            ("STITCHER__UPSTREAM__CONSUMER_KEY".to_string(), "app".to_string()),
            ("STITCHER__UPSTREAM__CONSUMER_SECRET".to_string(), "from-env".to_string()),
            ("STITCHER__HANDLES__BRAND__TOKEN".to_string(), "brand-token".to_string()),
            ("STITCHER__HANDLES__BRAND__TOKEN_SECRET".to_string(), "brand-secret".to_string()),
            ("STITCHER__CLIENTS__DASH__KEY_SHA256".to_string(), "ab".repeat(32)),
            ("STITCHER__CLIENTS__DASH__HANDLES".to_string(), "brand".to_string()),
        ]);
        let s = Settings::load_with(None, Some(env)).unwrap();
        assert_eq!(s.server.listen.to_string(), "0.0.0.0:9000");
        assert_eq!(s.upstream.base_url.as_ref().map(Url::as_str), Some("https://data-api.x.com/"));
        assert_eq!(
            (s.upstream.max_in_flight, s.upstream.requests_per_minute, s.upstream.max_attempts),
            (32, 450, 3)
        );
        assert_eq!(s.upstream.consumer_secret.expose_secret(), "from-env");
        assert_eq!(s.clients["dash"].handles, ["brand"]);
        assert!(
            !s.clients.contains_key("demo") && !s.handles.contains_key("demo"),
            "declared ones replace the demo's"
        );
        assert!(!format!("{s:?}").contains("from-env"), "secrets do not print");
    }

    #[test]
    fn the_production_example_needs_its_secrets_from_the_environment() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../config/production.example.toml");
        let err = Settings::load_with(Some(path), Some(BTreeMap::new())).unwrap_err().to_string();
        assert!(err.contains("STITCHER__UPSTREAM__CONSUMER_SECRET"), "{err}");
        let env = BTreeMap::from([
            ("STITCHER__UPSTREAM__CONSUMER_SECRET".to_string(), "cs".to_string()),
            ("STITCHER__HANDLES__BRAND__TOKEN_SECRET".to_string(), "b".to_string()),
            ("STITCHER__HANDLES__BRAND_SUPPORT__TOKEN_SECRET".to_string(), "bs".to_string()),
        ]);
        let s = Settings::load_with(Some(path), Some(env)).unwrap();
        assert_eq!(s.upstream.base_url.as_ref().map(Url::as_str), Some("https://data-api.x.com/"));
        assert_eq!(s.clients["dashboards"].handles, ["brand", "brand_support"]);
        assert_eq!(s.handles["brand_support"].token_secret.expose_secret(), "bs");
    }

    #[test]
    fn demo_credentials_with_a_remote_upstream_are_refused_by_name() {
        let remote = |extra: &[(&str, &str)]| {
            let mut env = BTreeMap::from([
                ("STITCHER__UPSTREAM__BASE_URL".to_string(), "https://data-api.x.com".to_string()),
                ("STITCHER__UPSTREAM__CONSUMER_KEY".to_string(), "app".to_string()),
                ("STITCHER__UPSTREAM__CONSUMER_SECRET".to_string(), "app-secret".to_string()),
            ]);
            env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
            Settings::load_with(None, Some(env)).map(|_| ()).map_err(|e| e.to_string())
        };
        let err = remote(&[]).unwrap_err();
        assert!(err.contains("handles.demo") && err.contains("clients.demo"), "{err}");
        let err = remote(&[
            ("STITCHER__HANDLES__BRAND__TOKEN", "t"),
            ("STITCHER__HANDLES__BRAND__TOKEN_SECRET", "ts"),
        ])
        .unwrap_err();
        assert!(err.contains("no client is declared"), "{err}");
        let key = "ab".repeat(32);
        let declared = [
            ("STITCHER__HANDLES__BRAND__TOKEN", "t"),
            ("STITCHER__HANDLES__BRAND__TOKEN_SECRET", "ts"),
            ("STITCHER__CLIENTS__DASH__KEY_SHA256", key.as_str()),
            ("STITCHER__CLIENTS__DASH__HANDLES", "brand"),
        ];
        assert_eq!(remote(&declared), Ok(()));
        let mut with_sim_key = declared.to_vec();
        with_sim_key.push(("STITCHER__UPSTREAM__CONSUMER_KEY", "sim-consumer-key"));
        let err = remote(&with_sim_key).unwrap_err();
        assert!(err.contains("upstream.consumer_key") && !err.contains("consumer_secret"), "{err}");
        // On this machine the demo's credentials are fine (a standalone simulator).
        let env = BTreeMap::from([(
            "STITCHER__UPSTREAM__BASE_URL".to_string(),
            "http://127.0.0.1:9090".to_string(),
        )]);
        assert!(Settings::load_with(None, Some(env)).is_ok());
    }

    #[test]
    fn bad_settings_are_refused_with_a_reason() {
        let env = BTreeMap::from([("STITCHER__UPSTREAM__MAX_IN_FLIGHT".to_string(), "0".to_string())]);
        let err = Settings::load_with(None, Some(env)).unwrap_err().to_string();
        assert!(err.contains("max_in_flight"), "{err}");
        for (key, value) in [
            ("STITCHER__SERVER__LISTEN", "127.0.0.1:80800"),
            ("STITCHER__SERVER__LISTEN", "localhost"),
            ("STITCHER__UPSTREAM__BASE_URL", "data-api.x.com"),
            ("STITCHER__STORE__SETTLE_AFTER_HOURS", "99999999999"),
            ("STITCHER__LEDGER__POLICY", "ignore"),
        ] {
            let env = BTreeMap::from([(key.to_string(), value.to_string())]);
            assert!(Settings::load_with(None, Some(env)).is_err(), "{key}={value} is refused at load");
        }
    }

    #[test]
    fn the_defaults_use_every_demo_credential_each_named_by_its_setting() {
        let named: Vec<String> = demo_credentials_in_use(&Settings::defaults())
            .into_iter()
            .map(|said| said.split(' ').next().unwrap_or_default().to_string())
            .collect();
        assert_eq!(
            named,
            [
                "upstream.consumer_key",
                "upstream.consumer_secret",
                "handles.demo.token",
                "handles.demo.token_secret",
                "clients.demo"
            ]
        );
    }
}

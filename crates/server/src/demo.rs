//! Demo mode: with no upstream configured, the simulator runs inside the process and the
//! service calls it over loopback HTTP through the same client it uses in production.

use std::sync::Arc;

use secrecy::{ExposeSecret, SecretString};
use simulator::config as sim;
use url::{Host, Url};

use crate::auth::key_hash;
use crate::settings::{ClientSettings, HandleSettings, Settings};

/// The demo client's API key, printed in the README.
pub const DEMO_KEY: &str = "demo-key";

/// Lays demo mode's handle over settings that declare no handle, and its client over
/// settings that declare no client (granted the demo handle, when that is there). Declared
/// ones always replace them, so a deployment's own clients never share the service with
/// the README's key.
pub fn fill_in(settings: &mut Settings) {
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
            ClientSettings { key_sha256: key_hash(DEMO_KEY), handles: vec![sim::DEMO_HANDLE.into()] },
        );
    }
}

/// Starts the simulator on a free loopback port; returns its base URL.
pub async fn start_simulator() -> std::io::Result<String> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    let simulator = simulator::Simulator::new(simulator::Config::default());
    tokio::spawn(async move {
        if let Err(e) = Arc::clone(&simulator).serve(listener).await {
            tracing::error!(error = %e, "the embedded simulator stopped");
        }
    });
    Ok(url)
}

/// Whether `url`'s host is this machine: `localhost`, or a loopback address (the host as
/// parsed, so `http://127.0.0.1@elsewhere` or `http://127.0.0.1.example.com` are not).
pub fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(Host::Domain(name)) => name.eq_ignore_ascii_case("localhost"),
        Some(Host::Ipv4(ip)) => ip.is_loopback(),
        Some(Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    }
}

/// The demo credentials in use, by setting name.
pub fn credentials_in_use(settings: &Settings) -> Vec<String> {
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
    let demo_key = key_hash(DEMO_KEY);
    for (name, c) in &settings.clients {
        if c.key_sha256.eq_ignore_ascii_case(&demo_key) {
            found.push(format!("clients.{name} (the API key \"{DEMO_KEY}\")"));
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_hosts_are_recognized() {
        let url = |u: &str| Url::parse(u).unwrap();
        for u in ["http://127.0.0.1:9090", "http://localhost:1/x", "http://[::1]:80", "http://127.0.0.2"] {
            assert!(is_loopback(&url(u)), "{u}");
        }
        for u in [
            "https://data-api.x.com",
            "http://10.0.0.1:80",
            "http://127example.com",
            "http://127.0.0.1@evil.com",
            "http://127.0.0.1.nip.io",
            "http://127.0.0.1%2f@evil.com",
            "http://localhost.evil.com",
        ] {
            assert!(!is_loopback(&url(u)), "{u}");
        }
    }

    #[test]
    fn the_defaults_use_every_demo_credential_each_named_by_its_setting() {
        let named: Vec<String> = credentials_in_use(&Settings::defaults())
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

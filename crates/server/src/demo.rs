//! Demo mode: with no upstream configured, the simulator runs inside the process and the
//! service calls it over loopback HTTP through the same client it uses in production.

use std::sync::Arc;

use url::{Host, Url};

/// The demo client's API key, printed in the README.
pub const DEMO_KEY: &str = "demo-key";

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
}

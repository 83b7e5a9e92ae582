//! `stitcher`: read the settings, build the service, serve until told to stop.

use clap::Parser;
use server::{Application, Settings};

/// Answers Engagement API /historical questions over any range and any number of Tweets.
///
/// With no settings it runs in demo mode on 127.0.0.1:8080, against the Engagement API
/// simulator started inside the process (API key "demo-key"). Settings come from
/// config/default.toml (built in), then the --config file, then STITCHER__SECTION__KEY
/// environment variables.
#[derive(Debug, Parser)]
#[command(name = "stitcher", version)]
struct Args {
    /// A TOML settings file laid over the defaults (see config/production.example.toml).
    #[arg(long, env = "STITCHER_CONFIG")]
    config: Option<String>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .json()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let settings = Settings::load_with(args.config.as_deref(), None)?;
    let app = Application::build(settings).await?;
    app.run_until(shutdown_signal()).await?;
    Ok(())
}

/// Completes on Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
}

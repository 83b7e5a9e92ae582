//! `stitcher`: read the settings, build the service, serve until told to stop; or, with
//! `query`, answer one question here.

use std::process::ExitCode;

use clap::Parser;
use server::cli::QueryArgs;
use server::telemetry::Telemetry;
use server::{Application, Settings};

/// Answers Engagement API questions over any range and any number of Tweets.
///
/// With no settings it runs in demo mode on 127.0.0.1:8080, against the Engagement API
/// simulator started inside the process (API key "demo-key"). Settings come from
/// config/default.toml (built in), then the --config file, then STITCHER__SECTION__KEY
/// environment variables.
#[derive(Debug, Parser)]
#[command(name = "stitcher", version)]
struct Args {
    /// A TOML settings file laid over the defaults (see config/production.example.toml).
    #[arg(long, env = "STITCHER_CONFIG", global = true)]
    config: Option<String>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// Serve (what stitcher does with no command).
    Serve,
    /// Answer one /historical question here and write the answer to standard output.
    Query(QueryArgs),
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    match run(args).await {
        Ok(code) => code,
        Err(e) => {
            // The message alone, whatever RUST_BACKTRACE says: it is for the operator.
            eprintln!("stitcher: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Serves, or answers the query, as `args` say.
async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let query = match args.command {
        Some(Command::Query(query)) => Some(query),
        Some(Command::Serve) | None => None,
    };
    let settings = Settings::load_with(args.config.as_deref(), None)?;
    // Logs go to standard output when serving; a query keeps it for the answer.
    let (level, to_stderr) = if query.is_some() { ("warn", true) } else { ("info", false) };
    let telemetry = Telemetry::init(&settings.telemetry, level, to_stderr)?;
    let code = match query {
        Some(query) => match server::cli::query(settings, query).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("stitcher query: {e}");
                ExitCode::from(e.exit_code())
            }
        },
        None => {
            let app = Application::build(settings).await?;
            app.run_until(shutdown_signal()).await?;
            ExitCode::SUCCESS
        }
    };
    telemetry.shutdown();
    Ok(code)
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

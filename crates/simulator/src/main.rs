//! `engagement-sim`: the Engagement API simulator as a standalone server.

use std::collections::HashSet;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use engagement::TweetId;
use simulator::faults::Faults;
use simulator::{Clock, Config, Credentials, Handle, Simulator};

/// A faithful stand-in for the Engagement API, with an unlimited oracle and fault injection.
///
/// Besides /insights/engagement/{totals,28hr,historical} it serves routes for tests, with no
/// OAuth: POST /_oracle/historical (any span, any number of IDs), GET /_stats and POST
/// /_stats/reset, and GET /_clock and POST /_clock with {"now": "<RFC 3339>"}, which stops
/// the clock at that instant for every answer afterwards.
#[derive(Debug, Parser)]
#[command(name = "engagement-sim", version)]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:9090")]
    listen: String,
    /// Added to every answer, in milliseconds.
    #[arg(long, default_value_t = 0)]
    latency_ms: u64,
    /// A uniform extra delay up to this many milliseconds.
    #[arg(long, default_value_t = 0)]
    jitter_ms: u64,
    /// Share of calls answered 500, 502 or 503 (0 to 1).
    #[arg(long, default_value_t = 0.0)]
    error_rate: f64,
    /// Share of calls that never answer (0 to 1).
    #[arg(long, default_value_t = 0.0)]
    hang_rate: f64,
    /// Share of 200 answers whose body is cut short (0 to 1).
    #[arg(long, default_value_t = 0.0)]
    truncate_rate: f64,
    /// Calls allowed per minute; 0 for no limit.
    #[arg(long, default_value_t = 0)]
    rate_limit_per_minute: u32,
    /// The rate limit's window in seconds (the API's is a minute; tests shorten it).
    #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..=3600))]
    rate_limit_window_secs: u64,
    /// Bursts of 429: of every N calls ...
    #[arg(long, default_value_t = 0)]
    burst_429_every: u64,
    /// ... the first M are refused with 429.
    #[arg(long, default_value_t = 0)]
    burst_429_length: u64,
    /// Varies the counts; the same seed gives the same counts.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Tweets of another handle (comma-separated IDs): their batches get 403.
    #[arg(long, value_delimiter = ',')]
    foreign_ids: Vec<u64>,
    /// Protected Tweets (comma-separated IDs): their batches get 400.
    #[arg(long, value_delimiter = ',')]
    protected_ids: Vec<u64>,
    /// Deleted Tweets (comma-separated IDs): listed as unavailable.
    #[arg(long, value_delimiter = ',')]
    deleted_ids: Vec<u64>,
    /// The app's consumer key.
    #[arg(long, default_value = simulator::config::DEMO_CONSUMER_KEY)]
    consumer_key: String,
    /// The app's consumer secret.
    #[arg(long, env = "SIM_CONSUMER_SECRET", default_value = simulator::config::DEMO_CONSUMER_SECRET, hide_default_value = true)]
    consumer_secret: String,
    /// A handle as NAME:TOKEN:SECRET; repeat for more. Default: demo:demo-token:demo-token-secret.
    #[arg(long = "handle", env = "SIM_HANDLES", value_delimiter = ' ', hide_env_values = true)]
    handles: Vec<String>,
    /// Freeze the clock at this instant (RFC 3339), for reproducible answers. POST /_clock
    /// with {"now": "<RFC 3339>"} moves it while serving.
    #[arg(long)]
    now: Option<String>,
    /// Hours over which a past hour's counts keep growing to their final value, as the real
    /// API's counts settle late: an hour shows final * min(1, age / (1 + H) hours), its age
    /// taken at the simulator's clock. 0: only the hour in progress is partial.
    #[arg(long, default_value_t = 0, value_name = "H")]
    settle_hours: u32,
    /// The URL clients sign against, if not http:// + the Host header (behind a proxy).
    #[arg(long)]
    public_url: Option<String>,
}

fn ids(list: &[u64]) -> HashSet<TweetId> {
    list.iter().copied().map(TweetId).collect()
}

fn config(args: Args) -> anyhow::Result<Config> {
    let mut credentials = Credentials {
        consumer_key: args.consumer_key,
        consumer_secret: args.consumer_secret,
        ..Credentials::default()
    };
    if !args.handles.is_empty() {
        credentials.handles = args
            .handles
            .iter()
            .map(|h| {
                let mut parts = h.splitn(3, ':');
                match (parts.next(), parts.next(), parts.next()) {
                    (Some(name), Some(token), Some(secret)) => {
                        Ok(Handle { name: name.into(), token: token.into(), token_secret: secret.into() })
                    }
                    _ => anyhow::bail!("--handle takes NAME:TOKEN:SECRET"),
                }
            })
            .collect::<anyhow::Result<_>>()?;
    }
    let clock = match args.now {
        Some(t) => Clock::Fixed(engagement::parse_instant(&t).context("--now takes an RFC 3339 instant")?),
        None => Clock::System,
    };
    for (name, rate) in [
        ("--error-rate", args.error_rate),
        ("--hang-rate", args.hang_rate),
        ("--truncate-rate", args.truncate_rate),
    ] {
        anyhow::ensure!((0.0..=1.0).contains(&rate), "{name} takes a share from 0 to 1, not {rate}");
    }
    Ok(Config {
        seed: args.seed,
        credentials,
        foreign_ids: ids(&args.foreign_ids),
        protected_ids: ids(&args.protected_ids),
        deleted_ids: ids(&args.deleted_ids),
        deleted_at: Default::default(),
        rate_limit_per_minute: args.rate_limit_per_minute,
        rate_window_secs: args.rate_limit_window_secs,
        faults: Faults {
            latency: Duration::from_millis(args.latency_ms),
            jitter: Duration::from_millis(args.jitter_ms),
            error_rate: args.error_rate,
            hang_rate: args.hang_rate,
            truncate_rate: args.truncate_rate,
            burst_every: args.burst_429_every,
            burst_length: args.burst_429_length,
            failing_window_starts: Vec::new(),
        },
        clock,
        settle_hours: args.settle_hours,
        public_url: args.public_url,
    })
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let args = Args::parse();
    let listen = args.listen.clone();
    let sim = Simulator::new(config(args)?);
    let listener =
        tokio::net::TcpListener::bind(&listen).await.with_context(|| format!("cannot listen on {listen}"))?;
    tracing::info!(addr = %listener.local_addr()?, "engagement-sim serving /insights/engagement/{{totals,28hr,historical}}, /_oracle/historical, /_stats, /_clock");
    sim.serve(listener).await?;
    Ok(())
}

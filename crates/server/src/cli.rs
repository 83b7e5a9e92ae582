//! `stitcher query`: one question answered in this process by the same engine, settings and
//! store as the service (the embedded simulator when no upstream is set), the answer on
//! standard output and nothing else there.

use std::io::{IsTerminal, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use engagement::tree::CountStyle;
use tokio_util::sync::CancellationToken;

use crate::error::{EngineError, ServiceError};
use crate::{Application, Settings, admission, format};
use engine::{Answer, Ask, Progress};

/// The client a question asked here is counted as.
const QUERY_CLIENT: &str = "stitcher query";

/// How the answer is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputFormat {
    Json,
    /// One row per count: grouping,tweet_id,engagement_type,week,month,day,hour,count.
    Csv,
}

/// `stitcher query [FILE | -] [--format json|csv] [--native] [--time-zone NAME] [--estimate]`.
#[derive(Debug, clap::Args)]
pub struct QueryArgs {
    /// The question's JSON body, as for POST /v1/historical: a file, or - (the default) for
    /// standard input.
    pub file: Option<PathBuf>,
    /// json (the default) or csv (one row per count; derived numbers are left out).
    #[arg(long, value_enum, default_value = "json")]
    pub format: OutputFormat,
    /// Answer in the native shape of /v1/historical (integer counts, meta, and what
    /// "derive" and "top" ask for) instead of the API's.
    #[arg(long)]
    pub native: bool,
    /// The handle to ask as (not needed when one is configured, as in demo mode).
    #[arg(long)]
    pub handle: Option<String>,
    /// Count days, weeks, months and hours in this zone: an IANA name (America/New_York),
    /// an offset (+02:00) or UTC. Stands for the body's "time_zone"; the API's shape, which
    /// counts UTC days, is still written unless --native says otherwise.
    #[arg(long, value_name = "NAME")]
    pub time_zone: Option<String>,
    /// Print what asking the question would cost (as POST /v1/estimate answers: calls, time,
    /// whether it counts the handle this month) instead of asking it; no upstream call is made.
    #[arg(long)]
    pub estimate: bool,
}

/// Why a query gave no answer, said on standard error.
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    /// The question could not be read (a missing file, bad JSON).
    #[error("{0}")]
    Input(String),
    /// The question was refused or could not be answered here (the settings, the handle,
    /// a store held by another process, the upstream).
    #[error("{0}")]
    Answer(String),
}

impl From<engine::TaskFailed> for QueryError {
    fn from(e: engine::TaskFailed) -> QueryError {
        QueryError::Answer(format!("{}: {}", e.what, e.source))
    }
}

impl QueryError {
    /// The process's exit code: 2 for a question that cannot be read, 1 for one that was
    /// refused or could not be answered.
    pub fn exit_code(&self) -> u8 {
        match self {
            QueryError::Input(_) => 2,
            QueryError::Answer(_) => 1,
        }
    }
}

fn answer_error(e: ServiceError) -> QueryError {
    if let ServiceError::Engine(EngineError::TooBigForDeadline { refusal }) = &e {
        // Here the question has the time of a job, which the settings give.
        return QueryError::Answer(format!(
            "{refusal}, its deadline (jobs.timeout_secs): give it more time, e.g. STITCHER__JOBS__TIMEOUT_SECS={}, or ask for a shorter range or fewer Tweets",
            refusal.time_needed().as_secs()
        ));
    }
    let messages = e.messages();
    QueryError::Answer(if messages.is_empty() { e.to_string() } else { messages.join("; ") })
}

/// The service's state for `settings`. In demo mode a store held by a running service is
/// left to it, and this answer keeps a store of its own for as long as it runs (the
/// simulator's numbers cost nothing to fetch again); with a real upstream that would call
/// behind the service's back, so it is refused with what to do instead.
async fn state_for(
    mut settings: Settings,
) -> Result<(Arc<crate::state::AppState>, Option<PathBuf>), QueryError> {
    let held = match Application::standalone(settings.clone()).await {
        Ok(state) => return Ok((state, None)),
        Err(e)
            if e.downcast_ref::<store::StoreError>()
                .is_some_and(|e| matches!(e, store::StoreError::InUse { .. })) =>
        {
            e
        }
        Err(e) => return Err(QueryError::Answer(format!("{e:#}"))),
    };
    if settings.upstream.base_url.is_some() {
        return Err(QueryError::Answer(format!(
            "{held:#}: a running stitcher holds it. Ask that service instead (POST /v1/historical, or POST /v1/jobs for long questions), or stop it first; a store of this command's own (STITCHER__STORE__PATH) would fetch everything again and keep a handle ledger apart from the service's"
        )));
    }
    let own = std::env::temp_dir().join(format!("stitcher-query-{}", std::process::id()));
    eprintln!(
        "stitcher query: {held:#} (a running stitcher); in demo mode this answer keeps a store of its own in {} until it is written",
        own.display()
    );
    settings.store.path.clone_from(&own);
    let state = Application::standalone(settings).await.map_err(|e| QueryError::Answer(format!("{e:#}")))?;
    Ok((state, Some(own)))
}

/// Reads the question, answers it, and writes the answer to standard output.
pub async fn query(settings: Settings, args: QueryArgs) -> Result<(), QueryError> {
    let body = read_input(args.file.as_deref())?;
    // What cannot be read is said before anything starts (the simulator, the store).
    let mut question = engagement::request::read_body::<serde_json::Value>(&body)
        .map_err(|e| QueryError::Input(e.to_string()))?;
    let body = match &args.time_zone {
        Some(zone) => {
            question["time_zone"] = serde_json::Value::String(zone.clone());
            serde_json::to_vec(&question).map_err(|e| QueryError::Input(e.to_string()))?
        }
        None => body,
    };
    // A zone, by flag or in the body, is read as the native answer reads it.
    let zoned = question.get("time_zone").is_some_and(|zone| !zone.is_null());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(settings.jobs.timeout_secs);
    let (state, own_store) = state_for(settings).await?;
    let answered = answer(&state, &args, (&body, zoned), deadline).await;
    crate::app::sync_store(&state).await;
    drop(state);
    if let Some(own) = own_store {
        let _ = std::fs::remove_dir_all(own);
    }
    answered
}

/// Answers the question `body` (`zoned`: it names a time zone) as `args` say, by
/// `deadline`, and writes the answer.
async fn answer(
    state: &crate::state::AppState,
    args: &QueryArgs,
    (body, zoned): (&[u8], bool),
    deadline: tokio::time::Instant,
) -> Result<(), QueryError> {
    let handle = state.keyring.handle(args.handle.as_deref()).map_err(QueryError::Answer)?;
    // CSV is a native answer's (as on /v1/historical), and so are a zone given by flag and
    // an estimate (as on /v1/estimate): the members only it reads are allowed.
    let native = args.native || args.format == OutputFormat::Csv || zoned || args.estimate;
    // Both shapes are this service's own: a member nobody reads is refused.
    let reading = engine::Reading { native, strict: true };
    let (question, _counts) = admission::question_of(state, body, reading).map_err(answer_error)?;
    if args.estimate {
        // A question asked here has a job's time (jobs.timeout_secs), not a request's.
        let within = deadline.saturating_duration_since(tokio::time::Instant::now());
        let estimate = state
            .engine
            .estimate((QUERY_CLIENT, &handle.handle), &question, within)
            .await
            .map_err(|e| answer_error(e.into()))?;
        let text = serde_json::to_string_pretty(&estimate).map_err(|e| QueryError::Answer(e.to_string()))?;
        println!("{text}");
        return Ok(());
    }

    let progress = Arc::new(Progress::default());
    let shown = std::io::stderr().is_terminal().then(|| tokio::spawn(show(Arc::clone(&progress))));
    let cancel = CancellationToken::new();
    let ask = Ask::new(QUERY_CLIENT, handle, deadline, cancel.clone()).watched(Arc::clone(&progress));
    let answering = state.engine.answer(&ask, &question);
    let answer = tokio::select! {
        answer = answering => answer.map_err(ServiceError::from),
        _ = tokio::signal::ctrl_c() => {
            cancel.cancel();
            Err(ServiceError::internal("interrupted", None))
        }
    };
    if let Some(shown) = shown {
        shown.abort();
        let _ = shown.await;
    }
    let answer = answer.map_err(answer_error)?;
    if !answer.incomplete.is_empty() && !(native_json(args)) {
        eprintln!(
            "stitcher query: {} slices failed and are left out of this answer; --native --format json lists them under meta.incomplete",
            answer.incomplete.len()
        );
    }
    let (format, native) = (args.format, args.native);
    engine::off_the_workers("the answer could not be written", move || write(&answer, format, native)).await
}

/// Whether the answer is written in the shape that lists what is incomplete.
fn native_json(args: &QueryArgs) -> bool {
    args.native && args.format == OutputFormat::Json
}

/// The question's text from `file`, or from standard input for `-` or none.
fn read_input(file: Option<&Path>) -> Result<Vec<u8>, QueryError> {
    match file {
        Some(path) if path != Path::new("-") => std::fs::read(path)
            .map_err(|e| QueryError::Input(format!("cannot read the question from {}: {e}", path.display()))),
        _ => {
            let mut body = Vec::new();
            std::io::stdin().read_to_end(&mut body).map_err(|e| {
                QueryError::Input(format!("cannot read the question from standard input: {e}"))
            })?;
            Ok(body)
        }
    }
}

/// Writes `answer` to standard output in `format`, in the native shape or the API's.
fn write(answer: &Answer, format: OutputFormat, native: bool) -> Result<(), QueryError> {
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::with_capacity(64 * 1024, stdout.lock());
    let written = match format {
        OutputFormat::Csv => engagement::csv::write(&answer.response, &answer.groupings, &mut out),
        OutputFormat::Json if native => {
            serde_json::to_writer(&mut out, &format::native_body(answer)).map_err(std::io::Error::from)
        }
        OutputFormat::Json => serde_json::to_writer(&mut out, &answer.response.styled(CountStyle::Strings))
            .map_err(std::io::Error::from),
    };
    let ended = if format == OutputFormat::Json { out.write_all(b"\n") } else { Ok(()) };
    written
        .and(ended)
        .and_then(|()| out.flush())
        .map_err(|e| QueryError::Answer(format!("the answer could not be written: {e}")))
}

/// Draws a progress bar of the slices on standard error until aborted.
async fn show(progress: Arc<Progress>) {
    let bar = indicatif::ProgressBar::new(0);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{spinner} {bar:40} {pos}/{len} slices {msg} ({elapsed})")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    struct Clear(indicatif::ProgressBar);
    impl Drop for Clear {
        fn drop(&mut self) {
            self.0.finish_and_clear();
        }
    }
    let bar = Clear(bar);
    let mut changed = progress.subscribe();
    loop {
        let now = progress.snapshot();
        // Slices as the answer's meta counts them: those held or before the Tweets existed
        // need no call and count as done.
        let ready = now.slices_done + now.slices_synthesized + now.slices_from_store;
        bar.0.set_length(now.slices_total as u64);
        bar.0.set_position(ready.min(now.slices_total) as u64);
        let stage = match now.stage {
            engine::Stage::Planning => "planning",
            engine::Stage::Fetching => "fetching",
            engine::Stage::Answering => "answering",
        };
        bar.0.set_message(format!("{stage}, {} calls", now.upstream_calls));
        tokio::select! {
            c = changed.changed() => if c.is_err() { return },
            () = tokio::time::sleep(Duration::from_millis(250)) => bar.0.tick(),
        }
    }
}

//! Jobs: questions too long for one HTTP request, answered in the background by the same
//! engine, watched by their progress, and kept for `jobs.result_ttl_secs` once finished.
//!
//! A job is visible only to the client that made it. At most `jobs.max_running` run at
//! once; up to `jobs.max_queued` more wait as `queued`. A running job takes its own lane in
//! the fair scheduler like any question, and holds its answer's counts from the same
//! `server.max_counts_in_flight` budget while it is built. Finished results are kept apart
//! from that budget, within `jobs.max_result_bytes` together: past it the oldest are let go.
//! Jobs live in the process: at shutdown, queued ones fail at once and running ones get the
//! grace period, then fail with what was not fetched.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;
use upstream::HandleCredentials;

use crate::config::JobsSettings;
use crate::error::EngineError;
use crate::ports::Clock;
use crate::{Answer, Ask, Engine, Progress, ProgressSnapshot, Question};

/// Where a job is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum JobState {
    Queued,
    Running,
    Done,
    Failed,
    Cancelled,
}

impl JobState {
    /// Whether the job has ended.
    pub fn is_final(self) -> bool {
        matches!(self, JobState::Done | JobState::Failed | JobState::Cancelled)
    }
}

/// A job as it is now.
#[derive(Debug, Clone)]
pub struct JobReport {
    pub id: String,
    pub state: JobState,
    pub progress: ProgressSnapshot,
    pub created_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    /// The time until its calls are done, from its own pace so far (before its first call
    /// ends, from the per-minute budget, if one is set); only while it runs.
    pub eta: Option<Duration>,
    /// Why it failed, if it did.
    pub failure: Option<Arc<EngineError>>,
}

/// How a job ended, while it is kept.
#[derive(Debug)]
enum Outcome {
    Answered(Arc<Answer>),
    Failed(Arc<EngineError>),
    /// Answered, but the answer was let go to keep results within their bound.
    LetGo {
        bytes: u64,
    },
}

#[derive(Debug)]
struct Record {
    state: JobState,
    finished_at: Option<DateTime<Utc>>,
    outcome: Option<Outcome>,
}

/// One job.
#[derive(Debug)]
pub struct Job {
    pub id: String,
    pub client: String,
    pub created_at: DateTime<Utc>,
    pub progress: Arc<Progress>,
    cancel: CancellationToken,
    record: Mutex<Record>,
    clock: Arc<dyn Clock>,
}

/// What a job's result is now.
#[derive(Debug)]
pub enum JobResult {
    Pending(JobState),
    Answered(Arc<Answer>),
    Failed(Arc<EngineError>),
    Cancelled,
    /// Its answer was let go (its size in bytes) to keep results within `jobs.max_result_bytes`.
    LetGo(u64),
}

impl Job {
    fn lock(&self) -> std::sync::MutexGuard<'_, Record> {
        self.record.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The job's state now.
    pub fn state(&self) -> JobState {
        self.lock().state
    }

    /// Where it is, with an estimate of the time left from its pace, or `engine`'s policy.
    pub fn report(&self, engine: &Engine) -> JobReport {
        let record = self.lock();
        let eta = (record.state == JobState::Running).then(|| self.progress.eta(&engine.calls)).flatten();
        let failure = match &record.outcome {
            Some(Outcome::Failed(e)) => Some(Arc::clone(e)),
            _ => None,
        };
        JobReport {
            id: self.id.clone(),
            state: record.state,
            progress: self.progress.snapshot(),
            created_at: self.created_at,
            finished_at: record.finished_at,
            eta,
            failure,
        }
    }

    /// Its result, once there is one.
    pub fn result(&self) -> JobResult {
        let record = self.lock();
        match (&record.outcome, record.state) {
            (Some(Outcome::Answered(a)), _) => JobResult::Answered(Arc::clone(a)),
            (Some(Outcome::Failed(e)), _) => JobResult::Failed(Arc::clone(e)),
            (Some(Outcome::LetGo { bytes }), _) => JobResult::LetGo(*bytes),
            (None, JobState::Cancelled) => JobResult::Cancelled,
            (None, state) => JobResult::Pending(state),
        }
    }

    /// Stops the job: no call starts after this. A finished job is left as it is.
    fn cancel(&self) {
        let mut record = self.lock();
        if !record.state.is_final() {
            record.state = JobState::Cancelled;
            record.finished_at = Some(self.clock.now());
            drop(record);
            self.cancel.cancel();
            self.progress.wake_watchers();
        }
    }

    fn set(&self, state: JobState) {
        self.lock().state = state;
        self.progress.wake_watchers();
    }

    /// Records how the job ended, unless it was cancelled meanwhile; the bytes its answer
    /// holds, if it is kept.
    fn finish(&self, result: Result<Answer, EngineError>) -> Option<u64> {
        let mut record = self.lock();
        if record.state == JobState::Cancelled {
            return None;
        }
        record.finished_at = Some(self.clock.now());
        let kept = match result {
            Ok(answer) => {
                let bytes = answer.response.held_bytes();
                record.state = JobState::Done;
                record.outcome = Some(Outcome::Answered(Arc::new(answer)));
                Some(bytes)
            }
            Err(e) => {
                record.state = JobState::Failed;
                record.outcome = Some(Outcome::Failed(Arc::new(e)));
                None
            }
        };
        drop(record);
        self.progress.wake_watchers();
        kept
    }

    /// Lets the answer go, keeping that it was answered.
    fn let_go(&self, bytes: u64) {
        let mut record = self.lock();
        if matches!(record.outcome, Some(Outcome::Answered(_))) {
            record.outcome = Some(Outcome::LetGo { bytes });
        }
    }

    fn expired(&self, now: DateTime<Utc>, ttl: Duration) -> bool {
        let record = self.lock();
        record
            .finished_at
            .is_some_and(|at| now.signed_duration_since(at).to_std().is_ok_and(|age| age >= ttl))
    }
}

/// The results kept, oldest first, and their bytes together.
#[derive(Debug, Default)]
struct Kept {
    results: VecDeque<(Arc<Job>, u64)>,
    bytes: u64,
}

/// Every job of the process.
#[derive(Debug)]
pub struct Jobs {
    jobs: Mutex<HashMap<String, Arc<Job>>>,
    running: Arc<Semaphore>,
    kept: Mutex<Kept>,
    /// Fires when shutdown begins: queued jobs fail then, without starting.
    closing: CancellationToken,
    /// Where jobs run: shutdown waits for what it tracks.
    tasks: TaskTracker,
    settings: JobsSettings,
    clock: Arc<dyn Clock>,
}

/// Why a job could not be made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueFull {
    pub running: usize,
    pub queued: usize,
    /// When the first running job is expected to end.
    pub retry_after: Duration,
}

/// What a new job is: who asks what, with the room its answer's counts take.
#[derive(Debug)]
pub struct Submitted {
    pub client: String,
    pub handle: Arc<HandleCredentials>,
    pub question: Question,
    pub counts: u32,
}

impl Jobs {
    /// An empty set of jobs run as `settings` say, each tracked by `tasks` until it ends,
    /// their results expiring by `clock`.
    pub fn new(settings: JobsSettings, tasks: TaskTracker, clock: Arc<dyn Clock>) -> Jobs {
        Jobs {
            jobs: Mutex::default(),
            running: Arc::new(Semaphore::new(settings.max_running.max(1))),
            kept: Mutex::default(),
            closing: CancellationToken::new(),
            tasks,
            settings,
            clock,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Job>>> {
        self.jobs.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn lock_kept(&self) -> std::sync::MutexGuard<'_, Kept> {
        self.kept.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Jobs running now.
    pub fn running(&self) -> usize {
        self.lock().values().filter(|j| j.state() == JobState::Running).count()
    }

    /// Starts answering `job` in the background as `engine` does; its counts are taken from
    /// `counts_budget` while it runs. Shutdown's `cut_off` stops it. Refused when as many
    /// jobs run and wait as `jobs.max_running` and `jobs.max_queued` allow.
    pub fn submit(
        self: &Arc<Self>,
        engine: &Arc<Engine>,
        job: Submitted,
        counts_budget: &Arc<Semaphore>,
        cut_off: &CancellationToken,
    ) -> Result<Arc<Job>, QueueFull> {
        self.sweep();
        let made = {
            let mut jobs = self.lock();
            let (running, queued) = jobs.values().fold((0, 0), |(r, q), j| match j.state() {
                JobState::Running => (r + 1, q),
                JobState::Queued => (r, q + 1),
                _ => (r, q),
            });
            if running + queued >= self.settings.max_running + self.settings.max_queued {
                let soonest = jobs
                    .values()
                    .filter(|j| j.state() == JobState::Running)
                    .filter_map(|j| j.progress.eta(&engine.calls))
                    .min();
                // Without a pace to go by, a few seconds: the next look will know more.
                let retry_after = soonest.unwrap_or(Duration::from_secs(5)).max(Duration::from_secs(1));
                return Err(QueueFull { running, queued, retry_after });
            }
            let made = Arc::new(Job {
                id: format!("{:032x}", fastrand::u128(..)),
                client: job.client.clone(),
                created_at: self.clock.now(),
                progress: Arc::new(Progress::default()),
                cancel: cut_off.child_token(),
                record: Mutex::new(Record { state: JobState::Queued, finished_at: None, outcome: None }),
                clock: Arc::clone(&self.clock),
            });
            jobs.insert(made.id.clone(), Arc::clone(&made));
            made
        };
        let (jobs, engine, counts_budget, runner) =
            (Arc::clone(self), Arc::clone(engine), Arc::clone(counts_budget), Arc::clone(&made));
        let span = tracing::info_span!("job", id = %made.id, client = %made.client);
        self.tasks
            .spawn(async move { jobs.run(runner, &engine, job, &counts_budget).await }.instrument(span));
        Ok(made)
    }

    /// Runs `job` once it has a place among the running and room for its counts.
    async fn run(
        &self,
        job: Arc<Job>,
        engine: &Arc<Engine>,
        asked: Submitted,
        counts_budget: &Arc<Semaphore>,
    ) {
        let started = async {
            let place = Arc::clone(&self.running).acquire_owned().await.ok()?;
            let room = Arc::clone(counts_budget).acquire_many_owned(asked.counts).await.ok()?;
            Some((place, room))
        };
        let started: Option<(OwnedSemaphorePermit, OwnedSemaphorePermit)> = tokio::select! {
            started = started => started,
            () = self.closing.cancelled() => {
                job.finish(Err(EngineError::ShuttingDown));
                return;
            }
            () = job.cancel.cancelled() => None,
        };
        let Some((_place, room)) = started else {
            job.cancel();
            return;
        };
        job.set(JobState::Running);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(self.settings.timeout_secs);
        let ask = Ask::new(&job.client, Arc::clone(&asked.handle), deadline, job.cancel.clone())
            .watched(Arc::clone(&job.progress));
        let result = loop {
            match engine.answer(&ask, &asked.question).await {
                // A job has hours: while the budget is busy with questions that would
                // miss their deadlines beside it, it waits its turn instead of failing.
                Err(EngineError::BudgetBusy { retry_after, .. })
                    if tokio::time::Instant::now() + retry_after < deadline =>
                {
                    tokio::select! {
                        () = tokio::time::sleep(retry_after) => {}
                        () = job.cancel.cancelled() => {
                            // Shutdown's cut-off fails it; a client's DELETE cancels it.
                            if self.closing.is_cancelled() {
                                job.finish(Err(EngineError::CutOff { failed: Vec::new() }));
                            }
                            job.cancel();
                            return;
                        }
                    }
                }
                answered => break answered,
            }
        };
        // The answer is built: its counts go back to the questions in flight, and it is
        // kept within the results' own bound.
        drop(room);
        if let Some(bytes) = job.finish(result) {
            self.keep(job, bytes);
        }
    }

    /// Keeps `job`'s answer of `bytes`, letting the oldest results go while the results
    /// together hold more than `jobs.max_result_bytes` (this one too, if it alone does).
    fn keep(&self, job: Arc<Job>, bytes: u64) {
        // Held while keeping, so a DELETE either forgets the job before or its result after.
        let jobs = self.lock();
        if !jobs.contains_key(&job.id) {
            return;
        }
        let mut kept = self.lock_kept();
        kept.bytes += bytes;
        kept.results.push_back((job, bytes));
        while kept.bytes > self.settings.max_result_bytes {
            let Some((oldest, bytes)) = kept.results.pop_front() else { break };
            kept.bytes -= bytes;
            oldest.let_go(bytes);
            tracing::info!(
                job = %oldest.id,
                bytes,
                max_result_bytes = self.settings.max_result_bytes,
                "a finished job's result was let go to keep results within jobs.max_result_bytes"
            );
        }
    }

    /// Stops taking new jobs from the queue: jobs still queued fail as the service shuts
    /// down; running ones go on until shutdown's cut-off.
    pub fn close(&self) {
        self.closing.cancel();
    }

    /// The job `id`, if `client` made it and it is still kept.
    pub fn get(&self, client: &str, id: &str) -> Option<Arc<Job>> {
        self.sweep();
        self.lock().get(id).filter(|j| j.client == client).cloned()
    }

    /// `DELETE`: cancels `job` if it is queued or running, and forgets it (watchers of its
    /// events still hear it end as `cancelled`).
    pub fn delete(&self, job: &Job) {
        job.cancel();
        self.lock().remove(&job.id);
        self.forget(|kept| kept.id == job.id);
    }

    /// Forgets jobs whose results have been kept their time.
    pub fn sweep(&self) {
        let ttl = Duration::from_secs(self.settings.result_ttl_secs);
        let now = self.clock.now();
        self.lock().retain(|_, job| !job.expired(now, ttl));
        self.forget(|job| job.expired(now, ttl));
    }

    /// Lets go of the kept results of the jobs `gone` picks.
    fn forget(&self, gone: impl Fn(&Job) -> bool) {
        let mut kept = self.lock_kept();
        let mut freed = 0;
        kept.results.retain(|(job, bytes)| {
            let keep = !gone(job);
            if !keep {
                freed += bytes;
            }
            keep
        });
        kept.bytes -= freed;
    }

    /// The bytes the kept results hold together.
    pub fn kept_bytes(&self) -> u64 {
        self.lock_kept().bytes
    }
}

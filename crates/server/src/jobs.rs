//! Jobs: questions too long for one HTTP request, answered in the background by the same
//! engine, watched by their progress, and kept for `jobs.result_ttl_secs` once finished.
//!
//! A job is visible only to the client that made it. At most `jobs.max_running` run at
//! once; more wait as `queued`, at most `jobs.max_queued`. A running job takes its own lane
//! in the fair scheduler like any question, and its answer holds counts from the same
//! `server.max_counts_in_flight` budget until the result is gone.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use upstream::HandleCredentials;

use crate::engine::{Answer, Engine, Progress, ProgressSnapshot, Question};
use crate::error::ServiceError;
use crate::settings::JobsSettings;

/// Where a job is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
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

/// A failed job's error, as a question's would be.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct JobError {
    pub status: u16,
    pub errors: Vec<String>,
}

/// What `GET /v1/jobs/{id}` answers.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct JobStatus {
    pub id: String,
    pub state: JobState,
    pub progress: ProgressSnapshot,
    pub created_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<String>,
    /// Seconds until done, from the slices left, the calls in flight and the budget.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub eta_secs: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<JobError>,
}

/// How a job ended, while it is kept.
#[derive(Debug)]
enum Outcome {
    Answered(Arc<Answer>),
    Failed(Arc<ServiceError>),
}

#[derive(Debug)]
struct Record {
    state: JobState,
    finished_at: Option<DateTime<Utc>>,
    outcome: Option<Outcome>,
    /// The answer's counts, held while the result is kept.
    counts: Option<OwnedSemaphorePermit>,
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
}

/// What a job's result is now.
#[derive(Debug)]
pub enum JobResult {
    Pending(JobState),
    Answered(Arc<Answer>),
    Failed(Arc<ServiceError>),
    Cancelled,
}

impl Job {
    fn lock(&self) -> std::sync::MutexGuard<'_, Record> {
        self.record.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The job's state now.
    pub fn state(&self) -> JobState {
        self.lock().state
    }

    /// Its status, with an estimate of the time left from `engine`'s policy.
    pub fn status(&self, engine: &Engine) -> JobStatus {
        let record = self.lock();
        let eta = (record.state == JobState::Running)
            .then(|| engine.calls.eta(self.progress.slices_left(), self.progress.mean_call()))
            .flatten()
            .map(|d| d.as_secs() + u64::from(d.subsec_nanos() > 0));
        let error = match &record.outcome {
            Some(Outcome::Failed(e)) => Some(JobError { status: e.status().as_u16(), errors: e.messages() }),
            _ => None,
        };
        JobStatus {
            id: self.id.clone(),
            state: record.state,
            progress: self.progress.snapshot(),
            created_at: self.created_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            finished_at: record.finished_at.map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)),
            eta_secs: eta,
            error,
        }
    }

    /// Its result, once there is one.
    pub fn result(&self) -> JobResult {
        let record = self.lock();
        match (&record.outcome, record.state) {
            (Some(Outcome::Answered(a)), _) => JobResult::Answered(Arc::clone(a)),
            (Some(Outcome::Failed(e)), _) => JobResult::Failed(Arc::clone(e)),
            (None, JobState::Cancelled) => JobResult::Cancelled,
            (None, state) => JobResult::Pending(state),
        }
    }

    /// Stops the job: no call starts after this. A finished job is left as it is.
    fn cancel(&self) {
        let mut record = self.lock();
        if !record.state.is_final() {
            record.state = JobState::Cancelled;
            record.finished_at = Some(Utc::now());
            drop(record);
            self.cancel.cancel();
            self.progress.touch();
        }
    }

    fn set(&self, state: JobState) {
        self.lock().state = state;
        self.progress.touch();
    }

    /// Records how the job ended, unless it was cancelled meanwhile.
    fn finish(&self, result: Result<Answer, ServiceError>, counts: OwnedSemaphorePermit) {
        let mut record = self.lock();
        if record.state == JobState::Cancelled {
            return;
        }
        record.finished_at = Some(Utc::now());
        match result {
            Ok(answer) => {
                record.state = JobState::Done;
                record.outcome = Some(Outcome::Answered(Arc::new(answer)));
                record.counts = Some(counts);
            }
            Err(e) => {
                record.state = JobState::Failed;
                record.outcome = Some(Outcome::Failed(Arc::new(e)));
            }
        }
        drop(record);
        self.progress.touch();
    }

    fn expired(&self, now: DateTime<Utc>, ttl: Duration) -> bool {
        let record = self.lock();
        record
            .finished_at
            .is_some_and(|at| now.signed_duration_since(at).to_std().is_ok_and(|age| age >= ttl))
    }
}

/// Every job of the process.
#[derive(Debug)]
pub struct Jobs {
    jobs: Mutex<HashMap<String, Arc<Job>>>,
    running: Arc<Semaphore>,
    settings: JobsSettings,
}

/// Why a job could not be made.
#[derive(Debug, thiserror::Error)]
#[error("{0} jobs are waiting already (jobs.max_queued); retry later")]
pub struct QueueFull(pub usize);

impl Jobs {
    /// An empty set of jobs run as `settings` say.
    pub fn new(settings: JobsSettings) -> Jobs {
        Jobs {
            jobs: Mutex::default(),
            running: Arc::new(Semaphore::new(settings.max_running.max(1))),
            settings,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Job>>> {
        self.jobs.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Starts answering `question` as `handle` for `client` in the background; `counts`
    /// (the answer's size) are taken from `counts_budget` when it starts running. Shutdown's
    /// `cut_off` stops it too.
    #[allow(clippy::too_many_arguments)]
    pub fn submit(
        &self,
        engine: &Arc<Engine>,
        client: &str,
        handle: Arc<HandleCredentials>,
        question: Question,
        counts: u32,
        counts_budget: &Arc<Semaphore>,
        cut_off: &CancellationToken,
    ) -> Result<Arc<Job>, QueueFull> {
        self.sweep();
        let job = {
            let mut jobs = self.lock();
            let waiting = jobs.values().filter(|j| j.state() == JobState::Queued).count();
            if waiting >= self.settings.max_queued {
                return Err(QueueFull(waiting));
            }
            let job = Arc::new(Job {
                id: format!("{:032x}", fastrand::u128(..)),
                client: client.to_owned(),
                created_at: Utc::now(),
                progress: Arc::new(Progress::default()),
                cancel: cut_off.child_token(),
                record: Mutex::new(Record {
                    state: JobState::Queued,
                    finished_at: None,
                    outcome: None,
                    counts: None,
                }),
            });
            jobs.insert(job.id.clone(), Arc::clone(&job));
            job
        };
        let (engine, running, counts_budget, timeout) = (
            Arc::clone(engine),
            Arc::clone(&self.running),
            Arc::clone(counts_budget),
            Duration::from_secs(self.settings.timeout_secs),
        );
        let runner = Arc::clone(&job);
        tokio::spawn(async move {
            let job = runner;
            let started = async {
                let place = running.acquire_owned().await.ok()?;
                let room = counts_budget.acquire_many_owned(counts).await.ok()?;
                Some((place, room))
            };
            let started = tokio::select! {
                started = started => started,
                () = job.cancel.cancelled() => None,
            };
            let Some((_place, room)) = started else {
                job.cancel();
                return;
            };
            job.set(JobState::Running);
            let deadline = tokio::time::Instant::now() + timeout;
            let result = loop {
                match engine.answer(&handle, &question, deadline, &job.progress, &job.cancel).await {
                    // A job has hours: while the budget is busy with questions that would
                    // miss their deadlines beside it, it waits its turn instead of failing.
                    Err(ServiceError::BudgetBusy { retry_after, .. })
                        if tokio::time::Instant::now() + retry_after < deadline =>
                    {
                        tokio::select! {
                            () = tokio::time::sleep(retry_after) => {}
                            () = job.cancel.cancelled() => {
                                job.cancel();
                                return;
                            }
                        }
                    }
                    answered => break answered,
                }
            };
            job.finish(result, room);
        });
        Ok(job)
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
    }

    /// Forgets jobs whose results have been kept their time.
    pub fn sweep(&self) {
        let ttl = Duration::from_secs(self.settings.result_ttl_secs);
        let now = Utc::now();
        self.lock().retain(|_, job| !job.expired(now, ttl));
    }
}

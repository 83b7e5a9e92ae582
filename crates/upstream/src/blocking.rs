//! Work that must not hold up the async workers: parsing an answer, merging, rendering,
//! writing, the store's disk. Every crate from this one up runs such work through
//! [`off_the_workers`], so a blocking task that fails is named and mapped in one place.

use std::future::Future;

/// A blocking task that failed (it panicked) before it finished.
#[derive(Debug, thiserror::Error)]
#[error("{what}: the task failed: {source}")]
pub struct TaskFailed {
    pub what: String,
    #[source]
    pub source: tokio::task::JoinError,
}

/// Starts `work` on a blocking thread at once; `what` names it if it fails. The returned
/// future gives its result: await it now, or hold it while other work goes on (a merger fed
/// by a channel, a body being written). Dropped, the work still runs to its end.
pub fn off_the_workers<T, E>(
    what: &str,
    work: impl FnOnce() -> Result<T, E> + Send + 'static,
) -> impl Future<Output = Result<T, E>> + Send + 'static
where
    T: Send + 'static,
    E: From<TaskFailed> + Send + 'static,
{
    let running = tokio::task::spawn_blocking(work);
    let what = what.to_owned();
    async move { running.await.map_err(|source| TaskFailed { what, source })? }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq)]
    enum Failed {
        Work(&'static str),
        Task(String),
    }

    impl From<TaskFailed> for Failed {
        fn from(e: TaskFailed) -> Failed {
            Failed::Task(e.what)
        }
    }

    #[tokio::test]
    async fn the_works_own_result_and_a_panic_are_told_apart() {
        assert_eq!(off_the_workers::<u8, Failed>("adding", || Ok(2)).await, Ok(2));
        assert_eq!(
            off_the_workers::<u8, Failed>("adding", || Err(Failed::Work("no"))).await,
            Err(Failed::Work("no"))
        );
        let panicked = off_the_workers::<u8, Failed>("parsing the answer", || panic!("boom")).await;
        assert_eq!(panicked, Err(Failed::Task("parsing the answer".into())));
    }

    #[tokio::test]
    async fn the_work_starts_before_it_is_awaited() {
        let (tx, rx) = std::sync::mpsc::channel();
        let held = off_the_workers::<(), Failed>("sending", move || {
            tx.send(()).unwrap();
            Ok(())
        });
        // Received while `held` has not been polled.
        tokio::task::spawn_blocking(move || rx.recv_timeout(std::time::Duration::from_secs(30)))
            .await
            .unwrap()
            .unwrap();
        held.await.unwrap();
    }
}

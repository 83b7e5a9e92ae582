//! Serving connections: every wait on a client has a timeout, and the number of open
//! connections has a cap.
//!
//! - A connection must send a whole request head within `server.header_timeout_secs` of
//!   opening, or of the head's first byte on a kept-alive connection.
//! - A kept-alive connection with no request for `server.idle_timeout_secs` is closed.
//! - An answer whose client reads nothing for `server.write_timeout_secs` is abandoned: the
//!   connection is closed, which drops the answer and with it the question's place among
//!   those in flight and its counts.
//! - Past `server.max_connections` open connections, a new one is closed at once, so a flood
//!   of connects cannot use up the process's file descriptors.
//!
//! hyper's own head timeout starts when it waits for a head, which on a kept-alive
//! connection is right after the previous answer: it cannot tell "idle" from "slow head".
//! So both are kept here, from what the connection's reads and requests show.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::Request;
use axum::response::Response;
use http_body::{Body as HttpBody, Frame, SizeHint};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tokio::time::{Instant, Sleep};
use tower::ServiceExt;

/// The timeouts and cap of client connections.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub header_timeout: Duration,
    pub idle_timeout: Duration,
    pub write_timeout: Duration,
    pub max_connections: usize,
}

/// Serves `router` on `listener` until `stop` completes; then asks every connection to close
/// once its request in flight is answered, and waits up to `linger` for them.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: Limits,
    stop: impl Future<Output = ()>,
    linger: Duration,
) {
    let open = Arc::new(Semaphore::new(limits.max_connections));
    let (closing, closing_rx) = watch::channel(false);
    tokio::pin!(stop);
    loop {
        let (stream, _peer) = tokio::select! {
            () = &mut stop => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors or the like: wait, rather than spin.
                    tracing::warn!(error = %e, "could not accept a connection");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Ok(permit) = Arc::clone(&open).try_acquire_owned() else {
            metrics::counter!("stitcher_connections_refused_total").increment(1);
            tracing::debug!(
                max = limits.max_connections,
                "connection refused: server.max_connections are open"
            );
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let (router, closing) = (router.clone(), closing_rx.clone());
        tokio::spawn(async move {
            metrics::gauge!("stitcher_connections_open").increment(1.0);
            connection(stream, router, limits, closing).await;
            metrics::gauge!("stitcher_connections_open").decrement(1.0);
            drop(permit);
        });
    }
    drop(listener);
    let _ = closing.send(true);
    let all = u32::try_from(limits.max_connections).unwrap_or(u32::MAX);
    let _ = tokio::time::timeout(linger, open.acquire_many(all)).await;
}

/// What one connection is doing, as its reads and requests show.
#[derive(Debug)]
struct Activity {
    /// Requests whose answers are not yet written.
    in_flight: usize,
    /// When the head being read began (its first byte), while no request is in flight.
    head_began: Option<Instant>,
    /// When the last answer was written; `None` before the first request.
    idle_since: Option<Instant>,
    opened: Instant,
}

impl Activity {
    /// When the connection is to be closed for waiting on its client, if it is waiting.
    fn deadline(&self, limits: &Limits) -> Option<Instant> {
        if self.in_flight > 0 {
            return None;
        }
        Some(match (self.head_began, self.idle_since) {
            (Some(began), _) => began + limits.header_timeout,
            (None, Some(idle)) => idle + limits.idle_timeout,
            (None, None) => self.opened + limits.header_timeout,
        })
    }
}

type Activities = Arc<Mutex<Activity>>;

fn lock(activity: &Activities) -> std::sync::MutexGuard<'_, Activity> {
    activity.lock().unwrap_or_else(|e| e.into_inner())
}

async fn connection(stream: TcpStream, router: Router, limits: Limits, mut closing: watch::Receiver<bool>) {
    let activity: Activities = Arc::new(Mutex::new(Activity {
        in_flight: 0,
        head_began: None,
        idle_since: None,
        opened: Instant::now(),
    }));
    let io =
        Watched { stream, activity: Arc::clone(&activity), write_timeout: limits.write_timeout, stall: None };
    let requests = Arc::clone(&activity);
    let service = hyper::service::service_fn(move |request: Request<Incoming>| {
        let answering = Answering::begin(&requests);
        let router = router.clone();
        async move {
            let response = router.oneshot(request.map(Body::new)).await?;
            Ok::<Response, Infallible>(
                response.map(|body| Body::new(Tracked { body, _answering: answering })),
            )
        }
    });
    let mut builder = auto::Builder::new(TokioExecutor::new());
    // The head timeout is kept here (see the module's comment).
    builder.http1().header_read_timeout(None);
    let conn = builder.serve_connection_with_upgrades(TokioIo::new(io), service);
    tokio::pin!(conn);
    let mut asked_to_close = *closing.borrow();
    if asked_to_close {
        conn.as_mut().graceful_shutdown();
    }
    loop {
        let deadline = lock(&activity).deadline(&limits);
        let waiting = async {
            match deadline {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            served = conn.as_mut() => {
                if let Err(e) = served {
                    tracing::debug!(error = %e, "connection ended with an error");
                }
                return;
            }
            changed = closing.changed(), if !asked_to_close => {
                asked_to_close = true;
                if changed.is_ok() {
                    conn.as_mut().graceful_shutdown();
                }
            }
            () = waiting => {
                // Only if nothing moved while the timer ran: a read or a request since then
                // moved the deadline.
                if lock(&activity).deadline(&limits).is_some_and(|at| at <= Instant::now()) {
                    tracing::debug!("connection closed: the client sent nothing in time");
                    metrics::counter!("stitcher_connections_timed_out_total").increment(1);
                    return;
                }
            }
            // A request's arrival or end changes the deadline: look again now and then.
            () = tokio::time::sleep(Duration::from_millis(500)) => {}
        }
    }
}

/// A request being answered on a connection; when its answer is written (or dropped) the
/// connection goes idle.
#[derive(Debug)]
struct Answering(Activities);

impl Answering {
    fn begin(activity: &Activities) -> Answering {
        let mut a = lock(activity);
        a.in_flight += 1;
        a.head_began = None;
        Answering(Arc::clone(activity))
    }
}

impl Drop for Answering {
    fn drop(&mut self) {
        let mut a = lock(&self.0);
        a.in_flight -= 1;
        a.idle_since = Some(Instant::now());
    }
}

/// An answer's body that marks the end of its request when it is dropped.
struct Tracked {
    body: Body,
    _answering: Answering,
}

impl HttpBody for Tracked {
    type Data = <Body as HttpBody>::Data;
    type Error = <Body as HttpBody>::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// The client's socket: reads mark the start of a head, and a write the client does not
/// take for `write_timeout` fails.
struct Watched {
    stream: TcpStream,
    activity: Activities,
    write_timeout: Duration,
    /// Running while a write waits on the client.
    stall: Option<Pin<Box<Sleep>>>,
}

impl Watched {
    /// `Pending` as it is, unless the client has taken nothing for `write_timeout`.
    fn stalled<T>(&mut self, cx: &mut Context<'_>, polled: Poll<io::Result<T>>) -> Poll<io::Result<T>> {
        if polled.is_ready() {
            self.stall = None;
            return polled;
        }
        let timeout = self.write_timeout;
        let stall = self.stall.get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
        ready!(stall.as_mut().poll(cx));
        metrics::counter!("stitcher_connections_timed_out_total").increment(1);
        Poll::Ready(Err(io::Error::new(
            io::ErrorKind::TimedOut,
            "the client read nothing of its answer within server.write_timeout_secs",
        )))
    }
}

impl AsyncRead for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        ready!(Pin::new(&mut self.stream).poll_read(cx, buf))?;
        if buf.filled().len() > before {
            let mut a = lock(&self.activity);
            if a.in_flight == 0 && a.head_began.is_none() {
                a.head_began = Some(Instant::now());
            }
        }
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for Watched {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.stream).poll_write(cx, data);
        self.stalled(cx, polled)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.stream).poll_write_vectored(cx, bufs);
        self.stalled(cx, polled)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let polled = Pin::new(&mut self.stream).poll_flush(cx);
        self.stalled(cx, polled)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> Limits {
        Limits {
            header_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            write_timeout: Duration::from_secs(30),
            max_connections: 4,
        }
    }

    #[test]
    fn the_deadline_follows_what_the_connection_is_waiting_for() {
        let opened = Instant::now();
        let mut a = Activity { in_flight: 0, head_began: None, idle_since: None, opened };
        assert_eq!(a.deadline(&limits()), Some(opened + Duration::from_secs(10)), "a bare connect");
        a.in_flight = 1;
        assert_eq!(a.deadline(&limits()), None, "a question being answered");
        a.in_flight = 0;
        let idle = opened + Duration::from_secs(3);
        a.idle_since = Some(idle);
        assert_eq!(a.deadline(&limits()), Some(idle + Duration::from_secs(60)), "kept alive");
        let began = idle + Duration::from_secs(40);
        a.head_began = Some(began);
        assert_eq!(a.deadline(&limits()), Some(began + Duration::from_secs(10)), "a head under way");
    }
}

//! Writing large answers (JSON or CSV) as a stream: the answer is serialized on a blocking thread
//! into chunks that go out as they are made, so the whole text is never held at once.

use std::io::{self, Write};

use axum::body::{Body, Bytes};
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use tokio::sync::mpsc;

/// Chunks of about this size are sent.
const CHUNK: usize = 64 * 1024;

/// Why a body was not written to its end.
enum Unwritten {
    Io(io::Error),
    Task(engine::TaskFailed),
}

impl From<engine::TaskFailed> for Unwritten {
    fn from(e: engine::TaskFailed) -> Unwritten {
        Unwritten::Task(e)
    }
}

/// A writer that sends full chunks down a channel; it fails once the client has gone.
struct ChunkWriter {
    buf: Vec<u8>,
    tx: mpsc::Sender<io::Result<Bytes>>,
}

impl ChunkWriter {
    fn send(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = Bytes::from(std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK)));
        self.tx
            .blocking_send(Ok(chunk))
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "the client went away"))
    }
}

impl Write for ChunkWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= CHUNK {
            self.send()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.send()
    }
}

/// A `200` JSON response whose body `write` produces on a blocking thread. Whatever
/// `write` owns (the answer, the question's place among those in flight) is dropped when
/// the last byte is sent or the client goes away.
pub fn json<F>(write: F) -> Response
where
    F: FnOnce(&mut dyn Write) -> serde_json::Result<()> + Send + 'static,
{
    stream("application/json", move |out| {
        write(out).map_err(|e| match e.io_error_kind() {
            Some(kind) => io::Error::new(kind, e),
            None => io::Error::other(e),
        })
    })
}

/// A `200` CSV response whose body `write` produces on a blocking thread (as [`json`]).
pub fn csv<F>(write: F) -> Response
where
    F: FnOnce(&mut dyn Write) -> io::Result<()> + Send + 'static,
{
    stream("text/csv; charset=utf-8; header=present", write)
}

/// A `200` response of `content_type` whose body `write` produces on a blocking thread.
fn stream<F>(content_type: &'static str, write: F) -> Response
where
    F: FnOnce(&mut dyn Write) -> io::Result<()> + Send + 'static,
{
    let (tx, mut rx) = mpsc::channel::<io::Result<Bytes>>(4);
    let told = tx.clone();
    let writing = engine::off_the_workers("an answer could not be written", move || {
        let mut out = ChunkWriter { buf: Vec::with_capacity(CHUNK), tx };
        match write(&mut out).and_then(|()| out.flush()) {
            Err(e) if e.kind() != io::ErrorKind::BrokenPipe => Err(Unwritten::Io(e)),
            _ => Ok(()),
        }
    });
    tokio::spawn(async move {
        if let Err(failed) = writing.await {
            let e = match failed {
                Unwritten::Io(e) => e,
                Unwritten::Task(e) => io::Error::other(e.to_string()),
            };
            tracing::error!(error = %e, "an answer could not be written");
            // The body ends in an error, so the client sees a failed answer, not a short one.
            let _ = told.send(Err(e)).await;
        }
    });
    let stream = futures::stream::poll_fn(move |cx| rx.poll_recv(cx));
    let mut response = Body::from_stream(stream).into_response();
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

/// A `200` JSON response of text already made, in `chunks`.
pub fn chunks(chunks: Vec<Bytes>) -> Response {
    let stream = futures::stream::iter(chunks.into_iter().map(Ok::<_, io::Error>));
    let mut response = Body::from_stream(stream).into_response();
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_streamed_body_is_the_whole_json() {
        let big: Vec<u64> = (0..100_000).collect();
        let expected = serde_json::to_vec(&big).unwrap();
        let response = json(move |w| serde_json::to_writer(w, &big));
        assert_eq!(response.headers()[header::CONTENT_TYPE], "application/json");
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX).await.unwrap();
        assert!(expected.len() > 3 * CHUNK);
        assert_eq!(bytes, expected);
    }

    #[tokio::test]
    async fn a_writer_that_fails_midway_ends_the_body_in_an_error_not_short() {
        let failing = csv(|w| {
            w.write_all(&vec![b' '; 3 * CHUNK])?;
            Err(io::Error::other("the disk is gone"))
        });
        assert!(axum::body::to_bytes(failing.into_body(), usize::MAX).await.is_err());
        let panicking = csv(|w| {
            w.write_all(&vec![b' '; 3 * CHUNK])?;
            panic!("a bug in the writer")
        });
        assert!(axum::body::to_bytes(panicking.into_body(), usize::MAX).await.is_err());
    }
}

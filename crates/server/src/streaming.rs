//! Writing large answers (JSON or CSV) as a stream: the answer is serialized on a blocking thread
//! into chunks that go out as they are made, so the whole text is never held at once.

use std::io::{self, Write};

use axum::body::{Body, Bytes};
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use tokio::sync::mpsc;

/// Chunks of about this size are sent.
const CHUNK: usize = 64 * 1024;

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
    tokio::task::spawn_blocking(move || {
        let mut out = ChunkWriter { buf: Vec::with_capacity(CHUNK), tx };
        let written = write(&mut out).and_then(|()| out.flush());
        if let Err(e) = written
            && e.kind() != io::ErrorKind::BrokenPipe
        {
            tracing::error!(error = %e, "an answer could not be written");
            let _ = out.tx.blocking_send(Err(e));
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
}

//! How an answer is written: the format asked for (JSON or CSV) and the native body.

use std::sync::Arc;

use axum::http::{HeaderMap, Uri, header};
use axum::response::Response;
use engagement::ApiError;
use engagement::derive::Derived;
use engagement::tree::CountStyle;

use crate::error::ServiceError;
use crate::streaming;
use engine::{Answer, Meta};

/// On a CSV answer with `"partial": true`: how many slices failed and are left out (the
/// JSON answer lists them under `meta.incomplete`).
pub const INCOMPLETE_SLICES: header::HeaderName = header::HeaderName::from_static("x-incomplete-slices");

/// On a CSV answer: how many of the Tweets asked for are deleted (the JSON answer lists
/// them under `unavailable_tweet_ids`).
pub const UNAVAILABLE_TWEETS: header::HeaderName = header::HeaderName::from_static("x-unavailable-tweets");

/// How a native answer is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Format {
    Json,
    /// One row per count (`engagement::csv`); derived numbers are left out.
    Csv,
}

impl Format {
    /// `?format=csv|json` if given, else `Accept: text/csv` for CSV, else JSON.
    pub(crate) fn asked(uri: &Uri, headers: &HeaderMap) -> Result<Format, ServiceError> {
        let given = uri
            .query()
            .into_iter()
            .flat_map(|q| url::form_urlencoded::parse(q.as_bytes()))
            .find(|(k, _)| k == "format")
            .map(|(_, v)| v.into_owned());
        match given.as_deref().map(str::to_ascii_lowercase).as_deref() {
            Some("csv") => return Ok(Format::Csv),
            Some("json") => return Ok(Format::Json),
            Some(_) => {
                let other = given.unwrap_or_default();
                return Err(ServiceError::BadRequest(ApiError::new(format!(
                    "format must be json or csv, not {other:?}"
                ))));
            }
            None => {}
        }
        // CSV when `Accept` prefers it to JSON (by its `q`, JSON winning a tie).
        let (mut csv, mut json) = (0.0f32, 0.0f32);
        let ranges =
            headers.get_all(header::ACCEPT).iter().filter_map(|v| v.to_str().ok()).flat_map(|v| v.split(','));
        for range in ranges {
            let mut parts = range.split(';');
            let media = parts.next().unwrap_or_default().trim().to_ascii_lowercase();
            // A weight that is not a number from 0 to 1 makes the range count for nothing.
            let q = match parts.find_map(|p| p.trim().strip_prefix("q=")) {
                None => 1.0,
                Some(q) => q.trim().parse::<f32>().ok().filter(|q| (0.0..=1.0).contains(q)).unwrap_or(0.0),
            };
            match media.as_str() {
                "text/csv" => csv = csv.max(q),
                "application/json" | "application/*" | "*/*" => json = json.max(q),
                _ => {}
            }
        }
        Ok(if csv > 0.0 && csv > json { Format::Csv } else { Format::Json })
    }

    /// The native answer in this format, written as a stream.
    pub(crate) fn write(self, answer: Arc<Answer>, keep: impl Send + 'static) -> Response {
        match self {
            Format::Json => streaming::json(move |out| {
                let _keep = keep;
                serde_json::to_writer(out, &native_body(&answer))
            }),
            Format::Csv => {
                let (incomplete, unavailable) =
                    (answer.incomplete.len(), answer.response.unavailable_tweet_ids.len());
                let mut response = streaming::csv(move |out| {
                    let _keep = keep;
                    engagement::csv::write(&answer.response, &answer.groupings, out)
                });
                // CSV has no room for `meta.incomplete` or `unavailable_tweet_ids`: say
                // that slices or Tweets are missing.
                for (name, n) in [(INCOMPLETE_SLICES, incomplete), (UNAVAILABLE_TWEETS, unavailable)] {
                    if n > 0 {
                        response.headers_mut().insert(name, n.into());
                    }
                }
                response
            }
        }
    }
}

/// A native body, written straight from the tree (no intermediate JSON value): the counts
/// as integers under `data`, then what `tail` says of them (`meta`, derived numbers).
#[derive(serde::Serialize)]
pub(crate) struct NativeBody<'a, T> {
    data: engagement::tree::Styled<'a, engagement::Response>,
    #[serde(flatten)]
    tail: T,
}

impl<'a, T> NativeBody<'a, T> {
    /// The body of `response`, followed by `tail`.
    pub(crate) fn new(response: &'a engagement::Response, tail: T) -> NativeBody<'a, T> {
        NativeBody { data: response.styled(CountStyle::Integers), tail }
    }
}

/// What the native body carries besides `data`.
#[derive(serde::Serialize)]
pub(crate) struct NativeTail<'a> {
    meta: NativeMeta<'a>,
    #[serde(flatten)]
    derived: &'a Derived,
}

impl NativeTail<'_> {
    pub(crate) fn of(answer: &Answer) -> NativeTail<'_> {
        NativeTail {
            meta: NativeMeta { meta: &answer.meta, incomplete: &answer.incomplete },
            derived: &answer.derived,
        }
    }
}

#[derive(serde::Serialize)]
pub(crate) struct NativeMeta<'a> {
    #[serde(flatten)]
    meta: &'a Meta,
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    incomplete: &'a [crate::error::FailedSlice],
}

pub(crate) fn native_body(answer: &Answer) -> NativeBody<'_, NativeTail<'_>> {
    NativeBody::new(&answer.response, NativeTail::of(answer))
}

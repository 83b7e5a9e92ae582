//! How a question's body is read: the API's members, and on the service's own endpoints
//! its members too (`partial`, `derive`, `top`), refusing there any member nobody reads.

use engagement::request::{QuestionBody, Sent};

use crate::error::ServiceError;

// The drop-in endpoint's body is read this way too, to say that `partial` is not for it.
/// A question to the native endpoint.
#[derive(Debug, serde::Deserialize, utoipa::ToSchema)]
pub struct NativeQuestion {
    #[serde(flatten)]
    pub question: QuestionBody,
    /// List slices that failed after retries under `meta.incomplete` and answer the rest,
    /// instead of failing the question.
    #[serde(default)]
    #[schema(value_type = Option<bool>)]
    pub partial: Sent<Option<bool>>,
    /// Numbers to derive from the answer: `["engagement_rate"]` (engagements / impressions
    /// over the range, per Tweet and overall; both types must be asked for).
    #[serde(default)]
    #[schema(value_type = Option<Vec<String>>, example = json!(["engagement_rate"]))]
    pub derive: Sent<Option<Vec<Sent<String>>>>,
    /// The Top Tweets: the `n` Tweets with the most of type `by` over the range, ties by
    /// Tweet ID ascending; `by` must be one of the question's types.
    #[serde(default)]
    #[schema(value_type = Option<engagement::derive::TopBody>)]
    pub top: Sent<Option<engagement::derive::TopBody>>,
}

impl NativeQuestion {
    /// The members only the native answer reads (`partial`, `derive`, `top`) that this body
    /// gives: not absent, not `null`, and not `"partial": false`.
    pub(crate) fn native_members(&self) -> Vec<&'static str> {
        // `"partial": false` asks for what the API's shape gives anyway.
        let given = [
            ("partial", !matches!(self.partial, Sent::Absent | Sent::Given(None | Some(false)))),
            ("derive", !matches!(self.derive, Sent::Absent | Sent::Given(None))),
            ("top", !matches!(self.top, Sent::Absent | Sent::Given(None))),
        ];
        given.into_iter().filter_map(|(name, given)| given.then_some(name)).collect()
    }
}

/// How a question's body is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Reading {
    /// `partial`, `derive` and `top` are read (the native answer has room for them).
    pub native: bool,
    /// A member nobody reads is refused, not ignored as the API ignores it.
    pub strict: bool,
}

impl Reading {
    /// The drop-in endpoint: the API's body, as leniently as the API reads it.
    pub(crate) const DROP_IN: Reading = Reading { native: false, strict: false };
    /// The service's own endpoints: its members too, and nothing else.
    pub(crate) const NATIVE: Reading = Reading { native: true, strict: true };
}

/// Reads a question's body as `reading` says (the native members `partial`, `derive` and
/// `top`, or not; members nobody reads refused, or not).
pub(crate) fn read_native_body(body: &[u8], reading: Reading) -> Result<NativeQuestion, ServiceError> {
    let read = if reading.strict {
        engagement::request::read_strict_body(body, engagement::members::QUESTION)
    } else {
        engagement::request::read_body(body)
    };
    read.map_err(ServiceError::BadRequest)
}

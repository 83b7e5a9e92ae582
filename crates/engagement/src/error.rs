//! The API's error shape: `{"errors": ["..."]}`.

use serde::{Deserialize, Serialize};

/// A rejected question: one or more messages a person can act on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{}", errors.join("; "))]
pub struct ApiError {
    /// The messages, in the order they were found.
    pub errors: Vec<String>,
}

impl ApiError {
    /// One message.
    pub fn new(message: impl Into<String>) -> Self {
        Self { errors: vec![message.into()] }
    }
}

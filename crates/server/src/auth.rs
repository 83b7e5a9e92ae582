//! Who is asking, and as which handle: `Authorization: Bearer <api key>` matched against the
//! SHA-256 hashes in the settings, and `X-Handle` among the client's granted handles.

use std::collections::HashMap;
use std::sync::Arc;

use axum::http::HeaderMap;
use secrecy::ExposeSecret;
use sha2::{Digest, Sha256};
use upstream::HandleCredentials;

use crate::error::ServiceError;
use crate::settings::Settings;

/// A client of the service and the handles it may ask as.
#[derive(Debug)]
struct Client {
    name: String,
    handles: Vec<Arc<HandleCredentials>>,
}

/// The authenticated caller of one request.
#[derive(Debug, Clone)]
pub struct Caller {
    pub client: String,
    pub handle: Arc<HandleCredentials>,
}

/// Clients by key hash.
#[derive(Debug)]
pub struct Keyring {
    clients: HashMap<String, Client>,
}

/// The SHA-256 of `key` in lower-case hex.
pub fn key_hash(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

impl Keyring {
    /// The clients and handles of `settings`.
    pub fn from_settings(settings: &Settings) -> Keyring {
        let handles: HashMap<&str, Arc<HandleCredentials>> = settings
            .handles
            .iter()
            .map(|(name, h)| {
                let creds = HandleCredentials {
                    handle: name.clone(),
                    token: h.token.clone(),
                    token_secret: h.token_secret.expose_secret().into(),
                };
                (name.as_str(), Arc::new(creds))
            })
            .collect();
        let clients = settings
            .clients
            .iter()
            .map(|(name, c)| {
                let granted = c
                    .handles
                    .iter()
                    .filter_map(|h| handles.get(h.as_str()).cloned())
                    .collect();
                (
                    c.key_sha256.to_ascii_lowercase(),
                    Client {
                        name: name.clone(),
                        handles: granted,
                    },
                )
            })
            .collect();
        Keyring { clients }
    }

    /// Authenticates a request by its headers.
    pub fn authenticate(&self, headers: &HeaderMap) -> Result<Caller, ServiceError> {
        let header = headers
            .get(axum::http::header::AUTHORIZATION)
            .ok_or_else(|| {
                ServiceError::Unauthorized(
                    "missing credentials: send Authorization: Bearer <your API key>".into(),
                )
            })?;
        let key = header
            .to_str()
            .ok()
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim)
            .filter(|k| !k.is_empty())
            .ok_or_else(|| {
                ServiceError::Unauthorized(
                    "the Authorization header must be \"Bearer <your API key>\"".into(),
                )
            })?;
        let client = self
            .clients
            .get(&key_hash(key))
            .ok_or_else(|| ServiceError::Unauthorized("unknown API key".into()))?;
        let wanted = headers.get("x-handle").map(|v| {
            v.to_str()
                .unwrap_or_default()
                .trim()
                .trim_start_matches('@')
        });
        let handle = match wanted {
            Some(name) => client
                .handles
                .iter()
                .find(|h| h.handle.eq_ignore_ascii_case(name))
                .ok_or_else(|| {
                    ServiceError::Forbidden(format!(
                        "handle \"{name}\" is not granted to this API key; granted: {}",
                        granted(client)
                    ))
                })?,
            None => match client.handles.as_slice() {
                [only] => only,
                [] => {
                    return Err(ServiceError::Forbidden(
                        "this API key is granted no handle".into(),
                    ));
                }
                _ => {
                    return Err(ServiceError::BadRequest(engagement::ApiError::new(
                        format!(
                            "this API key may ask as several handles; pick one with the X-Handle header: {}",
                            granted(client)
                        ),
                    )));
                }
            },
        };
        Ok(Caller {
            client: client.name.clone(),
            handle: Arc::clone(handle),
        })
    }
}

fn granted(client: &Client) -> String {
    client
        .handles
        .iter()
        .map(|h| h.handle.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn the_demo_key_is_the_demo_handle() {
        let ring = Keyring::from_settings(&Settings::defaults());
        let caller = ring
            .authenticate(&headers(&[("authorization", "Bearer demo-key")]))
            .unwrap();
        assert_eq!(
            (caller.client.as_str(), caller.handle.handle.as_str()),
            ("demo", "demo")
        );
        assert!(
            ring.authenticate(&headers(&[
                ("authorization", "Bearer demo-key"),
                ("x-handle", "@demo")
            ]))
            .is_ok()
        );
    }

    #[test]
    fn missing_wrong_and_ungranted_are_refused() {
        let ring = Keyring::from_settings(&Settings::defaults());
        let status = |h: &[(&'static str, &'static str)]| {
            ring.authenticate(&headers(h))
                .unwrap_err()
                .status()
                .as_u16()
        };
        assert_eq!(status(&[]), 401);
        assert_eq!(status(&[("authorization", "Bearer nope")]), 401);
        assert_eq!(status(&[("authorization", "Basic abc")]), 401);
        assert_eq!(
            status(&[("authorization", "Bearer demo-key"), ("x-handle", "other")]),
            403
        );
    }

    #[test]
    fn key_hash_is_sha256_hex() {
        assert_eq!(
            key_hash("demo-key"),
            "c48a01f49fd0f2cc404bc3cbbc80e91457a3d41bb429a695243de4c61794155c"
        );
    }
}

//! Who is asking, and as which handle. Two ways in:
//!
//! - `Authorization: Bearer <api key>`, matched against the SHA-256 hashes in the settings,
//!   with `X-Handle` picking among the client's granted handles;
//! - an OAuth 1.0a signature, as existing Engagement API clients send it: made with the
//!   app's consumer key and a configured handle's access token, over the URL as the client
//!   saw it (`server.public_base_url`, else `http://` + the `Host` header). It is
//!   authenticated as that handle; timestamps more than 5 minutes off and replayed nonces
//!   are refused.

use std::collections::HashMap;
use std::sync::Arc;

use std::time::Duration;

use axum::http::{HeaderMap, Method, Uri, header};
use engagement::oauth::{self, Received};
use secrecy::{ExposeSecret, SecretString};
use upstream::HandleCredentials;

use crate::error::ServiceError;
use crate::settings::Settings;
use engine::ports::Nonces;

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

/// The header that picks the handle a Bearer client asks as.
pub const X_HANDLE: &str = "x-handle";

/// How far an OAuth timestamp may be from this server's clock.
pub const OAUTH_TIMESTAMP_TOLERANCE: Duration = Duration::from_secs(5 * 60);

/// How long a nonce is remembered: a request older than the tolerance is refused by its
/// timestamp anyway.
pub const NONCE_LIFE: Duration = Duration::from_secs(2 * OAUTH_TIMESTAMP_TOLERANCE.as_secs());

/// Clients by key hash, and handles by access token for OAuth callers.
#[derive(Debug)]
pub struct Keyring {
    clients: HashMap<String, Client>,
    consumer_key: String,
    consumer_secret: SecretString,
    by_token: HashMap<String, Arc<HandleCredentials>>,
    public_base_url: Option<String>,
    /// Nonces seen within [`NONCE_LIFE`], by this replica or by any.
    nonces: Arc<dyn Nonces>,
}

pub use crate::settings::key_hash;

impl Keyring {
    /// The clients and handles of `settings`.
    pub fn from_settings(settings: &Settings, nonces: Arc<dyn Nonces>) -> Keyring {
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
        let by_token = handles.values().map(|h| (h.token.clone(), Arc::clone(h))).collect();
        let clients = settings
            .clients
            .iter()
            .map(|(name, c)| {
                let granted = c.handles.iter().filter_map(|h| handles.get(h.as_str()).cloned()).collect();
                (c.key_sha256.to_ascii_lowercase(), Client { name: name.clone(), handles: granted })
            })
            .collect();
        Keyring {
            clients,
            consumer_key: settings.upstream.consumer_key.clone(),
            consumer_secret: settings.upstream.consumer_secret.clone(),
            by_token,
            public_base_url: settings.server.public_base_url.clone(),
            nonces,
        }
    }

    /// Every configured handle's credentials.
    pub fn credentials(&self) -> Vec<Arc<HandleCredentials>> {
        self.by_token.values().cloned().collect()
    }

    /// The configured handle named `name`, or the only one when no name is given.
    pub fn handle(&self, name: Option<&str>) -> Result<Arc<HandleCredentials>, String> {
        let mut names: Vec<&str> = self.by_token.values().map(|h| h.handle.as_str()).collect();
        names.sort_unstable();
        let found = match name {
            Some(name) => self.by_token.values().find(|h| h.handle == name),
            None if names.len() == 1 => self.by_token.values().next(),
            None => None,
        };
        found.cloned().ok_or_else(|| match (name, names.is_empty()) {
            (_, true) => "no handles are configured ([handles.NAME] in the settings)".to_string(),
            (Some(name), false) => {
                format!("no handle {name:?} is configured; there are: {}", names.join(", "))
            }
            (None, false) => {
                format!("several handles are configured; pick one with --handle: {}", names.join(", "))
            }
        })
    }

    /// Authenticates a request by its method, URI and headers.
    pub async fn authenticate(
        &self,
        method: &Method,
        uri: &Uri,
        headers: &HeaderMap,
    ) -> Result<Caller, ServiceError> {
        let is_oauth = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| credentials_of(v, "OAuth").is_some());
        if is_oauth { self.oauth_caller(method, uri, headers).await } else { self.bearer_caller(headers) }
    }

    async fn oauth_caller(
        &self,
        method: &Method,
        uri: &Uri,
        headers: &HeaderMap,
    ) -> Result<Caller, ServiceError> {
        let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
        let url = oauth::signed_url(self.public_base_url.as_deref(), host, uri.path());
        let received = Received {
            method: method.as_str(),
            url: &url,
            query: uri.query().unwrap_or(""),
            authorization: headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()),
        };
        let secret_of =
            |token: &str| self.by_token.get(token).map(|h| h.token_secret.expose_secret().to_string());
        let verified = oauth::verify(
            &received,
            &self.consumer_key,
            self.consumer_secret.expose_secret(),
            secret_of,
            chrono::Utc::now().timestamp(),
            OAUTH_TIMESTAMP_TOLERANCE.as_secs() as i64,
        )
        .map_err(|r| {
            ServiceError::Unauthorized(format!("Your account could not be authenticated. Reason: {r}"))
        })?;
        if !self.nonces.first_use(&format!("{}:{}", verified.token, verified.nonce)).await? {
            return Err(ServiceError::Unauthorized(
                "Your account could not be authenticated. Reason: this oauth_nonce was already used; sign each request afresh".into(),
            ));
        }
        let handle = self
            .by_token
            .get(&verified.token)
            .ok_or_else(|| ServiceError::Unauthorized("Access token not found".into()))?;
        Ok(Caller { client: format!("oauth:{}", handle.handle), handle: Arc::clone(handle) })
    }

    /// The caller of a request (its client's name) and the handles it may ask as, whichever
    /// it picked: all those granted to its key, or the one an OAuth signature is made for.
    pub async fn granted_handles(
        &self,
        method: &Method,
        uri: &Uri,
        headers: &HeaderMap,
    ) -> Result<(String, Vec<String>), ServiceError> {
        let is_oauth = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| credentials_of(v, "OAuth").is_some());
        if is_oauth {
            let caller = self.oauth_caller(method, uri, headers).await?;
            return Ok((caller.client, vec![caller.handle.handle.clone()]));
        }
        let client = self.bearer_client(headers)?;
        Ok((client.name.clone(), client.handles.iter().map(|h| h.handle.clone()).collect()))
    }

    fn bearer_client(&self, headers: &HeaderMap) -> Result<&Client, ServiceError> {
        let header = headers.get(header::AUTHORIZATION).ok_or_else(|| {
            ServiceError::Unauthorized(
                "missing credentials: send Authorization: Bearer <your API key>".into(),
            )
        })?;
        let key = header
            .to_str()
            .ok()
            .and_then(|v| credentials_of(v, "Bearer"))
            .filter(|k| !k.is_empty())
            .ok_or_else(|| {
                ServiceError::Unauthorized(
                    "the Authorization header must be \"Bearer <your API key>\"".into(),
                )
            })?;
        self.clients.get(&key_hash(key)).ok_or_else(|| ServiceError::Unauthorized("unknown API key".into()))
    }

    fn bearer_caller(&self, headers: &HeaderMap) -> Result<Caller, ServiceError> {
        let client = self.bearer_client(headers)?;
        let wanted =
            headers.get(X_HANDLE).map(|v| v.to_str().unwrap_or_default().trim().trim_start_matches('@'));
        let handle = match wanted {
            Some(name) => {
                client.handles.iter().find(|h| h.handle.eq_ignore_ascii_case(name)).ok_or_else(|| {
                    ServiceError::Forbidden(format!(
                        "handle \"{name}\" is not granted to this API key; granted: {}",
                        granted(client)
                    ))
                })?
            }
            None => match client.handles.as_slice() {
                [only] => only,
                [] => {
                    return Err(ServiceError::Forbidden("this API key is granted no handle".into()));
                }
                _ => {
                    return Err(ServiceError::BadRequest(engagement::ApiError::new(format!(
                        "this API key may ask as several handles; pick one with the X-Handle header: {}",
                        granted(client)
                    ))));
                }
            },
        };
        Ok(Caller { client: client.name.clone(), handle: Arc::clone(handle) })
    }
}

/// What follows `scheme` in an `Authorization` value; schemes are case-insensitive
/// (RFC 7235).
fn credentials_of<'a>(value: &'a str, scheme: &str) -> Option<&'a str> {
    let (given, rest) = value.trim_start().split_once(' ')?;
    given.eq_ignore_ascii_case(scheme).then(|| rest.trim())
}

fn granted(client: &Client) -> String {
    client.handles.iter().map(|h| h.handle.as_str()).collect::<Vec<_>>().join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;
    use engine::ports::LocalNonces;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_static(v));
        }
        h
    }

    #[tokio::test]
    async fn the_demo_key_is_the_demo_handle() {
        let ring = Keyring::from_settings(&Settings::defaults(), Arc::new(LocalNonces::new(NONCE_LIFE)));
        let caller = ring
            .authenticate(
                &Method::POST,
                &Uri::from_static("/v1/historical"),
                &headers(&[("authorization", "Bearer demo-key")]),
            )
            .await
            .unwrap();
        assert_eq!((caller.client.as_str(), caller.handle.handle.as_str()), ("demo", "demo"));
        assert!(
            ring.authenticate(
                &Method::POST,
                &Uri::from_static("/v1/historical"),
                &headers(&[("authorization", "Bearer demo-key"), ("x-handle", "@demo")])
            )
            .await
            .is_ok()
        );
    }

    #[tokio::test]
    async fn missing_wrong_and_ungranted_are_refused() {
        let ring = Keyring::from_settings(&Settings::defaults(), Arc::new(LocalNonces::new(NONCE_LIFE)));
        let cases: [(&[(&'static str, &'static str)], u16); 5] = [
            (&[], 401),
            (&[("authorization", "Bearer nope")], 401),
            (&[("authorization", "Basic abc")], 401),
            (&[("authorization", "Bearer demo-key"), ("x-handle", "other")], 403),
            (&[("authorization", "Bearerdemo-key")], 401),
        ];
        for (h, status) in cases {
            let refused =
                ring.authenticate(&Method::POST, &Uri::from_static("/v1/historical"), &headers(h)).await;
            assert_eq!(refused.unwrap_err().status().as_u16(), status, "{h:?}");
        }
    }

    #[tokio::test]
    async fn the_bearer_scheme_is_case_insensitive() {
        let ring = Keyring::from_settings(&Settings::defaults(), Arc::new(LocalNonces::new(NONCE_LIFE)));
        for value in ["bearer demo-key", "BEARER demo-key", "Bearer   demo-key"] {
            let mut h = HeaderMap::new();
            h.insert("authorization", HeaderValue::from_str(value).unwrap());
            assert!(
                ring.authenticate(&Method::POST, &Uri::from_static("/v1/historical"), &h).await.is_ok(),
                "{value}"
            );
        }
    }

    #[test]
    fn key_hash_is_sha256_hex() {
        assert_eq!(key_hash("demo-key"), "c48a01f49fd0f2cc404bc3cbbc80e91457a3d41bb429a695243de4c61794155c");
    }
}

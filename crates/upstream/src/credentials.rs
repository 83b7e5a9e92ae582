//! Credentials for OAuth 1.0a user context. Secrets are held so that they never print.

use secrecy::SecretString;

/// The app's consumer key and secret.
#[derive(Debug, Clone)]
pub struct AppCredentials {
    pub consumer_key: String,
    pub consumer_secret: SecretString,
}

/// An @handle's access token and secret, which let the app ask for that handle's Tweets.
#[derive(Debug, Clone)]
pub struct HandleCredentials {
    pub handle: String,
    pub token: String,
    pub token_secret: SecretString,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_output_hides_secrets() {
        let app = AppCredentials { consumer_key: "ck".into(), consumer_secret: "top-secret-1".into() };
        let handle = HandleCredentials {
            handle: "demo".into(),
            token: "tok".into(),
            token_secret: "top-secret-2".into(),
        };
        let printed = format!("{app:?} {handle:?}");
        assert!(!printed.contains("top-secret"), "{printed}");
        assert!(printed.contains("ck") && printed.contains("demo"));
    }
}

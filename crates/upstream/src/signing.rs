//! OAuth 1.0a HMAC-SHA1 `Authorization` headers. Every attempt is signed afresh: a new
//! nonce and timestamp each time.

use oauth1_request as oauth;
use secrecy::ExposeSecret;

use crate::credentials::{AppCredentials, HandleCredentials};

/// The `Authorization` header for a `POST` to `url` (the JSON body is not signed).
pub fn authorization(url: &str, app: &AppCredentials, handle: &HandleCredentials) -> String {
    builder(app, handle).post(url, &())
}

fn builder<'a>(
    app: &'a AppCredentials,
    handle: &'a HandleCredentials,
) -> oauth::Builder<'a, oauth::HmacSha1, &'a str> {
    let client = oauth::Credentials::new(app.consumer_key.as_str(), app.consumer_secret.expose_secret());
    let mut b = oauth::Builder::new(client, oauth::HmacSha1::new());
    b.token(oauth::Credentials::new(handle.token.as_str(), handle.token_secret.expose_secret()));
    // The API's published signature example includes the version parameter.
    b.version(true);
    b
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fmt::Display;
    use std::num::NonZeroU64;

    #[test]
    fn matches_twitters_published_signature_example() {
        let app = AppCredentials {
            consumer_key: "xvz1evFS4wEEPTGEFPHBog".into(),
            consumer_secret: "kAcSOqF21Fu85e7zjz7ZN2U4ZRhfV3WpwPAoE3Z7kBw".into(),
        };
        let handle = HandleCredentials {
            handle: "example".into(),
            token: "370773112-GmHxMAgYyLbNEtIKZeRNFsMKPR9EyMZeS9weJAEb".into(),
            token_secret: "LswwdoUaIvS8ltyTt5jkRh4J50vUPVVHtR2YPi5kE".into(),
        };
        let mut b = builder(&app, &handle);
        b.nonce("kYjzVBB8Y0ZFabxSWbWovY3uYSQ2pTgmZeNu2VS4cg").timestamp(NonZeroU64::new(1318622958));
        let params = oauth::ParameterList::new([
            ("include_entities", &"true" as &dyn Display),
            ("status", &"Hello Ladies + Gentlemen, a signed OAuth request!"),
        ]);
        let header = b.post("https://api.twitter.com/1.1/statuses/update.json", &params);
        assert!(header.contains(r#"oauth_signature="hCtSmYh%2BiHYCEqBWrE7C7hYmtUk%3D""#), "{header}");
        assert!(header.contains(r#"oauth_version="1.0""#));
    }

    #[test]
    fn each_signature_is_fresh() {
        let app = AppCredentials { consumer_key: "k".into(), consumer_secret: "zz-consumer-secret".into() };
        let handle = HandleCredentials {
            handle: "h".into(),
            token: "t".into(),
            token_secret: "zz-token-secret".into(),
        };
        let a = authorization("http://127.0.0.1/x", &app, &handle);
        let b = authorization("http://127.0.0.1/x", &app, &handle);
        assert_ne!(a, b, "nonce and signature change per attempt");
        assert!(!a.contains("zz-"), "secrets are not in the header: {a}");
    }
}

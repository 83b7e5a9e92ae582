//! OAuth 1.0a (HMAC-SHA1) as a server checks it: read the `Authorization` header, rebuild
//! the signature base string from the request as received, and compare signatures. The
//! simulator checks the service's calls with it, and the service checks drop-in clients.
//!
//! This is written from the specification (RFC 5849 §3.4) on its own, so that it can check
//! the client's signer (a separate library) rather than agree with it by construction.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use hmac::{Hmac, Mac};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, percent_decode_str, utf8_percent_encode};
use sha1::Sha1;

/// RFC 3986 unreserved characters stay; everything else is encoded.
const OAUTH_ENCODE: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~');

/// Percent-encodes as OAuth 1.0a requires.
pub fn encode(s: &str) -> String {
    utf8_percent_encode(s, OAUTH_ENCODE).to_string()
}

/// The signature base string: `METHOD&url&params`, with parameters sorted by encoded name
/// then value.
pub fn base_string(method: &str, base_url: &str, params: &[(String, String)]) -> String {
    let mut encoded: Vec<(String, String)> = params.iter().map(|(k, v)| (encode(k), encode(v))).collect();
    encoded.sort();
    let joined: Vec<String> = encoded.into_iter().map(|(k, v)| format!("{k}={v}")).collect();
    format!("{}&{}&{}", method.to_ascii_uppercase(), encode(base_url), encode(&joined.join("&")))
}

/// The HMAC-SHA1 signature of a base string, base64-encoded.
pub fn sign(base_string: &str, consumer_secret: &str, token_secret: &str) -> String {
    BASE64.encode(mac(base_string, consumer_secret, token_secret).finalize().into_bytes())
}

/// Whether `given` (base64, as sent) is the signature of `base_string`, compared in
/// constant time so the comparison tells an attacker nothing about how close a guess was.
pub fn signature_is(given: &str, base_string: &str, consumer_secret: &str, token_secret: &str) -> bool {
    BASE64
        .decode(given)
        .is_ok_and(|bytes| mac(base_string, consumer_secret, token_secret).verify_slice(&bytes).is_ok())
}

/// HMAC-SHA1 of `base_string` under the key OAuth 1.0a builds from the two secrets.
fn mac(base_string: &str, consumer_secret: &str, token_secret: &str) -> Hmac<Sha1> {
    let key = format!("{}&{}", encode(consumer_secret), encode(token_secret));
    let mut mac = Hmac::<Sha1>::new_from_slice(key.as_bytes()).expect("HMAC takes keys of any length");
    mac.update(base_string.as_bytes());
    mac
}

/// The `oauth_*` parameters of an `Authorization: OAuth ...` header, decoded.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OAuthHeader {
    pub params: Vec<(String, String)>,
}

impl OAuthHeader {
    /// Parses `OAuth k="v", ...`; `None` if the header is not an OAuth header.
    pub fn parse(header: &str) -> Option<OAuthHeader> {
        // Schemes are case-insensitive (RFC 7235).
        let header = header.trim();
        let scheme = header.get(..5)?;
        let rest = if scheme.eq_ignore_ascii_case("OAuth") { &header[5..] } else { return None }.trim_start();
        let mut params = Vec::new();
        for part in rest.split(',') {
            let part = part.trim();
            if part.is_empty() {
                continue;
            }
            let (k, v) = part.split_once('=')?;
            let v = v.trim().strip_prefix('"')?.strip_suffix('"')?;
            let decode = |s: &str| percent_decode_str(s).decode_utf8().ok().map(|c| c.into_owned());
            params.push((decode(k.trim())?, decode(v)?));
        }
        Some(OAuthHeader { params })
    }

    /// The value of one parameter.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.params.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    /// The parameters that enter the base string (all but `oauth_signature` and `realm`).
    pub fn signed_params(&self) -> impl Iterator<Item = &(String, String)> {
        self.params.iter().filter(|(k, _)| k != "oauth_signature" && k != "realm")
    }
}

/// `scheme://host[:port]/path` as the base string wants it: lower-case scheme and host, the
/// default port dropped, no query.
pub fn normalize_url(scheme: &str, host: &str, path: &str) -> String {
    let scheme = scheme.to_ascii_lowercase();
    let host = host.to_ascii_lowercase();
    let host = match (scheme.as_str(), host.rsplit_once(':')) {
        ("http", Some((h, "80"))) | ("https", Some((h, "443"))) => h.to_string(),
        _ => host,
    };
    format!("{scheme}://{host}{path}")
}

/// The URL a client signed for a request to `path`: `public_base_url` + `path` when the
/// server knows how clients reach it (behind a proxy), else `http://` + the `Host` header.
pub fn signed_url(public_base_url: Option<&str>, host: Option<&str>, path: &str) -> String {
    match public_base_url {
        Some(base) => format!("{}{path}", base.trim_end_matches('/')),
        None => normalize_url("http", host.unwrap_or("localhost"), path),
    }
}

/// Parses a query string into decoded pairs (`+` is a space, as in forms).
pub fn query_pairs(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            let decode = |s: &str| percent_decode_str(&s.replace('+', " ")).decode_utf8_lossy().into_owned();
            (decode(k), decode(v))
        })
        .collect()
}

/// A request as the server received it, for checking its signature.
#[derive(Debug, Clone, Copy)]
pub struct Received<'a> {
    pub method: &'a str,
    /// The URL the client signed, without query: see [`normalize_url`].
    pub url: &'a str,
    pub query: &'a str,
    pub authorization: Option<&'a str>,
}

/// Why a signature was not accepted; the text is the reason given to the client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    #[error("OAuth 1.0a Authorization header missing")]
    Missing,
    #[error("Unsupported signature method (HMAC-SHA1 is required)")]
    Method,
    #[error("Consumer key not found")]
    ConsumerKey,
    #[error("Access token not found")]
    Token,
    #[error("Timestamp out of bounds")]
    Timestamp,
    #[error("oauth_nonce missing")]
    Nonce,
    #[error("Could not authenticate you (signature mismatch)")]
    Signature,
}

/// What a verified signature says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    pub token: String,
    pub nonce: String,
    pub timestamp: i64,
}

/// Checks an OAuth 1.0a HMAC-SHA1 signature: the consumer key, the access token (whose
/// secret `token_secret` finds), a timestamp within `tolerance_secs` of `now_unix`, a nonce,
/// and the signature over the method, URL and query parameters. Replayed nonces are the
/// caller's to refuse.
pub fn verify(
    request: &Received<'_>,
    consumer_key: &str,
    consumer_secret: &str,
    token_secret: impl Fn(&str) -> Option<String>,
    now_unix: i64,
    tolerance_secs: i64,
) -> Result<Verified, Rejection> {
    let header = request.authorization.and_then(OAuthHeader::parse).ok_or(Rejection::Missing)?;
    if header.get("oauth_signature_method") != Some("HMAC-SHA1") {
        return Err(Rejection::Method);
    }
    if header.get("oauth_consumer_key") != Some(consumer_key) {
        return Err(Rejection::ConsumerKey);
    }
    let token = header.get("oauth_token").ok_or(Rejection::Token)?;
    let secret = token_secret(token).ok_or(Rejection::Token)?;
    let timestamp: i64 =
        header.get("oauth_timestamp").and_then(|t| t.parse().ok()).ok_or(Rejection::Timestamp)?;
    if timestamp.abs_diff(now_unix) > tolerance_secs.unsigned_abs() {
        return Err(Rejection::Timestamp);
    }
    let nonce = header.get("oauth_nonce").filter(|n| !n.is_empty()).ok_or(Rejection::Nonce)?;
    let given = header.get("oauth_signature").ok_or(Rejection::Signature)?;
    let mut params: Vec<(String, String)> = header.signed_params().cloned().collect();
    params.extend(query_pairs(request.query));
    if !signature_is(given, &base_string(request.method, request.url, &params), consumer_secret, &secret) {
        return Err(Rejection::Signature);
    }
    Ok(Verified { token: token.to_string(), nonce: nonce.to_string(), timestamp })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Twitter's published "Creating a signature" example.
    fn example_params() -> Vec<(String, String)> {
        [
            ("status", "Hello Ladies + Gentlemen, a signed OAuth request!"),
            ("include_entities", "true"),
            ("oauth_consumer_key", "xvz1evFS4wEEPTGEFPHBog"),
            ("oauth_nonce", "kYjzVBB8Y0ZFabxSWbWovY3uYSQ2pTgmZeNu2VS4cg"),
            ("oauth_signature_method", "HMAC-SHA1"),
            ("oauth_timestamp", "1318622958"),
            ("oauth_token", "370773112-GmHxMAgYyLbNEtIKZeRNFsMKPR9EyMZeS9weJAEb"),
            ("oauth_version", "1.0"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    }

    #[test]
    fn base_string_and_signature_match_twitters_example() {
        let base = base_string("post", "https://api.twitter.com/1.1/statuses/update.json", &example_params());
        assert_eq!(
            base,
            "POST&https%3A%2F%2Fapi.twitter.com%2F1.1%2Fstatuses%2Fupdate.json&include_entities%3Dtrue%26oauth_consumer_key%3Dxvz1evFS4wEEPTGEFPHBog%26oauth_nonce%3DkYjzVBB8Y0ZFabxSWbWovY3uYSQ2pTgmZeNu2VS4cg%26oauth_signature_method%3DHMAC-SHA1%26oauth_timestamp%3D1318622958%26oauth_token%3D370773112-GmHxMAgYyLbNEtIKZeRNFsMKPR9EyMZeS9weJAEb%26oauth_version%3D1.0%26status%3DHello%2520Ladies%2520%252B%2520Gentlemen%252C%2520a%2520signed%2520OAuth%2520request%2521"
        );
        let sig = sign(
            &base,
            "kAcSOqF21Fu85e7zjz7ZN2U4ZRhfV3WpwPAoE3Z7kBw",
            "LswwdoUaIvS8ltyTt5jkRh4J50vUPVVHtR2YPi5kE",
        );
        assert_eq!(sig, "hCtSmYh+iHYCEqBWrE7C7hYmtUk=");
    }

    #[test]
    fn verify_accepts_the_published_example_and_rejects_changes() {
        // The example's parameters, moved into the header and query as a client sends them.
        let header = r#"OAuth oauth_consumer_key="xvz1evFS4wEEPTGEFPHBog", oauth_nonce="kYjzVBB8Y0ZFabxSWbWovY3uYSQ2pTgmZeNu2VS4cg", oauth_signature="hCtSmYh%2BiHYCEqBWrE7C7hYmtUk%3D", oauth_signature_method="HMAC-SHA1", oauth_timestamp="1318622958", oauth_token="370773112-GmHxMAgYyLbNEtIKZeRNFsMKPR9EyMZeS9weJAEb", oauth_version="1.0""#;
        let request = Received {
            method: "POST",
            url: "https://api.twitter.com/1.1/statuses/update.json",
            query: "include_entities=true&status=Hello%20Ladies%20%2B%20Gentlemen%2C%20a%20signed%20OAuth%20request%21",
            authorization: Some(header),
        };
        let secret = |t: &str| {
            (t == "370773112-GmHxMAgYyLbNEtIKZeRNFsMKPR9EyMZeS9weJAEb")
                .then(|| "LswwdoUaIvS8ltyTt5jkRh4J50vUPVVHtR2YPi5kE".to_string())
        };
        let ck = "xvz1evFS4wEEPTGEFPHBog";
        let cs = "kAcSOqF21Fu85e7zjz7ZN2U4ZRhfV3WpwPAoE3Z7kBw";
        let ok = verify(&request, ck, cs, secret, 1318622958 + 10, 300).unwrap();
        assert_eq!(ok.nonce, "kYjzVBB8Y0ZFabxSWbWovY3uYSQ2pTgmZeNu2VS4cg");
        assert_eq!(verify(&request, ck, cs, secret, 1318622958 + 301, 300), Err(Rejection::Timestamp));
        assert_eq!(verify(&request, ck, "other", secret, 1318622958, 300), Err(Rejection::Signature));
        assert_eq!(verify(&request, "other", cs, secret, 1318622958, 300), Err(Rejection::ConsumerKey));
        assert_eq!(verify(&request, ck, cs, |_| None, 1318622958, 300), Err(Rejection::Token));
        let moved = Received { url: "https://api.twitter.com/1.1/statuses/other.json", ..request };
        assert_eq!(verify(&moved, ck, cs, secret, 1318622958, 300), Err(Rejection::Signature));
        assert_eq!(
            verify(&Received { authorization: None, ..request }, ck, cs, secret, 0, 300),
            Err(Rejection::Missing)
        );
    }

    #[test]
    fn header_parses_and_decodes() {
        let h = OAuthHeader::parse(r#"OAuth oauth_consumer_key="abc", oauth_signature="tnnArxj06cWHq44gCs1OSKk%2FjLY%3D", oauth_version="1.0""#).unwrap();
        assert_eq!(h.get("oauth_signature"), Some("tnnArxj06cWHq44gCs1OSKk/jLY="));
        assert_eq!(h.signed_params().count(), 2);
        assert!(OAuthHeader::parse("Bearer abc").is_none());
        assert!(OAuthHeader::parse("OAuth broken").is_none());
    }

    #[test]
    fn urls_normalize_for_the_base_string() {
        assert_eq!(normalize_url("HTTP", "Example.COM:80", "/a"), "http://example.com/a");
        assert_eq!(normalize_url("https", "x.com:443", "/b"), "https://x.com/b");
        assert_eq!(normalize_url("http", "127.0.0.1:9090", "/c"), "http://127.0.0.1:9090/c");
    }

    #[test]
    fn signatures_are_checked_on_their_bytes() {
        let good = sign("base", "cs", "ts");
        assert!(signature_is(&good, "base", "cs", "ts"));
        assert!(!signature_is(&good, "other", "cs", "ts"));
        assert!(!signature_is("not base64!", "base", "cs", "ts"));
        assert!(!signature_is(&good[..good.len() - 4], "base", "cs", "ts"), "a cut signature");
    }

    #[test]
    fn timestamps_far_from_now_are_refused_without_overflow() {
        let header = r#"OAuth oauth_consumer_key="ck", oauth_token="t", oauth_signature_method="HMAC-SHA1", oauth_timestamp="-9223372036854775808", oauth_nonce="a", oauth_signature="x""#;
        let request = Received { method: "POST", url: "http://x/y", query: "", authorization: Some(header) };
        let secret = |_: &str| Some("ts".to_string());
        assert_eq!(verify(&request, "ck", "cs", secret, 1_700_000_000, 300), Err(Rejection::Timestamp));
        assert_eq!(verify(&request, "ck", "cs", secret, i64::MAX, 300), Err(Rejection::Timestamp));
    }
}

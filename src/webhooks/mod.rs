//! Webhooks to sellers (CONTRACT §8), Standard Webhooks v1: the signing secret, the event
//! envelope and the three signing headers any Standard Webhooks library verifies.
//!
//! This file owns the wire format, and the checks of a configured endpoint's URL and signing
//! secrets ([`check_config`]). [`outbox`] owns the endpoint table and how an event enters the
//! store with the state change that caused it; [`worker`] delivers, retries and records attempts.
//! Which state change emits which event is the exchange's business (`exchange::events`).

pub mod outbox;
pub mod worker;

pub use outbox::{Queued, Webhooks};

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use http::{HeaderName, HeaderValue};
use ring::hmac;
use ring::rand::{SecureRandom, SystemRandom};
use serde::Serialize;

use crate::config::{ConfigError, WebhookConfig, WebhookDeliveryConfig};
use crate::error::Cause;
use crate::store::StoreError;

/// Prefix of a webhook signing secret.
pub const SECRET_PREFIX: &str = "whsec_";
/// Fewest random bytes a secret may hold (CONTRACT §8).
pub const MIN_SECRET_BYTES: usize = 24;

/// Why an endpoint, its secrets, its signing headers or the sender could not be set up. The
/// messages are the ones `check-config`, start and reload print; [`WebhookError::cause`] says
/// whose fault each is.
#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    #[error("a webhook secret starts with {SECRET_PREFIX}")]
    SecretPrefix,
    #[error("the webhook secret is not valid base64 after whsec_")]
    SecretBase64(#[source] base64::DecodeError),
    #[error("a webhook secret holds at least {MIN_SECRET_BYTES} bytes, this one {0}")]
    SecretTooShort(usize),
    #[error("needs at least one signing secret (secrets or secrets_env)")]
    NoSecrets,
    #[error("environment variable {var} is not set")]
    EnvUnset {
        var: String,
        #[source]
        source: std::env::VarError,
    },
    #[error("invalid URL {url:?}: {source}")]
    Url {
        url: String,
        #[source]
        source: http::uri::InvalidUri,
    },
    #[error("{0:?}: a webhook URL starts with http:// or https://")]
    UrlScheme(String),
    #[error("{0:?}: the URL has no host")]
    UrlHost(String),
    /// An endpoint's own setting is wrong; says which endpoint.
    #[error("webhook {id}: {source}")]
    Endpoint {
        id: String,
        #[source]
        source: Box<WebhookError>,
    },
    /// `[webhook_delivery] ca_file` did not read or holds no CA certificate.
    #[error("webhook_delivery.{0}")]
    DeliveryTls(crate::buyers::tls::SettingError),
    /// Signing a delivery without a secret: the endpoint table promises one, so a bug.
    #[error("a webhook needs at least one signing secret")]
    Unsigned,
    #[error("{0}")]
    Header(#[from] http::header::InvalidHeaderValue),
    #[error("webhook {id}: cannot read its outbox: {source}")]
    Outbox {
        id: String,
        #[source]
        source: StoreError,
    },
    #[error("cannot start a webhook sender thread: {0}")]
    SenderThread(#[source] std::io::Error),
    #[error("cannot start the webhook worker: {0}")]
    WorkerThread(#[source] std::io::Error),
}

impl WebhookError {
    /// Whose fault it is: a secret, URL, environment variable or CA file the operator configured,
    /// or Gavel's own (the store, a thread, a header it built).
    pub fn cause(&self) -> Cause {
        match self {
            WebhookError::Endpoint { source, .. } => source.cause(),
            WebhookError::SecretPrefix
            | WebhookError::SecretBase64(_)
            | WebhookError::SecretTooShort(_)
            | WebhookError::NoSecrets
            | WebhookError::EnvUnset { .. }
            | WebhookError::Url { .. }
            | WebhookError::UrlScheme(_)
            | WebhookError::UrlHost(_)
            | WebhookError::DeliveryTls(_) => Cause::Operator,
            WebhookError::Unsigned
            | WebhookError::Header(_)
            | WebhookError::Outbox { .. }
            | WebhookError::SenderThread(_)
            | WebhookError::WorkerThread(_) => Cause::Internal,
        }
    }

    /// This error about endpoint `id`'s settings, naming the endpoint.
    fn of_endpoint(self, id: &str) -> WebhookError {
        WebhookError::Endpoint {
            id: id.to_string(),
            source: Box::new(self),
        }
    }
}

/// A webhook signing secret: `whsec_` + base64 of at least 24 bytes.
#[derive(Clone)]
pub struct Secret {
    key: hmac::Key,
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(redacted)")
    }
}

impl Secret {
    /// Parses `whsec_<base64>`; the error says what is wrong, never the secret.
    pub fn parse(s: &str) -> Result<Secret, WebhookError> {
        let b64 = s
            .strip_prefix(SECRET_PREFIX)
            .ok_or(WebhookError::SecretPrefix)?;
        let raw = STANDARD.decode(b64).map_err(WebhookError::SecretBase64)?;
        if raw.len() < MIN_SECRET_BYTES {
            return Err(WebhookError::SecretTooShort(raw.len()));
        }
        Ok(Secret {
            key: hmac::Key::new(hmac::HMAC_SHA256, &raw),
        })
    }

    /// A new random secret (32 bytes), as its `whsec_` string.
    pub fn generate() -> String {
        let mut raw = [0u8; 32];
        SystemRandom::new()
            .fill(&mut raw)
            .expect("system RNG works");
        format!("{SECRET_PREFIX}{}", STANDARD.encode(raw))
    }

    /// `v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">`.
    pub fn sign(&self, id: &str, timestamp_s: u64, body: &[u8]) -> String {
        let mut ctx = hmac::Context::with_key(&self.key);
        ctx.update(id.as_bytes());
        ctx.update(b".");
        ctx.update(timestamp_s.to_string().as_bytes());
        ctx.update(b".");
        ctx.update(body);
        format!("v1,{}", STANDARD.encode(ctx.sign().as_ref()))
    }
}

/// Checks a webhook URL: `http://` or `https://` with a host.
pub fn check_url(url: &str) -> Result<(), WebhookError> {
    let uri: http::Uri = url.parse().map_err(|source| WebhookError::Url {
        url: url.to_string(),
        source,
    })?;
    if !matches!(uri.scheme_str(), Some("http" | "https")) {
        return Err(WebhookError::UrlScheme(url.to_string()));
    }
    if uri.host().is_none_or(str::is_empty) {
        return Err(WebhookError::UrlHost(url.to_string()));
    }
    Ok(())
}

/// The signing secrets of one endpoint, from `secrets` or `secrets_env`.
pub fn resolve_secrets(w: &WebhookConfig) -> Result<Vec<Secret>, WebhookError> {
    let raw: Vec<String> = match &w.secrets_env {
        Some(var) => std::env::var(var)
            .map_err(|source| WebhookError::EnvUnset {
                var: var.clone(),
                source,
            })?
            .split_whitespace()
            .map(str::to_string)
            .collect(),
        None => w.secrets.clone(),
    };
    if raw.is_empty() {
        return Err(WebhookError::NoSecrets);
    }
    raw.iter().map(|s| Secret::parse(s)).collect()
}

/// Checks what the config module cannot of each `[[webhooks]]` endpoint: its URL and its signing
/// secrets. The error names `file` and the key (`webhooks[1].url`), as `Config::validate` does.
pub fn check_config(endpoints: &[WebhookConfig], file: &str) -> Result<(), ConfigError> {
    for (i, w) in endpoints.iter().enumerate() {
        let bad = |k: &str, e: WebhookError| ConfigError::Invalid {
            file: file.to_string(),
            key: format!("webhooks[{i}].{k}"),
            reason: e.to_string(),
        };
        check_url(&w.url).map_err(|r| bad("url", r))?;
        // A missing environment variable is the fault of `secrets_env`, not of `secrets`.
        let secrets_key = if w.secrets_env.is_some() {
            "secrets_env"
        } else {
            "secrets"
        };
        resolve_secrets(w).map_err(|r| bad(secrets_key, r))?;
    }
    Ok(())
}

/// Checks `[webhook_delivery]` beyond its ranges: that `ca_file` reads and holds CA certificates.
pub fn check_delivery(d: &WebhookDeliveryConfig, file: &str) -> Result<(), ConfigError> {
    tls_config(d).map(|_| ()).map_err(|e| ConfigError::Invalid {
        file: file.to_string(),
        key: format!("webhook_delivery.{}", e.key),
        reason: e.reason,
    })
}

/// The sender's TLS configuration: `None` (ureq's own, the public roots) unless `ca_file` adds a
/// private CA. Reads the file: call it at start, never on a core.
pub fn tls_config(
    d: &WebhookDeliveryConfig,
) -> Result<Option<std::sync::Arc<rustls::ClientConfig>>, crate::buyers::tls::SettingError> {
    crate::buyers::tls::webhook_config(d.ca_file.as_deref())
}

/// A new event id: `evt_` + ULID.
pub fn new_event_id() -> String {
    format!("evt_{}", ulid::Ulid::new())
}

/// The body of every webhook: `{"type","id","created_at","data"}`.
#[derive(Debug, Serialize)]
pub struct Envelope<'a, D: Serialize> {
    #[serde(rename = "type")]
    pub kind: &'a str,
    pub id: &'a str,
    pub created_at: String,
    pub data: D,
}

/// The three Standard Webhooks headers for one delivery attempt. While a secret rotates, pass
/// both: the signature header then carries one space-separated signature per secret, and a
/// receiver holding either secret verifies it.
pub fn headers(
    id: &str,
    timestamp_s: u64,
    body: &[u8],
    secrets: &[Secret],
) -> Result<Vec<(HeaderName, HeaderValue)>, WebhookError> {
    if secrets.is_empty() {
        return Err(WebhookError::Unsigned);
    }
    let signatures: Vec<String> = secrets
        .iter()
        .map(|s| s.sign(id, timestamp_s, body))
        .collect();
    let value = |v: String| HeaderValue::from_str(&v);
    Ok(vec![
        (
            HeaderName::from_static("webhook-id"),
            value(id.to_string())?,
        ),
        (
            HeaderName::from_static("webhook-timestamp"),
            value(timestamp_s.to_string())?,
        ),
        (
            HeaderName::from_static("webhook-signature"),
            value(signatures.join(" "))?,
        ),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::clock::Clock;

    #[test]
    fn secrets_are_checked() {
        assert!(Secret::parse("nope").is_err());
        assert!(Secret::parse("whsec_!!!").is_err());
        assert!(Secret::parse(&format!("whsec_{}", STANDARD.encode([1u8; 23]))).is_err());
        let s = Secret::generate();
        assert!(s.starts_with("whsec_"));
        assert!(Secret::parse(&s).is_ok());
        assert_eq!(
            format!("{:?}", Secret::parse(&s).unwrap()),
            "Secret(redacted)"
        );
    }

    #[test]
    fn setting_errors_keep_their_words_and_name_the_operator() {
        let short = format!("whsec_{}", STANDARD.encode([1u8; 23]));
        for (e, words) in [
            (
                Secret::parse("nope").unwrap_err(),
                "a webhook secret starts with whsec_",
            ),
            (
                Secret::parse("whsec_!!!").unwrap_err(),
                "the webhook secret is not valid base64 after whsec_",
            ),
            (
                Secret::parse(&short).unwrap_err(),
                "a webhook secret holds at least 24 bytes, this one 23",
            ),
            (
                check_url("ftp://x").unwrap_err(),
                "\"ftp://x\": a webhook URL starts with http:// or https://",
            ),
        ] {
            assert_eq!(e.to_string(), words);
            assert_eq!(e.cause(), Cause::Operator, "{words}");
        }
        let named = Secret::parse("nope").unwrap_err().of_endpoint("hook-1");
        assert_eq!(
            named.to_string(),
            "webhook hook-1: a webhook secret starts with whsec_"
        );
        assert_eq!(named.cause(), Cause::Operator);
        assert!(std::error::Error::source(&named).is_some());
        assert_eq!(
            headers("evt_1", 1, b"{}", &[]).unwrap_err().cause(),
            Cause::Internal
        );
    }

    #[test]
    fn the_official_library_verifies_deliveries_also_while_a_secret_rotates() {
        let (old, new, other) = (Secret::generate(), Secret::generate(), Secret::generate());
        let id = new_event_id();
        let body = serde_json::to_vec(&Envelope {
            kind: "lead.posted",
            id: &id,
            created_at: crate::auction::rfc3339_ms(Clock::system().now_ms()),
            data: serde_json::json!({"lead_uuid": "ld_1", "status": "sold"}),
        })
        .unwrap();
        // The official library checks the timestamp against the real time, so the system clock.
        let now = Clock::system().now_ms() / 1000;
        let secrets = [Secret::parse(&old).unwrap(), Secret::parse(&new).unwrap()];
        let mut map = http::HeaderMap::new();
        for (n, v) in headers(&id, now, &body, &secrets).unwrap() {
            map.insert(n, v);
        }
        for s in [&old, &new] {
            standardwebhooks::Webhook::new(s)
                .unwrap()
                .verify(&body, &map)
                .expect("a receiver with either secret verifies");
        }
        let wh = standardwebhooks::Webhook::new(&other).unwrap();
        assert!(wh.verify(&body, &map).is_err());
        let mut tampered = body.clone();
        tampered[3] ^= 1;
        let wh = standardwebhooks::Webhook::new(&new).unwrap();
        assert!(wh.verify(&tampered, &map).is_err());
        assert!(headers(&id, now, &body, &[]).is_err());
    }

    #[test]
    fn signature_is_hmac_of_id_timestamp_body() {
        // The Standard Webhooks specification's own test vector.
        let s = Secret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let body = br#"{"test": 2432232314}"#;
        assert_eq!(
            s.sign("msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
    }
}

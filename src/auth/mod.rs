//! Authentication of API callers: static bearer tokens stored as SHA-256 hashes, OAuth access
//! tokens ([`oauth`]), their tenant and scopes, and the RFC 6750 errors for missing, invalid and
//! under-scoped tokens.
//!
//! This module decides who is calling and whether they may call this endpoint. It does not
//! rate-limit, and it does not keep the table of OAuth clients (each core holds its own copy).

use std::collections::{BTreeSet, HashMap};

use base64::Engine;
use http::{HeaderMap, StatusCode};
use ring::digest;
use ring::rand::{SecureRandom, SystemRandom};

use std::sync::Arc;

use crate::config::{LimitsConfig, Scope, Tenant, TokenConfig};
use crate::error::ApiError;
use crate::limits::ClientLimits;
use crate::types::Party;

pub mod oauth;

use oauth::{AccessKeys, ClientTable};

/// Longest `Authorization` header value considered; longer ones are invalid without hashing them.
pub const MAX_TOKEN_BYTES: usize = 512;

/// An authenticated caller.
#[derive(Debug, Clone)]
pub struct Client {
    pub name: String,
    pub tenant: Tenant,
    pub scopes: BTreeSet<Scope>,
    /// Its request rate, shared by every core (what it may run at once is its seller's).
    pub limits: Arc<ClientLimits>,
    /// The party this credential belongs to: the operator, one seller or one buyer.
    pub party: Party,
}

impl Client {
    /// The buyer this caller speaks for (buyer credentials only).
    pub fn buyer(&self) -> Option<&str> {
        self.party.buyer()
    }

    /// The seller this caller speaks for (seller credentials only).
    pub fn seller(&self) -> Option<&str> {
        self.party.seller()
    }
}

/// Token hash → client. Lookup is by SHA-256 of the presented token, so the table holds no
/// plaintext, and comparing digests leaks nothing useful about the secret through timing.
#[derive(Debug, Default)]
pub struct Auth {
    by_hash: HashMap<[u8; 32], Client>,
}

pub fn sha256_hex(s: &str) -> String {
    hex::encode(digest::digest(&digest::SHA256, s.as_bytes()))
}

fn prefix(t: Tenant) -> &'static str {
    oauth::tenant_prefix(t)
}

/// Makes a new random token for a tenant: `gv_test_…` or `gv_live_…` + 43 base64url characters.
pub fn generate_token(tenant: Tenant) -> String {
    loop {
        let mut raw = [0u8; 32];
        SystemRandom::new()
            .fill(&mut raw)
            .expect("system RNG works");
        let token = format!(
            "{}{}",
            prefix(tenant),
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw)
        );
        // The shapes of OAuth access tokens and client secrets stay theirs alone.
        if !is_access_token(&token) && !token[prefix(tenant).len()..].starts_with("cs_") {
            return token;
        }
    }
}

/// Whether a bearer token has the shape of an OAuth access token (`gv_…_at_…`).
fn is_access_token(token: &str) -> bool {
    token.starts_with("gv_test_at_") || token.starts_with("gv_live_at_")
}

fn unauthorized(description: Option<&str>) -> ApiError {
    let (challenge, message) = match description {
        None => (
            r#"Bearer realm="gavel""#.to_string(),
            "Missing bearer token: send `Authorization: Bearer <token>`.".to_string(),
        ),
        Some(d) => (
            format!(r#"Bearer realm="gavel", error="invalid_token", error_description="{d}""#),
            format!("Invalid bearer token: {d}."),
        ),
    };
    ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
        .with_header(http::header::WWW_AUTHENTICATE, challenge)
}

impl Auth {
    pub fn from_config(tokens: &[TokenConfig], limits: &LimitsConfig) -> Result<Auth, String> {
        let mut by_hash = HashMap::new();
        for t in tokens {
            let bytes = hex::decode(&t.sha256).map_err(|e| format!("token {}: {e}", t.client))?;
            let key: [u8; 32] = bytes
                .try_into()
                .map_err(|_| format!("token {}: sha256 must be 32 bytes", t.client))?;
            let client = Client {
                name: t.client.clone(),
                tenant: t.tenant,
                scopes: t.scopes.clone(),
                limits: Arc::new(ClientLimits::new(
                    t.requests_per_s.unwrap_or(limits.client_requests_per_s),
                )),
                party: t.party(),
            };
            if by_hash.insert(key, client).is_some() {
                return Err(format!(
                    "token {}: the same token hash appears twice",
                    t.client
                ));
            }
        }
        Ok(Auth { by_hash })
    }

    /// This table, with each token that `old` also holds for the same client at the same limits
    /// keeping `old`'s limit state: a config reload must not hand a running client a fresh request
    /// budget.
    pub fn keeping_limits_of(mut self, old: &Auth) -> Auth {
        for (hash, client) in self.by_hash.iter_mut() {
            let Some(prev) = old.by_hash.get(hash) else {
                continue;
            };
            let same = prev.name == client.name
                && prev.tenant == client.tenant
                && prev.party == client.party
                && prev.limits.requests.limit() == client.limits.requests.limit();
            if same {
                client.limits = prev.limits.clone();
            }
        }
        self
    }

    /// Authenticates the request with a static token and checks that the client holds `scope`.
    pub fn check(&self, headers: &HeaderMap, scope: Scope) -> Result<Client, ApiError> {
        self.check_with(headers, scope, None, 0)
    }

    /// Authenticates the request with a static token, or with an OAuth access token when `oauth`
    /// gives the core's client table and the signing keys, and checks that the client holds
    /// `scope`. An access token counts only while unexpired at `now_ms` and while its client is
    /// in the table (revoking a client removes it), with the scopes both granted to the token and
    /// still held by the client.
    pub fn check_with(
        &self,
        headers: &HeaderMap,
        scope: Scope,
        oauth: Option<(&ClientTable, &AccessKeys)>,
        now_ms: u64,
    ) -> Result<Client, ApiError> {
        let client = self.identify_with(headers, oauth, now_ms)?;
        client.require(scope)?;
        Ok(client)
    }

    /// [`Auth::check_with`] without the scope check: who is calling, so that a view rule can
    /// answer for the caller's party before its scopes are looked at.
    pub fn identify_with(
        &self,
        headers: &HeaderMap,
        oauth: Option<(&ClientTable, &AccessKeys)>,
        now_ms: u64,
    ) -> Result<Client, ApiError> {
        let token = bearer(headers)?;
        let client = if is_access_token(token) {
            let (table, keys) =
                oauth.ok_or_else(|| unauthorized(Some("unknown or revoked token")))?;
            let claims = keys.verify(token).ok_or_else(|| {
                unauthorized(Some(
                    "the access token was not issued by Gavel or was altered",
                ))
            })?;
            if claims.expires_ms <= now_ms {
                return Err(unauthorized(Some("the access token expired")));
            }
            let (record, limits) = table
                .get_with_limits(&claims.client_id)
                .filter(|(r, _)| r.tenant == claims.tenant)
                .ok_or_else(|| unauthorized(Some("the client was revoked")))?;
            Client {
                name: record.client_id.clone(),
                tenant: record.tenant,
                scopes: claims
                    .scopes
                    .intersection(&record.scopes)
                    .copied()
                    .collect(),
                limits: limits.clone(),
                party: record.party(),
            }
        } else {
            let d = digest::digest(&digest::SHA256, token.as_bytes());
            let key: [u8; 32] = d.as_ref().try_into().expect("SHA-256 is 32 bytes");
            self.by_hash
                .get(&key)
                .filter(|c| token.starts_with(prefix(c.tenant)))
                .ok_or_else(|| unauthorized(Some("unknown or revoked token")))?
                .clone()
        };
        Ok(client)
    }
}

impl Client {
    /// `403 insufficient_scope` unless this credential holds `scope`.
    pub fn require(&self, scope: Scope) -> Result<(), ApiError> {
        if self.scopes.contains(&scope) {
            return Ok(());
        }
        let s = scope.as_str();
        Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "insufficient_scope",
            format!("This token lacks the `{s}` scope."),
        )
        .with_header(
            http::header::WWW_AUTHENTICATE,
            format!(r#"Bearer realm="gavel", error="insufficient_scope", scope="{s}""#),
        ))
    }
}

/// A new set of client limits from the configured defaults.
pub fn client_limits(l: &LimitsConfig) -> ClientLimits {
    ClientLimits::new(l.client_requests_per_s)
}

/// The bearer token of a request (RFC 6750 §2.1), bounded in length.
fn bearer(headers: &HeaderMap) -> Result<&str, ApiError> {
    let Some(value) = headers.get(http::header::AUTHORIZATION) else {
        return Err(unauthorized(None));
    };
    let value = value
        .to_str()
        .map_err(|_| unauthorized(Some("the header is not ASCII")))?;
    if value.len() > MAX_TOKEN_BYTES {
        return Err(unauthorized(Some("the token is too long")));
    }
    let Some((scheme, token)) = value.split_once(' ') else {
        return Err(unauthorized(Some("expected the Bearer scheme")));
    };
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(unauthorized(Some("expected the Bearer scheme")));
    }
    Ok(token.trim())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A reload keeps an unchanged token's running counters and gives a changed one fresh ones.
    #[test]
    fn a_reloaded_table_keeps_the_limits_of_unchanged_tokens() {
        let old = auth_with("tok-1", Tenant::Sandbox, &[Scope::Ping]);
        let same = auth_with("tok-1", Tenant::Sandbox, &[Scope::Ping, Scope::Admin]);
        let kept = same.keeping_limits_of(&old);
        let key = |a: &Auth| a.by_hash.values().next().unwrap().limits.clone();
        assert!(Arc::ptr_eq(&key(&old), &key(&kept)));
        let other = auth_with("tok-2", Tenant::Sandbox, &[Scope::Ping]).keeping_limits_of(&old);
        assert!(!Arc::ptr_eq(&key(&old), &key(&other)));
    }

    fn auth_with(token: &str, tenant: Tenant, scopes: &[Scope]) -> Auth {
        Auth::from_config(
            &[TokenConfig {
                client: "c1".into(),
                tenant,
                sha256: sha256_hex(token),
                scopes: scopes.iter().copied().collect(),
                buyer: None,
                seller: None,
                operator: false,
                requests_per_s: None,
            }],
            &LimitsConfig::default(),
        )
        .unwrap()
    }

    fn headers(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(http::header::AUTHORIZATION, v.parse().unwrap());
        h
    }

    #[test]
    fn generated_tokens_have_tenant_prefix() {
        assert!(generate_token(Tenant::Sandbox).starts_with("gv_test_"));
        assert!(generate_token(Tenant::Production).starts_with("gv_live_"));
    }

    #[test]
    fn scopes_and_errors() {
        let t = generate_token(Tenant::Sandbox);
        let a = auth_with(&t, Tenant::Sandbox, &[Scope::Ping]);
        assert_eq!(
            a.check(&headers(&format!("Bearer {t}")), Scope::Ping)
                .unwrap()
                .name,
            "c1"
        );
        let e = a
            .check(&headers(&format!("Bearer {t}")), Scope::Post)
            .unwrap_err();
        assert_eq!(e.status, StatusCode::FORBIDDEN);
        let e = a
            .check(&headers("Bearer gv_test_nope"), Scope::Ping)
            .unwrap_err();
        assert_eq!(e.status, StatusCode::UNAUTHORIZED);
        let e = a.check(&HeaderMap::new(), Scope::Ping).unwrap_err();
        assert_eq!(e.status, StatusCode::UNAUTHORIZED);
        assert!(e
            .headers
            .iter()
            .any(|(n, _)| n == http::header::WWW_AUTHENTICATE));
    }

    #[test]
    fn token_with_wrong_tenant_prefix_is_refused() {
        // A live-prefixed token whose hash is configured for the sandbox tenant must not pass.
        let t = generate_token(Tenant::Production);
        let a = auth_with(&t, Tenant::Sandbox, &[Scope::Ping]);
        assert!(a
            .check(&headers(&format!("Bearer {t}")), Scope::Ping)
            .is_err());
    }
}

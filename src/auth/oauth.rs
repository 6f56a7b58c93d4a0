//! OAuth 2.0 client credentials (RFC 6749 §4.4): registered clients and their hashed secrets, the
//! token request (parsing, client authentication, scopes), the signed access tokens Gavel issues,
//! and the RFC 6749 §5.2 error answers.
//!
//! Owns the rules and the formats. Does not own where client records are kept (the store's meta
//! tree, through [`crate::runtime`]), which copy of the client table a core consults, or HTTP
//! routing ([`crate::api::oauth`]).
//!
//! Access tokens are `gv_test_at_…` / `gv_live_…at_…`-shaped: the tenant prefix, `at_`, then
//! base64url(claims ‖ HMAC-SHA256(claims)). The claims name the client, tenant, granted scopes,
//! issue and expiry times. A token is accepted only while its client is in the core's table of
//! active clients, so revoking a client (which removes it from every core's table before the
//! revoke call answers) invalidates every token it holds at once.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use http::StatusCode;
use ring::hmac;
use ring::rand::{SecureRandom, SystemRandom};
use serde::{Deserialize, Serialize};

use crate::config::{Scope, Tenant};
use crate::limits::ClientLimits;
use crate::types::Party;

/// The only grant type Gavel supports.
pub const CLIENT_CREDENTIALS: &str = "client_credentials";
/// Longest client id, secret or scope string read from a token request.
pub const MAX_PARAM_BYTES: usize = 256;
/// Longest token request body (form or JSON).
pub const MAX_TOKEN_REQUEST_BYTES: usize = 4 * 1024;
/// Longest client name accepted at registration.
pub const MAX_CLIENT_NAME_CHARS: usize = 64;

const TOKEN_VERSION: u8 = 1;
const MAC_LEN: usize = 32;

/// The tenant prefix of every Gavel credential.
pub fn tenant_prefix(t: Tenant) -> &'static str {
    match t {
        Tenant::Sandbox => "gv_test_",
        Tenant::Production => "gv_live_",
    }
}

/// A registered OAuth client, as stored (JSON in the store's meta tree). The secret is kept only
/// as its SHA-256: secrets are 256 random bits, so a fast hash is enough to make a leaked record
/// useless.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientRecord {
    pub client_id: String,
    pub name: String,
    pub tenant: Tenant,
    pub scopes: BTreeSet<Scope>,
    /// Lowercase hex SHA-256 of the client secret.
    pub secret_sha256: String,
    pub created_ms: u64,
    pub revoked_ms: Option<u64>,
    /// The party this client belongs to. Records written before parties existed have none and
    /// belong to an implicit seller named by the client id ([`ClientRecord::party`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub party: Option<Party>,
}

impl ClientRecord {
    /// The party this client speaks for.
    pub fn party(&self) -> Party {
        self.party
            .clone()
            .unwrap_or_else(|| Party::Seller(self.client_id.clone()))
    }
}

/// The store key of a client record.
pub fn meta_key(client_id: &str) -> String {
    format!("{META_PREFIX}{client_id}")
}

/// Prefix of every client record's key in the store's meta tree.
pub const META_PREFIX: &str = "oauth_client/";

fn random_b64(bytes: usize) -> String {
    let mut raw = vec![0u8; bytes];
    SystemRandom::new()
        .fill(&mut raw)
        .expect("system RNG works");
    URL_SAFE_NO_PAD.encode(raw)
}

/// A new client id: `cl_` + 22 base64url characters (128 random bits).
pub fn new_client_id() -> String {
    format!("cl_{}", random_b64(16))
}

/// A new client secret: the tenant prefix, `cs_`, 43 base64url characters (256 random bits).
pub fn new_client_secret(tenant: Tenant) -> String {
    format!("{}cs_{}", tenant_prefix(tenant), random_b64(32))
}

// Architecture Invariant [oauth-client-table]: an access token is honoured only while its client
// is in this core's table; changes reach every core before the admin call answers.
/// Active clients by id: what a core consults for every OAuth-authenticated request.
#[derive(Debug, Clone, Default)]
pub struct ClientTable {
    active: HashMap<String, (ClientRecord, Arc<ClientLimits>)>,
    /// Ids ever revoked: a revocation is final, even if an older update arrives after it.
    revoked: std::collections::HashSet<String>,
}

impl ClientTable {
    pub fn new(
        records: impl IntoIterator<Item = (ClientRecord, Arc<ClientLimits>)>,
    ) -> ClientTable {
        let mut t = ClientTable::default();
        for (r, l) in records {
            t.apply(r, l);
        }
        t
    }

    /// Adds, updates or (for a revoked record) removes a client. Every core gets the same
    /// `limits`, so the client's limits hold across cores.
    pub fn apply(&mut self, record: ClientRecord, limits: Arc<ClientLimits>) {
        if record.revoked_ms.is_some() {
            self.active.remove(&record.client_id);
            self.revoked.insert(record.client_id);
        } else if !self.revoked.contains(&record.client_id) {
            self.active
                .insert(record.client_id.clone(), (record, limits));
        }
    }

    pub fn get(&self, client_id: &str) -> Option<&ClientRecord> {
        self.active.get(client_id).map(|(r, _)| r)
    }

    /// How many active clients `tenant` has.
    pub fn active_in(&self, tenant: Tenant) -> usize {
        self.active
            .values()
            .filter(|(r, _)| r.tenant == tenant)
            .count()
    }

    pub fn get_with_limits(&self, client_id: &str) -> Option<(&ClientRecord, &Arc<ClientLimits>)> {
        self.active.get(client_id).map(|(r, l)| (r, l))
    }
}

/// What an access token asserts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessClaims {
    pub client_id: String,
    pub tenant: Tenant,
    pub scopes: BTreeSet<Scope>,
    pub issued_ms: u64,
    pub expires_ms: u64,
}

const SCOPE_BITS: [(Scope, u8); 6] = [
    (Scope::Ping, 1),
    (Scope::Post, 2),
    (Scope::Status, 4),
    (Scope::Reports, 8),
    (Scope::Dev, 16),
    (Scope::Admin, 32),
];

fn scope_bits(scopes: &BTreeSet<Scope>) -> u8 {
    SCOPE_BITS
        .iter()
        .filter(|(s, _)| scopes.contains(s))
        .fold(0, |acc, (_, b)| acc | b)
}

fn scopes_of(bits: u8) -> BTreeSet<Scope> {
    SCOPE_BITS
        .iter()
        .filter(|(_, b)| bits & b != 0)
        .map(|(s, _)| *s)
        .collect()
}

/// Signs and verifies access tokens.
pub struct AccessKeys {
    key: hmac::Key,
}

impl AccessKeys {
    pub fn new(secret: &[u8]) -> AccessKeys {
        AccessKeys {
            key: hmac::Key::new(hmac::HMAC_SHA256, secret),
        }
    }

    pub fn sign(&self, c: &AccessClaims) -> String {
        let id = c.client_id.as_bytes();
        let mut buf = Vec::with_capacity(20 + id.len() + MAC_LEN);
        buf.push(TOKEN_VERSION);
        buf.push(match c.tenant {
            Tenant::Sandbox => 0,
            Tenant::Production => 1,
        });
        buf.push(scope_bits(&c.scopes));
        buf.extend_from_slice(&c.issued_ms.to_le_bytes());
        buf.extend_from_slice(&c.expires_ms.to_le_bytes());
        buf.push(id.len().min(255) as u8);
        buf.extend_from_slice(&id[..id.len().min(255)]);
        let tag = hmac::sign(&self.key, &buf);
        buf.extend_from_slice(tag.as_ref());
        format!(
            "{}at_{}",
            tenant_prefix(c.tenant),
            URL_SAFE_NO_PAD.encode(buf)
        )
    }

    /// The claims of a genuine, unaltered token (expiry and revocation are the caller's checks).
    /// `None` for anything else, including a token whose prefix disagrees with its tenant.
    pub fn verify(&self, token: &str) -> Option<AccessClaims> {
        let (tenant, rest) = if let Some(r) = token.strip_prefix("gv_test_at_") {
            (Tenant::Sandbox, r)
        } else if let Some(r) = token.strip_prefix("gv_live_at_") {
            (Tenant::Production, r)
        } else {
            return None;
        };
        let raw = URL_SAFE_NO_PAD.decode(rest).ok()?;
        if raw.len() < 20 + MAC_LEN {
            return None;
        }
        let (body, tag) = raw.split_at(raw.len() - MAC_LEN);
        hmac::verify(&self.key, body, tag).ok()?;
        if body[0] != TOKEN_VERSION {
            return None;
        }
        let signed_tenant = match body[1] {
            0 => Tenant::Sandbox,
            1 => Tenant::Production,
            _ => return None,
        };
        if signed_tenant != tenant {
            return None;
        }
        let u64_at = |i: usize| u64::from_le_bytes(body[i..i + 8].try_into().expect("8 bytes"));
        let id_len = body[19] as usize;
        if body.len() != 20 + id_len {
            return None;
        }
        Some(AccessClaims {
            client_id: String::from_utf8(body[20..].to_vec()).ok()?,
            tenant,
            scopes: scopes_of(body[2]),
            issued_ms: u64_at(3),
            expires_ms: u64_at(11),
        })
    }
}

/// An RFC 6749 §5.2 error answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OAuthError {
    pub status: StatusCode,
    /// `invalid_request`, `invalid_client`, `invalid_grant`, `unauthorized_client`,
    /// `unsupported_grant_type` or `invalid_scope`.
    pub error: &'static str,
    pub description: String,
    /// The client tried HTTP Basic: a 401 must carry `WWW-Authenticate: Basic`.
    pub basic_challenge: bool,
}

impl OAuthError {
    fn new(status: StatusCode, error: &'static str, description: impl Into<String>) -> OAuthError {
        OAuthError {
            status,
            error,
            description: description.into(),
            basic_challenge: false,
        }
    }

    pub fn invalid_request(d: impl Into<String>) -> OAuthError {
        OAuthError::new(StatusCode::BAD_REQUEST, "invalid_request", d)
    }

    fn invalid_client(basic: bool) -> OAuthError {
        OAuthError {
            basic_challenge: basic,
            ..OAuthError::new(
                StatusCode::UNAUTHORIZED,
                "invalid_client",
                "Client authentication failed: unknown client, wrong secret, or revoked client.",
            )
        }
    }
}

/// The parameters of a token request, from a form or JSON body.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TokenRequest {
    pub grant_type: Option<String>,
    pub scope: Option<String>,
    pub client_id: Option<String>,
    pub client_secret: Option<String>,
}

impl TokenRequest {
    fn set(&mut self, name: &str, value: String) -> Result<(), OAuthError> {
        if value.len() > MAX_PARAM_BYTES {
            return Err(OAuthError::invalid_request(format!(
                "Parameter {name} is longer than {MAX_PARAM_BYTES} bytes."
            )));
        }
        let slot = match name {
            "grant_type" => &mut self.grant_type,
            "scope" => &mut self.scope,
            "client_id" => &mut self.client_id,
            "client_secret" => &mut self.client_secret,
            // RFC 6749 §3.2: unrecognized parameters are ignored.
            _ => return Ok(()),
        };
        if slot.is_some() {
            // RFC 6749 §3.2: parameters must not be included more than once.
            return Err(OAuthError::invalid_request(format!(
                "Parameter {name} appears more than once."
            )));
        }
        *slot = Some(value);
        Ok(())
    }

    /// Parses an `application/x-www-form-urlencoded` body.
    pub fn from_form(body: &[u8]) -> Result<TokenRequest, OAuthError> {
        let mut r = TokenRequest::default();
        for (k, v) in form_urlencoded::parse(body) {
            r.set(&k, v.into_owned())?;
        }
        Ok(r)
    }

    /// Parses a JSON object body whose values are strings.
    pub fn from_json(body: &[u8]) -> Result<TokenRequest, OAuthError> {
        let map: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(body)
            .map_err(|_| OAuthError::invalid_request("The body is not a JSON object."))?;
        let mut r = TokenRequest::default();
        for (k, v) in map {
            match v {
                serde_json::Value::String(s) => r.set(&k, s)?,
                _ if ["grant_type", "scope", "client_id", "client_secret"]
                    .contains(&k.as_str()) =>
                {
                    return Err(OAuthError::invalid_request(format!(
                        "Parameter {k} must be a string."
                    )))
                }
                _ => {}
            }
        }
        Ok(r)
    }
}

/// Client id and secret from an `Authorization: Basic` value (RFC 6749 §2.3.1: each
/// form-urlencoded, then joined by `:` and base64-encoded). `Ok(None)` when the header is another
/// scheme.
pub fn basic_credentials(header: &str) -> Result<Option<(String, String)>, OAuthError> {
    let Some((scheme, rest)) = header.split_once(' ') else {
        return Ok(None);
    };
    if !scheme.eq_ignore_ascii_case("basic") {
        return Ok(None);
    }
    let bad = || OAuthError::invalid_client(true);
    let raw = STANDARD.decode(rest.trim()).map_err(|_| bad())?;
    let text = String::from_utf8(raw).map_err(|_| bad())?;
    let (id, secret) = text.split_once(':').ok_or_else(bad)?;
    let decode = |s: &str| -> String {
        form_urlencoded::parse(format!("v={s}").as_bytes())
            .next()
            .map(|(_, v)| v.into_owned())
            .unwrap_or_default()
    };
    if id.len() > MAX_PARAM_BYTES || secret.len() > MAX_PARAM_BYTES {
        return Err(bad());
    }
    Ok(Some((decode(id), decode(secret))))
}

/// A successful token answer's fields.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TokenResponse {
    pub access_token: String,
    pub token_type: &'static str,
    pub expires_in: u64,
    pub scope: String,
}

/// Space-separated scope names, in a stable order.
pub fn scope_string(scopes: &BTreeSet<Scope>) -> String {
    scopes
        .iter()
        .map(|s| s.as_str())
        .collect::<Vec<_>>()
        .join(" ")
}

/// Compares two digests without an early exit (a timing difference on a hash would reveal
/// nothing useful, but there is no reason to offer one).
fn constant_time_eq_hex(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

/// Decides a token request: authenticates the client (HTTP Basic, given as `basic`, or body
/// parameters; never both), checks the grant type and the requested scopes, and signs a token
/// valid for `ttl_s` seconds from `now_ms`.
pub fn issue(
    req: &TokenRequest,
    basic: Option<(String, String)>,
    clients: &ClientTable,
    keys: &AccessKeys,
    ttl_s: u64,
    now_ms: u64,
) -> Result<TokenResponse, OAuthError> {
    let used_basic = basic.is_some();
    let (id, secret) = match (basic, &req.client_id, &req.client_secret) {
        (Some(_), Some(_), _) | (Some(_), _, Some(_)) => {
            return Err(OAuthError::invalid_request(
                "Authenticate the client one way: HTTP Basic or body parameters, not both.",
            ))
        }
        (Some(creds), None, None) => creds,
        (None, Some(id), Some(secret)) => (id.clone(), secret.clone()),
        (None, None, None) => {
            return Err(OAuthError {
                basic_challenge: true,
                ..OAuthError::invalid_client(false)
            })
        }
        (None, _, _) => {
            return Err(OAuthError::invalid_request(
                "Send both client_id and client_secret.",
            ))
        }
    };
    match req.grant_type.as_deref() {
        None => return Err(OAuthError::invalid_request("grant_type is required.")),
        Some(CLIENT_CREDENTIALS) => {}
        Some(_) => {
            return Err(OAuthError::new(
                StatusCode::BAD_REQUEST,
                "unsupported_grant_type",
                "Only grant_type=client_credentials is supported.",
            ))
        }
    }
    let secret_hash = crate::auth::sha256_hex(&secret);
    let client = clients
        .get(&id)
        .filter(|c| constant_time_eq_hex(&c.secret_sha256, &secret_hash))
        .ok_or_else(|| OAuthError::invalid_client(used_basic))?;
    let granted = match req.scope.as_deref() {
        None => client.scopes.clone(),
        Some(s) => {
            let mut granted = BTreeSet::new();
            for name in s.split(' ').filter(|n| !n.is_empty()) {
                match Scope::parse(name).filter(|sc| client.scopes.contains(sc)) {
                    Some(sc) => {
                        granted.insert(sc);
                    }
                    None => {
                        return Err(OAuthError::new(
                            StatusCode::BAD_REQUEST,
                            "invalid_scope",
                            format!("Scope `{name}` is unknown or not granted to this client."),
                        ))
                    }
                }
            }
            if granted.is_empty() {
                return Err(OAuthError::new(
                    StatusCode::BAD_REQUEST,
                    "invalid_scope",
                    "The scope parameter names no scope.",
                ));
            }
            granted
        }
    };
    let claims = AccessClaims {
        client_id: client.client_id.clone(),
        tenant: client.tenant,
        scopes: granted.clone(),
        issued_ms: now_ms,
        expires_ms: now_ms + ttl_s * 1000,
    };
    Ok(TokenResponse {
        access_token: keys.sign(&claims),
        token_type: "Bearer",
        expires_in: ttl_s,
        scope: scope_string(&granted),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client(scopes: &[Scope]) -> (ClientRecord, String) {
        let secret = new_client_secret(Tenant::Sandbox);
        (
            ClientRecord {
                client_id: new_client_id(),
                name: "acme".into(),
                tenant: Tenant::Sandbox,
                scopes: scopes.iter().copied().collect(),
                secret_sha256: crate::auth::sha256_hex(&secret),
                created_ms: 1,
                revoked_ms: None,
                party: None,
            },
            secret,
        )
    }

    fn lim() -> Arc<ClientLimits> {
        Arc::new(ClientLimits::new(100.0))
    }

    fn form(s: &str) -> TokenRequest {
        TokenRequest::from_form(s.as_bytes()).unwrap()
    }

    #[test]
    fn tokens_round_trip_and_resist_tampering() {
        let keys = AccessKeys::new(&[7; 32]);
        let c = AccessClaims {
            client_id: "cl_abc".into(),
            tenant: Tenant::Production,
            scopes: [Scope::Ping, Scope::Admin].into_iter().collect(),
            issued_ms: 10,
            expires_ms: 3_600_010,
        };
        let t = keys.sign(&c);
        assert!(t.starts_with("gv_live_at_"), "{t}");
        assert_eq!(keys.verify(&t), Some(c.clone()));
        // Another key, a flipped character, a swapped tenant prefix: all refused.
        assert_eq!(AccessKeys::new(&[8; 32]).verify(&t), None);
        let mut bytes = t.clone().into_bytes();
        let i = bytes.len() - 10;
        bytes[i] = if bytes[i] == b'A' { b'B' } else { b'A' };
        assert_eq!(keys.verify(&String::from_utf8(bytes).unwrap()), None);
        assert_eq!(keys.verify(&t.replacen("gv_live_", "gv_test_", 1)), None);
        assert_eq!(keys.verify("gv_test_at_"), None);
        assert_eq!(keys.verify("Bearer"), None);
    }

    #[test]
    fn issues_with_basic_or_body_credentials() {
        let (rec, secret) = client(&[Scope::Ping, Scope::Post]);
        let table = ClientTable::new([(rec.clone(), lim())]);
        let keys = AccessKeys::new(&[1; 32]);
        let r = issue(
            &form("grant_type=client_credentials"),
            Some((rec.client_id.clone(), secret.clone())),
            &table,
            &keys,
            3600,
            1_000,
        )
        .unwrap();
        assert_eq!((r.token_type, r.expires_in), ("Bearer", 3600));
        assert_eq!(r.scope, "ping post");
        let claims = keys.verify(&r.access_token).unwrap();
        assert_eq!(claims.expires_ms, 1_000 + 3_600_000);
        let body = format!(
            "grant_type=client_credentials&scope=ping&client_id={}&client_secret={}",
            rec.client_id, secret
        );
        let r = issue(&form(&body), None, &table, &keys, 60, 0).unwrap();
        assert_eq!(r.scope, "ping");
    }

    #[test]
    fn refusals_follow_rfc_6749() {
        let (rec, secret) = client(&[Scope::Ping]);
        let table = ClientTable::new([(rec.clone(), lim())]);
        let keys = AccessKeys::new(&[1; 32]);
        let basic = Some((rec.client_id.clone(), secret.clone()));
        let err = |req: &str, basic: Option<(String, String)>| {
            issue(&form(req), basic, &table, &keys, 60, 0).unwrap_err()
        };
        let e = err(
            "grant_type=client_credentials",
            Some((rec.client_id.clone(), "wrong".into())),
        );
        assert_eq!(
            (e.status.as_u16(), e.error, e.basic_challenge),
            (401, "invalid_client", true)
        );
        let e = err(
            &format!(
                "grant_type=client_credentials&client_id={}&client_secret=x",
                rec.client_id
            ),
            None,
        );
        assert_eq!((e.error, e.basic_challenge), ("invalid_client", false));
        assert_eq!(
            err("grant_type=password", basic.clone()).error,
            "unsupported_grant_type"
        );
        assert_eq!(err("", basic.clone()).error, "invalid_request");
        let e = err(
            "grant_type=client_credentials&scope=ping%20post",
            basic.clone(),
        );
        assert_eq!((e.status.as_u16(), e.error), (400, "invalid_scope"));
        assert!(e.description.contains("post"));
        let both = format!("grant_type=client_credentials&client_id={}", rec.client_id);
        assert_eq!(err(&both, basic.clone()).error, "invalid_request");
        assert_eq!(
            err("grant_type=client_credentials", None).error,
            "invalid_client"
        );
        // Repeated parameters are refused at parse time.
        assert!(TokenRequest::from_form(b"grant_type=a&grant_type=b").is_err());
        // A revoked client is gone from the table.
        let mut revoked = rec.clone();
        revoked.revoked_ms = Some(5);
        let mut t2 = table.clone();
        t2.apply(revoked, lim());
        let e = issue(
            &form("grant_type=client_credentials"),
            basic,
            &t2,
            &keys,
            60,
            0,
        )
        .unwrap_err();
        assert_eq!(e.error, "invalid_client");
    }

    #[test]
    fn basic_header_decoding() {
        let h = format!("Basic {}", STANDARD.encode("cl_a%3Ab:s%2Bc+d"));
        assert_eq!(
            basic_credentials(&h).unwrap(),
            Some(("cl_a:b".to_string(), "s+c d".to_string()))
        );
        assert_eq!(basic_credentials("Bearer x").unwrap(), None);
        assert!(basic_credentials("Basic !!!").is_err());
        let json =
            TokenRequest::from_json(br#"{"grant_type":"client_credentials","x":1}"#).unwrap();
        assert_eq!(json.grant_type.as_deref(), Some(CLIENT_CREDENTIALS));
        assert!(TokenRequest::from_json(br#"{"grant_type":1}"#).is_err());
    }
}

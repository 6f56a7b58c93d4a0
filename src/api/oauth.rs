//! `POST /oauth/token` (CONTRACT §3, RFC 6749 §4.4) and the management of a tenant's OAuth clients
//! (`/v1/admin/clients`, scope `admin`): HTTP in and out. The rules (client authentication, scopes,
//! token format, §5.2 errors) live in [`crate::auth::oauth`].
//!
//! Client records are durable in the store before any answer about them leaves, and every change
//! reaches every core's client table before the call answers: a revoked client's access tokens
//! stop working on all cores the moment `DELETE /v1/admin/clients/{client_id}` returns.

use std::collections::BTreeSet;
use std::rc::Rc;

use http::{HeaderValue, Request, StatusCode};
use hyper::body::Incoming;
use serde::Serialize;

use super::ping::store_error;
use super::validate::{field_error, SmallBody, FIELD_INVALID_FORMAT, FIELD_OUT_OF_RANGE};
use super::BODY_READ_TIMEOUT;
use crate::auction::{now_ms, rfc3339_ms};
use crate::auth::oauth::{self, ClientRecord, OAuthError, TokenRequest, MAX_TOKEN_REQUEST_BYTES};
use crate::config::{Scope, Tenant};
use crate::error::ApiError;
use crate::http::Reply;
use crate::runtime::handoff::ask;
use crate::runtime::Core;
use crate::store::Batch;

/// Most OAuth clients one tenant may register (revoked ones included).
pub const MAX_CLIENTS_PER_TENANT: usize = 1_000;

fn no_store(reply: Reply) -> Reply {
    reply
        .header(
            http::header::CACHE_CONTROL,
            HeaderValue::from_static("no-store"),
        )
        .header(http::header::PRAGMA, HeaderValue::from_static("no-cache"))
}

#[derive(Serialize)]
struct OAuthErrorBody<'a> {
    error: &'a str,
    error_description: &'a str,
}

fn oauth_error(e: &OAuthError) -> Reply {
    let mut reply = no_store(Reply::json(
        e.status,
        &OAuthErrorBody {
            error: e.error,
            error_description: &e.description,
        },
    ));
    if e.status == StatusCode::UNAUTHORIZED && e.basic_challenge {
        reply = reply.header(
            http::header::WWW_AUTHENTICATE,
            HeaderValue::from_static(r#"Basic realm="gavel", charset="UTF-8""#),
        );
    }
    reply
}

/// `POST /oauth/token`.
pub async fn token(core: &Rc<Core>, req: Request<Incoming>) -> Result<Reply, ApiError> {
    let basic = match req.headers().get(http::header::AUTHORIZATION) {
        None => None,
        Some(v) => match v.to_str().map(oauth::basic_credentials) {
            Ok(Ok(creds)) => creds,
            Ok(Err(e)) => return Ok(oauth_error(&e)),
            Err(_) => {
                return Ok(oauth_error(&OAuthError::invalid_request(
                    "The Authorization header is not ASCII.",
                )))
            }
        },
    };
    let mime = req
        .headers()
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        })
        .unwrap_or_default();
    let body = crate::http::read_body(req, MAX_TOKEN_REQUEST_BYTES, BODY_READ_TIMEOUT).await?;
    let parsed = match mime.as_str() {
        "application/x-www-form-urlencoded" => TokenRequest::from_form(&body),
        "application/json" => TokenRequest::from_json(&body),
        _ => Err(OAuthError::invalid_request(
            "Send the body as application/x-www-form-urlencoded (or application/json).",
        )),
    };
    let issued = parsed.and_then(|tr| {
        oauth::issue(
            &tr,
            basic,
            &core.clients.borrow(),
            &core.shared.access_keys,
            core.shared.config.oauth.access_token_ttl_s,
            now_ms(),
        )
    });
    Ok(match issued {
        Ok(t) => no_store(Reply::json(StatusCode::OK, &t)),
        Err(e) => oauth_error(&e),
    })
}

/// A client as the admin API shows it (never its secret or the secret's hash).
#[derive(Serialize)]
struct ClientOut<'a> {
    client_id: &'a str,
    name: &'a str,
    tenant: Tenant,
    scopes: &'a BTreeSet<Scope>,
    created_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    revoked_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    client_secret: Option<&'a str>,
}

fn client_out<'a>(r: &'a ClientRecord, secret: Option<&'a str>) -> ClientOut<'a> {
    ClientOut {
        client_id: &r.client_id,
        name: &r.name,
        tenant: r.tenant,
        scopes: &r.scopes,
        created_at: rfc3339_ms(r.created_ms),
        revoked_at: r.revoked_ms.map(rfc3339_ms),
        client_secret: secret,
    }
}

struct CreateClient {
    name: String,
    scopes: BTreeSet<Scope>,
}

impl CreateClient {
    /// Reads and checks a client creation body; each error names its field.
    fn parse(body: &[u8]) -> Result<CreateClient, ApiError> {
        let b = SmallBody::parse(body, &["name", "scopes"])?;
        let expected = format!(
            "1 to {} characters of A-Z, a-z, 0-9, space, _ . or -",
            oauth::MAX_CLIENT_NAME_CHARS
        );
        let name = SmallBody::required("name", b.string("name", &expected)?)?;
        let name_ok = !name.is_empty()
            && name.chars().count() <= oauth::MAX_CLIENT_NAME_CHARS
            && name
                .chars()
                .all(|ch| ch.is_ascii_alphanumeric() || " _.-".contains(ch));
        if !name_ok {
            return Err(field_error(
                "name",
                FIELD_INVALID_FORMAT,
                &expected,
                format!("name must be {expected}."),
            ));
        }
        let known: Vec<&str> = Scope::ALL.iter().map(|s| s.as_str()).collect();
        let expected = format!("each of {} at most once", known.join(", "));
        let listed = SmallBody::required("scopes", b.strings("scopes", "scope names")?)?;
        let mut scopes = BTreeSet::new();
        for s in listed {
            let Some(scope) = Scope::parse(s) else {
                return Err(field_error(
                    "scopes",
                    FIELD_OUT_OF_RANGE,
                    &expected,
                    format!("scopes must name scopes from {}.", known.join(", ")),
                ));
            };
            // The document says `uniqueItems`: a scope listed twice is a mistake worth telling.
            if !scopes.insert(scope) {
                return Err(field_error(
                    "scopes",
                    FIELD_INVALID_FORMAT,
                    &expected,
                    format!("scopes lists {s} more than once; name each scope once."),
                ));
            }
        }
        if scopes.is_empty() {
            return Err(field_error(
                "scopes",
                FIELD_OUT_OF_RANGE,
                &expected,
                "scopes must name at least one scope.",
            ));
        }
        Ok(CreateClient {
            name: name.to_string(),
            scopes,
        })
    }
}

fn tenant_clients(core: &Core, tenant: Tenant) -> Result<Vec<ClientRecord>, ApiError> {
    let all = crate::runtime::load_clients(&core.shared.store).map_err(|e| {
        tracing::error!(error = %e, "cannot read OAuth clients");
        ApiError::internal("The client records could not be read.")
    })?;
    Ok(all.into_iter().filter(|c| c.tenant == tenant).collect())
}

/// Makes `record` durable, then applies it to every core's client table.
async fn save_and_broadcast(core: &Rc<Core>, record: &ClientRecord) -> Result<(), ApiError> {
    let json = serde_json::to_vec(record).expect("client records serialize");
    let mut batch = Batch::new();
    batch.put_meta(&oauth::meta_key(&record.client_id), json);
    core.commit(batch).await.map_err(store_error)?;
    // One set of limits for the client, shared by every core's table.
    let limits = std::sync::Arc::new(crate::auth::client_limits(&core.shared.config.limits));
    for target in 0..core.shared.cores {
        let (r, l) = (record.clone(), limits.clone());
        ask(core, target, move |c| async move {
            c.clients.borrow_mut().apply(r, l);
        })
        .await?;
    }
    Ok(())
}

/// `POST /v1/admin/clients`: registers a client of the caller's tenant and shows its secret once.
pub async fn create(core: &Rc<Core>, req: Request<Incoming>) -> Result<Reply, ApiError> {
    let admin = core.authenticate(req.headers(), Scope::Admin)?;
    let body = super::json_body(req).await?;
    let c = CreateClient::parse(&body)?;
    if tenant_clients(core, admin.tenant)?.len() >= MAX_CLIENTS_PER_TENANT {
        return Err(ApiError::unprocessable(
            "too_many_clients",
            format!("A tenant may register at most {MAX_CLIENTS_PER_TENANT} clients."),
        ));
    }
    let secret = oauth::new_client_secret(admin.tenant);
    let record = ClientRecord {
        client_id: oauth::new_client_id(),
        name: c.name,
        tenant: admin.tenant,
        scopes: c.scopes,
        secret_sha256: crate::auth::sha256_hex(&secret),
        created_ms: now_ms(),
        revoked_ms: None,
    };
    save_and_broadcast(core, &record).await?;
    tracing::info!(client_id = %record.client_id, by = %admin.name, "OAuth client created");
    Ok(no_store(Reply::json(
        StatusCode::CREATED,
        &client_out(&record, Some(&secret)),
    )))
}

/// `GET /v1/admin/clients`: the caller's tenant's clients, revoked ones included.
pub async fn list(core: &Rc<Core>, req: Request<Incoming>) -> Result<Reply, ApiError> {
    let admin = core.authenticate(req.headers(), Scope::Admin)?;
    let clients = tenant_clients(core, admin.tenant)?;
    let out: Vec<ClientOut> = clients.iter().map(|r| client_out(r, None)).collect();
    Ok(Reply::json(
        StatusCode::OK,
        &serde_json::json!({ "clients": out }),
    ))
}

/// `DELETE /v1/admin/clients/{client_id}`: revokes a client; its tokens stop working on every core
/// before this answers. Revoking twice answers the first revocation again.
pub async fn revoke(
    core: &Rc<Core>,
    req: Request<Incoming>,
    client_id: &str,
) -> Result<Reply, ApiError> {
    let admin = core.authenticate(req.headers(), Scope::Admin)?;
    let not_found = || ApiError::not_found(format!("No client {client_id} in this tenant."));
    let stored = core
        .shared
        .store
        .get_meta(&oauth::meta_key(client_id))
        .map_err(store_error)?
        .ok_or_else(not_found)?;
    let mut record: ClientRecord = serde_json::from_slice(&stored).map_err(|e| {
        tracing::error!(error = %e, client_id, "OAuth client record damaged");
        ApiError::internal("The client record could not be read.")
    })?;
    if record.tenant != admin.tenant {
        return Err(not_found());
    }
    if record.revoked_ms.is_none() {
        record.revoked_ms = Some(now_ms());
        save_and_broadcast(core, &record).await?;
        tracing::info!(client_id, by = %admin.name, "OAuth client revoked");
    }
    Ok(Reply::json(StatusCode::OK, &client_out(&record, None)))
}

//! `POST /oauth/token` (CONTRACT §3, RFC 6749 §4.4) and the management of a tenant's OAuth clients
//! (`/v1/admin/clients`, scope `admin`): HTTP in and out. The rules (client authentication, scopes,
//! token format, §5.2 errors) live in [`crate::auth::oauth`].
//!
//! Every client belongs to one party (`ClientRecord::party`). The operator manages every client of
//! its tenant and names the party of a new one; a seller creates, lists and revokes only its own
//! clients (a new one is always its own); a buyer has no part of it (`api::views`). Another
//! party's client answers exactly as a missing one.
//!
//! Client records are durable in the store before any answer about them leaves, and every change
//! reaches every core's client table before the call answers: a revoked client's access tokens
//! stop working on all cores the moment `DELETE /v1/admin/clients/{client_id}` returns. A change
//! that could not reach some core answers `503` instead, and repeating the call finishes it.
//!
//! Every create and revoke is written with its audit entry (`crate::audit`) in one batch. A client
//! that names no party speaks for an implicit seller of its own, made known to every core before
//! the create answers (or the client is withdrawn like one that missed a core).
//!
//! Every create and revoke of one tenant's clients is decided on one core (the tenant's owner,
//! [`admin_core`]), one change at a time, so the per-tenant cap's check and the write after it
//! cannot interleave with another change. The change runs detached from the caller's
//! connection: a caller that hangs up mid-way does not stop it half applied.

use std::collections::BTreeSet;
use std::future::Future;
use std::rc::Rc;

use http::{HeaderValue, Request, StatusCode};
use hyper::body::Incoming;
use serde::Serialize;

use super::store_error;
use super::validate::{field_error, SmallBody, FIELD_INVALID_FORMAT, FIELD_OUT_OF_RANGE};
use super::BODY_READ_TIMEOUT;
use crate::auction::rfc3339_ms;
use crate::audit::{self, Action, Actor, Target};
use crate::auth::oauth::{self, ClientRecord, OAuthError, TokenRequest, MAX_TOKEN_REQUEST_BYTES};
use crate::auth::Client;
use crate::config::{Scope, Tenant};
use crate::error::ApiError;
use crate::exchange::sellers::{self, Change as SellerChange, SELLERS_CORE};
use crate::exchange::Core;
use crate::http::Reply;
use crate::runtime::admission::Admit;
use crate::runtime::handoff::{ask, run_on};
use crate::store::Batch;
use crate::types::Party;

/// Most active OAuth clients one tenant may have. Revoked clients stay in the store (the admin
/// list shows them, for audit) but do not count.
pub const MAX_CLIENTS_PER_TENANT: usize = 1_000;

thread_local! {
    /// Client changes decided on this core, taken one at a time: a change awaits its commit and
    /// its broadcast, and the next change must see the tables as that one left them. An async
    /// lock local to the core thread, never held by another thread.
    static CHANGES: Rc<futures::lock::Mutex<()>> = Rc::new(futures::lock::Mutex::new(()));
}

/// The core that decides every client change of `tenant`.
pub fn admin_core(core: &Core, tenant: Tenant) -> usize {
    core.shared.owner_of(tenant.as_str())
}

/// Runs `change` on core `target`, one change at a time there. Like all handed-off work it runs as
/// a task of its own (see `runtime::handoff`), to its end whether or not the caller's connection
/// is still there; the caller only awaits its result.
async fn detached<T, F, Fut>(core: &Rc<Core>, target: usize, change: F) -> Result<T, ApiError>
where
    T: Send + 'static,
    F: FnOnce(Rc<Core>) -> Fut + Send + 'static,
    Fut: Future<Output = Result<T, ApiError>> + 'static,
{
    // Client changes (a revocation above all) must not wait out an overload: never shed.
    run_on(core, target, Admit::Always, move |c| async move {
        let changes = CHANGES.with(Rc::clone);
        let _one_at_a_time = changes.lock().await;
        change(c).await
    })
    .await?
}

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
            core.shared.clock.now_ms(),
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
    /// Who the client speaks for; a record from before parties shows its implicit seller.
    party: Party,
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
        party: r.party(),
        scopes: &r.scopes,
        created_at: rfc3339_ms(r.created_ms),
        revoked_at: r.revoked_ms.map(rfc3339_ms),
        client_secret: secret,
    }
}

struct CreateClient {
    name: String,
    scopes: BTreeSet<Scope>,
    /// The party named in the body, as written (`operator`, `seller:ID`, `buyer:ID`).
    party: Option<Party>,
}

/// What `party` must be, as field errors say it.
const PARTY_EXPECTED: &str = "operator, seller:ID or buyer:ID naming a party of this tenant";

impl CreateClient {
    /// Reads and checks a client creation body; each error names its field.
    fn parse(body: &[u8]) -> Result<CreateClient, ApiError> {
        let b = SmallBody::parse(body, &["name", "scopes", "party"])?;
        let party = match b.string("party", PARTY_EXPECTED)? {
            None => None,
            Some(p) => Some(Party::parse(p).ok_or_else(|| {
                field_error(
                    "party",
                    FIELD_INVALID_FORMAT,
                    PARTY_EXPECTED,
                    "party must be operator, seller:ID or buyer:ID (ids of a-z, 0-9, _ and -).",
                )
            })?),
        };
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
            party,
        })
    }
}

/// The party a new client of `admin`'s tenant belongs to. The operator names any party of its
/// tenant (none named: the implicit seller named by the new client's id, as before parties); a
/// seller's clients are always its own.
fn party_of_new_client(
    core: &Core,
    admin: &Client,
    named: Option<Party>,
) -> Result<Option<Party>, ApiError> {
    let unknown = |what: &str| {
        field_error(
            "party",
            FIELD_OUT_OF_RANGE,
            PARTY_EXPECTED,
            format!("party names no {what} of this tenant."),
        )
    };
    match &admin.party {
        Party::Operator => {
            match &named {
                Some(Party::Seller(id)) if core.sellers().get(admin.tenant, id).is_none() => {
                    return Err(unknown("seller"))
                }
                Some(Party::Buyer(id))
                    if !core
                        .registry()
                        .buyers
                        .iter()
                        .any(|b| b.tenant == admin.tenant && b.id == *id) =>
                {
                    return Err(unknown("buyer"))
                }
                _ => {}
            }
            Ok(named)
        }
        me @ Party::Seller(_) => match named {
            None => Ok(Some(me.clone())),
            Some(p) if p == *me => Ok(Some(p)),
            Some(_) => Err(field_error(
                "party",
                FIELD_OUT_OF_RANGE,
                PARTY_EXPECTED,
                "A seller's credential creates clients of its own seller only; leave party out.",
            )),
        },
        // `api::views` keeps buyers off this route; should one get here, it creates nothing.
        Party::Buyer(_) => Err(crate::exchange::app::not_yours()),
    }
}

/// Whether `admin` manages `record` (both of one tenant): the operator every client, a seller
/// its own.
fn manages(admin: &Client, record: &ClientRecord) -> bool {
    admin.party.is_operator() || record.party() == admin.party
}

fn tenant_clients(core: &Core, tenant: Tenant) -> Result<Vec<ClientRecord>, ApiError> {
    let all = crate::exchange::app::load_clients(&core.shared.store).map_err(|e| {
        tracing::error!(error = %e, "cannot read OAuth clients");
        ApiError::internal("The client records could not be read.")
    })?;
    Ok(all.into_iter().filter(|c| c.tenant == tenant).collect())
}

/// Makes `record` durable, with the audit entry of the change `by` made: `action` on the client,
/// from `before` (never a secret: a record holds its hash only, and the entry masks even that).
async fn save(
    core: &Rc<Core>,
    record: &ClientRecord,
    by: &Actor,
    action: Action,
    before: Option<&ClientRecord>,
) -> Result<(), ApiError> {
    let json = serde_json::to_vec(record).expect("client records serialize");
    let mut batch = Batch::new();
    batch.put_meta(&oauth::meta_key(&record.client_id), json);
    // As the admin API shows a client, with the party it speaks for.
    let show = |r: &ClientRecord| {
        let mut v = serde_json::to_value(client_out(r, None)).unwrap_or_default();
        v["party"] = serde_json::Value::from(r.party().to_string());
        v
    };
    audit::Entry::new(
        record.tenant,
        by,
        action,
        Target::OauthClient,
        &record.client_id,
    )
    .before(before.map(show).as_ref())
    .after(Some(&show(record)))
    .put(&mut batch, core.shared.clock.now_ms())
    .map_err(store_error)?;
    core.commit(batch).await.map_err(store_error)
}

/// Applies `record` to every core's client table. Every core is tried, also after one failed (a
/// full inbox), so one busy core never keeps the others from learning of a revocation; `503`
/// names the cores that did not take it, and broadcasting the same record again completes it.
async fn broadcast(core: &Rc<Core>, record: &ClientRecord) -> Result<(), ApiError> {
    // One set of limits for the client, shared by every core's table.
    let limits = std::sync::Arc::new(crate::auth::client_limits(&core.shared.config.limits));
    let sends = (0..core.shared.cores).map(|target| {
        let (r, l) = (record.clone(), limits.clone());
        async move {
            let res = ask(core, target, move |c| async move {
                c.clients.borrow_mut().apply(r, l);
            })
            .await;
            (target, res)
        }
    });
    let missed: Vec<String> = futures::future::join_all(sends)
        .await
        .into_iter()
        .filter_map(|(target, res)| res.err().map(|_| target.to_string()))
        .collect();
    if missed.is_empty() {
        return Ok(());
    }
    tracing::warn!(client_id = %record.client_id, cores = %missed.join(","), "OAuth client change not applied on every core");
    Err(ApiError::overloaded(format!(
        "The change is saved, but core(s) {} were too busy to apply it; repeat the call to finish it.",
        missed.join(", ")
    )))
}

/// `POST /v1/admin/clients`: registers a client of the caller's tenant and shows its secret once.
pub async fn create(core: &Rc<Core>, req: Request<Incoming>) -> Result<Reply, ApiError> {
    let admin = super::views::admit(core, &req)?.client;
    let body = super::json_body(req).await?;
    let c = CreateClient::parse(&body)?;
    let party = party_of_new_client(core, &admin, c.party)?;
    let secret = oauth::new_client_secret(admin.tenant);
    let record = ClientRecord {
        client_id: oauth::new_client_id(),
        name: c.name,
        tenant: admin.tenant,
        scopes: c.scopes,
        secret_sha256: crate::auth::sha256_hex(&secret),
        created_ms: core.shared.clock.now_ms(),
        revoked_ms: None,
        party,
    };
    let owner = admin_core(core, admin.tenant);
    let (new, by) = (record.clone(), Actor::of(&admin));
    detached(core, owner, move |c| async move {
        create_on_owner(&c, new, &by).await
    })
    .await?;
    tracing::info!(client_id = %record.client_id, by = %admin.name, "OAuth client created");
    Ok(no_store(Reply::json(
        StatusCode::CREATED,
        &client_out(&record, Some(&secret)),
    )))
}

/// The cap check and the write of a new client, on its tenant's [`admin_core`]. The owner's own
/// table knows every active client of the tenant: each change is applied there before the next
/// one starts.
async fn create_on_owner(
    core: &Rc<Core>,
    mut record: ClientRecord,
    by: &Actor,
) -> Result<(), ApiError> {
    if core.clients.borrow().active_in(record.tenant) >= MAX_CLIENTS_PER_TENANT {
        return Err(ApiError::unprocessable(
            "too_many_clients",
            format!(
                "A tenant may have at most {MAX_CLIENTS_PER_TENANT} active clients; revoke one first."
            ),
        ));
    }
    save(core, &record, by, Action::Create, None).await?;
    let applied = match broadcast(core, &record).await {
        Ok(()) => implicit_seller(core, &record).await,
        Err(e) => Err(e),
    };
    if applied.is_err() {
        // The caller gets no secret, so nobody can ever use this client: revoke it so that it
        // does not hold a place under the cap, and let the caller retry the whole create.
        let created = record.clone();
        record.revoked_ms = Some(core.shared.clock.now_ms());
        if save(core, &record, by, Action::Revoke, Some(&created))
            .await
            .is_ok()
        {
            let _ = broadcast(core, &record).await;
        }
        return Err(ApiError::overloaded(
            "A core was too busy to learn of the new client, so it was withdrawn and no secret was issued; retry shortly.",
        ));
    }
    Ok(())
}

/// Makes the implicit seller of a client that names no party known on every core (a client of
/// its own seller, named by the client id), before its secret is handed out: no request of the
/// client can reach a core that does not know its seller.
async fn implicit_seller(core: &Rc<Core>, record: &ClientRecord) -> Result<(), ApiError> {
    if record.party.is_some() {
        return Ok(());
    }
    let (tenant, id) = (record.tenant, record.client_id.clone());
    run_on(core, SELLERS_CORE, Admit::Always, move |c| async move {
        sellers::apply(&c, Some(tenant), SellerChange::Implicit { id }, None)
            .await
            .map(|_| ())
    })
    .await?
    .map_err(super::sellers::api_error)
}

/// `GET /v1/admin/clients`: the clients the caller manages (the operator: its tenant's; a seller:
/// its own), revoked ones included.
pub async fn list(core: &Rc<Core>, req: Request<Incoming>) -> Result<Reply, ApiError> {
    let admin = super::views::admit(core, &req)?.client;
    let clients = tenant_clients(core, admin.tenant)?;
    let out: Vec<ClientOut> = clients
        .iter()
        .filter(|r| manages(&admin, r))
        .map(|r| client_out(r, None))
        .collect();
    Ok(Reply::json(
        StatusCode::OK,
        &serde_json::json!({ "clients": out }),
    ))
}

/// `DELETE /v1/admin/clients/{client_id}`: revokes a client; its tokens stop working on every core
/// before this answers. Revoking twice answers the first revocation again, after applying it to
/// every core once more (a first call that answered `503` left some core without it).
pub async fn revoke(
    core: &Rc<Core>,
    req: Request<Incoming>,
    client_id: &str,
) -> Result<Reply, ApiError> {
    let admin = super::views::admit(core, &req)?.client;
    let (tenant, id) = (admin.tenant, client_id.to_string());
    let record = detached(core, admin_core(core, tenant), move |c| async move {
        revoke_on_owner(&c, &admin, &id).await
    })
    .await?;
    Ok(Reply::json(StatusCode::OK, &client_out(&record, None)))
}

/// The revocation of `client_id` by `admin` (of its tenant, and its own unless `admin` is the
/// operator), on the tenant's [`admin_core`].
async fn revoke_on_owner(
    core: &Rc<Core>,
    admin: &Client,
    client_id: &str,
) -> Result<ClientRecord, ApiError> {
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
    if record.tenant != admin.tenant || !manages(admin, &record) {
        return Err(not_found());
    }
    if record.revoked_ms.is_none() {
        let active = record.clone();
        record.revoked_ms = Some(core.shared.clock.now_ms());
        let by = Actor::of(admin);
        save(core, &record, &by, Action::Revoke, Some(&active)).await?;
        tracing::info!(client_id, by = %by.client, "OAuth client revoked");
    }
    broadcast(core, &record).await?;
    Ok(record)
}

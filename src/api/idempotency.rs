//! Idempotency keys (CONTRACT §6): replaying a finished request's answer, refusing a key reused
//! with another body, and refusing a key whose first request is still running.
//!
//! Every request carrying a key is decided on one core (the handlers route by the key's auction,
//! or by the key itself), so the in-flight check is a plain per-core set and the check-and-set
//! needs no lock. Finished answers live in the store and survive restarts; this module only reads
//! them and adds new ones to the caller's commit batch, so they become durable together with the
//! state change they describe.

use std::rc::Rc;

use http::{HeaderName, HeaderValue, StatusCode};
use ring::digest;

use crate::auction::record::{headers_to_strings, reply_from_parts};
use crate::auth::Client;
use crate::error::ApiError;
use crate::exchange::app::InFlightKey;
use crate::exchange::Core;
use crate::http::Reply;
use crate::store::{Batch, IdemRecord, IdemScope};

/// Longest idempotency key accepted (CONTRACT §6).
pub const MAX_KEY_LEN: usize = 255;

/// Reads the optional `Idempotency-Key` header: 1–255 printable ASCII characters.
pub fn key_from(headers: &http::HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(v) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    let bytes = v.as_bytes();
    if bytes.is_empty()
        || bytes.len() > MAX_KEY_LEN
        || !bytes.iter().all(|b| (0x20..0x7f).contains(b))
    {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_idempotency_key",
            "Idempotency-Key must be 1 to 255 printable ASCII characters.",
        ));
    }
    Ok(Some(String::from_utf8_lossy(bytes).into_owned()))
}

/// SHA-256 of a request body, taken before parsing (the parser rewrites its buffer).
pub fn fingerprint(body: &[u8]) -> [u8; 32] {
    digest::digest(&digest::SHA256, body)
        .as_ref()
        .try_into()
        .expect("SHA-256 is 32 bytes")
}

/// A request's idempotency identity: its scoped key and its body's fingerprint.
#[derive(Debug, Clone)]
pub struct Idem {
    pub scope: IdemScope,
    pub fingerprint: [u8; 32],
}

impl Idem {
    pub fn new(
        client: &Client,
        method: &str,
        path: &str,
        key: String,
        fingerprint: [u8; 32],
    ) -> Idem {
        Idem {
            scope: IdemScope {
                tenant: client.tenant.as_str().to_string(),
                client: client.name.clone(),
                method: method.to_string(),
                path: path.to_string(),
                key,
            },
            fingerprint,
        }
    }
}

// Architecture Invariant [one-core-per-key]: every request with one idempotency key is decided on
// the core this function names, a function of the key alone.
/// The core that decides every request carrying `key`: a function of the key alone, so one key is
/// never decided on two cores whatever the rest of the request says. A post's default key
/// `post_<auction_id>` maps to the auction's owner, so the usual post needs no extra hop.
pub fn key_core(shared: &crate::exchange::Shared, key: &str) -> usize {
    match key.strip_prefix("post_") {
        Some(auction_id) => shared.owner_of(auction_id),
        None => shared.owner_of(key),
    }
}

/// Decides a keyed request on this core (its key's core, see [`key_core`]) and runs `work` on
/// `target`, the core that owns what it changes. The key stays in flight here until `work` has
/// answered, and `work` records the answer under the key in its own commit batch. Work that
/// `target` sheds ([`crate::runtime::admission`]) never ran, so nothing is recorded under the key
/// and a retry runs it.
pub async fn run_keyed<F, Fut>(
    core: &Rc<Core>,
    idem: &Idem,
    target: usize,
    admit: crate::runtime::admission::Admit,
    work: F,
) -> Result<Reply, ApiError>
where
    F: FnOnce(Rc<Core>) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = Result<Reply, ApiError>> + 'static,
{
    debug_assert_eq!(key_core(&core.shared, &idem.scope.key), core.id);
    let _guard = match begin(core, idem)? {
        Begin::Replay(reply) => return Ok(reply),
        Begin::Run(guard) => guard,
    };
    crate::runtime::handoff::continue_on(core, target, admit, work).await?
}

/// What a keyed request may do.
pub enum Begin {
    /// First time: run it, holding the guard until its answer is durable.
    Run(InFlightKey),
    /// Finished before: answer with this replay.
    Replay(Reply),
}

/// Checks the key before the request runs.
pub fn begin(core: &Rc<Core>, idem: &Idem) -> Result<Begin, ApiError> {
    let guard = InFlightKey::claim(core, idem.scope.encode_key()).ok_or_else(|| {
        ApiError::new(
            StatusCode::CONFLICT,
            "idempotency_in_flight",
            "A request with this Idempotency-Key is still running; retry shortly.",
        )
    })?;
    // A replay or an error below drops the guard at once: only a run holds the key.
    let stored = core
        .shared
        .store
        .get_idempotency(&idem.scope)
        .map_err(|e| {
            tracing::error!(error = %e, "idempotency lookup failed");
            ApiError::internal("The idempotency record could not be read.")
        })?;
    if let Some(rec) = stored {
        if rec.fingerprint != idem.fingerprint {
            return Err(ApiError::unprocessable(
                "idempotency_key_reused",
                "This Idempotency-Key was used with a different request body.",
            ));
        }
        core.metrics.record_replay();
        return Ok(Begin::Replay(replay(&rec)));
    }
    Ok(Begin::Run(guard))
}

fn replay(rec: &IdemRecord) -> Reply {
    reply_from_parts(rec.status, &rec.headers, &rec.body).header(
        HeaderName::from_static("idempotent-replayed"),
        HeaderValue::from_static("true"),
    )
}

/// Whether an answer is kept for replay: 5xx, 401 and 429 are not, so a retry may succeed.
pub fn storable(status: StatusCode) -> bool {
    !(status.is_server_error()
        || status == StatusCode::UNAUTHORIZED
        || status == StatusCode::TOO_MANY_REQUESTS)
}

/// Adds the answer to `batch` when it is storable, so it becomes durable with the request's state.
pub fn record(batch: &mut Batch, idem: &Idem, reply: &Reply, now_ms: u64) -> Result<(), ApiError> {
    put_answer(batch, idem, reply, now_ms).map_err(|e| {
        tracing::error!(error = %e, "cannot encode idempotency record");
        ApiError::internal("The answer could not be recorded.")
    })
}

/// [`record`] for the exchange, which reports a store error in its own terms.
pub fn put_answer(
    batch: &mut Batch,
    idem: &Idem,
    reply: &Reply,
    now_ms: u64,
) -> Result<(), crate::store::StoreError> {
    if !storable(reply.status) {
        return Ok(());
    }
    batch
        .put_idempotency(
            &idem.scope,
            &IdemRecord {
                fingerprint: idem.fingerprint,
                status: reply.status.as_u16(),
                headers: headers_to_strings(reply),
                body: reply.body.to_vec(),
                created_ms: now_ms,
            },
        )
        .map(|_| ())
}

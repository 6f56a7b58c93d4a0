//! Changing the buyers while Gavel runs: the admin API's create, update, pause, resume and delete,
//! and the config file's buyers on `SIGHUP`, all through one path.
//!
//! A change is decided on one core ([`BUYERS_CORE`]), one at a time: the registry is one list for
//! every tenant, so two changes must not both start from the same snapshot and lose one another.
//! Buyers are named by tenant and id together ([`crate::buyers::table`]): a tenant sees, creates
//! and counts only its own, up to [`MAX_BUYERS_PER_TENANT`], so one tenant can neither fill the
//! table for another nor learn which ids another uses.
//!
//! Each change is checked with the same rules as the config file (the config module's checks, the
//! buyer URL check, building the buyer), and one more: a definition from the API names nothing of
//! the server's own, neither an environment variable nor a file ([`nothing_of_the_server`]). It is
//! made durable in the buyer table ([`crate::buyers::table`], secrets sealed), turned into a new
//! registry snapshot and installed on every core before the call answers. A core whose inbox is full misses it: the change answers
//! [`BuyerError::NotApplied`] naming the cores, and the next change (or the same call repeated)
//! installs the current snapshot on every core first. A core only takes a snapshot newer than the
//! one it holds, so a late one never undoes a newer change.
//!
//! Auctions are untouched: each keeps the snapshot it started with (see [`crate::auction::Auction`]),
//! so an auction in flight still clears and delivers with a buyer changed or removed meanwhile.
//!
//! This module does not speak HTTP (`api::buyers` does) and does not read the config file (the
//! command line does, off the cores).

use std::cell::Cell;
use std::rc::Rc;
use std::sync::Arc;

use crate::audit::{self, Action, Actor};
use crate::auth::Auth;
use crate::buyers::egress::Egress;
use crate::buyers::seal::SealKey;
use crate::buyers::table::{self, BuyerRecord, Source};
use crate::buyers::Registry;
use crate::config::{BuyerConfig, Config, ConfigError, RuleConfig, Tenant, MAX_BUYERS_PER_TENANT};
use crate::exchange::{Core, Exchange};
use crate::store::{Batch, StoreError};

/// The core that decides every buyer change, for every tenant.
pub const BUYERS_CORE: usize = 0;

/// Longest buyer id the admin API accepts (ids label metrics and appear in paths).
pub const MAX_BUYER_ID_CHARS: usize = 64;

thread_local! {
    /// Buyer changes decided on this core, one at a time: a change awaits its commit and its
    /// broadcast, and the next one must start from the snapshot that one left. An async lock
    /// local to the core thread, never held by another thread.
    static CHANGES: Rc<futures::lock::Mutex<()>> = Rc::new(futures::lock::Mutex::new(()));
    /// Whether the last broadcast missed a core: the next change installs the current snapshot
    /// everywhere before doing anything else.
    static LAGGING: Cell<bool> = const { Cell::new(false) };
}

/// Why a buyer change was refused or is unfinished; each says who caused it.
#[derive(Debug)]
pub enum BuyerError {
    /// The caller's: no buyer with this id in the caller's tenant.
    NotFound { id: String },
    /// The caller's: the caller's tenant has a buyer with this id already.
    Exists { id: String },
    /// The caller's: the caller's tenant holds [`MAX_BUYERS_PER_TENANT`] buyers.
    TooMany,
    /// The caller's: the definition breaks a rule; `field` names it (`floor`, `filters.states`).
    Invalid { field: String, reason: String },
    /// Gavel's: the change could not be made durable; nothing changed.
    Store(StoreError),
    /// Gavel's: the change could not be worked out (no thread to build it on); nothing changed.
    Internal(String),
    /// Gavel's (overload): the change is durable and installed on some cores, but these cores'
    /// inboxes were full; repeating the call finishes it.
    NotApplied { cores: Vec<usize> },
}

impl From<StoreError> for BuyerError {
    fn from(e: StoreError) -> BuyerError {
        BuyerError::Store(e)
    }
}

/// One change to the buyer table. A new buyer's definition arrives checked ([`parse_definition`]
/// and [`check`]); a replacement or a patch is completed from the stored definition (the kept
/// secret, the merged fields) and checked here, under the lock.
#[derive(Debug)]
pub enum Change {
    /// A new buyer (`source = api`).
    Create(BuyerConfig),
    /// The whole new definition of an existing buyer of the tenant. An `auth_header` without a
    /// `value` under the same name keeps the stored value (answers never show it), or the
    /// environment reference the config file gave it. Naming an environment variable itself
    /// (`value_env`) is refused: only the config file may.
    Replace(BuyerConfig),
    /// A JSON merge patch (RFC 7396) over buyer `id`'s definition.
    Patch {
        id: String,
        patch: serde_json::Value,
    },
    /// Pause (`false`) or resume (`true`).
    SetEnabled {
        id: String,
        enabled: bool,
    },
    Delete {
        id: String,
    },
    /// The config file's buyers, under the ownership rule of [`crate::buyers::table`].
    Reload(Vec<BuyerConfig>),
}

/// Reads a buyer definition from JSON, as the config file's `[[buyers]]` entry writes it (floor
/// in USD). `tenant` is the caller's: a missing `tenant` becomes it, another one is refused.
/// `id`, when given (an update), must match the body's `id` or fill it in.
pub fn parse_definition(
    mut value: serde_json::Value,
    tenant: Tenant,
    id: Option<&str>,
) -> Result<BuyerConfig, BuyerError> {
    let invalid = |field: &str, reason: &str| BuyerError::Invalid {
        field: field.to_string(),
        reason: reason.to_string(),
    };
    let obj = value
        .as_object_mut()
        .ok_or_else(|| invalid("", "the body must be a JSON object"))?;
    match obj.get("tenant") {
        None => {
            obj.insert("tenant".into(), serde_json::json!(tenant.as_str()));
        }
        Some(t) if t.as_str() == Some(tenant.as_str()) => {}
        Some(_) => {
            return Err(invalid(
                "tenant",
                "must be the tenant of your credential (or left out)",
            ))
        }
    }
    if let Some(id) = id {
        match obj.get("id") {
            None => {
                obj.insert("id".into(), serde_json::json!(id));
            }
            Some(v) if v.as_str() == Some(id) => {}
            Some(_) => return Err(invalid("id", "must be the id in the path (or left out)")),
        }
    }
    let b: BuyerConfig = serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let message = e.inner().to_string();
        // serde names an unknown or missing field in its message, the path only its parent.
        let named = message
            .strip_prefix("unknown field `")
            .or_else(|| message.strip_prefix("missing field `"))
            .and_then(|rest| rest.split('`').next());
        let field = match (path.as_str(), named) {
            (".", Some(n)) => n.to_string(),
            (p, Some(n)) if p != n && !p.ends_with(&format!(".{n}")) => format!("{p}.{n}"),
            (p, _) => p.to_string(),
        };
        BuyerError::Invalid {
            field,
            reason: message,
        }
    })?;
    let id_ok = !b.id.is_empty()
        && b.id.chars().count() <= MAX_BUYER_ID_CHARS
        && b.id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c));
    if !id_ok {
        return Err(invalid(
            "id",
            &format!("must be 1 to {MAX_BUYER_ID_CHARS} characters of A-Z, a-z, 0-9, _ . or -"),
        ));
    }
    Ok(b)
}

/// What a change is checked and written by.
struct Rules<'a> {
    config: &'a Config,
    /// Where buyer URLs may point, with this server's own listeners.
    egress: &'a Egress,
    /// Seals the secrets of the rows written.
    key: &'a SealKey,
    /// Buyers one tenant may hold ([`MAX_BUYERS_PER_TENANT`] outside tests).
    max_per_tenant: usize,
}

/// The checks a `[[buyers]]` entry of the config file gets, on one definition: the config
/// module's rules, the buyer URL and TLS check, and the egress rule (with the server's own
/// listeners as bound). Building the buyer (header values, formats) is the last check, made by
/// [`Registry::next`].
fn check(b: &BuyerConfig, config: &Config, egress: &Egress) -> Result<(), BuyerError> {
    let mut one = config.clone();
    one.buyers = vec![b.clone()];
    // Tokens name buyers of the file; they are not what this change is about.
    one.tokens.clear();
    let field_of = |e: ConfigError| match e {
        ConfigError::Invalid { key, reason, .. } => BuyerError::Invalid {
            field: key
                .strip_prefix("buyers[0].")
                .unwrap_or(key.as_str())
                .to_string(),
            reason,
        },
        other => BuyerError::Invalid {
            field: String::new(),
            reason: other.to_string(),
        },
    };
    one.validate("buyer").map_err(field_of)?;
    egress
        .check_buyer(b)
        .map_err(|(field, reason)| BuyerError::Invalid {
            field: field.to_string(),
            reason,
        })?;
    // Header values and formats are checked when the new snapshot builds the buyer
    // ([`Registry::next`]), which refuses the change the same way; building it here too would
    // read its TLS files a second time.
    crate::buyers::pool::check_config(&one.buyers, "buyer").map_err(field_of)
}

/// Applies `change` on [`BUYERS_CORE`] (the caller hands it there), for `tenant` (`None`: the
/// config file, any tenant). Returns the buyer's row as it now stands (`None` for a reload; for a
/// delete, the row removed).
pub async fn apply(
    core: &Rc<Core>,
    tenant: Option<Tenant>,
    change: Change,
    by: Option<Actor>,
) -> Result<Option<BuyerRecord>, BuyerError> {
    debug_assert_eq!(
        core.id, BUYERS_CORE,
        "buyer changes are decided on one core"
    );
    let changes = CHANGES.with(Rc::clone);
    let _one_at_a_time = changes.lock().await;
    if LAGGING.with(Cell::get) {
        broadcast(core, core.registry()).await?;
    }
    let current = core.registry();
    let now = core.shared.clock.now_ms();
    let shared = core.shared.clone();
    let action = match &change {
        Change::Create(_) => Some(Action::Create),
        Change::Replace(_) | Change::Patch { .. } => Some(Action::Update),
        Change::SetEnabled { enabled: true, .. } => Some(Action::Resume),
        Change::SetEnabled { .. } => Some(Action::Pause),
        Change::Delete { .. } => Some(Action::Delete),
        Change::Reload(_) => None,
    };
    // Checking and building buyers reads their TLS files (CA bundle, client certificate and key),
    // which a core never does: the edit and the new snapshot are made on a thread of their own.
    let (next, batch, answer) = off_core(move || {
        let egress = crate::exchange::app::egress(&shared);
        let rules = Rules {
            config: &shared.config,
            egress: &egress,
            key: &shared.seal_key,
            max_per_tenant: MAX_BUYERS_PER_TENANT,
        };
        let (records, mut batch, answer) = edit(&rules, &current, tenant, change, now)?;
        // A change that writes something is audited in the batch that makes it durable.
        if let (Some(by), Some(action), Some(row)) = (&by, action, &answer) {
            if !batch.is_empty() {
                audit::buyer_entry(by, action, &current.records, row).put(&mut batch, now)?;
            }
        }
        let next = current
            .next(records, shared.config.limits.buyer_pings_per_s)
            .map_err(|e| match e.field {
                // The field is named apart, so the reason is the key's own.
                Some(field) => BuyerError::Invalid {
                    field,
                    reason: e.reason,
                },
                None => BuyerError::Invalid {
                    field: String::new(),
                    reason: e.to_string(),
                },
            })?;
        Ok((next, batch, answer))
    })
    .await?;
    if !batch.is_empty() {
        core.commit(batch).await?;
    }
    broadcast(core, Arc::new(next)).await?;
    Ok(answer)
}

/// The table after `change` under `rules`, the writes that make it durable, and the row to answer
/// with.
fn edit(
    rules: &Rules,
    current: &Registry,
    tenant: Option<Tenant>,
    change: Change,
    now: u64,
) -> Result<(Vec<BuyerRecord>, Batch, Option<BuyerRecord>), BuyerError> {
    let Rules {
        config,
        egress,
        key,
        max_per_tenant,
    } = *rules;
    let mut records = current.records.clone();
    let mut batch = Batch::new();
    // Only the config file's reload has no tenant, and it names no single buyer.
    let find = |records: &[BuyerRecord], id: &str| {
        tenant
            .and_then(|t| records.iter().position(|r| r.is(t, id)))
            .ok_or_else(|| BuyerError::NotFound { id: id.to_string() })
    };
    let answer = match change {
        Change::Reload(file) => {
            let (table, seeded) = table::seed(&records, &file, now, key);
            return Ok((table, seeded, None));
        }
        Change::Create(b) => {
            debug_assert_eq!(
                Some(b.tenant),
                tenant,
                "a definition takes its caller's tenant"
            );
            nothing_of_the_server(&b, None)?;
            if let Some(r) = records.iter().find(|r| r.is(b.tenant, &b.id)) {
                // The same create repeated (say after a 503) is answered again, not refused.
                let same = r.source == Source::Api && table::same_definition(&r.buyer, &b);
                if !same {
                    return Err(BuyerError::Exists { id: b.id });
                }
                r.clone()
            } else {
                if is_full(&records, b.tenant, max_per_tenant) {
                    return Err(BuyerError::TooMany);
                }
                check(&b, config, egress)?;
                let row = BuyerRecord::new(b, Source::Api, now);
                table::put(&mut batch, &row, key);
                records.push(row.clone());
                row
            }
        }
        Change::Replace(mut b) => {
            let i = find(&records, &b.id)?;
            // What the caller sent, before the stored secret (and environment reference) is kept.
            nothing_of_the_server(&b, Some(&records[i].buyer))?;
            keep_secret(&mut b, &records[i].buyer);
            value_replaces_env(&mut b);
            env_secret_stays_home(&b, &records[i].buyer)?;
            check(&b, config, egress)?;
            replace(&mut records[i], b, now, &mut batch, key)
        }
        Change::Patch { id, patch } => {
            let i = find(&records, &id)?;
            if let Some(field) = names_server_env(&patch) {
                return Err(env_refused(field));
            }
            let mut merged =
                serde_json::to_value(&records[i].buyer).expect("buyer definitions serialize");
            merge_patch(&mut merged, patch);
            let mut b = parse_definition(merged, records[i].buyer.tenant, Some(&id))?;
            value_replaces_env(&mut b);
            files_from_the_file_only(&b, Some(&records[i].buyer))?;
            env_secret_stays_home(&b, &records[i].buyer)?;
            check(&b, config, egress)?;
            replace(&mut records[i], b, now, &mut batch, key)
        }
        Change::SetEnabled { id, enabled } => {
            let i = find(&records, &id)?;
            let mut b = records[i].buyer.clone();
            b.enabled = enabled;
            replace(&mut records[i], b, now, &mut batch, key)
        }
        Change::Delete { id } => {
            let i = find(&records, &id)?;
            table::delete(&mut batch, &records[i]);
            records.remove(i)
        }
    };
    Ok((records, batch, Some(answer)))
}

/// Refuses a definition from the API that names anything of the server's own: an environment
/// variable (any `*_env` key, today `auth_header.value_env`) or a file (TLS files other than the
/// stored ones, [`files_from_the_file_only`]). Whoever can call the admin API must not make Gavel
/// send a server secret (`GAVEL_BID_KEY`, `HOME`, any variable) to a URL of their choosing, nor
/// probe the server's files. Secrets sent through the API are values, stored sealed.
fn nothing_of_the_server(b: &BuyerConfig, stored: Option<&BuyerConfig>) -> Result<(), BuyerError> {
    let sent = serde_json::to_value(b).expect("buyer definitions serialize");
    if let Some(field) = names_server_env(&sent) {
        return Err(env_refused(field));
    }
    files_from_the_file_only(b, stored)
}

/// The dotted path (`auth_header.value_env`) of the first `*_env` key with a value in `value`.
fn names_server_env(value: &serde_json::Value) -> Option<String> {
    match value {
        serde_json::Value::Object(map) => map.iter().find_map(|(k, v)| {
            if k.ends_with("_env") && !v.is_null() {
                return Some(k.clone());
            }
            names_server_env(v).map(|inner| format!("{k}.{inner}"))
        }),
        serde_json::Value::Array(items) => items
            .iter()
            .enumerate()
            .find_map(|(i, v)| names_server_env(v).map(|inner| format!("[{i}].{inner}"))),
        _ => None,
    }
}

fn env_refused(field: String) -> BuyerError {
    BuyerError::Invalid {
        field,
        reason: "names an environment variable of the server, which only the config file may; \
                 send the secret itself as `value` (stored sealed, never shown)"
            .into(),
    }
}

/// An auth header value sent through the API replaces the environment reference the config file
/// gave the header (which the merge or the kept secret would otherwise leave beside it, unused).
fn value_replaces_env(b: &mut BuyerConfig) {
    if let Some(h) = b.auth_header.as_mut().filter(|h| h.value.is_some()) {
        h.value_env = None;
    }
}

/// A buyer whose auth header the config file reads from the server's environment (`value_env`)
/// keeps its URLs' scheme, host and port through the API: the API may re-price, pause, re-filter
/// or re-path it, but pointing it elsewhere would send that server-held secret to a host the
/// caller chose. Sending a new auth header value (which replaces the reference) lifts this.
fn env_secret_stays_home(b: &BuyerConfig, stored: &BuyerConfig) -> Result<(), BuyerError> {
    if b.auth_header
        .as_ref()
        .is_none_or(|h| h.value_env.is_none() || h.value.is_some())
    {
        return Ok(());
    }
    let origin = |url: &str| {
        url.parse::<http::Uri>()
            .ok()
            .map(|u| (u.scheme_str().map(str::to_string), u.authority().cloned()))
    };
    for (field, new, old) in [
        ("ping_url", &b.ping_url, &stored.ping_url),
        ("post_url", &b.post_url, &stored.post_url),
    ] {
        if origin(new) != origin(old) {
            return Err(BuyerError::Invalid {
                field: field.to_string(),
                reason: "this buyer's auth header is read from the server's environment \
                         (config file), so its URLs keep their scheme, host and port through \
                         the API; change them in the config file, or send a new auth_header \
                         value with them"
                    .into(),
            });
        }
    }
    Ok(())
}

/// Whether `tenant` already holds `limit` buyers in `records`: only its own count, so a tenant at
/// its limit never stops another from adding one.
fn is_full(records: &[BuyerRecord], tenant: Tenant, limit: usize) -> bool {
    records.iter().filter(|r| r.buyer.tenant == tenant).count() >= limit
}

/// Refuses a definition from the API that names TLS files other than the ones the buyer already
/// has (`stored`, from the config file). The API never makes the server open a path a caller
/// chose: a tenant's admin must not probe the server's files, and a FIFO or device would hang the
/// change. Private CAs and client certificates are set in the config file; the API may still
/// re-price, pause or re-filter such a buyer, keeping its files.
fn files_from_the_file_only(
    b: &BuyerConfig,
    stored: Option<&BuyerConfig>,
) -> Result<(), BuyerError> {
    let files = |c: Option<&BuyerConfig>| {
        let t = c.and_then(|c| c.tls.as_ref());
        [
            ("tls.ca_file", t.and_then(|t| t.ca_file.clone())),
            (
                "tls.client_cert_file",
                t.and_then(|t| t.client_cert_file.clone()),
            ),
            (
                "tls.client_key_file",
                t.and_then(|t| t.client_key_file.clone()),
            ),
        ]
    };
    for ((field, new), (_, old)) in files(Some(b)).into_iter().zip(files(stored)) {
        if new.is_some() && new != old {
            return Err(BuyerError::Invalid {
                field: field.to_string(),
                reason: "TLS files are named in the config file only (reload it with SIGHUP); \
                         through the API a buyer keeps the files it has"
                    .into(),
            });
        }
    }
    Ok(())
}

/// Puts definition `b` into `row` (a change only when it differs; written sealed with `key`) and
/// returns the row.
fn replace(
    row: &mut BuyerRecord,
    b: BuyerConfig,
    now: u64,
    batch: &mut Batch,
    key: &SealKey,
) -> BuyerRecord {
    if !table::same_definition(&row.buyer, &b) {
        row.buyer = b;
        row.updated_ms = now;
        table::put(batch, row, key);
    }
    row.clone()
}

/// A new definition whose auth header names the same header without a value keeps the stored
/// value: answers never show it, so a client sending back what it read must not erase it. The
/// same holds for a format's constant headers, shown empty.
fn keep_secret(b: &mut BuyerConfig, stored: &BuyerConfig) {
    if let (Some(new), Some(old)) = (b.auth_header.as_mut(), stored.auth_header.as_ref()) {
        if new.value.is_none() && new.value_env.is_none() && new.name == old.name {
            new.value = old.value.clone();
            new.value_env = old.value_env.clone();
        }
    }
    // Format headers are shown empty; one sent back empty under the same name keeps its value.
    for (new, old) in [
        (&mut b.ping_format, &stored.ping_format),
        (&mut b.post_format, &stored.post_format),
    ] {
        let (Some(new), Some(old)) = (new.as_mut(), old.as_ref()) else {
            continue;
        };
        for (name, value) in new.headers.iter_mut().filter(|(_, v)| v.is_empty()) {
            if let Some((_, kept)) = old.headers.iter().find(|(n, _)| n == name) {
                value.clone_from(kept);
            }
        }
    }
}

/// RFC 7396 JSON merge patch: objects merge key by key, `null` removes, anything else replaces.
pub(crate) fn merge_patch(target: &mut serde_json::Value, patch: serde_json::Value) {
    match patch {
        serde_json::Value::Object(p) => {
            if !target.is_object() {
                *target = serde_json::Value::Object(Default::default());
            }
            let t = target.as_object_mut().expect("made an object above");
            for (k, v) in p {
                if v.is_null() {
                    t.remove(&k);
                } else {
                    merge_patch(t.entry(k).or_insert(serde_json::Value::Null), v);
                }
            }
        }
        other => *target = other,
    }
}

/// Runs `work` on a short-lived thread (`gavel-buyer-change`) and waits for its result without
/// blocking the core. Buyer changes are rare admin calls, so a thread per change costs nothing
/// that matters, and no thread is kept idle for them.
async fn off_core<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, BuyerError> + Send + 'static,
) -> Result<T, BuyerError> {
    let (tx, rx) = futures::channel::oneshot::channel();
    std::thread::Builder::new()
        .name("gavel-buyer-change".into())
        .spawn(move || {
            let _ = tx.send(work());
        })
        .map_err(|e| BuyerError::Internal(format!("cannot start a thread: {e}")))?;
    rx.await
        .map_err(|_| BuyerError::Internal("the buyer change thread panicked".into()))?
}

/// Installs `next` on every core (this one directly, the others through their inboxes). Every core
/// is tried, also after one failed; the ones missed are named.
async fn broadcast(core: &Rc<Core>, next: Arc<Registry>) -> Result<(), BuyerError> {
    let missed = crate::exchange::app::install_everywhere(core, next.clone(), install).await;
    LAGGING.with(|l| l.set(!missed.is_empty()));
    if missed.is_empty() {
        return Ok(());
    }
    tracing::warn!(cores = ?missed, version = next.version, "buyer change not applied on every core");
    Err(BuyerError::NotApplied { cores: missed })
}

/// Makes `next` this core's snapshot unless the core already holds a newer one.
fn install(core: &Core, next: Arc<Registry>) {
    let mut current = core.registry.borrow_mut();
    if next.version > current.version {
        *current = next;
    }
}

impl crate::runtime::ServerHandle<Exchange> {
    /// Applies a new, fully checked config (`cli::load_config`) to the running server without
    /// dropping a connection or an auction: its buyers through the same path as the admin API
    /// (the ownership rule of [`crate::buyers::table`], durable, installed on every core), its
    /// sellers likewise ([`super::sellers::reload`]), the API listener's certificate and key
    /// (`[server.tls]`, for new connections), its static tokens, lead rules and webhook
    /// endpoints on every core, and the endpoints also to
    /// the webhook worker, which has taken them when this returns. Other sections are not
    /// applied (the caller says which changed).
    /// Blocks the calling thread: call it from the main thread or a test, never from a core.
    pub fn reload(&self, config: &Config) -> Result<(), String> {
        // The listener's certificate first: files that went bad stop the reload before anything
        // else changes.
        self.reload_tls(config)?;
        let (running, running_hooks) = self
            .on_core(BUYERS_CORE, |c| async move {
                (c.auth.borrow().clone(), c.webhooks())
            })
            .ok_or("core 0 was too busy to take the reload; send SIGHUP again")?;
        let auth = Arc::new(
            Auth::from_config(&config.tokens, &config.limits)?.keeping_limits_of(&running),
        );
        // Built here, off the cores: a new endpoint's pending deliveries are counted in the store.
        let hooks = Arc::new(
            running_hooks
                .reloaded(config, &self.shared.store)
                .map_err(|e| e.to_string())?,
        );
        let file = config.buyers.clone();
        let buyers = self
            .on_core(BUYERS_CORE, move |c| async move {
                apply(&c, None, Change::Reload(file), None)
                    .await
                    .map(|_| ())
                    .map_err(|e| format!("{e:?}"))
            })
            .ok_or("core 0 was too busy to take the buyer reload; send SIGHUP again")?;
        // Sellers before tokens, so that no token reaches a core before its seller.
        super::sellers::reload(self, config)?;
        let rules: Arc<[RuleConfig]> = config.rules.clone().into();
        let mut missed = Vec::new();
        for target in 0..self.shared.cores {
            let (auth, rules, hooks) = (auth.clone(), rules.clone(), hooks.clone());
            let taken = self.on_core(target, move |c| async move {
                *c.auth.borrow_mut() = auth;
                *c.rules.borrow_mut() = rules;
                *c.webhooks.borrow_mut() = hooks;
            });
            if taken.is_none() {
                missed.push(target);
            }
        }
        // The worker last: once it has the table, every event queued from now on goes out by it.
        let worker = reload_webhook_worker(hooks);
        buyers.map_err(|e| format!("buyers not reloaded: {e}"))?;
        if !missed.is_empty() {
            return Err(format!(
                "tokens, rules and webhooks not applied on core(s) {missed:?}; send SIGHUP again"
            ));
        }
        worker
    }
}

/// Longest a reload waits for the webhook worker to take the new endpoint table, in milliseconds.
/// The worker answers between two passes, which take milliseconds unless the store stalls.
const WEBHOOK_RELOAD_WAIT_MS: u64 = 5_000;

/// Hands `hooks` to the webhook worker and waits until it delivers by them.
fn reload_webhook_worker(hooks: Arc<crate::webhooks::Webhooks>) -> Result<(), String> {
    let (tx, rx) = crossbeam_channel::bounded(1);
    let wait = std::time::Duration::from_millis(WEBHOOK_RELOAD_WAIT_MS);
    hooks
        .command_wait(
            crate::webhooks::outbox::Command::Reload {
                webhooks: hooks.clone(),
                reply: tx,
            },
            wait,
        )
        .map_err(|_| "the webhook worker did not take the new endpoints; send SIGHUP again")?;
    rx.recv_timeout(wait)
        .map_err(|_| "the webhook worker did not take the new endpoints; send SIGHUP again".into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_merge_patch_replaces_merges_and_removes() {
        let mut v = json!({"floor": 1.5, "filters": {"states": ["TX"], "verticals": ["auto"]}});
        merge_patch(
            &mut v,
            json!({"floor": 7.5, "filters": {"states": ["CA"], "verticals": null}}),
        );
        assert_eq!(v, json!({"floor": 7.5, "filters": {"states": ["CA"]}}));
    }

    #[test]
    fn definitions_take_the_callers_tenant_and_name_bad_fields() {
        let base = json!({"id": "b1", "ping_url": "http://127.0.0.1:1/p", "post_url": "http://127.0.0.1:1/q"});
        let b = parse_definition(base.clone(), Tenant::Production, None).unwrap();
        assert_eq!(b.tenant, Tenant::Production);
        let field = |v: serde_json::Value| match parse_definition(v, Tenant::Sandbox, Some("b1")) {
            Err(BuyerError::Invalid { field, .. }) => field,
            other => panic!("{other:?}"),
        };
        let mut other_tenant = base.clone();
        other_tenant["tenant"] = json!("production");
        assert_eq!(field(other_tenant), "tenant");
        let mut other_id = base.clone();
        other_id["id"] = json!("b2");
        assert_eq!(field(other_id), "id");
        let mut deep = base.clone();
        deep["filters"] = json!({"vehicle_count": {"min": "two"}});
        assert_eq!(field(deep), "filters.vehicle_count.min");
        let mut unknown = base;
        unknown["filters"] = json!({"nope": 1});
        assert_eq!(field(unknown), "filters.nope");
    }

    /// A tenant at its buyer limit does not stop the other tenant (each counts only its own), and
    /// an id one tenant uses is free in the other: the create succeeds, as a second buyer.
    #[test]
    fn a_tenant_at_its_limit_does_not_stop_another() {
        let config = Config::parse("test.toml", "").unwrap();
        let def = |tenant: Tenant, id: &str| {
            parse_definition(
                json!({"id": id, "ping_url": "http://203.0.113.7/p", "post_url": "http://203.0.113.7/q"}),
                tenant,
                None,
            )
            .unwrap()
        };
        let key = SealKey::random();
        let egress = Egress::default();
        let rules = |max_per_tenant| Rules {
            config: &config,
            egress: &egress,
            key: &key,
            max_per_tenant,
        };
        let mut registry = Registry::default();
        for n in 0..3 {
            let b = def(Tenant::Sandbox, &format!("s{n}"));
            let (records, _, _) = edit(
                &rules(3),
                &registry,
                Some(Tenant::Sandbox),
                Change::Create(b),
                1,
            )
            .unwrap();
            registry = registry.next(records, 100.0).unwrap();
        }
        let full = edit(
            &rules(3),
            &registry,
            Some(Tenant::Sandbox),
            Change::Create(def(Tenant::Sandbox, "s3")),
            2,
        );
        assert!(matches!(full, Err(BuyerError::TooMany)), "{full:?}");
        let (records, batch, answer) = edit(
            &rules(3),
            &registry,
            Some(Tenant::Production),
            Change::Create(def(Tenant::Production, "s0")),
            2,
        )
        .expect("production has room of its own, and its own id space");
        assert_eq!(records.len(), 4);
        assert!(!batch.is_empty());
        assert_eq!(answer.unwrap().buyer.tenant, Tenant::Production);
        let next = registry.next(records, 100.0).unwrap();
        assert_eq!(next.index_of(Tenant::Sandbox, "s0"), Some(0));
        assert_eq!(next.index_of(Tenant::Production, "s0"), Some(3));
        // The other tenant's buyer is not found by id.
        let patch = Change::Patch {
            id: "s1".into(),
            patch: json!({"floor": 9}),
        };
        let missing = edit(&rules(3), &next, Some(Tenant::Production), patch, 3);
        assert!(
            matches!(missing, Err(BuyerError::NotFound { .. })),
            "{missing:?}"
        );
    }
}

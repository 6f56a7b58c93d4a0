//! Changing the sellers while Gavel runs: the admin API's create, update (a merge patch), suspend
//! and resume, the implicit seller of a new OAuth client that names no party, and the config
//! file's `[[sellers]]` on `SIGHUP`, all through one path; and the check every seller request
//! passes ([`sending`]).
//!
//! A change follows the buyers' path ([`super::buyers`]): it is decided on one core
//! ([`SELLERS_CORE`]), one at a time, so two changes never start from the same snapshot; checked
//! with the config file's rule (`config::parties::check_seller`); made durable in the seller table
//! ([`crate::parties::table`]), with its audit entry in the same batch; then installed as a new
//! snapshot on every core before the call answers. A core whose inbox is full misses it: the
//! change answers [`SellerError::NotApplied`] naming the cores, and the next change (or the same
//! call repeated) installs the current snapshot everywhere first. A core only takes a snapshot
//! newer than the one it holds.
//!
//! A seller keeps its limit state across changes (`Sellers::keeping_limits_of`): a new ping rate
//! starts from the old budget's position only when unchanged, and the running and unposted
//! auctions counted so far stay counted under new maxima.
//!
//! This module does not speak HTTP (`api::sellers` does) and does not read the config file.

use std::cell::Cell;
use std::rc::Rc;
use std::sync::Arc;

use serde_json::Value;

use super::error::ExchangeError;
use crate::audit::{self, Action, Actor, Target};
use crate::auth::Client;
use crate::config::parties::{check_seller, MAX_SELLERS_PER_TENANT};
use crate::config::{Config, SellerConfig, Tenant};
use crate::exchange::{Core, ServerHandle};
use crate::parties::table::{self, SellerRecord, Source};
use crate::parties::{Seller, Sellers};
use crate::store::{Batch, Store, StoreError};
use crate::types::Clock;

/// The core that decides every seller change, for every tenant.
pub const SELLERS_CORE: usize = 0;

/// The fields a merge patch may change; `enabled` changes through suspend and resume only, and
/// `id` and `tenant` never.
pub const PATCHABLE: [&str; 5] = [
    "name",
    "max_concurrent_auctions",
    "pings_per_s",
    "max_unposted_auctions",
    "reveal_winner",
];

thread_local! {
    /// Seller changes decided on this core, one at a time: a change awaits its commit and its
    /// broadcast, and the next one must start from the snapshot that one left. An async lock
    /// local to the core thread, never held by another thread.
    static CHANGES: Rc<futures::lock::Mutex<()>> = Rc::new(futures::lock::Mutex::new(()));
    /// Whether the last broadcast missed a core: the next change installs the current snapshot
    /// everywhere before doing anything else.
    static LAGGING: Cell<bool> = const { Cell::new(false) };
}

/// Why a seller change was refused or is unfinished; each says who caused it.
#[derive(Debug, thiserror::Error)]
pub enum SellerError {
    /// The caller's: no seller with this id in the caller's tenant.
    #[error("no seller {id} in this tenant")]
    NotFound { id: String },
    /// The caller's: the id is taken in the tenant (by a stored seller, or by the implicit seller
    /// of a credential that names no party).
    #[error("seller {id} exists")]
    Exists { id: String, implicit: bool },
    /// The caller's: the tenant holds [`MAX_SELLERS_PER_TENANT`] sellers.
    #[error("the tenant holds its maximum number of sellers")]
    TooMany,
    /// The caller's: the definition breaks a rule; `field` names it.
    #[error("{field}: {reason}")]
    Invalid { field: String, reason: String },
    /// Gavel's: the change could not be made durable; nothing changed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Gavel's (overload): the change is durable and installed on some cores, but these cores'
    /// inboxes were full; repeating the call finishes it.
    #[error("the change is not applied on core(s) {cores:?}")]
    NotApplied { cores: Vec<usize> },
}

/// One change to the seller table.
#[derive(Debug)]
pub enum Change {
    /// A new seller (`source = api`), checked by [`parse_definition`].
    Create(SellerConfig),
    /// A JSON merge patch (RFC 7396) over seller `id`'s [`PATCHABLE`] fields. An implicit seller
    /// patched becomes a stored one (`source = api`).
    Patch { id: String, patch: Value },
    /// Suspend (`false`) or resume (`true`); an implicit seller becomes a stored one.
    SetEnabled { id: String, enabled: bool },
    /// The implicit seller `id` of a new credential that names no party, unless it exists.
    Implicit { id: String },
    /// The config file's sellers, under the ownership rule of [`crate::parties::table`], and the
    /// implicit sellers of its tokens.
    Reload {
        file: Vec<SellerConfig>,
        implicit_ids: Vec<(Tenant, String)>,
    },
}

/// Reads a new seller's definition from JSON, as the config file's `[[sellers]]` entry writes it.
/// `tenant` is the caller's: a missing `tenant` becomes it, another one is refused.
pub fn parse_definition(mut value: Value, tenant: Tenant) -> Result<SellerConfig, SellerError> {
    let obj = value
        .as_object_mut()
        .ok_or_else(|| invalid("", "the body must be a JSON object"))?;
    match obj.get("tenant") {
        None => {
            obj.insert("tenant".into(), Value::from(tenant.as_str()));
        }
        Some(t) if t.as_str() == Some(tenant.as_str()) => {}
        Some(_) => {
            return Err(invalid(
                "tenant",
                "must be the tenant of your credential (or left out)",
            ))
        }
    }
    let s = deserialize(value)?;
    check(&s, true)?;
    Ok(s)
}

fn invalid(field: &str, reason: &str) -> SellerError {
    SellerError::Invalid {
        field: field.to_string(),
        reason: reason.to_string(),
    }
}

/// A [`SellerConfig`] from JSON; a refusal names the field.
fn deserialize(value: Value) -> Result<SellerConfig, SellerError> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let message = e.inner().to_string();
        // serde names an unknown or missing field in its message, the path only its parent.
        let named = message
            .strip_prefix("unknown field `")
            .or_else(|| message.strip_prefix("missing field `"))
            .and_then(|rest| rest.split('`').next());
        let field = match (path.as_str(), named) {
            (".", Some(n)) => n.to_string(),
            (p, _) => p.to_string(),
        };
        SellerError::Invalid {
            field,
            reason: message,
        }
    })
}

/// The config file's rule for one seller. An implicit seller's id came from its credential's
/// client name, never checked as a party id; patching it must not fail on that, so `with_id`
/// says whether the id is checked.
fn check(s: &SellerConfig, with_id: bool) -> Result<(), SellerError> {
    let mut checked = s.clone();
    if !with_id {
        "implicit".clone_into(&mut checked.id);
    }
    check_seller(&checked).map_err(|(field, reason)| SellerError::Invalid {
        field: field.to_string(),
        reason,
    })
}

/// The seller a request speaks for, when it may send leads: its credential is a seller's
/// (else [`ExchangeError::NotASeller`]), the seller exists (a seller removed from the config
/// file while an OAuth client of it remains: [`ExchangeError::SellerUnknown`]) and is not
/// suspended ([`ExchangeError::SellerSuspended`]).
pub fn sending(core: &Core, client: &Client) -> Result<Arc<Seller>, ExchangeError> {
    let id = super::auction::seller_of(client)?;
    let seller = core
        .sellers()
        .get(client.tenant, id)
        .cloned()
        .ok_or_else(|| ExchangeError::SellerUnknown {
            seller: id.to_string(),
        })?;
    if !seller.enabled() {
        return Err(ExchangeError::SellerSuspended {
            seller: id.to_string(),
        });
    }
    Ok(seller)
}

/// Refuses a suspended (or unknown) seller's request before any work: ping, post, one-call
/// lead and seed call it right after authenticating. Other parties pass (what they may do is
/// each endpoint's own rule).
pub fn refuse_suspended(core: &Core, client: &Client) -> Result<(), ExchangeError> {
    if client.seller().is_some() {
        sending(core, client)?;
    }
    Ok(())
}

/// The seller table at start: the stored rows with the config file's sellers seeded over them
/// (the ownership rule of [`crate::parties::table`]), made durable before any core runs, plus the
/// implicit sellers of the file's tokens and of `oauth_implicit` (OAuth clients that name no
/// party).
pub fn seed(
    store: &Store,
    config: &Config,
    clock: &Clock,
    oauth_implicit: impl IntoIterator<Item = (Tenant, String)>,
) -> Result<Sellers, super::app::StartError> {
    let stored = table::load(store)?;
    let (rows, batch) = table::seed(&stored, &config.sellers, clock.now_ms());
    if !batch.is_empty() {
        store
            .write_durable(&batch)
            .map_err(super::app::StartError::StoreSellerTable)?;
    }
    let implicit_ids = config.implicit_sellers().into_iter().chain(oauth_implicit);
    Ok(Sellers::build(&rows, implicit_ids, &config.limits))
}

/// Applies `change` on [`SELLERS_CORE`] (the caller hands it there), for `tenant` (`None`: the
/// config file, any tenant), on behalf of `by` (whose audit entry goes into the change's batch;
/// `None` for the config file). Returns the seller as it now stands (`None` for a reload).
pub async fn apply(
    core: &Rc<Core>,
    tenant: Option<Tenant>,
    change: Change,
    by: Option<&Actor>,
) -> Result<Option<Arc<Seller>>, SellerError> {
    debug_assert_eq!(
        core.id, SELLERS_CORE,
        "seller changes are decided on one core"
    );
    let changes = CHANGES.with(Rc::clone);
    let _one_at_a_time = changes.lock().await;
    if LAGGING.with(Cell::get) {
        broadcast(core, core.sellers()).await?;
    }
    let current = core.sellers();
    let now = core.shared.clock.now_ms();
    let edit = edit(&current, tenant, change, by, now)?;
    let answer_of = |s: &Sellers| {
        edit.answer
            .as_ref()
            .and_then(|(t, id)| s.get(*t, id).cloned())
    };
    if !edit.changed {
        return Ok(answer_of(&current));
    }
    if !edit.batch.is_empty() {
        core.commit(edit.batch).await?;
    }
    let next = Arc::new(current.next(&edit.rows, edit.implicit_ids, &core.shared.config.limits));
    let answer = answer_of(&next);
    broadcast(core, next).await?;
    Ok(answer)
}

/// What a change makes of the table.
struct Edit {
    rows: Vec<SellerRecord>,
    implicit_ids: Vec<(Tenant, String)>,
    /// The rows' writes and the audit entry.
    batch: Batch,
    /// The seller to answer with.
    answer: Option<(Tenant, String)>,
    /// Whether anything changed (a repeated create, or the implicit seller of a second client of
    /// the same name, changes nothing).
    changed: bool,
}

/// The table after `change`: the rows, the implicit sellers, the writes and the audit entry.
fn edit(
    current: &Sellers,
    tenant: Option<Tenant>,
    change: Change,
    by: Option<&Actor>,
    now: u64,
) -> Result<Edit, SellerError> {
    let mut e = Edit {
        rows: current.records(),
        implicit_ids: current.implicit_ids(),
        batch: Batch::new(),
        answer: None,
        changed: true,
    };
    // The config file's reload names no tenant and no seller.
    let (t, mut row, action, before) = match change {
        Change::Reload { file, implicit_ids } => {
            let (rows, batch) = table::seed(&e.rows, &file, now);
            (e.rows, e.batch) = (rows, batch);
            for id in implicit_ids {
                if !e.implicit_ids.contains(&id) {
                    e.implicit_ids.push(id);
                }
            }
            return Ok(e);
        }
        Change::Implicit { id } => {
            let t = tenant.ok_or_else(|| invalid("tenant", "an implicit seller has a tenant"))?;
            e.changed = current.get(t, &id).is_none();
            if e.changed {
                e.implicit_ids.push((t, id.clone()));
            }
            e.answer = Some((t, id));
            return Ok(e);
        }
        Change::Create(s) => {
            let t = s.tenant;
            e.answer = Some((t, s.id.clone()));
            if let Some(existing) = current.get(t, &s.id) {
                // The same create repeated (say after a 503) is answered again, not refused.
                let same =
                    !existing.implicit && existing.source == Source::Api && existing.config == s;
                if !same {
                    return Err(SellerError::Exists {
                        id: s.id,
                        implicit: existing.implicit,
                    });
                }
                e.changed = false;
                return Ok(e);
            }
            let held = e.rows.iter().filter(|r| r.seller.tenant == t).count();
            if held >= MAX_SELLERS_PER_TENANT {
                return Err(SellerError::TooMany);
            }
            check(&s, true)?;
            (
                t,
                SellerRecord::new(s, Source::Api, now),
                Action::Create,
                None,
            )
        }
        Change::Patch { id, patch } => {
            let (t, seller) = find(current, tenant, &id)?;
            let mut merged =
                serde_json::to_value(&seller.config).expect("seller definitions serialize");
            let fields = patch
                .as_object()
                .ok_or_else(|| invalid("", "a merge patch must be a JSON object"))?;
            if let Some(other) = fields.keys().find(|k| !PATCHABLE.contains(&k.as_str())) {
                return Err(invalid(
                    other,
                    "cannot be changed by a patch (it may change name, max_concurrent_auctions, \
                     pings_per_s, max_unposted_auctions and reveal_winner; enabled through \
                     suspend and resume)",
                ));
            }
            super::buyers::merge_patch(&mut merged, patch);
            let s = deserialize(merged)?;
            check(&s, !seller.implicit)?;
            let row = stored_row(&seller, now);
            (t, replace(row, s, now), Action::Update, Some(seller))
        }
        Change::SetEnabled { id, enabled } => {
            let (t, seller) = find(current, tenant, &id)?;
            let mut s = seller.config.clone();
            s.enabled = enabled;
            let row = stored_row(&seller, now);
            let action = if enabled {
                Action::Resume
            } else {
                Action::Suspend
            };
            (t, replace(row, s, now), action, Some(seller))
        }
    };
    let id = row.seller.id.clone();
    e.answer = Some((t, id.clone()));
    let was_implicit = before.as_ref().is_some_and(|s| s.implicit);
    let unchanged = before
        .as_ref()
        .is_some_and(|s| !s.implicit && s.config == row.seller);
    if unchanged {
        e.changed = false;
        return Ok(e);
    }
    if was_implicit {
        // Stored from now on: an implicit seller changed by the API keeps its change.
        e.implicit_ids.retain(|k| *k != (t, id.clone()));
        row.source = Source::Api;
    }
    table::put(&mut e.batch, &row);
    if let Some(by) = by {
        audit::Entry::new(t, by, action, Target::Seller, &id)
            .before(before.as_ref().map(|s| &s.config))
            .after(Some(&row.seller))
            .put(&mut e.batch, now)?;
    }
    match e
        .rows
        .iter_mut()
        .find(|r| (r.seller.tenant, &r.seller.id) == (t, &id))
    {
        Some(r) => *r = row,
        None => e.rows.push(row),
    }
    Ok(e)
}

/// Seller `id` of `tenant` (the admin API always names one).
fn find(
    current: &Sellers,
    tenant: Option<Tenant>,
    id: &str,
) -> Result<(Tenant, Arc<Seller>), SellerError> {
    let not_found = || SellerError::NotFound { id: id.to_string() };
    let t = tenant.ok_or_else(not_found)?;
    let seller = current.get(t, id).cloned().ok_or_else(not_found)?;
    Ok((t, seller))
}

/// The row a change to `seller` starts from: its own, or a new one for an implicit seller.
fn stored_row(seller: &Seller, now: u64) -> SellerRecord {
    seller
        .record()
        .unwrap_or_else(|| SellerRecord::new(seller.config.clone(), Source::Api, now))
}

/// `row` with definition `s`, its change time moved when the definition differs.
fn replace(mut row: SellerRecord, s: SellerConfig, now: u64) -> SellerRecord {
    if row.seller != s {
        row.seller = s;
        row.updated_ms = now;
    }
    row
}

/// Installs `next` on every core (this one directly, the others through their inboxes). Every core
/// is tried, also after one failed; the ones missed are named.
async fn broadcast(core: &Rc<Core>, next: Arc<Sellers>) -> Result<(), SellerError> {
    let missed = crate::exchange::app::install_everywhere(core, next.clone(), install).await;
    LAGGING.with(|l| l.set(!missed.is_empty()));
    if missed.is_empty() {
        return Ok(());
    }
    tracing::warn!(cores = ?missed, version = next.version, "seller change not applied on every core");
    Err(SellerError::NotApplied { cores: missed })
}

/// Makes `next` this core's seller table unless the core already holds a newer one.
fn install(core: &Core, next: Arc<Sellers>) {
    let mut current = core.sellers.borrow_mut();
    if next.version > current.version {
        *current = next;
    }
}

/// Applies the `[[sellers]]` of a new, fully checked config (and the implicit sellers of its
/// tokens) to the running server through the same path as the admin API. Called by
/// `ServerHandle::reload` before the new tokens are installed, so no token arrives before its
/// seller. Blocks the calling thread: never call it from a core.
pub fn reload(handle: &ServerHandle, config: &Config) -> Result<(), String> {
    let file = config.sellers.clone();
    let implicit_ids = config.implicit_sellers();
    handle
        .on_core(SELLERS_CORE, move |c| async move {
            apply(&c, None, Change::Reload { file, implicit_ids }, None)
                .await
                .map(|_| ())
                .map_err(|e| format!("sellers not reloaded: {e}"))
        })
        .ok_or("core 0 was too busy to take the seller reload; send SIGHUP again")?
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::LimitsConfig;
    use crate::types::Party;
    use serde_json::json;

    fn table(sellers: &[SellerConfig], implicit: &[(Tenant, &str)]) -> Sellers {
        let rows: Vec<_> = sellers
            .iter()
            .map(|s| SellerRecord::new(s.clone(), Source::Config, 1))
            .collect();
        let ids = implicit.iter().map(|(t, id)| (*t, id.to_string()));
        Sellers::build(&rows, ids, &LimitsConfig::default())
    }

    fn ops() -> Actor {
        Actor {
            party: Party::Operator,
            client: "ops".into(),
        }
    }

    #[test]
    fn definitions_take_the_callers_tenant_and_name_bad_fields() {
        let s = parse_definition(json!({"id": "acme"}), Tenant::Production).unwrap();
        assert_eq!((s.tenant, s.enabled), (Tenant::Production, true));
        let field = |v: Value| match parse_definition(v, Tenant::Sandbox) {
            Err(SellerError::Invalid { field, .. }) => field,
            other => panic!("{other:?}"),
        };
        assert_eq!(
            field(json!({"id": "acme", "tenant": "production"})),
            "tenant"
        );
        assert_eq!(field(json!({"id": "Acme"})), "id");
        assert_eq!(
            field(json!({"id": "acme", "pings_per_s": 0})),
            "pings_per_s"
        );
        assert_eq!(field(json!({"id": "acme", "nope": 1})), "nope");
        assert_eq!(field(json!({"name": "x"})), "id");
    }

    #[test]
    fn ids_are_taken_per_tenant_and_implicit_ids_count() {
        let acme = crate::parties::implicit(Tenant::Sandbox, "acme");
        let current = table(std::slice::from_ref(&acme), &[(Tenant::Sandbox, "legacy")]);
        let create = |s: SellerConfig| edit(&current, Some(s.tenant), Change::Create(s), None, 5);
        assert!(matches!(
            create(acme.clone()),
            Err(SellerError::Exists {
                implicit: false,
                ..
            })
        ));
        let legacy = crate::parties::implicit(Tenant::Sandbox, "legacy");
        assert!(matches!(
            create(legacy),
            Err(SellerError::Exists { implicit: true, .. })
        ));
        // The same id in the other tenant is another seller.
        let live = crate::parties::implicit(Tenant::Production, "acme");
        let e = create(live).unwrap();
        assert!(e.changed);
        assert_eq!(e.rows.len(), 2);
    }

    #[test]
    fn a_patch_changes_only_patchable_fields_and_is_audited_in_its_batch() {
        let current = table(&[crate::parties::implicit(Tenant::Sandbox, "acme")], &[]);
        let patch = |p: Value| {
            edit(
                &current,
                Some(Tenant::Sandbox),
                Change::Patch {
                    id: "acme".into(),
                    patch: p,
                },
                Some(&ops()),
                9,
            )
        };
        let e = patch(json!({"name": "Acme", "pings_per_s": 5})).unwrap();
        let row = &e.rows[0];
        assert_eq!(
            (row.seller.name.as_str(), row.seller.pings_per_s),
            ("Acme", Some(5.0))
        );
        assert_eq!((row.created_ms, row.updated_ms), (1, 9));
        // The row and its audit entry.
        assert_eq!(e.batch.len(), 2);
        match patch(json!({"enabled": false})) {
            Err(SellerError::Invalid { field, .. }) => assert_eq!(field, "enabled"),
            other => panic!("{:?}", other.map(|e| e.changed)),
        }
        match patch(json!({"max_unposted_auctions": 0})) {
            Err(SellerError::Invalid { field, .. }) => assert_eq!(field, "max_unposted_auctions"),
            other => panic!("{:?}", other.map(|e| e.changed)),
        }
        // A patch that changes nothing writes nothing.
        assert!(!patch(json!({"name": ""})).unwrap().changed);
    }

    #[test]
    fn suspending_an_implicit_seller_stores_it() {
        let current = table(&[], &[(Tenant::Sandbox, "Legacy.Client")]);
        let e = edit(
            &current,
            Some(Tenant::Sandbox),
            Change::SetEnabled {
                id: "Legacy.Client".into(),
                enabled: false,
            },
            Some(&ops()),
            3,
        )
        .unwrap();
        assert!(e.implicit_ids.is_empty());
        assert_eq!(e.rows.len(), 1);
        assert_eq!(e.rows[0].source, Source::Api);
        assert!(!e.rows[0].seller.enabled);
        let next = current.next(&e.rows, e.implicit_ids, &LimitsConfig::default());
        let s = next.get(Tenant::Sandbox, "Legacy.Client").unwrap();
        assert!(!s.implicit && !s.enabled());
        assert_eq!(next.version, current.version + 1);
    }
}

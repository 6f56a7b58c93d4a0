//! The audit log of admin changes (issue #21, deliverable 5): who made a change (the credential's
//! party and client), what it did (an [`Action`] on a [`Target`] and its id), the changed thing
//! before and after, and when.
//!
//! An entry is written into the very batch that makes its change durable ([`Entry::put`]), so it
//! exists exactly when the change does. Before and after are JSON with every secret masked
//! ([`mask`]) as the entry is built: an entry cannot hold a client secret, an auth header's value,
//! a format's header values or a webhook secret, whoever builds it.
//!
//! This module owns the entry's vocabulary, the masking rule and the conversion to the store's
//! record. It does not decide which changes are audited (each change's own code adds its entry),
//! nor how entries are listed over HTTP (`api::audit`).

use std::sync::atomic::{AtomicU32, Ordering};

use serde::Serialize;
use serde_json::Value;

use crate::auth::Client;
use crate::buyers::table::BuyerRecord;
use crate::store::{AuditRecord, Batch, StoreError};
use crate::types::{Party, Tenant};

/// What an admin change did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Create,
    /// A merge patch or a whole new definition.
    Update,
    /// A buyer stopped being pinged.
    Pause,
    Resume,
    /// A seller's credentials refused.
    Suspend,
    Delete,
    /// An OAuth client's tokens invalidated for good.
    Revoke,
    /// A webhook endpoint disabled by a 410 takes deliveries again.
    Enable,
    /// A webhook event delivered again by hand.
    Replay,
}

impl Action {
    /// Every action, in declaration order.
    pub const ALL: [Action; 9] = [
        Action::Create,
        Action::Update,
        Action::Pause,
        Action::Resume,
        Action::Suspend,
        Action::Delete,
        Action::Revoke,
        Action::Enable,
        Action::Replay,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Action::Create => "create",
            Action::Update => "update",
            Action::Pause => "pause",
            Action::Resume => "resume",
            Action::Suspend => "suspend",
            Action::Delete => "delete",
            Action::Revoke => "revoke",
            Action::Enable => "enable",
            Action::Replay => "replay",
        }
    }

    /// The action a stored entry names; `None` for a word this code does not know.
    pub fn parse(s: &str) -> Option<Action> {
        Action::ALL.into_iter().find(|a| a.as_str() == s)
    }
}

/// What kind of thing an admin change changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    Seller,
    Buyer,
    OauthClient,
    WebhookEndpoint,
    WebhookEvent,
}

impl Target {
    /// Every kind, in declaration order.
    pub const ALL: [Target; 5] = [
        Target::Seller,
        Target::Buyer,
        Target::OauthClient,
        Target::WebhookEndpoint,
        Target::WebhookEvent,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Target::Seller => "seller",
            Target::Buyer => "buyer",
            Target::OauthClient => "oauth_client",
            Target::WebhookEndpoint => "webhook_endpoint",
            Target::WebhookEvent => "webhook_event",
        }
    }

    /// The kind a stored entry names; `None` for a word this code does not know.
    pub fn parse(s: &str) -> Option<Target> {
        Target::ALL.into_iter().find(|t| t.as_str() == s)
    }
}

/// Who made a change: the credential's party and its client name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Actor {
    pub party: Party,
    /// A static token's `client`, or an OAuth client's id.
    pub client: String,
}

impl Actor {
    /// The caller behind an authenticated request.
    pub fn of(client: &Client) -> Actor {
        Actor {
            party: client.party.clone(),
            client: client.name.clone(),
        }
    }
}

/// What replaces a secret's value in an entry.
pub const MASKED: &str = "[masked]";

/// Object keys whose values are secrets wherever they appear: a buyer's auth header value (and
/// the environment variable it is read from), sealed values, and anything named like a secret,
/// password or token.
fn is_secret_key(key: &str) -> bool {
    let k = key.to_ascii_lowercase();
    matches!(
        k.as_str(),
        "value" | "value_env" | "authorization" | "api_key" | "apikey"
    ) || ["secret", "sealed", "password", "token", "sha256"]
        .iter()
        .any(|s| k.contains(s))
}

/// Masks every secret in `v`: the value of each secret-named key ([`is_secret_key`]), and every
/// value of a `headers` object (a buyer format's constant headers carry its API keys as often as
/// not). Masked values become [`MASKED`]; `null` stays `null` (nothing was set).
pub fn mask(v: &mut Value) {
    match v {
        Value::Object(map) => {
            for (k, child) in map.iter_mut() {
                if is_secret_key(k) {
                    mask_whole(child);
                } else if k.eq_ignore_ascii_case("headers") {
                    match child {
                        Value::Object(headers) => headers.values_mut().for_each(mask_whole),
                        other => mask_whole(other),
                    }
                } else {
                    mask(child);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(mask),
        _ => {}
    }
}

fn mask_whole(v: &mut Value) {
    if !v.is_null() {
        *v = Value::String(MASKED.into());
    }
}

// Architecture Invariant [audit-same-batch]: an entry is written in the batch of the change it
// records, and masks secrets as it is built.
/// One admin change on its way into the log.
#[derive(Debug, Clone)]
pub struct Entry {
    pub tenant: Tenant,
    pub actor: Actor,
    pub action: Action,
    pub target: Target,
    pub target_id: String,
    /// Masked; `None` for a creation.
    pub before: Option<Value>,
    /// Masked; `None` for a deletion.
    pub after: Option<Value>,
}

impl Entry {
    /// An entry for `action` on the `target` named `target_id`, by `actor`, in `tenant`, with
    /// neither before nor after yet.
    pub fn new(
        tenant: Tenant,
        actor: &Actor,
        action: Action,
        target: Target,
        target_id: &str,
    ) -> Entry {
        Entry {
            tenant,
            actor: actor.clone(),
            action,
            target,
            target_id: target_id.to_string(),
            before: None,
            after: None,
        }
    }

    /// Sets the thing as it was, masked.
    pub fn before(mut self, thing: Option<&impl Serialize>) -> Entry {
        self.before = thing.map(masked);
        self
    }

    /// Sets the thing as it now is, masked.
    pub fn after(mut self, thing: Option<&impl Serialize>) -> Entry {
        self.after = thing.map(masked);
        self
    }

    /// The stored form, made at `now_ms` with a fresh id.
    pub fn record(&self, now_ms: u64) -> AuditRecord {
        let text = |v: &Option<Value>| v.as_ref().map(Value::to_string);
        AuditRecord {
            id: entry_id(now_ms),
            tenant: self.tenant.as_str().to_string(),
            created_ms: now_ms,
            party: self.actor.party.to_string(),
            client: self.actor.client.clone(),
            action: self.action.as_str().to_string(),
            target_kind: self.target.as_str().to_string(),
            target_id: self.target_id.clone(),
            before_json: text(&self.before),
            after_json: text(&self.after),
        }
    }

    /// Adds this entry, made at `now_ms`, to the batch of the change it describes.
    pub fn put(&self, batch: &mut Batch, now_ms: u64) -> Result<(), StoreError> {
        batch.put_audit(&self.record(now_ms)).map(|_| ())
    }
}

/// The entry of buyer change `action` by `by` whose row is now `row` (for a delete, the row
/// removed), with the row as it was in `before` (the table the change started from).
pub fn buyer_entry(by: &Actor, action: Action, before: &[BuyerRecord], row: &BuyerRecord) -> Entry {
    let b = &row.buyer;
    let was = before
        .iter()
        .find(|r| r.buyer.id == b.id && r.buyer.tenant == b.tenant);
    let now = (action != Action::Delete).then_some(row);
    Entry::new(b.tenant, by, action, Target::Buyer, &b.id)
        .before(was)
        .after(now)
}

/// Entries made by this process so far: orders the ids of one millisecond.
static SEQUENCE: AtomicU32 = AtomicU32::new(0);

/// `aud_` + a ULID of `now_ms` whose random part starts with a process-wide sequence number, so
/// entries of the same millisecond (a manual clock, a burst of changes) list in the order they
/// were made; the remaining 48 bits are random.
fn entry_id(now_ms: u64) -> String {
    let seq = u128::from(SEQUENCE.fetch_add(1, Ordering::Relaxed));
    let random = ulid::Ulid::new().random() & ((1u128 << 48) - 1);
    format!(
        "aud_{}",
        ulid::Ulid::from_parts(now_ms, (seq << 48) | random)
    )
}

/// `thing` as JSON with its secrets masked.
fn masked(thing: &impl Serialize) -> Value {
    // The things audited are plain config and record types; one that cannot become JSON is shown
    // as null rather than failing the change it describes.
    let mut v = serde_json::to_value(thing).unwrap_or(Value::Null);
    mask(&mut v);
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn secrets_are_masked_wherever_they_sit() {
        let mut v = json!({
            "id": "b1",
            "auth_header": {"name": "X-Key", "value": "s3cret", "value_env": "ENV"},
            "post_format": {"headers": {"X-Api-Key": "k1"}, "fields": {"api": {"value": "GAVEL"}}},
            "client_secret": "gv_test_cs_x",
            "secret_sha256": "ab",
            "secrets": ["whsec_1"],
            "floor": 2.5,
            "nothing": {"value": null},
        });
        mask(&mut v);
        let text = v.to_string();
        for secret in [
            "s3cret",
            "ENV",
            "k1",
            "GAVEL",
            "gv_test_cs_x",
            "whsec_1",
            "\"ab\"",
        ] {
            assert!(!text.contains(secret), "{secret} leaked: {text}");
        }
        assert_eq!(v["auth_header"]["name"], "X-Key");
        assert_eq!(v["auth_header"]["value"], MASKED);
        assert_eq!(v["post_format"]["headers"]["X-Api-Key"], MASKED);
        assert_eq!(v["secrets"], MASKED);
        assert_eq!(v["floor"], 2.5);
        assert_eq!(v["nothing"]["value"], Value::Null);
    }

    #[test]
    fn an_entry_becomes_a_record_with_its_words() {
        let actor = Actor {
            party: Party::Operator,
            client: "ops".into(),
        };
        let e = Entry::new(
            Tenant::Sandbox,
            &actor,
            Action::Suspend,
            Target::Seller,
            "acme",
        )
        .before(Some(&json!({"enabled": true})))
        .after(Some(&json!({"enabled": false})));
        let r = e.record(42);
        assert!(r.id.starts_with("aud_"));
        assert_eq!(
            (r.party.as_str(), r.action.as_str(), r.target_kind.as_str()),
            ("operator", "suspend", "seller")
        );
        assert_eq!(r.before_json.as_deref(), Some(r#"{"enabled":true}"#));
        let later = e.record(42);
        assert!(
            later.id > r.id,
            "ids of one millisecond follow creation order"
        );
        for a in Action::ALL {
            assert_eq!(Action::parse(a.as_str()), Some(a));
        }
        for t in Target::ALL {
            assert_eq!(Target::parse(t.as_str()), Some(t));
        }
    }
}

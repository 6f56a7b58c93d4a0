//! The durable buyer table: one row per buyer (its definition in config form, where it came from,
//! when it was created and last changed), kept in the store's meta tree under
//! `buyer/<tenant>/<id>` ([`meta_key`]), and the ownership rule between the config file and the
//! admin API.
//!
//! A buyer is named by its tenant and its id together: each tenant has its own id space, so the
//! same id may name one buyer in the sandbox and another in production, and nothing one tenant
//! does with its ids tells it about the other's. Rows written before ids were scoped (under
//! `buyer/<id>`) are read and moved to their scoped key at start ([`load`]).
//!
//! Ownership rule, per (tenant, id): at start and on `SIGHUP` every buyer the file names is
//! upserted (the file wins for the buyers it names, and the row becomes `source = config`), and a
//! `source = config` row the file no longer names is deleted. Rows the admin API created
//! (`source = api`) are kept across restarts and reloads. An API change to a config buyer lasts
//! until the next reload or restart.
//!
//! Secrets are stored sealed ([`super::seal`]): a row keeps its definition with the auth header's
//! value and the formats' header values taken out, and beside it, in `sealed`, each of those
//! values encrypted and bound to its buyer and field. Rows written before sealing (plaintext
//! values in the definition, no `sealed`) still read, and are rewritten sealed at start.
//!
//! This module owns the rows, which of a definition's fields are secrets, and that rule; it does
//! not build buyers ([`super::Registry`]) nor apply a change to the cores
//! (`crate::exchange::buyers`).

use serde::{Deserialize, Serialize};

use super::seal::{SealError, SealKey};
use crate::config::{BuyerConfig, Tenant};
use crate::store::{Batch, Store, StoreError};

// Architecture Invariant [buyer-ids-per-tenant]: buyer rows are keyed `buyer/<tenant>/<id>`; one
// tenant can neither fill the table for another nor learn which ids another uses.
/// Key prefix of buyer rows in the store's meta tree; `<tenant>/<id>` follows it (`<id>` alone in
/// rows written before ids were scoped by tenant).
pub const META_PREFIX: &str = "buyer/";

/// Where a buyer's current definition came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// The config file: the file owns it (see the module's ownership rule).
    Config,
    /// The admin API: kept until the API deletes it or the file names its id.
    Api,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Config => "config",
            Source::Api => "api",
        }
    }
}

/// One stored buyer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BuyerRecord {
    /// The definition, in the config file's form (floor in USD).
    pub buyer: BuyerConfig,
    pub source: Source,
    pub created_ms: u64,
    pub updated_ms: u64,
}

impl BuyerRecord {
    pub fn new(buyer: BuyerConfig, source: Source, now_ms: u64) -> BuyerRecord {
        BuyerRecord {
            buyer,
            source,
            created_ms: now_ms,
            updated_ms: now_ms,
        }
    }

    /// Whether this row is buyer `id` of `tenant`.
    pub fn is(&self, tenant: Tenant, id: &str) -> bool {
        self.buyer.tenant == tenant && self.buyer.id == id
    }
}

/// The meta key of the row of buyer `id` of `tenant`.
pub fn meta_key(tenant: Tenant, id: &str) -> String {
    format!("{META_PREFIX}{}/{id}", tenant.as_str())
}

/// Whether two definitions are the same buyer setup. Compared in serialized form so that a field
/// added to [`BuyerConfig`] takes part without this function knowing of it.
pub fn same_definition(a: &BuyerConfig, b: &BuyerConfig) -> bool {
    // Compared as text, not as JSON values: a format's fields are a table whose order is part of
    // the definition (the buyer receives them in that order), and JSON objects compare unordered.
    serde_json::to_vec(a).ok() == serde_json::to_vec(b).ok()
}

/// A row as it is stored: the record with its secrets taken out of the definition, and those
/// secrets sealed beside it.
#[derive(Serialize, Deserialize)]
struct StoredRow {
    buyer: BuyerConfig,
    source: Source,
    created_ms: u64,
    updated_ms: u64,
    /// Absent in rows written before secrets were sealed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    sealed: Vec<SealedValue>,
}

/// One secret of a stored definition: the field it belongs in ([`take_secrets`]' names) and its
/// value sealed under `<tenant>/<id>/<field>`.
#[derive(Serialize, Deserialize)]
struct SealedValue {
    field: String,
    value: String,
}

/// Takes every secret out of `b`, as `(field, value)`: the auth header's value
/// (`auth_header.value`) and each format header's value (`ping_format.headers[0]`, by position,
/// since the position is what a header keeps).
fn take_secrets(b: &mut BuyerConfig) -> Vec<(String, String)> {
    let mut out = Vec::new();
    if let Some(v) = b.auth_header.as_mut().and_then(|h| h.value.take()) {
        out.push(("auth_header.value".to_string(), v));
    }
    for (name, format) in [
        ("ping_format", &mut b.ping_format),
        ("post_format", &mut b.post_format),
    ] {
        for (i, (_, v)) in format
            .iter_mut()
            .flat_map(|f| f.headers.iter_mut())
            .enumerate()
        {
            out.push((format!("{name}.headers[{i}]"), std::mem::take(v)));
        }
    }
    out
}

/// Why the stored buyer table could not be read at start: Gavel's own store (or a sealing key
/// changed under it), never a seller's or a buyer's doing.
#[derive(Debug, thiserror::Error)]
pub enum TableError {
    #[error("cannot read the buyer table: {0}")]
    Read(#[source] StoreError),
    #[error("buyer row {key} cannot be read: {source}")]
    Row {
        key: String,
        #[source]
        source: RowError,
    },
}

/// Why one stored buyer row could not be read back.
#[derive(Debug, thiserror::Error)]
pub enum RowError {
    #[error("{0}")]
    Json(#[from] serde_json::Error),
    #[error("{0}")]
    Sealed(#[from] SealError),
    #[error("a sealed value names no field of the definition: {0}")]
    UnknownField(String),
}

/// Puts a secret taken by [`take_secrets`] back into its field of `b`.
fn give_secret(b: &mut BuyerConfig, field: &str, value: String) -> Result<(), RowError> {
    let missing = || RowError::UnknownField(field.to_string());
    if field == "auth_header.value" {
        b.auth_header.as_mut().ok_or_else(missing)?.value = Some(value);
        return Ok(());
    }
    let (format, rest) = if let Some(rest) = field.strip_prefix("ping_format.") {
        (&mut b.ping_format, rest)
    } else if let Some(rest) = field.strip_prefix("post_format.") {
        (&mut b.post_format, rest)
    } else {
        return Err(missing());
    };
    let i: usize = rest
        .strip_prefix("headers[")
        .and_then(|r| r.strip_suffix(']'))
        .and_then(|n| n.parse().ok())
        .ok_or_else(missing)?;
    let header = format
        .as_mut()
        .and_then(|f| f.headers.get_mut(i))
        .ok_or_else(missing)?;
    header.1 = value;
    Ok(())
}

/// What a sealed value of buyer `b`'s `field` is bound to.
fn binding(b: &BuyerConfig, field: &str) -> String {
    format!("{}/{}/{field}", b.tenant.as_str(), b.id)
}

/// `record` as stored, its secrets sealed with `key`.
fn encode(record: &BuyerRecord, key: &SealKey) -> Vec<u8> {
    let mut buyer = record.buyer.clone();
    let sealed = take_secrets(&mut buyer)
        .into_iter()
        .map(|(field, plain)| SealedValue {
            value: key.seal(&binding(&buyer, &field), &plain),
            field,
        })
        .collect();
    let row = StoredRow {
        buyer,
        source: record.source,
        created_ms: record.created_ms,
        updated_ms: record.updated_ms,
        sealed,
    };
    serde_json::to_vec(&row).expect("buyer records serialize")
}

/// A stored row read back, its secrets opened with `key` (or, failing that, `older`), and whether
/// it must be written again: it held plaintext secrets (written before sealing) or was sealed
/// with `older`.
fn decode(
    bytes: &[u8],
    key: &SealKey,
    older: Option<&SealKey>,
) -> Result<(BuyerRecord, bool), RowError> {
    let row: StoredRow = serde_json::from_slice(bytes)?;
    let mut buyer = row.buyer;
    let mut rewrite = row.sealed.is_empty() && !take_secrets(&mut buyer.clone()).is_empty();
    for s in row.sealed {
        let aad = binding(&buyer, &s.field);
        let plain = match (key.open(&aad, &s.value), older) {
            (Ok(plain), _) => plain,
            (Err(e), None) => return Err(e.into()),
            (Err(e), Some(older)) => {
                rewrite = true;
                older.open(&aad, &s.value).map_err(|_| e)?
            }
        };
        give_secret(&mut buyer, &s.field, plain)?;
    }
    let record = BuyerRecord {
        buyer,
        source: row.source,
        created_ms: row.created_ms,
        updated_ms: row.updated_ms,
    };
    Ok((record, rewrite))
}

/// Adds `record`'s row to `batch`, its secrets sealed with `key`.
pub fn put(batch: &mut Batch, record: &BuyerRecord, key: &SealKey) {
    batch.put_meta(
        &meta_key(record.buyer.tenant, &record.buyer.id),
        encode(record, key),
    );
}

/// Adds the removal of `record`'s row to `batch`.
pub fn delete(batch: &mut Batch, record: &BuyerRecord) {
    batch.delete_meta(&meta_key(record.buyer.tenant, &record.buyer.id));
}

/// Every stored row, its secrets opened with `key` (or `older`, the key that sealed them before
/// `key` replaced it), by creation time, tenant and id (the caller puts the file's rows in file
/// order), and the writes that bring older rows up to date: a row under `buyer/<id>` is rewritten
/// under `buyer/<tenant>/<id>` ([`meta_key`]) and its old key removed (when both keys hold the
/// same buyer, the scoped row wins and the old one is only removed), and a row with plaintext
/// secrets, or sealed with `older`, is rewritten sealed with `key`. Read at start, off the cores.
pub fn load(
    store: &Store,
    key: &SealKey,
    older: Option<&SealKey>,
) -> Result<(Vec<BuyerRecord>, Batch), TableError> {
    let rows = store
        .meta_with_prefix(META_PREFIX)
        .map_err(TableError::Read)?;
    let mut scoped = Vec::with_capacity(rows.len());
    let mut moved = Vec::new();
    let mut batch = Batch::new();
    for (row_key, value) in rows {
        let (record, rewrite) = decode(&value, key, older).map_err(|source| TableError::Row {
            key: row_key.clone(),
            source,
        })?;
        if row_key != meta_key(record.buyer.tenant, &record.buyer.id) {
            moved.push((row_key, record));
            continue;
        }
        if rewrite {
            put(&mut batch, &record, key);
        }
        scoped.push(record);
    }
    for (old_key, record) in moved {
        batch.delete_meta(&old_key);
        if !scoped
            .iter()
            .any(|r| r.is(record.buyer.tenant, &record.buyer.id))
        {
            put(&mut batch, &record, key);
            scoped.push(record);
        }
    }
    scoped.sort_by(|a, b| {
        (a.created_ms, a.buyer.tenant, &a.buyer.id).cmp(&(
            b.created_ms,
            b.buyer.tenant,
            &b.buyer.id,
        ))
    });
    Ok((scoped, batch))
}

/// Applies the ownership rule: the table after the file `file` is (re)read over `current`, and the
/// writes that make it durable (secrets sealed with `key`). The file's buyers come first, in file
/// order; API buyers follow in their current order. A file buyer whose definition did not change
/// keeps its row as it was.
pub fn seed(
    current: &[BuyerRecord],
    file: &[BuyerConfig],
    now_ms: u64,
    key: &SealKey,
) -> (Vec<BuyerRecord>, Batch) {
    let mut batch = Batch::new();
    let mut table = Vec::with_capacity(file.len() + current.len());
    for b in file {
        let old = current.iter().find(|r| r.is(b.tenant, &b.id));
        let row = match old {
            Some(r) if r.source == Source::Config && same_definition(&r.buyer, b) => r.clone(),
            Some(r) => {
                let mut row = BuyerRecord::new(b.clone(), Source::Config, now_ms);
                row.created_ms = r.created_ms;
                put(&mut batch, &row, key);
                row
            }
            None => {
                let row = BuyerRecord::new(b.clone(), Source::Config, now_ms);
                put(&mut batch, &row, key);
                row
            }
        };
        table.push(row);
    }
    for r in current {
        if file.iter().any(|b| r.is(b.tenant, &b.id)) {
            continue;
        }
        match r.source {
            Source::Api => table.push(r.clone()),
            Source::Config => delete(&mut batch, r),
        }
    }
    (table, batch)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Tenant;

    fn buyer(id: &str, floor: i64) -> BuyerConfig {
        buyer_of(Tenant::Sandbox, id, floor)
    }

    fn buyer_of(tenant: Tenant, id: &str, floor: i64) -> BuyerConfig {
        let tenant = tenant.as_str();
        let text = format!(
            r#"id = "{id}"
tenant = "{tenant}"
ping_url = "http://127.0.0.1:1/ping"
post_url = "http://127.0.0.1:1/post"
floor = {floor}"#
        );
        toml::from_str(&text).unwrap()
    }

    #[test]
    fn a_record_round_trips_through_json_with_its_floor_in_usd() {
        let mut b = buyer("acme", 5);
        b.floor = 250;
        let r = BuyerRecord::new(b, Source::Api, 7);
        let text = serde_json::to_string(&r).unwrap();
        assert!(text.contains(r#""floor":2.50"#), "{text}");
        let json: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(json["source"], "api");
        let back: BuyerRecord = serde_json::from_value(json).unwrap();
        assert_eq!(back.buyer.floor, 250);
        assert_eq!(back.buyer.tenant, Tenant::Sandbox);
        assert!(same_definition(&back.buyer, &r.buyer));
    }

    #[test]
    fn direct_post_tls_and_format_fields_round_trip_in_order() {
        let text = r#"id = "acme"
tenant = "sandbox"
fixed_price = 12.5
post_url = "https://127.0.0.1:1/post"
tls = { server_name = "buyer.test", ca_file = "/etc/gavel/ca.pem" }
[post_format]
encoding = "form"
headers = { "X-Api-Key" = "k1" }
[post_format.fields]
zip = { from = "lead.zip" }
email = { from = "lead.email" }
api = { value = "GAVEL" }
[post_format.answer]
type = "xml"
lead_id = "/result/@id"
"#;
        let b: BuyerConfig = toml::from_str(text).unwrap();
        let r = BuyerRecord::new(b, Source::Config, 1);
        let json = serde_json::to_string(&r).unwrap();
        assert!(json.contains(r#""fixed_price":12.50"#), "{json}");
        let back: BuyerRecord = serde_json::from_str(&json).unwrap();
        assert_eq!(back.buyer.fixed_price, Some(1250));
        let fields: Vec<&str> = back
            .buyer
            .post_format
            .as_ref()
            .unwrap()
            .fields
            .iter()
            .map(|(k, _)| k.as_str())
            .collect();
        assert_eq!(fields, ["zip", "email", "api"]);
        assert_eq!(
            back.buyer.tls.as_ref().unwrap().server_name.as_deref(),
            Some("buyer.test")
        );
        assert!(same_definition(&back.buyer, &r.buyer));
        let mut reordered = back.buyer.clone();
        reordered.post_format.as_mut().unwrap().fields.swap(0, 1);
        assert!(
            !same_definition(&reordered, &r.buyer),
            "field order is part of a definition"
        );
    }

    #[test]
    fn the_file_wins_for_its_ids_and_drops_config_rows_it_no_longer_names() {
        let current = vec![
            BuyerRecord::new(buyer("old_config", 1), Source::Config, 1),
            BuyerRecord::new(buyer("api_one", 1), Source::Api, 2),
            BuyerRecord::new(buyer("shared", 1), Source::Api, 3),
            BuyerRecord::new(buyer("same", 1), Source::Config, 4),
        ];
        let file = [buyer("same", 1), buyer("shared", 9), buyer("new", 2)];
        let (table, batch) = seed(&current, &file, 100, &SealKey::random());
        let ids: Vec<_> = table.iter().map(|r| r.buyer.id.as_str()).collect();
        assert_eq!(ids, ["same", "shared", "new", "api_one"]);
        // Unchanged: not rewritten, timestamps kept.
        assert_eq!(table[0].updated_ms, 4);
        // The file took over an API row: source and definition are the file's, creation kept.
        assert_eq!(table[1].source, Source::Config);
        assert_eq!(table[1].buyer.floor, 900);
        assert_eq!((table[1].created_ms, table[1].updated_ms), (3, 100));
        assert_eq!(table[3].source, Source::Api);
        assert!(!batch.is_empty());
    }

    /// The same id in two tenants is two buyers: the file naming one does not take over, keep or
    /// delete the other's row.
    #[test]
    fn the_ownership_rule_holds_per_tenant_and_id() {
        let current = vec![
            BuyerRecord::new(buyer_of(Tenant::Production, "twin", 1), Source::Api, 1),
            BuyerRecord::new(buyer_of(Tenant::Production, "gone", 1), Source::Config, 2),
        ];
        let file = [
            buyer_of(Tenant::Sandbox, "twin", 3),
            buyer_of(Tenant::Sandbox, "gone", 3),
        ];
        let (table, batch) = seed(&current, &file, 100, &SealKey::random());
        let names: Vec<_> = table
            .iter()
            .map(|r| (r.buyer.tenant, r.buyer.id.as_str(), r.source))
            .collect();
        assert_eq!(
            names,
            [
                (Tenant::Sandbox, "twin", Source::Config),
                (Tenant::Sandbox, "gone", Source::Config),
                (Tenant::Production, "twin", Source::Api),
            ]
        );
        assert_eq!(table[2].buyer.floor, 100, "production's twin is untouched");
        assert!(!batch.is_empty());
    }

    /// Rows stored under `buyer/<id>` (before ids were scoped by tenant) still load, and move to
    /// their scoped key; a buyer stored under both keys keeps its scoped row.
    #[test]
    fn rows_under_the_unscoped_key_still_load_and_move() {
        let store = Store::temporary().unwrap();
        let key = SealKey::random();
        let old = BuyerRecord::new(buyer_of(Tenant::Production, "p_alpha", 4), Source::Api, 7);
        let both_old = BuyerRecord::new(buyer("dup", 1), Source::Api, 8);
        let both_new = BuyerRecord::new(buyer("dup", 2), Source::Api, 9);
        let mut batch = Batch::new();
        batch.put_meta("buyer/p_alpha", serde_json::to_vec(&old).unwrap());
        batch.put_meta("buyer/dup", serde_json::to_vec(&both_old).unwrap());
        put(&mut batch, &both_new, &key);
        store.write_durable(&batch).unwrap();

        let (records, moves) = load(&store, &key, None).unwrap();
        let names: Vec<_> = records
            .iter()
            .map(|r| (r.buyer.tenant, r.buyer.id.as_str(), r.buyer.floor))
            .collect();
        assert_eq!(
            names,
            [
                (Tenant::Production, "p_alpha", 400),
                (Tenant::Sandbox, "dup", 200)
            ]
        );
        store.write_durable(&moves).unwrap();
        assert!(store.get_meta("buyer/p_alpha").unwrap().is_none());
        assert!(store.get_meta("buyer/dup").unwrap().is_none());
        assert!(store
            .get_meta(&meta_key(Tenant::Production, "p_alpha"))
            .unwrap()
            .is_some());
        let (again, nothing) = load(&store, &key, None).unwrap();
        assert_eq!(again.len(), 2);
        assert!(nothing.is_empty(), "moved once, at the first start");
    }

    fn with_secrets() -> BuyerConfig {
        let text = r#"id = "acme"
tenant = "production"
ping_url = "http://203.0.113.1/ping"
post_url = "http://203.0.113.1/post"
auth_header = { name = "Authorization", value = "Bearer s3cret-auth" }
[ping_format]
headers = { "X-Api-Key" = "s3cret-ping", "X-Vendor" = "gavel" }
[ping_format.fields]
zip = { from = "zip3" }
[post_format]
headers = { "X-Api-Key" = "s3cret-post" }
[post_format.fields]
email = { from = "lead.email" }
"#;
        toml::from_str(text).unwrap()
    }

    /// Secrets are stored sealed: no value appears in the stored bytes, they open with the key
    /// into the same definition, and not with another key.
    #[test]
    fn secrets_are_stored_sealed_and_read_back() {
        let store = Store::temporary().unwrap();
        let key = SealKey::random();
        let record = BuyerRecord::new(with_secrets(), Source::Api, 5);
        let mut batch = Batch::new();
        put(&mut batch, &record, &key);
        store.write_durable(&batch).unwrap();
        let stored = store
            .get_meta(&meta_key(Tenant::Production, "acme"))
            .unwrap()
            .unwrap();
        let text = String::from_utf8(stored).unwrap();
        for secret in ["s3cret", "gavel"] {
            assert!(!text.contains(secret), "{secret} in {text}");
        }
        assert!(
            text.contains(r#""field":"ping_format.headers[1]""#),
            "{text}"
        );
        let (records, rewrites) = load(&store, &key, None).unwrap();
        assert!(same_definition(&records[0].buyer, &record.buyer));
        assert!(rewrites.is_empty());
        let e = load(&store, &SealKey::random(), None).unwrap_err();
        assert!(e.to_string().contains("does not open"), "{e}");
        assert!(
            matches!(
                &e,
                TableError::Row {
                    source: RowError::Sealed(SealError::WrongKey),
                    ..
                }
            ),
            "{e:?}"
        );
        // A key that replaced this one reads the row through it and seals it again.
        let next = SealKey::random();
        let (records, rewrites) = load(&store, &next, Some(&key)).unwrap();
        assert!(same_definition(&records[0].buyer, &record.buyer));
        store.write_durable(&rewrites).unwrap();
        let (records, _) = load(&store, &next, None).unwrap();
        assert!(same_definition(&records[0].buyer, &record.buyer));
    }

    /// A row written before secrets were sealed (plaintext in its definition) still reads, and
    /// is rewritten sealed.
    #[test]
    fn a_plaintext_row_still_reads_and_is_sealed_again() {
        let store = Store::temporary().unwrap();
        let record = BuyerRecord::new(with_secrets(), Source::Api, 5);
        let key = meta_key(Tenant::Production, "acme");
        let mut batch = Batch::new();
        batch.put_meta(&key, serde_json::to_vec(&record).unwrap());
        store.write_durable(&batch).unwrap();
        let seal = SealKey::random();
        let (records, rewrites) = load(&store, &seal, None).unwrap();
        assert!(same_definition(&records[0].buyer, &record.buyer));
        assert!(!rewrites.is_empty());
        store.write_durable(&rewrites).unwrap();
        let text = String::from_utf8(store.get_meta(&key).unwrap().unwrap()).unwrap();
        assert!(!text.contains("s3cret"), "{text}");
        let (records, rewrites) = load(&store, &seal, None).unwrap();
        assert!(same_definition(&records[0].buyer, &record.buyer));
        assert!(rewrites.is_empty());
    }
}

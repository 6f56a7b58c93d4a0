//! The durable buyer table: one row per buyer (its definition in config form, where it came from,
//! when it was created and last changed), kept in the store's meta tree under [`META_PREFIX`], and
//! the ownership rule between the config file and the admin API.
//!
//! Ownership rule: at start and on `SIGHUP` every buyer the file names is upserted (the file wins
//! for the ids it names, and the row becomes `source = config`), and a `source = config` row the
//! file no longer names is deleted. Rows the admin API created (`source = api`) are kept across
//! restarts and reloads. An API change to a config buyer lasts until the next reload or restart.
//!
//! This module owns the rows and that rule; it does not build buyers ([`super::Registry`]) nor
//! apply a change to the cores (`crate::exchange::buyers`).

use serde::{Deserialize, Serialize};

use crate::config::BuyerConfig;
use crate::store::{Batch, Store};

/// Key prefix of buyer rows in the store's meta tree; the buyer id follows it.
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
}

/// The meta key of buyer `id`'s row.
pub fn meta_key(id: &str) -> String {
    format!("{META_PREFIX}{id}")
}

/// Whether two definitions are the same buyer setup. Compared in serialized form so that a field
/// added to [`BuyerConfig`] takes part without this function knowing of it.
pub fn same_definition(a: &BuyerConfig, b: &BuyerConfig) -> bool {
    // Compared as text, not as JSON values: a format's fields are a table whose order is part of
    // the definition (the buyer receives them in that order), and JSON objects compare unordered.
    serde_json::to_vec(a).ok() == serde_json::to_vec(b).ok()
}

/// Adds `record`'s row to `batch`.
pub fn put(batch: &mut Batch, record: &BuyerRecord) {
    let json = serde_json::to_vec(record).expect("buyer records serialize");
    batch.put_meta(&meta_key(&record.buyer.id), json);
}

/// Every stored row, in table order: `source = config` rows first (the caller re-sorts them by the
/// file), then by creation time and id. Read at start, off the cores.
pub fn load(store: &Store) -> Result<Vec<BuyerRecord>, String> {
    let rows = store
        .meta_with_prefix(META_PREFIX)
        .map_err(|e| format!("cannot read the buyer table: {e}"))?;
    let mut records = rows
        .into_iter()
        .map(|(k, v)| {
            serde_json::from_slice::<BuyerRecord>(&v)
                .map_err(|e| format!("buyer row {k} is damaged: {e}"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    records.sort_by(|a, b| (a.created_ms, &a.buyer.id).cmp(&(b.created_ms, &b.buyer.id)));
    Ok(records)
}

/// Applies the ownership rule: the table after the file `file` is (re)read over `current`, and the
/// writes that make it durable. The file's buyers come first, in file order; API buyers follow in
/// their current order. A file buyer whose definition did not change keeps its row as it was.
pub fn seed(
    current: &[BuyerRecord],
    file: &[BuyerConfig],
    now_ms: u64,
) -> (Vec<BuyerRecord>, Batch) {
    let mut batch = Batch::new();
    let mut table = Vec::with_capacity(file.len() + current.len());
    for b in file {
        let old = current.iter().find(|r| r.buyer.id == b.id);
        let row = match old {
            Some(r) if r.source == Source::Config && same_definition(&r.buyer, b) => r.clone(),
            Some(r) => {
                let mut row = BuyerRecord::new(b.clone(), Source::Config, now_ms);
                row.created_ms = r.created_ms;
                put(&mut batch, &row);
                row
            }
            None => {
                let row = BuyerRecord::new(b.clone(), Source::Config, now_ms);
                put(&mut batch, &row);
                row
            }
        };
        table.push(row);
    }
    for r in current {
        if file.iter().any(|b| b.id == r.buyer.id) {
            continue;
        }
        match r.source {
            Source::Api => table.push(r.clone()),
            Source::Config => {
                batch.delete_meta(&meta_key(&r.buyer.id));
            }
        }
    }
    (table, batch)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Tenant;

    fn buyer(id: &str, floor: i64) -> BuyerConfig {
        let text = format!(
            r#"id = "{id}"
tenant = "sandbox"
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
        let (table, batch) = seed(&current, &file, 100);
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
}

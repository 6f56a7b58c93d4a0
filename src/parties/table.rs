//! The durable seller table: one row per configured or API-created seller (its definition in
//! config form, where it came from, when it was created and last changed), kept in the store's
//! meta tree under `seller/<tenant>/<id>`, and the ownership rule between the config file and the
//! admin API.
//!
//! Ownership rule (the buyer table's, `buyers::table`): at start and on `SIGHUP` every seller the
//! file names is upserted (the file wins for the (tenant, id) it names, and the row becomes
//! `source = config`), and a `source = config` row the file no longer names is deleted. Rows the
//! admin API created (`source = api`) are kept across restarts and reloads. An API change to a
//! config seller lasts until the next reload or restart. Implicit sellers (of tokens and OAuth
//! clients that name no party) are not rows: they are made up again from their credentials.
//!
//! This module owns the rows and that rule; it does not build the snapshot ([`super::Sellers`])
//! nor apply a change to the cores (`exchange::sellers`).

use serde::{Deserialize, Serialize};

use crate::config::{SellerConfig, Tenant};
use crate::store::{Batch, Store, StoreError};

/// Key prefix of seller rows in the store's meta tree; `<tenant>/<id>` follows it.
pub const META_PREFIX: &str = "seller/";

/// Where a seller's current definition came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// The config file: the file owns it (see the module's ownership rule).
    Config,
    /// The admin API: kept until the file names the same (tenant, id).
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

/// One stored seller.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SellerRecord {
    pub seller: SellerConfig,
    pub source: Source,
    pub created_ms: u64,
    pub updated_ms: u64,
}

impl SellerRecord {
    pub fn new(seller: SellerConfig, source: Source, now_ms: u64) -> SellerRecord {
        SellerRecord {
            seller,
            source,
            created_ms: now_ms,
            updated_ms: now_ms,
        }
    }

    fn key(&self) -> (Tenant, &str) {
        (self.seller.tenant, &self.seller.id)
    }
}

/// The meta key of seller `id` of `tenant`.
pub fn meta_key(tenant: Tenant, id: &str) -> String {
    format!("{META_PREFIX}{}/{id}", tenant.as_str())
}

/// Adds `record`'s row to `batch`.
pub fn put(batch: &mut Batch, record: &SellerRecord) {
    let json = serde_json::to_vec(record).expect("seller records serialize");
    batch.put_meta(&meta_key(record.seller.tenant, &record.seller.id), json);
}

/// Why the stored seller table could not be read at start: Gavel's own store, never a party's
/// doing.
#[derive(Debug, thiserror::Error)]
pub enum TableError {
    #[error("cannot read the seller table: {0}")]
    Read(#[source] StoreError),
    #[error("seller row {key} is damaged: {source}")]
    Damaged {
        key: String,
        #[source]
        source: serde_json::Error,
    },
}

/// Every stored row, by creation time, tenant and id. Read at start, off the cores.
pub fn load(store: &Store) -> Result<Vec<SellerRecord>, TableError> {
    let rows = store
        .meta_with_prefix(META_PREFIX)
        .map_err(TableError::Read)?;
    let mut records = rows
        .into_iter()
        .map(|(key, v)| {
            serde_json::from_slice::<SellerRecord>(&v)
                .map_err(|source| TableError::Damaged { key, source })
        })
        .collect::<Result<Vec<_>, _>>()?;
    records.sort_by(|a, b| (a.created_ms, a.key()).cmp(&(b.created_ms, b.key())));
    Ok(records)
}

/// Applies the ownership rule: the table after the file's sellers `file` are (re)read over
/// `current`, and the writes that make it durable. The file's sellers come first, in file order;
/// API sellers follow in their current order. A file seller whose definition did not change keeps
/// its row as it was.
pub fn seed(
    current: &[SellerRecord],
    file: &[SellerConfig],
    now_ms: u64,
) -> (Vec<SellerRecord>, Batch) {
    let mut batch = Batch::new();
    let mut table = Vec::with_capacity(file.len() + current.len());
    let named = |r: &SellerRecord| file.iter().any(|s| (s.tenant, s.id.as_str()) == r.key());
    for s in file {
        let old = current
            .iter()
            .find(|r| r.key() == (s.tenant, s.id.as_str()));
        let row = match old {
            Some(r) if r.source == Source::Config && r.seller == *s => r.clone(),
            Some(r) => {
                let mut row = SellerRecord::new(s.clone(), Source::Config, now_ms);
                row.created_ms = r.created_ms;
                put(&mut batch, &row);
                row
            }
            None => {
                let row = SellerRecord::new(s.clone(), Source::Config, now_ms);
                put(&mut batch, &row);
                row
            }
        };
        table.push(row);
    }
    for r in current.iter().filter(|r| !named(r)) {
        match r.source {
            Source::Api => table.push(r.clone()),
            Source::Config => {
                batch.delete_meta(&meta_key(r.seller.tenant, &r.seller.id));
            }
        }
    }
    (table, batch)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seller(tenant: Tenant, id: &str, name: &str) -> SellerConfig {
        let mut s = crate::parties::implicit(tenant, id);
        s.name = name.into();
        s
    }

    #[test]
    fn a_row_round_trips_through_json() {
        let mut s = seller(Tenant::Production, "acme", "Acme");
        s.pings_per_s = Some(12.5);
        s.max_unposted_auctions = Some(3);
        let r = SellerRecord::new(s, Source::Api, 7);
        let json = serde_json::to_string(&r).unwrap();
        assert!(json.contains(r#""source":"api""#), "{json}");
        assert_eq!(serde_json::from_str::<SellerRecord>(&json).unwrap(), r);
        assert_eq!(
            meta_key(Tenant::Production, "acme"),
            "seller/production/acme"
        );
    }

    #[test]
    fn the_file_wins_for_its_tenant_and_id_and_drops_config_rows_it_no_longer_names() {
        let (sb, pr) = (Tenant::Sandbox, Tenant::Production);
        let current = vec![
            SellerRecord::new(seller(sb, "old_config", ""), Source::Config, 1),
            SellerRecord::new(seller(sb, "api_one", ""), Source::Api, 2),
            SellerRecord::new(seller(sb, "shared", "api"), Source::Api, 3),
            SellerRecord::new(seller(sb, "same", ""), Source::Config, 4),
            // Another tenant's seller with the same id is another seller.
            SellerRecord::new(seller(pr, "shared", "live"), Source::Api, 5),
        ];
        let file = [
            seller(sb, "same", ""),
            seller(sb, "shared", "file"),
            seller(sb, "new", ""),
        ];
        let (table, batch) = seed(&current, &file, 100);
        let keys: Vec<_> = table
            .iter()
            .map(|r| (r.seller.tenant, r.seller.id.as_str()))
            .collect();
        assert_eq!(
            keys,
            [
                (sb, "same"),
                (sb, "shared"),
                (sb, "new"),
                (sb, "api_one"),
                (pr, "shared")
            ]
        );
        assert_eq!(table[0].updated_ms, 4, "an unchanged row is not rewritten");
        assert_eq!(table[1].source, Source::Config);
        assert_eq!(table[1].seller.name, "file");
        assert_eq!((table[1].created_ms, table[1].updated_ms), (3, 100));
        assert_eq!(table[4].seller.name, "live");
        assert!(!batch.is_empty());
    }
}

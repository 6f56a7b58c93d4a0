//! The sellers Gavel knows and their running state: the seller table every core holds as an
//! immutable snapshot (`Arc<Sellers>`), each seller with its limits shared by every core.
//!
//! This module owns which sellers exist (configured in `[[sellers]]`, and the implicit sellers of
//! tokens that name no party), whether each is suspended, whether its view reveals the winning
//! buyer, and the one [`SellerLimits`] object per seller that every core counts against; `table`
//! keeps the durable rows the snapshot is built from. It does not own authentication (`auth` says
//! which party a credential is), nor how a party's view is enforced (`api`), nor how a change
//! reaches the cores (`exchange::sellers`).

pub mod table;

use std::collections::HashMap;
use std::sync::Arc;

use crate::config::{Config, LimitsConfig, SellerConfig, Tenant};
use crate::limits::SellerLimits;
use table::{SellerRecord, Source};

/// One seller as the cores hold it.
#[derive(Debug)]
pub struct Seller {
    /// The definition (as configured, or made up for an implicit seller).
    pub config: SellerConfig,
    /// No `[[sellers]]` entry: the seller of a token (or OAuth client) that names no party.
    pub implicit: bool,
    /// Counted by every core: the same object for as long as the seller's limits stay the same
    /// (and, when they change, one that goes on counting what this one counted).
    pub limits: Arc<SellerLimits>,
    /// Where its definition came from (an implicit seller's is [`Source::Config`]: its token's).
    pub source: Source,
    /// When its row was created and last changed (unix ms); 0 for an implicit seller.
    pub created_ms: u64,
    pub updated_ms: u64,
}

impl Seller {
    pub fn id(&self) -> &str {
        &self.config.id
    }

    /// A suspended seller's credentials are refused.
    pub fn enabled(&self) -> bool {
        self.config.enabled
    }

    /// Its durable row; `None` for an implicit seller, which has none.
    pub fn record(&self) -> Option<SellerRecord> {
        (!self.implicit).then(|| SellerRecord {
            seller: self.config.clone(),
            source: self.source,
            created_ms: self.created_ms,
            updated_ms: self.updated_ms,
        })
    }
}

/// Limits of one seller from its definition, defaults from `[limits]`.
pub fn limits_of(s: &SellerConfig, l: &LimitsConfig) -> SellerLimits {
    SellerLimits::new(
        s.pings_per_s.unwrap_or(l.seller_pings_per_s),
        s.max_concurrent_auctions
            .unwrap_or(l.seller_max_concurrent_auctions),
        s.max_unposted_auctions
            .unwrap_or(l.seller_max_unposted_auctions),
    )
}

/// The definition of an implicit seller: a token's client (or an OAuth client id) with the
/// default limits.
pub fn implicit(tenant: Tenant, id: &str) -> SellerConfig {
    SellerConfig {
        id: id.to_string(),
        name: String::new(),
        tenant,
        max_concurrent_auctions: None,
        pings_per_s: None,
        max_unposted_auctions: None,
        reveal_winner: false,
        enabled: true,
    }
}

// Architecture Invariant [seller-snapshot]: an immutable snapshot on every core; changes are
// decided on core 0, durable first, then installed everywhere before the call answers.
/// Every seller of every tenant: an immutable snapshot, replaced whole when sellers change.
#[derive(Debug, Default)]
pub struct Sellers {
    /// Grows by one with every change: a core takes only a snapshot newer than the one it holds.
    pub version: u64,
    /// Sellers by tenant, then id: a request looks its seller up by the borrowed id, with no
    /// allocation (every ping and post does, before any work).
    by_tenant: HashMap<Tenant, HashMap<String, Arc<Seller>>>,
}

impl Sellers {
    /// The configured sellers plus the implicit sellers of tokens that name no party (no rows
    /// read: for tests and tools; a server builds from its table, [`Sellers::build`]).
    pub fn from_config(config: &Config) -> Sellers {
        let rows: Vec<SellerRecord> = config
            .sellers
            .iter()
            .map(|c| SellerRecord::new(c.clone(), Source::Config, 0))
            .collect();
        Sellers::build(&rows, config.implicit_sellers(), &config.limits)
    }

    /// The sellers of table `rows`, plus an implicit seller for each of `implicit_ids` that no row
    /// names.
    pub fn build(
        rows: &[SellerRecord],
        implicit_ids: impl IntoIterator<Item = (Tenant, String)>,
        l: &LimitsConfig,
    ) -> Sellers {
        let mut s = Sellers::default();
        for r in rows {
            s.put(
                r.seller.clone(),
                false,
                r.source,
                (r.created_ms, r.updated_ms),
                l,
            );
        }
        for (tenant, id) in implicit_ids {
            if s.get(tenant, &id).is_none() {
                s.put(implicit(tenant, &id), true, Source::Config, (0, 0), l);
            }
        }
        s
    }

    /// The snapshot after this one: `rows` and `implicit_ids` as [`Sellers::build`] makes them, each
    /// seller keeping this snapshot's limit state ([`Sellers::keeping_limits_of`]), one version
    /// newer.
    pub fn next(
        &self,
        rows: &[SellerRecord],
        implicit_ids: impl IntoIterator<Item = (Tenant, String)>,
        l: &LimitsConfig,
    ) -> Sellers {
        let mut next = Sellers::build(rows, implicit_ids, l).keeping_limits_of(self);
        next.version = self.version + 1;
        next
    }

    /// The rows of this snapshot (every seller but the implicit ones), by creation time, tenant
    /// and id.
    pub fn records(&self) -> Vec<SellerRecord> {
        let mut rows: Vec<SellerRecord> = self.all().filter_map(|s| s.record()).collect();
        rows.sort_by(|a, b| {
            (a.created_ms, a.seller.tenant, &a.seller.id).cmp(&(
                b.created_ms,
                b.seller.tenant,
                &b.seller.id,
            ))
        });
        rows
    }

    /// The (tenant, id) of every implicit seller.
    pub fn implicit_ids(&self) -> Vec<(Tenant, String)> {
        let mut ids: Vec<_> = self
            .all()
            .filter(|s| s.implicit)
            .map(|s| (s.config.tenant, s.config.id.clone()))
            .collect();
        ids.sort();
        ids
    }

    fn put(
        &mut self,
        config: SellerConfig,
        implicit: bool,
        source: Source,
        (created_ms, updated_ms): (u64, u64),
        l: &LimitsConfig,
    ) {
        let limits = Arc::new(limits_of(&config, l));
        self.by_tenant.entry(config.tenant).or_default().insert(
            config.id.clone(),
            Arc::new(Seller {
                config,
                implicit,
                limits,
                source,
                created_ms,
                updated_ms,
            }),
        );
    }

    /// The seller `id` of `tenant`.
    pub fn get(&self, tenant: Tenant, id: &str) -> Option<&Arc<Seller>> {
        self.by_tenant.get(&tenant)?.get(id)
    }

    /// Every seller of `tenant`, in id order.
    pub fn of_tenant(&self, tenant: Tenant) -> Vec<&Arc<Seller>> {
        let mut v: Vec<_> = self
            .by_tenant
            .get(&tenant)
            .into_iter()
            .flat_map(HashMap::values)
            .collect();
        v.sort_by(|a, b| a.config.id.cmp(&b.config.id));
        v
    }

    /// Every seller of every tenant, in no order.
    fn all(&self) -> impl Iterator<Item = &Arc<Seller>> {
        self.by_tenant.values().flat_map(HashMap::values)
    }

    pub fn len(&self) -> usize {
        self.by_tenant.values().map(HashMap::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// This table, with each seller that `old` holds keeping `old`'s limit state: the same
    /// limits object when its limits are unchanged, else one with the new limits over the same
    /// counts. A change must not hand a seller a fresh ping budget nor forget its running and
    /// unposted auctions.
    pub fn keeping_limits_of(mut self, old: &Sellers) -> Sellers {
        let sellers = self.by_tenant.values_mut().flat_map(HashMap::values_mut);
        for seller in sellers {
            let Some(prev) = old.get(seller.config.tenant, &seller.config.id) else {
                continue;
            };
            let limits = if prev.limits.same_limits(&seller.limits) {
                prev.limits.clone()
            } else {
                Arc::new(prev.limits.retuned(&seller.limits))
            };
            *seller = Arc::new(Seller {
                config: seller.config.clone(),
                implicit: seller.implicit,
                limits,
                source: seller.source,
                created_ms: seller.created_ms,
                updated_ms: seller.updated_ms,
            });
        }
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(text: &str) -> Config {
        Config::parse("t.toml", text).unwrap()
    }

    #[test]
    fn configured_and_implicit_sellers() {
        let c = config(
            r#"
[[sellers]]
id = "acme"
tenant = "production"
max_concurrent_auctions = 7

[[tokens]]
client = "acme-1"
tenant = "production"
seller = "acme"
sha256 = "0000000000000000000000000000000000000000000000000000000000000000"
scopes = ["ping"]

[[tokens]]
client = "legacy"
tenant = "sandbox"
sha256 = "1111111111111111111111111111111111111111111111111111111111111111"
scopes = ["ping"]
"#,
        );
        let s = Sellers::from_config(&c);
        assert_eq!(s.len(), 2);
        let acme = s.get(Tenant::Production, "acme").unwrap();
        assert!(!acme.implicit);
        assert_eq!(acme.limits.auctions.max(), 7);
        assert!(s.get(Tenant::Sandbox, "acme").is_none());
        assert!(s.get(Tenant::Sandbox, "legacy").unwrap().implicit);
        // A rebuilt table keeps the running counters of sellers whose limits did not change.
        let again = Sellers::from_config(&c).keeping_limits_of(&s);
        assert!(Arc::ptr_eq(
            &again.get(Tenant::Production, "acme").unwrap().limits,
            &acme.limits
        ));
        // A changed limit keeps counting what the seller holds under the old one.
        let running = acme.limits.auctions.try_acquire().unwrap();
        let mut rows = again.records();
        rows[0].seller.max_concurrent_auctions = Some(1);
        let next = again.next(&rows, again.implicit_ids(), &c.limits);
        assert_eq!(next.version, again.version + 1);
        let changed = next.get(Tenant::Production, "acme").unwrap();
        assert_eq!(changed.limits.auctions.max(), 1);
        assert!(changed.limits.auctions.try_acquire().is_none());
        drop(running);
        assert!(changed.limits.auctions.try_acquire().is_some());
        assert_eq!(next.of_tenant(Tenant::Sandbox).len(), 1);
        assert_eq!(
            next.implicit_ids(),
            [(Tenant::Sandbox, "legacy".to_string())]
        );
    }
}

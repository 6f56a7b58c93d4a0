//! The sellers Gavel knows and their running state: the seller table every core holds as an
//! immutable snapshot (`Arc<Sellers>`), each seller with its limits shared by every core.
//!
//! This module owns which sellers exist (configured in `[[sellers]]`, and the implicit sellers of
//! tokens that name no party), whether each is suspended, whether its view reveals the winning
//! buyer, and the one [`SellerLimits`] object per seller that every core counts against. It does
//! not own authentication (`auth` says which party a credential is), nor how a party's view is
//! enforced (`api`), nor the admin API that changes sellers.

use std::collections::HashMap;
use std::sync::Arc;

use crate::config::{Config, LimitsConfig, SellerConfig, Tenant};
use crate::limits::SellerLimits;

/// One seller as the cores hold it.
#[derive(Debug)]
pub struct Seller {
    /// The definition (as configured, or made up for an implicit seller).
    pub config: SellerConfig,
    /// No `[[sellers]]` entry: the seller of a token (or OAuth client) that names no party.
    pub implicit: bool,
    /// Counted by every core: the same object for as long as the seller's limits stay the same.
    pub limits: Arc<SellerLimits>,
}

impl Seller {
    pub fn id(&self) -> &str {
        &self.config.id
    }

    /// A suspended seller's credentials are refused.
    pub fn enabled(&self) -> bool {
        self.config.enabled
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

/// Every seller of every tenant: an immutable snapshot, replaced whole when sellers change.
#[derive(Debug, Default)]
pub struct Sellers {
    by_key: HashMap<(Tenant, String), Arc<Seller>>,
}

impl Sellers {
    /// The configured sellers plus the implicit sellers of tokens that name no party.
    pub fn from_config(config: &Config) -> Sellers {
        let mut s = Sellers::default();
        for c in &config.sellers {
            s.put(c.clone(), false, &config.limits);
        }
        for (tenant, id) in config.implicit_sellers() {
            if s.get(tenant, &id).is_none() {
                s.put(implicit(tenant, &id), true, &config.limits);
            }
        }
        s
    }

    fn put(&mut self, config: SellerConfig, implicit: bool, l: &LimitsConfig) {
        let limits = Arc::new(limits_of(&config, l));
        self.by_key.insert(
            (config.tenant, config.id.clone()),
            Arc::new(Seller {
                config,
                implicit,
                limits,
            }),
        );
    }

    /// The seller `id` of `tenant`.
    pub fn get(&self, tenant: Tenant, id: &str) -> Option<&Arc<Seller>> {
        // A borrowed key would need a second map type; seller lookups are one per request.
        self.by_key.get(&(tenant, id.to_string()))
    }

    /// Adds the implicit seller `id` of `tenant` unless it exists (an OAuth client that names
    /// no party, loaded from the store).
    pub fn with_implicit(mut self, tenant: Tenant, id: &str, l: &LimitsConfig) -> Sellers {
        if self.get(tenant, id).is_none() {
            self.put(implicit(tenant, id), true, l);
        }
        self
    }

    /// Every seller of `tenant`, in id order.
    pub fn of_tenant(&self, tenant: Tenant) -> Vec<&Arc<Seller>> {
        let mut v: Vec<_> = self
            .by_key
            .iter()
            .filter(|((t, _), _)| *t == tenant)
            .map(|(_, s)| s)
            .collect();
        v.sort_by(|a, b| a.config.id.cmp(&b.config.id));
        v
    }

    pub fn len(&self) -> usize {
        self.by_key.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_key.is_empty()
    }

    /// This table, with each seller whose limits are unchanged from `old` keeping `old`'s limit
    /// state: a change must not hand a seller a fresh ping budget nor forget its running auctions.
    pub fn keeping_limits_of(mut self, old: &Sellers) -> Sellers {
        for (key, seller) in self.by_key.iter_mut() {
            let Some(prev) = old.by_key.get(key) else {
                continue;
            };
            if prev.limits.same_limits(&seller.limits) {
                *seller = Arc::new(Seller {
                    config: seller.config.clone(),
                    implicit: seller.implicit,
                    limits: prev.limits.clone(),
                });
            }
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
    }
}

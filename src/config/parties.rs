//! The `[[sellers]]` section and which party each `[[tokens]]` entry speaks for.
//!
//! This module owns the sellers' schema, their per-seller limits as the file writes them, and the
//! checks that tie a token to an existing party (a seller of the same tenant, a buyer of the same
//! tenant, or the operator). It does not own the running seller table (`parties` does) nor how
//! a party's view is enforced (`api::views`).

use serde::Deserialize;

use super::{Config, ConfigError, Tenant, RATE_PER_S};
use crate::types::party::{is_party_id, Party};

/// Most sellers Gavel holds per tenant (config file and admin API together).
pub const MAX_SELLERS_PER_TENANT: usize = 10_000;
/// Longest seller display name, in characters.
pub const MAX_SELLER_NAME_CHARS: usize = 200;

/// A seller: a party that sends leads. Its auctions, leads, OAuth clients and webhook endpoints
/// are its own; no other seller sees them.
#[derive(Debug, Clone, PartialEq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct SellerConfig {
    /// Stable id: `a-z`, `0-9`, `_`, `-`, at most 64 characters. Scopes the seller's own ids.
    pub id: String,
    /// Display name for operators.
    #[serde(default)]
    pub name: String,
    pub tenant: Tenant,
    /// Auctions this seller may have running at once, all its credentials and cores together
    /// (default `limits.seller_max_concurrent_auctions`).
    #[serde(default)]
    pub max_concurrent_auctions: Option<u32>,
    /// Pings per second this seller may send, all its credentials together
    /// (default `limits.seller_pings_per_s`).
    #[serde(default)]
    pub pings_per_s: Option<f64>,
    /// Auctions this seller may hold won but not yet posted, all cores together
    /// (default `limits.seller_max_unposted_auctions`).
    #[serde(default)]
    pub max_unposted_auctions: Option<u32>,
    /// Whether this seller's view of its auctions names the winning buyer (off by default: which
    /// buyers bid is the operator's business).
    #[serde(default)]
    pub reveal_winner: bool,
    /// A suspended seller's credentials are refused (`403 seller_suspended`).
    #[serde(default = "yes")]
    pub enabled: bool,
}

fn yes() -> bool {
    true
}

impl Config {
    /// Checks `[[sellers]]` and that every token names one party that exists in its tenant.
    pub(super) fn validate_parties(&self, file: &str) -> Result<(), ConfigError> {
        let bad = |key: String, reason: String| ConfigError::Invalid {
            file: file.to_string(),
            key,
            reason,
        };
        let mut seen = std::collections::BTreeSet::new();
        for (i, s) in self.sellers.iter().enumerate() {
            check_seller(s)
                .map_err(|(field, reason)| bad(format!("sellers[{i}].{field}"), reason))?;
            if !seen.insert((s.tenant, s.id.as_str())) {
                return Err(bad(
                    format!("sellers[{i}].id"),
                    format!(
                        "seller {:?} appears twice in tenant {}",
                        s.id,
                        s.tenant.as_str()
                    ),
                ));
            }
        }
        for t in [Tenant::Sandbox, Tenant::Production] {
            let n = self.sellers.iter().filter(|s| s.tenant == t).count();
            if n > MAX_SELLERS_PER_TENANT {
                return Err(bad(
                    "sellers".into(),
                    format!(
                        "at most {MAX_SELLERS_PER_TENANT} sellers per tenant, got {n} in {}",
                        t.as_str()
                    ),
                ));
            }
        }
        for (i, t) in self.tokens.iter().enumerate() {
            let named = usize::from(t.operator)
                + usize::from(t.seller.is_some())
                + usize::from(t.buyer.is_some());
            if named > 1 {
                return Err(bad(
                    format!("tokens[{i}]"),
                    "a token belongs to one party: set at most one of `operator`, `seller`, `buyer`".into(),
                ));
            }
            if let Some(id) = &t.seller {
                if !self
                    .sellers
                    .iter()
                    .any(|s| &s.id == id && s.tenant == t.tenant)
                {
                    return Err(bad(
                        format!("tokens[{i}].seller"),
                        format!(
                            "no seller {id:?} of tenant {} is configured in [[sellers]]",
                            t.tenant.as_str()
                        ),
                    ));
                }
            }
        }
        let implicit = self.implicit_sellers();
        for (i, w) in self.webhooks.iter().enumerate() {
            let Some(id) = &w.seller else { continue };
            let configured = self
                .sellers
                .iter()
                .any(|s| &s.id == id && s.tenant == w.tenant);
            if !configured && !implicit.iter().any(|(t, s)| s == id && *t == w.tenant) {
                return Err(bad(
                    format!("webhooks[{i}].seller"),
                    format!(
                        "no seller {id:?} of tenant {} is configured in [[sellers]] or named by a token's client",
                        w.tenant.as_str()
                    ),
                ));
            }
        }
        Ok(())
    }

    /// The seller ids that tokens without a party speak for: each such token is a seller token of
    /// an implicit seller named by its `client` (how configs written before parties keep working).
    pub fn implicit_sellers(&self) -> Vec<(Tenant, String)> {
        let mut out: Vec<(Tenant, String)> = self
            .tokens
            .iter()
            .filter(|t| !t.operator && t.seller.is_none() && t.buyer.is_none())
            .map(|t| (t.tenant, t.client.clone()))
            .collect();
        out.sort();
        out.dedup();
        out
    }
}

/// Checks one seller definition alone (the file's and the admin API's rule); the error names the
/// field and says why.
pub fn check_seller(s: &SellerConfig) -> Result<(), (&'static str, String)> {
    if !is_party_id(&s.id) {
        return Err((
            "id",
            "must be 1..=64 characters of a-z, 0-9, `_` and `-`".into(),
        ));
    }
    if s.name.chars().count() > MAX_SELLER_NAME_CHARS || s.name.chars().any(char::is_control) {
        return Err((
            "name",
            format!(
                "must be at most {MAX_SELLER_NAME_CHARS} characters without control characters"
            ),
        ));
    }
    if s.max_concurrent_auctions == Some(0) {
        return Err(("max_concurrent_auctions", "must be at least 1".into()));
    }
    if s.max_unposted_auctions == Some(0) {
        return Err(("max_unposted_auctions", "must be at least 1".into()));
    }
    if let Some(r) = s.pings_per_s {
        if !RATE_PER_S.contains(&r) {
            return Err((
                "pings_per_s",
                format!(
                    "must be {}..={} per second, got {r}",
                    RATE_PER_S.start(),
                    RATE_PER_S.end()
                ),
            ));
        }
    }
    Ok(())
}

impl super::TokenConfig {
    /// The party this token speaks for: the operator, its seller, its buyer, or (no party named)
    /// the implicit seller named by its client.
    pub fn party(&self) -> Party {
        if self.operator {
            Party::Operator
        } else if let Some(b) = &self.buyer {
            Party::Buyer(b.clone())
        } else {
            Party::Seller(self.seller.clone().unwrap_or_else(|| self.client.clone()))
        }
    }
}

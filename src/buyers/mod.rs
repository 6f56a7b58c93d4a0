//! Buyers as Gavel sees them: the registry built from config, eligibility filters and the per-core
//! outbound connection pool.
//!
//! This module owns "who may be pinged for this lead" and "how bytes reach a buyer". It does not
//! decide who wins ([`crate::auction`]) and it does not implement buyers ([`crate::sandbox`]).
//!
//! The registry is a snapshot: a change to the buyers (admin API, `SIGHUP`) builds a new
//! [`Registry`] and every core swaps its `Arc` for it, while an auction keeps the one it started
//! with. [`table`] owns the durable form of the buyer list, from which snapshots are built, and
//! [`seal`] the cipher its secrets are stored under. [`egress`] decides which addresses a buyer
//! URL, and each connection to a buyer, may reach.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderName, HeaderValue};

use crate::config::{BuyerConfig, Tenant};
use crate::model::{Cents, Ping};
use crate::types::clock::Clock;

mod attributes;
pub mod egress;
pub mod format;
pub mod pool;
pub mod resolve;
pub mod seal;
pub mod table;
pub mod tls;

use pool::Target;

/// Which of a buyer's filters kept it from being pinged for a lead. [`FilterReason::as_str`] is the
/// `reject_reason` of its `filtered` outcome in the auction record and the auction API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FilterReason {
    VerticalNotAllowed,
    StateNotAllowed,
    Zip3Denied,
    Zip3NotAllowed,
    BelowMinQualityScore,
    TcpaConsentRequired,
    SourceDenied,
    SourceNotAllowed,
    SubVerticalNotAllowed,
    CurrentlyInsuredMismatch,
    VehicleCountOutOfRange,
    DriverAgeBandNotAllowed,
    AttributeNotEqual,
    AttributeNotAllowed,
    AttributeDenied,
    AttributeOutOfRange,
    AttributeMissing,
}

impl FilterReason {
    pub fn as_str(self) -> &'static str {
        match self {
            FilterReason::VerticalNotAllowed => "vertical_not_allowed",
            FilterReason::StateNotAllowed => "state_not_allowed",
            FilterReason::Zip3Denied => "zip3_denied",
            FilterReason::Zip3NotAllowed => "zip3_not_allowed",
            FilterReason::BelowMinQualityScore => "below_min_quality_score",
            FilterReason::TcpaConsentRequired => "tcpa_consent_required",
            FilterReason::SourceDenied => "source_denied",
            FilterReason::SourceNotAllowed => "source_not_allowed",
            FilterReason::SubVerticalNotAllowed => "sub_vertical_not_allowed",
            FilterReason::CurrentlyInsuredMismatch => "currently_insured_mismatch",
            FilterReason::VehicleCountOutOfRange => "vehicle_count_out_of_range",
            FilterReason::DriverAgeBandNotAllowed => "driver_age_band_not_allowed",
            FilterReason::AttributeNotEqual => "attribute_not_equal",
            FilterReason::AttributeNotAllowed => "attribute_not_allowed",
            FilterReason::AttributeDenied => "attribute_denied",
            FilterReason::AttributeOutOfRange => "attribute_out_of_range",
            FilterReason::AttributeMissing => "attribute_missing",
        }
    }

    /// Every reason, in the order [`Buyer::check`] tries the filters.
    pub const ALL: [FilterReason; 17] = [
        FilterReason::VerticalNotAllowed,
        FilterReason::StateNotAllowed,
        FilterReason::Zip3Denied,
        FilterReason::Zip3NotAllowed,
        FilterReason::BelowMinQualityScore,
        FilterReason::TcpaConsentRequired,
        FilterReason::SourceDenied,
        FilterReason::SourceNotAllowed,
        FilterReason::SubVerticalNotAllowed,
        FilterReason::CurrentlyInsuredMismatch,
        FilterReason::VehicleCountOutOfRange,
        FilterReason::DriverAgeBandNotAllowed,
        FilterReason::AttributeNotEqual,
        FilterReason::AttributeNotAllowed,
        FilterReason::AttributeDenied,
        FilterReason::AttributeOutOfRange,
        FilterReason::AttributeMissing,
    ];
}

/// One configured buyer, with its filters compiled for fast checks.
#[derive(Debug)]
pub struct Buyer {
    pub id: String,
    pub tenant: Tenant,
    pub enabled: bool,
    /// Where pings go; `None` for a direct-post buyer, which bids `fixed_price_cents` instead.
    pub ping: Option<Target>,
    pub post: Target,
    /// A direct-post buyer's price for every lead its filters accept.
    pub fixed_price_cents: Option<Cents>,
    /// How a ping becomes this buyer's request; `None`: Gavel's buyer contract.
    pub ping_format: Option<format::Format>,
    /// How a post becomes this buyer's request; `None`: Gavel's buyer contract.
    pub post_format: Option<format::Format>,
    pub auth: Option<(HeaderName, HeaderValue)>,
    pub floor_cents: Cents,
    pub ping_timeout: Duration,
    pub post_timeout: Duration,
    /// Pings per second Gavel may send this buyer, shared by every core.
    pub ping_rate: crate::limits::Rate,
    /// Whether each core opens a connection to an `https://` ping URL when it starts
    /// (`tls.warm_up`).
    pub warm_up: bool,
    filters: CompiledFilters,
}

#[derive(Debug, Default)]
struct CompiledFilters {
    verticals: HashSet<String>,
    states: HashSet<String>,
    zip3_allow: HashSet<String>,
    zip3_deny: HashSet<String>,
    min_ai_quality_score: Option<f64>,
    tcpa_consent_required: bool,
    sources_allow: HashSet<String>,
    sources_deny: HashSet<String>,
    sub_verticals: HashSet<String>,
    driver_age_bands: HashSet<String>,
    currently_insured: Option<bool>,
    /// Inclusive `vehicle_count` bounds, open ends filled in at load.
    vehicle_count: Option<(u32, u32)>,
    attributes: Vec<attributes::Rule>,
}

fn set(v: &[String]) -> HashSet<String> {
    v.iter().cloned().collect()
}

/// Why a buyer's definition could not be built into a [`Buyer`]: the operator's config (or an
/// admin call's body) is at fault. `field` names the definition's key when one is to blame, so
/// the admin API can point at it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("buyer {buyer}: {}{reason}", .field.as_ref().map(|f| format!("{f}: ")).unwrap_or_default())]
pub struct BuildError {
    pub buyer: String,
    pub field: Option<String>,
    pub reason: String,
}

impl Buyer {
    /// A buyer from its config; `default_pings_per_s` applies unless it sets `max_pings_per_s`.
    /// Reads its TLS files, if any (never call it on a core), sharing TLS client configurations
    /// through `tls_cache` with the other buyers of the same snapshot.
    pub fn from_config(
        c: &BuyerConfig,
        default_pings_per_s: f64,
        tls_cache: &mut tls::Cache,
    ) -> Result<Buyer, BuildError> {
        let fail = |field: Option<String>, reason: String| BuildError {
            buyer: c.id.clone(),
            field,
            reason,
        };
        let auth = match &c.auth_header {
            None => None,
            Some(h) => {
                let value = match (&h.value, &h.value_env) {
                    (Some(v), _) => v.clone(),
                    (None, Some(env)) => std::env::var(env).map_err(|_| {
                        fail(None, format!("environment variable {env} is not set"))
                    })?,
                    (None, None) => return Err(fail(None, "auth header has no value".into())),
                };
                let name = HeaderName::from_bytes(h.name.as_bytes())
                    .map_err(|e| fail(None, format!("header name: {e}")))?;
                let mut value = HeaderValue::from_str(&value)
                    .map_err(|e| fail(None, format!("header value: {e}")))?;
                value.set_sensitive(true);
                Some((name, value))
            }
        };
        let f = &c.filters;
        let compile = |f: &Option<crate::config::FormatConfig>, call, name: &str| {
            f.as_ref()
                .map(|f| format::Format::compile(f, call))
                .transpose()
                .map_err(|e| fail(Some(format!("{name}.{}", e.key)), e.reason))
        };
        Ok(Buyer {
            id: c.id.clone(),
            tenant: c.tenant,
            enabled: c.enabled,
            ping: match c.ping_url.as_str() {
                "" => None,
                url => Some(
                    Target::for_buyer(url, "ping_url", c.tls.as_ref(), tls_cache)
                        .map_err(|e| fail(None, e.to_string()))?,
                ),
            },
            post: Target::for_buyer(&c.post_url, "post_url", c.tls.as_ref(), tls_cache)
                .map_err(|e| fail(None, e.to_string()))?,
            warm_up: c.tls.as_ref().is_none_or(|t| t.warm_up),
            fixed_price_cents: c.fixed_price,
            ping_format: compile(&c.ping_format, format::Call::Ping, "ping_format")?,
            post_format: compile(&c.post_format, format::Call::Post, "post_format")?,
            auth,
            floor_cents: c.floor,
            ping_timeout: Duration::from_millis(c.ping_timeout_ms),
            post_timeout: Duration::from_millis(c.post_timeout_ms),
            ping_rate: crate::limits::Rate::per_second(
                c.max_pings_per_s.unwrap_or(default_pings_per_s),
            ),
            filters: CompiledFilters {
                verticals: set(&f.verticals),
                states: set(&f.states),
                zip3_allow: set(&f.zip3_allow),
                zip3_deny: set(&f.zip3_deny),
                min_ai_quality_score: f.min_ai_quality_score,
                tcpa_consent_required: f.tcpa_consent_required,
                sources_allow: set(&f.sources_allow),
                sources_deny: set(&f.sources_deny),
                sub_verticals: set(&f.sub_verticals),
                driver_age_bands: set(&f.driver_age_bands),
                currently_insured: f.currently_insured,
                vehicle_count: f
                    .vehicle_count
                    .map(|r| (r.min.unwrap_or(0), r.max.unwrap_or(u32::MAX))),
                attributes: f.attributes.iter().map(attributes::Rule::compile).collect(),
            },
        })
    }

    /// Checks this buyer's filters against a ping; `Err` carries the reject reason.
    pub fn check(&self, ping: &Ping) -> Result<(), FilterReason> {
        let f = &self.filters;
        if !f.verticals.is_empty() && !f.verticals.contains(&ping.vertical) {
            return Err(FilterReason::VerticalNotAllowed);
        }
        if !f.states.is_empty() && !f.states.contains(&ping.state) {
            return Err(FilterReason::StateNotAllowed);
        }
        if f.zip3_deny.contains(&ping.zip3) {
            return Err(FilterReason::Zip3Denied);
        }
        if !f.zip3_allow.is_empty() && !f.zip3_allow.contains(&ping.zip3) {
            return Err(FilterReason::Zip3NotAllowed);
        }
        if let Some(min) = f.min_ai_quality_score {
            match ping.ai_quality_score {
                Some(s) if s >= min => {}
                _ => return Err(FilterReason::BelowMinQualityScore),
            }
        }
        if f.tcpa_consent_required && !ping.tcpa_consent {
            return Err(FilterReason::TcpaConsentRequired);
        }
        if f.sources_deny.contains(&ping.source) {
            return Err(FilterReason::SourceDenied);
        }
        if !f.sources_allow.is_empty() && !f.sources_allow.contains(&ping.source) {
            return Err(FilterReason::SourceNotAllowed);
        }
        // The filters below need an optional ping field; a ping without it is refused by the
        // filter that needs it, because the buyer asked to see only leads that have it.
        if !f.sub_verticals.is_empty()
            && !ping
                .sub_vertical
                .as_ref()
                .is_some_and(|s| f.sub_verticals.contains(s))
        {
            return Err(FilterReason::SubVerticalNotAllowed);
        }
        if let Some(want) = f.currently_insured {
            if ping.currently_insured != Some(want) {
                return Err(FilterReason::CurrentlyInsuredMismatch);
            }
        }
        if let Some((lo, hi)) = f.vehicle_count {
            if !ping.vehicle_count.is_some_and(|n| lo <= n && n <= hi) {
                return Err(FilterReason::VehicleCountOutOfRange);
            }
        }
        if !f.driver_age_bands.is_empty()
            && !ping
                .driver_age_band
                .as_ref()
                .is_some_and(|b| f.driver_age_bands.contains(b))
        {
            return Err(FilterReason::DriverAgeBandNotAllowed);
        }
        for rule in &f.attributes {
            rule.check(&ping.attributes)?;
        }
        Ok(())
    }
}

/// One snapshot of the buyers: immutable once built. Each core holds the current one; an auction
/// holds the one it started with for its whole life, so its buyer indexes stay valid whatever
/// changes meanwhile.
#[derive(Debug, Default)]
pub struct Registry {
    /// In table order: config-file buyers in file order, then API-created ones in creation order.
    pub buyers: Vec<Arc<Buyer>>,
    /// The stored row of each buyer, index for index with `buyers` (source and timestamps).
    pub records: Vec<table::BuyerRecord>,
    /// Index of each buyer by tenant, then id: ids are scoped by tenant. Two maps so a lookup
    /// by `&str` allocates nothing.
    by_id: std::collections::HashMap<Tenant, std::collections::HashMap<String, usize>>,
    /// Grows by one per change; a core only takes a snapshot newer than the one it holds, so a
    /// late delivery of an older snapshot never undoes a newer change.
    pub version: u64,
    /// The wall clock buyers' bids are judged by (a bid's `valid_until`): the system clock unless
    /// [`Registry::with_clock`] gave the server's own, so a test can move it.
    pub clock: Clock,
}

/// The result of eligibility for one ping.
#[derive(Debug, Default)]
pub struct Eligibility {
    /// Indexes into [`Registry::buyers`] of buyers to ping, in config order.
    pub eligible: Vec<usize>,
    /// Buyers of the tenant that a filter excluded, with the reason.
    pub filtered: Vec<(usize, FilterReason)>,
    /// Eligible buyers left out because `max_buyers_per_auction` was reached.
    pub capped: Vec<usize>,
}

impl Registry {
    /// A first snapshot of config buyers (tests and tools; the server builds from its table).
    pub fn from_config(
        buyers: &[BuyerConfig],
        default_pings_per_s: f64,
    ) -> Result<Registry, BuildError> {
        let records = buyers
            .iter()
            .map(|b| table::BuyerRecord::new(b.clone(), table::Source::Config, 0))
            .collect();
        Registry::default().next(records, default_pings_per_s)
    }

    /// The snapshot after this one, holding `records` in that order. A buyer whose definition is
    /// unchanged keeps its `Arc` (and with it the ping rate limiter every core shares); a new or
    /// changed one is built from its definition with the same checks as config load.
    pub fn next(
        &self,
        records: Vec<table::BuyerRecord>,
        default_pings_per_s: f64,
    ) -> Result<Registry, BuildError> {
        let mut buyers = Vec::with_capacity(records.len());
        // Buyers naming the same TLS files share one client configuration (and session cache).
        let mut tls_cache = tls::Cache::default();
        for r in &records {
            let kept = self
                .index_of(r.buyer.tenant, &r.buyer.id)
                .filter(|&i| table::same_definition(&self.records[i].buyer, &r.buyer))
                .map(|i| &self.buyers[i]);
            buyers.push(match kept {
                Some(b) => b.clone(),
                None => Arc::new(Buyer::from_config(
                    &r.buyer,
                    default_pings_per_s,
                    &mut tls_cache,
                )?),
            });
        }
        let mut by_id = std::collections::HashMap::<_, std::collections::HashMap<_, _>>::new();
        for (i, b) in buyers.iter().enumerate() {
            by_id.entry(b.tenant).or_default().insert(b.id.clone(), i);
        }
        Ok(Registry {
            buyers,
            records,
            by_id,
            version: self.version + 1,
            clock: self.clock.clone(),
        })
    }

    /// The registry, judging bids' lifetimes by `clock`.
    pub fn with_clock(mut self, clock: Clock) -> Registry {
        self.clock = clock;
        self
    }

    /// Registry index of buyer `id` of `tenant`, if that buyer is configured.
    pub fn index_of(&self, tenant: Tenant, id: &str) -> Option<usize> {
        self.by_id.get(&tenant)?.get(id).copied()
    }

    /// Splits the tenant's enabled buyers into eligible, filtered and capped. Buyers of another
    /// tenant are not considered at all: a sandbox lead never reaches a production buyer.
    pub fn eligibility(&self, ping: &Ping, tenant: Tenant, max_buyers: usize) -> Eligibility {
        let mut out = Eligibility::default();
        for (i, b) in self.buyers.iter().enumerate() {
            if b.tenant != tenant || !b.enabled {
                continue;
            }
            match b.check(ping) {
                Ok(()) if out.eligible.len() < max_buyers => out.eligible.push(i),
                Ok(()) => out.capped.push(i),
                Err(r) => out.filtered.push((i, r)),
            }
        }
        debug_assert!(
            out.eligible.len() <= max_buyers,
            "more buyers eligible than auction.max_buyers_per_auction"
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::FilterReason;
    use super::{table, Registry};
    use crate::config::Tenant;
    use std::sync::Arc;

    fn row(id: &str, floor: &str) -> table::BuyerRecord {
        let text = format!(
            "id = \"{id}\"\ntenant = \"sandbox\"\nping_url = \"http://127.0.0.1:1/p\"\n\
             post_url = \"http://127.0.0.1:1/q\"\nfloor = {floor}"
        );
        table::BuyerRecord::new(toml::from_str(&text).unwrap(), table::Source::Api, 0)
    }

    /// A snapshot change keeps an unchanged buyer's `Arc` (its ping rate limiter is shared state
    /// every core counts against) and rebuilds a changed one; versions only grow.
    #[test]
    fn a_new_snapshot_carries_unchanged_buyers_and_rebuilds_changed_ones() {
        let first = Registry::default()
            .next(vec![row("a", "1"), row("b", "1")], 100.0)
            .unwrap();
        let second = first
            .next(vec![row("b", "2"), row("a", "1"), row("c", "1")], 100.0)
            .unwrap();
        assert!(second.version > first.version);
        assert!(
            Arc::ptr_eq(&first.buyers[0], &second.buyers[1]),
            "a is unchanged"
        );
        assert!(
            !Arc::ptr_eq(&first.buyers[1], &second.buyers[0]),
            "b is re-priced"
        );
        assert_eq!(second.buyers[0].floor_cents, 200);
        assert_eq!(second.index_of(Tenant::Sandbox, "c"), Some(2));
        assert_eq!(second.index_of(Tenant::Sandbox, "b"), Some(0));
        assert_eq!(second.index_of(Tenant::Production, "b"), None);
        // The old snapshot, held by auctions in flight, is untouched.
        assert_eq!(first.buyers[1].floor_cents, 100);
        assert_eq!(first.index_of(Tenant::Sandbox, "c"), None);
    }

    /// The reasons are the `reject_reason` words auction records hold and buyers are documented
    /// to see (docs/buyer-integration.md); a change would change records and the wire.
    #[test]
    fn filter_reasons_keep_their_record_words() {
        let words: Vec<_> = FilterReason::ALL.iter().map(|r| r.as_str()).collect();
        assert_eq!(
            words,
            [
                "vertical_not_allowed",
                "state_not_allowed",
                "zip3_denied",
                "zip3_not_allowed",
                "below_min_quality_score",
                "tcpa_consent_required",
                "source_denied",
                "source_not_allowed",
                "sub_vertical_not_allowed",
                "currently_insured_mismatch",
                "vehicle_count_out_of_range",
                "driver_age_band_not_allowed",
                "attribute_not_equal",
                "attribute_not_allowed",
                "attribute_denied",
                "attribute_out_of_range",
                "attribute_missing",
            ]
        );
    }
}

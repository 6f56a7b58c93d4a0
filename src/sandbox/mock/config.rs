//! Checks on a mock buyer's configuration: [`validate_buyers`], which checks a fleet before it
//! starts, and [`check_config`], the same checks on a config file's `[sandbox]` section. The
//! `[[sandbox.buyers]]` schema and its defaults live in `config::sandbox` and are re-exported
//! here. It does not own what a buyer does with its configuration: the decisions are in `draws`,
//! the answers in `handler`.

use std::collections::HashMap;

use http::HeaderValue;

pub use crate::config::sandbox::{FailureMode, MockBuyerConfig, MockFilters, PostFailMode};
use crate::config::{ConfigError, SandboxConfig};

use super::MAX_MOCK_LATENCY_MS;

impl FailureMode {
    pub(super) fn affects_pings(self) -> bool {
        !matches!(self, FailureMode::None | FailureMode::RejectPost)
    }
}

/// Checks a fleet's buyers; the error is (key such as `buyers[2].bid_probability`, reason).
pub fn validate_buyers(buyers: &[MockBuyerConfig]) -> Result<(), (String, String)> {
    let mut seen: HashMap<&str, usize> = HashMap::new();
    for (i, b) in buyers.iter().enumerate() {
        let at = |(field, reason): Invalid| (format!("buyers[{i}].{field}"), reason);
        check_id(b, i, &mut seen).map_err(at)?;
        check_bids(b).map_err(at)?;
        check_filters(&b.filters).map_err(at)?;
        if let Some(auth) = &b.expect_auth {
            if auth.is_empty() || HeaderValue::from_str(auth).is_err() {
                return Err(at((
                    "expect_auth".into(),
                    "must be a non-empty, printable header value".into(),
                )));
            }
        }
    }
    Ok(())
}

/// Checks the buyers of a config file's `[sandbox]` section; the error names `file` and the key
/// under `sandbox.` (`sandbox.buyers[2].bid_probability`).
pub fn check_config(sandbox: &SandboxConfig, file: &str) -> Result<(), ConfigError> {
    validate_buyers(&sandbox.buyers).map_err(|(key, reason)| ConfigError::Invalid {
        file: file.to_string(),
        key: format!("sandbox.{key}"),
        reason,
    })
}

/// A buyer's invalid setting: (field under `buyers[i].`, reason).
type Invalid = (String, String);

/// The id's form, and that no earlier buyer (`seen`: id to index) has it.
fn check_id<'a>(
    b: &'a MockBuyerConfig,
    i: usize,
    seen: &mut HashMap<&'a str, usize>,
) -> Result<(), Invalid> {
    if b.id.is_empty() {
        return Err(("id".into(), "must not be empty".into()));
    }
    if b.id.len() > 64
        || !b
            .id
            .bytes()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'_' || c == b'-')
    {
        return Err((
            "id".into(),
            format!("`{}` must be 1-64 characters of [a-z0-9_-]", b.id),
        ));
    }
    if let Some(first) = seen.insert(&b.id, i) {
        return Err((
            "id".into(),
            format!("duplicate buyer id `{}` (also buyers[{first}])", b.id),
        ));
    }
    Ok(())
}

/// Probabilities, prices, currency, latencies and bid validity.
fn check_bids(b: &MockBuyerConfig) -> Result<(), Invalid> {
    for (field, p) in [
        ("bid_probability", b.bid_probability),
        ("post_accept_probability", b.post_accept_probability),
        ("failure_probability", b.failure_probability),
    ] {
        if !(0.0..=1.0).contains(&p) {
            return Err((field.into(), format!("{p} is not a probability in 0..=1")));
        }
    }
    if !(b.price_min.is_finite() && b.price_min > 0.0) {
        return Err((
            "price_min".into(),
            format!("{} must be above 0", b.price_min),
        ));
    }
    if !b.price_max.is_finite() || b.price_min > b.price_max {
        return Err((
            "price_max".into(),
            format!(
                "{} must be a number no smaller than price_min {}",
                b.price_max, b.price_min
            ),
        ));
    }
    if b.currency.len() != 3 || !b.currency.bytes().all(|c| c.is_ascii_uppercase()) {
        return Err((
            "currency".into(),
            format!("`{}` is not an ISO 4217 code such as USD", b.currency),
        ));
    }
    for (min_field, min, max_field, max) in [
        (
            "latency_ms_min",
            b.latency_ms_min,
            "latency_ms_max",
            b.latency_ms_max,
        ),
        (
            "post_latency_ms_min",
            b.post_latency_ms_min,
            "post_latency_ms_max",
            b.post_latency_ms_max,
        ),
    ] {
        if max > MAX_MOCK_LATENCY_MS {
            return Err((
                max_field.into(),
                format!("{max} exceeds the {MAX_MOCK_LATENCY_MS} ms ceiling"),
            ));
        }
        if min > max {
            return Err((min_field.into(), format!("{min} exceeds {max_field} {max}")));
        }
    }
    if b.bid_valid_ms == 0 || b.bid_valid_ms > 86_400_000 {
        return Err((
            "bid_valid_ms".into(),
            format!("{} must be in 1..=86400000 (one day)", b.bid_valid_ms),
        ));
    }
    Ok(())
}

/// The buyer's own targeting: two-letter states, non-empty verticals, a score in 0..=1.
fn check_filters(filters: &MockFilters) -> Result<(), Invalid> {
    for (j, s) in filters.states.iter().enumerate() {
        if s.len() != 2 || !s.bytes().all(|c| c.is_ascii_alphabetic()) {
            return Err((
                format!("filters.states[{j}]"),
                format!("`{s}` is not a two-letter state"),
            ));
        }
    }
    for (j, v) in filters.verticals.iter().enumerate() {
        if v.is_empty() {
            return Err((
                format!("filters.verticals[{j}]"),
                "must not be empty".into(),
            ));
        }
    }
    if let Some(min) = filters.min_ai_quality_score {
        if !(0.0..=1.0).contains(&min) {
            return Err((
                "filters.min_ai_quality_score".into(),
                format!("{min} is not a score in 0..=1"),
            ));
        }
    }
    Ok(())
}

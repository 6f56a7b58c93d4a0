//! Validated request models for the seller API: what a ping and a post carry once they passed validation.
//!
//! Parsing happens in [`crate::api::validate`] with simd-json over the request buffer (borrowed, no
//! copies of the input until a field is accepted). This module only holds the owned results that an
//! auction keeps: the ping summary (never PII) and the post's lead, which lives only as long as the
//! delivery that carries it.

use serde::Serialize;

/// Money in integer cents so clearing never compares floats.
pub type Cents = u64;

/// A scalar value allowed under `attributes`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Scalar {
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Null,
}

/// A ping after validation. Holds no PII by construction: PII fields are refused before this exists.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Ping {
    /// `None` when the seller let Gavel mint the id. Not serialized: the buyer ping carries the
    /// auction's final id separately.
    #[serde(skip)]
    pub auction_id: Option<String>,
    pub vertical: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sub_vertical: Option<String>,
    pub state: String,
    pub zip3: String,
    pub source: String,
    pub tcpa_consent: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trustedform_cert_url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ai_quality_score: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub currently_insured: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vehicle_count: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub driver_age_band: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    #[serde(serialize_with = "serialize_attributes")]
    pub attributes: Vec<(String, Scalar)>,
    /// Seller's requested end of the bid window, unix milliseconds.
    #[serde(skip)]
    pub expires_at_ms: Option<u64>,
}

fn serialize_attributes<S: serde::Serializer>(
    attrs: &[(String, Scalar)],
    s: S,
) -> Result<S::Ok, S::Error> {
    use serde::ser::SerializeMap;
    let mut m = s.serialize_map(Some(attrs.len()))?;
    for (k, v) in attrs {
        m.serialize_entry(k, v)?;
    }
    m.end()
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Address {
    pub line1: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub line2: Option<String>,
    pub city: String,
    pub state: String,
    pub zip: String,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Tcpa {
    pub consent_text: String,
    /// RFC 3339, as the seller sent it (validated).
    pub consent_timestamp: String,
    pub ip_address: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trustedform_cert_url: Option<String>,
}

/// The full lead of a post. PII: it is forwarded to the buying buyer and never logged or stored.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Lead {
    pub lead_uuid: String,
    pub first_name: String,
    pub last_name: String,
    pub email: String,
    /// E.164, e.g. `+15125550182`.
    pub phone: String,
    pub address: Address,
    pub tcpa: Tcpa,
}

/// A post after validation of its own fields (not yet checked against its auction).
#[derive(Debug, Clone, PartialEq)]
pub struct Post {
    pub auction_id: String,
    pub bid_token: String,
    pub lead: Lead,
    /// Whether the seller supplied `lead_uuid` (else Gavel minted one).
    pub lead_uuid_supplied: bool,
}

/// Formats cents as a JSON-ready number with two decimals (e.g. 3850 → 38.5 serialized as 38.50).
pub fn cents_to_f64(c: Cents) -> f64 {
    c as f64 / 100.0
}

/// Rounds a money amount to cents; `None` for non-finite or negative input.
pub fn f64_to_cents(v: f64) -> Option<Cents> {
    if !(0.0..=1e12).contains(&v) {
        return None;
    }
    Some((v * 100.0).round() as Cents)
}

/// Writes cents as a JSON number with exactly two decimals, as CONTRACT §2 asks for money.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Money(pub Cents);

impl Serialize for Money {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let text = format!("{}.{:02}", self.0 / 100, self.0 % 100);
        let n: serde_json::Number = text.parse().map_err(serde::ser::Error::custom)?;
        n.serialize(s)
    }
}

//! Validated request models for the seller API: what a ping and a post carry once they passed validation.
//!
//! Parsing happens in [`crate::api::validate`] with simd-json over the request buffer (borrowed, no
//! copies of the input until a field is accepted). This module only holds the owned results that an
//! auction keeps: the ping summary (never PII) and the post's lead, which lives only as long as the
//! delivery that carries it.

use serde::{Deserialize, Serialize};

use crate::error::FieldError;

pub use crate::types::money::{cents_to_f64, f64_to_cents, Cents, Money};

impl Ping {
    /// The smallest valid ping (auto insurance, TX 770, consent given, no optional field), for
    /// tests that need an auction and do not care what was pinged.
    #[cfg(test)]
    pub(crate) fn minimal() -> Ping {
        Ping {
            auction_id: None,
            vertical: "auto_insurance".into(),
            sub_vertical: None,
            state: "TX".into(),
            zip3: "770".into(),
            source: "s".into(),
            tcpa_consent: true,
            trustedform_cert_url: None,
            ai_quality_score: None,
            currently_insured: None,
            vehicle_count: None,
            driver_age_band: None,
            attributes: Vec::new(),
            expires_at_ms: None,
        }
    }
}

/// A scalar value allowed under `attributes`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Scalar {
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Null,
}

/// A ping after validation. Holds no PII by construction: PII fields are refused before this exists.
///
/// It serializes to the summary buyers receive and auction records keep, and deserializes from
/// that same summary (when an auction record is read back from the store).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Ping {
    /// `None` when the seller let Gavel mint the id. Not serialized: the buyer ping carries the
    /// auction's final id separately.
    #[serde(skip)]
    pub auction_id: Option<String>,
    pub vertical: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sub_vertical: Option<String>,
    pub state: String,
    pub zip3: String,
    pub source: String,
    pub tcpa_consent: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trustedform_cert_url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ai_quality_score: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub currently_insured: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vehicle_count: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub driver_age_band: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[serde(
        serialize_with = "serialize_attributes",
        deserialize_with = "deserialize_attributes"
    )]
    pub attributes: Vec<(String, Scalar)>,
    /// Seller's requested end of the bid window, unix milliseconds.
    #[serde(skip)]
    pub expires_at_ms: Option<u64>,
}

fn deserialize_attributes<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Vec<(String, Scalar)>, D::Error> {
    struct Visit;
    impl<'de> serde::de::Visitor<'de> for Visit {
        type Value = Vec<(String, Scalar)>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("an object of scalars")
        }
        fn visit_map<A: serde::de::MapAccess<'de>>(
            self,
            mut m: A,
        ) -> Result<Self::Value, A::Error> {
            let mut out = Vec::new();
            while let Some((k, v)) = m.next_entry::<String, Scalar>()? {
                out.push((k, v));
            }
            Ok(out)
        }
    }
    d.deserialize_map(Visit)
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
    #[serde(default, skip_serializing_if = "Option::is_none")]
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

impl Lead {
    /// How the lead disagrees with its ping (CONTRACT §4.2: same state, and a ZIP that starts
    /// with the ping's zip3): one `lead_mismatch` field error per disagreement, none when it
    /// matches.
    pub fn mismatches(&self, ping_state: &str, ping_zip3: &str) -> Vec<FieldError> {
        let mut errs = Vec::new();
        if self.address.state != ping_state {
            errs.push(FieldError::new(
                "lead.address.state",
                "lead_mismatch",
                format!("{ping_state} (the ping's state)"),
            ));
        }
        if !self.address.zip.starts_with(ping_zip3) {
            errs.push(FieldError::new(
                "lead.address.zip",
                "lead_mismatch",
                format!("a ZIP code starting with {ping_zip3} (the ping's zip3)"),
            ));
        }
        errs
    }

    /// Whether the lead has the field at a dotted path such as `lead.tcpa.trustedform_cert_url`,
    /// for configurable rules like "TrustedForm certificate required for facebook_ads".
    ///
    /// Optional fields (`lead.address.line2`, `lead.tcpa.trustedform_cert_url`) give
    /// `Some(present)`; required fields, always present after validation, give `Some(true)`. The
    /// `lead.` prefix may be left out. `None` means the path names no lead field, so a
    /// misconfigured rule can be reported instead of silently passing.
    pub fn has_path(&self, path: &str) -> Option<bool> {
        let path = path.strip_prefix("lead.").unwrap_or(path);
        match path {
            "address.line2" => Some(self.address.line2.is_some()),
            "tcpa.trustedform_cert_url" => Some(self.tcpa.trustedform_cert_url.is_some()),
            "lead"
            | "lead_uuid"
            | "first_name"
            | "last_name"
            | "email"
            | "phone"
            | "address"
            | "address.line1"
            | "address.city"
            | "address.state"
            | "address.zip"
            | "tcpa"
            | "tcpa.consent_text"
            | "tcpa.consent_timestamp"
            | "tcpa.ip_address" => Some(true),
            _ => None,
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn money_keeps_two_decimals() {
        assert_eq!(serde_json::to_string(&Money(3850)).unwrap(), "38.50");
        assert_eq!(serde_json::to_string(&Money(7)).unwrap(), "0.07");
        assert_eq!(f64_to_cents(38.505), Some(3851));
        assert_eq!(f64_to_cents(-1.0), None);
        assert_eq!(f64_to_cents(f64::NAN), None);
    }

    #[test]
    fn ping_summary_round_trips() {
        let ping = Ping {
            auction_id: None,
            vertical: "auto_insurance".into(),
            sub_vertical: Some("non_standard".into()),
            state: "TX".into(),
            zip3: "770".into(),
            source: "google_ads".into(),
            tcpa_consent: true,
            trustedform_cert_url: None,
            ai_quality_score: Some(0.84),
            currently_insured: Some(true),
            vehicle_count: Some(2),
            driver_age_band: None,
            attributes: vec![
                ("credit".into(), Scalar::Str("good".into())),
                ("homeowner".into(), Scalar::Bool(true)),
                ("years".into(), Scalar::Int(3)),
                ("ratio".into(), Scalar::Float(0.5)),
                ("none".into(), Scalar::Null),
            ],
            expires_at_ms: None,
        };
        let json = serde_json::to_vec(&ping).unwrap();
        let back: Ping = serde_json::from_slice(&json).unwrap();
        assert_eq!(back, ping);
    }
}

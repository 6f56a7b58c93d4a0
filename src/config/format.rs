//! Posting instructions as the config file writes them: `[buyers.ping_format]` and
//! `[buyers.post_format]`, how Gavel's ping or post becomes a buyer's own request and how its
//! answer is read.
//!
//! This module owns only the file's shape. Checking field names and paths and compiling them into
//! a plan is [`crate::buyers::format`]'s job (it knows the ping and lead fields); a buyer without
//! a format speaks Gavel's own buyer contract.

use serde::de::{Deserializer, MapAccess, Visitor};
use serde::ser::{SerializeMap, Serializer};
use serde::{Deserialize, Serialize};

use super::FilterValue;

/// One call's format: the request Gavel builds and how the answer is read.
#[derive(Debug, Clone, Deserialize, Serialize, Default)]
#[serde(deny_unknown_fields)]
pub struct FormatConfig {
    /// `POST` (the default; fields in the body) or `GET` (fields in the query string).
    #[serde(default)]
    pub method: FormatMethod,
    /// How a `POST` body is written: `json` (the default) or `form`
    /// (`application/x-www-form-urlencoded`).
    #[serde(default)]
    pub encoding: FormatEncoding,
    /// Output field name (dots nest JSON objects: `applicant.zip`) → where its value comes from,
    /// in the order the file writes them.
    #[serde(default, deserialize_with = "ordered", serialize_with = "ordered_out")]
    pub fields: Vec<(String, FieldConfig)>,
    /// Extra headers with constant values, e.g. `{ "X-Api-Key" = "…" }`.
    #[serde(default, deserialize_with = "ordered", serialize_with = "ordered_out")]
    pub headers: Vec<(String, String)>,
    /// How the buyer's answer is read; absent: the answer follows Gavel's buyer contract.
    #[serde(default)]
    pub answer: Option<AnswerConfig>,
}

#[derive(Debug, Clone, Copy, Deserialize, Serialize, Default, PartialEq, Eq)]
pub enum FormatMethod {
    #[default]
    #[serde(rename = "POST", alias = "post")]
    Post,
    #[serde(rename = "GET", alias = "get")]
    Get,
}

#[derive(Debug, Clone, Copy, Deserialize, Serialize, Default, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum FormatEncoding {
    #[default]
    Json,
    Form,
}

/// Where one output field's value comes from: exactly one of `from` (a ping or lead field) and
/// `value` (a constant), with optional transforms applied in the order `default`, `bool_as`,
/// `transform`.
#[derive(Debug, Clone, Deserialize, Serialize, Default)]
#[serde(deny_unknown_fields)]
pub struct FieldConfig {
    /// A ping field (`zip3`, `attributes.credit_band`), a lead field (`lead.email`, post only), or
    /// `auction_id`, `expires_at` (ping) / `bid_token` (post).
    pub from: Option<String>,
    /// A constant written as is.
    pub value: Option<FilterValue>,
    /// The value used when the source is missing (an optional field the seller left out).
    pub default: Option<FilterValue>,
    /// Writes a boolean as one of two strings: `["Y", "N"]` or `"1/0"` (true first).
    pub bool_as: Option<BoolAs>,
    /// A string change: `upper`, `lower` or `digits_only`.
    pub transform: Option<Transform>,
}

/// The two strings of `bool_as`, as a pair or as one `"true/false"` string.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(untagged)]
pub enum BoolAs {
    Pair([String; 2]),
    Slashed(String),
}

impl BoolAs {
    /// The strings for true and false; `None` for a slashed string without exactly one `/`.
    pub fn strings(&self) -> Option<[String; 2]> {
        match self {
            BoolAs::Pair(p) => Some(p.clone()),
            BoolAs::Slashed(s) => match s.split('/').collect::<Vec<_>>()[..] {
                [yes, no] => Some([yes.to_string(), no.to_string()]),
                _ => None,
            },
        }
    }
}

#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Transform {
    Upper,
    Lower,
    /// Keeps only ASCII digits (`+1 (512) 555-0182` → `15125550182`).
    DigitsOnly,
}

/// How a buyer's answer is read. Paths are JSON pointers (RFC 6901, `/bid/amount`) for `json` and
/// element paths (`/response/bid/amount`, `/response/bid/@amount` for an attribute) for `xml`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AnswerConfig {
    #[serde(rename = "type")]
    pub kind: AnswerKind,
    /// The bid amount in the auction currency (ping answers; required there).
    pub amount: Option<String>,
    /// The flag that says the buyer bid (ping) or took the lead (post).
    pub accepted: Option<String>,
    /// The value of `accepted` that means yes (compared as text); default `true`.
    pub accepted_value: Option<FilterValue>,
    /// The buyer's own bid token, echoed back in the post (`from = "bid_token"`).
    pub bid_token: Option<String>,
    /// The buyer's id for the lead it bought (post answers).
    pub lead_id: Option<String>,
    /// The buyer's reason for not bidding or refusing.
    pub reject_reason: Option<String>,
}

#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum AnswerKind {
    Json,
    Xml,
}

/// A TOML table read as a list of entries in the file's order (a map would sort them, and a
/// buyer may care about the order of form fields).
fn ordered<'de, D, V>(d: D) -> Result<Vec<(String, V)>, D::Error>
where
    D: Deserializer<'de>,
    V: Deserialize<'de>,
{
    struct Visit<V>(std::marker::PhantomData<V>);
    impl<'de, V: Deserialize<'de>> Visitor<'de> for Visit<V> {
        type Value = Vec<(String, V)>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a table")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<Self::Value, A::Error> {
            let mut out = Vec::new();
            while let Some(entry) = m.next_entry::<String, V>()? {
                out.push(entry);
            }
            Ok(out)
        }
    }
    d.deserialize_map(Visit(std::marker::PhantomData))
}

/// Writes a list read by [`ordered`] back as a table, in the same order (the buyer table stores
/// definitions as JSON, and the admin API shows them).
fn ordered_out<S, V>(entries: &[(String, V)], s: S) -> Result<S::Ok, S::Error>
where
    S: Serializer,
    V: Serialize,
{
    let mut map = s.serialize_map(Some(entries.len()))?;
    for (k, v) in entries {
        map.serialize_entry(k, v)?;
    }
    map.end()
}

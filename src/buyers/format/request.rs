//! The request half of a buyer format: a field template compiled at load into a plan of resolved
//! sources, and the encoder that turns a ping or a post into the buyer's body or query string.
//!
//! Owns which ping and lead fields a template may name and how each value is written (JSON
//! types, form text, the transforms). It does not send anything ([`crate::buyers::pool`]) and
//! does not read answers ([`super::answer`]).

use std::borrow::Cow;

use bytes::Bytes;
use http::HeaderValue;

use crate::config::format::{FieldConfig, FormatEncoding, FormatMethod, Transform};
use crate::config::FilterValue;
use crate::model::{Lead, Ping, Scalar};

use super::{Call, FormatError, Input};

/// A template's source, resolved at load so a request never looks a field up by name.
#[derive(Debug, Clone, PartialEq)]
enum Source {
    AuctionId,
    ExpiresAt,
    Vertical,
    SubVertical,
    State,
    Zip3,
    LeadOrigin,
    TcpaConsent,
    PingTrustedform,
    AiQualityScore,
    CurrentlyInsured,
    VehicleCount,
    DriverAgeBand,
    Attribute(String),
    BidToken,
    LeadUuid,
    FirstName,
    LastName,
    Email,
    Phone,
    Line1,
    Line2,
    City,
    LeadState,
    Zip,
    ConsentText,
    ConsentTimestamp,
    IpAddress,
    LeadTrustedform,
    Const(Val<'static>),
}

impl Source {
    /// The source a ping template names by `name`.
    fn ping(name: &str) -> Option<Source> {
        Some(match name {
            "auction_id" => Source::AuctionId,
            "expires_at" => Source::ExpiresAt,
            "vertical" => Source::Vertical,
            "sub_vertical" => Source::SubVertical,
            "state" => Source::State,
            "zip3" => Source::Zip3,
            "source" => Source::LeadOrigin,
            "tcpa_consent" => Source::TcpaConsent,
            "trustedform_cert_url" => Source::PingTrustedform,
            "ai_quality_score" => Source::AiQualityScore,
            "currently_insured" => Source::CurrentlyInsured,
            "vehicle_count" => Source::VehicleCount,
            "driver_age_band" => Source::DriverAgeBand,
            _ => match name.strip_prefix("attributes.") {
                Some(k) if !k.is_empty() => Source::Attribute(k.to_string()),
                _ => return None,
            },
        })
    }

    /// The source a post template names by `name`.
    fn post(name: &str) -> Option<Source> {
        Some(match name {
            "auction_id" => Source::AuctionId,
            "bid_token" => Source::BidToken,
            "lead.lead_uuid" => Source::LeadUuid,
            "lead.first_name" => Source::FirstName,
            "lead.last_name" => Source::LastName,
            "lead.email" => Source::Email,
            "lead.phone" => Source::Phone,
            "lead.address.line1" => Source::Line1,
            "lead.address.line2" => Source::Line2,
            "lead.address.city" => Source::City,
            "lead.address.state" => Source::LeadState,
            "lead.address.zip" => Source::Zip,
            "lead.tcpa.consent_text" => Source::ConsentText,
            "lead.tcpa.consent_timestamp" => Source::ConsentTimestamp,
            "lead.tcpa.ip_address" => Source::IpAddress,
            "lead.tcpa.trustedform_cert_url" => Source::LeadTrustedform,
            _ => return None,
        })
    }

    /// The value for one ping or post; `None` when the seller left an optional field out.
    fn get<'a>(&'a self, input: &Input<'a>) -> Option<Val<'a>> {
        let s = |v: &'a str| Some(Val::Str(Cow::Borrowed(v)));
        let opt = |v: &'a Option<String>| v.as_deref().map(|v| Val::Str(Cow::Borrowed(v)));
        match (self, input) {
            (Source::Const(v), _) => Some(v.borrowed()),
            (Source::AuctionId, Input::Ping { auction_id, .. })
            | (Source::AuctionId, Input::Post { auction_id, .. }) => s(auction_id),
            (Source::ExpiresAt, Input::Ping { expires_at, .. }) => s(expires_at),
            (Source::BidToken, Input::Post { bid_token, .. }) => s(bid_token),
            (src, Input::Ping { ping, .. }) => src.in_ping(ping),
            (src, Input::Post { lead, .. }) => src.in_lead(lead, s, opt),
        }
    }

    fn in_ping<'a>(&'a self, p: &'a Ping) -> Option<Val<'a>> {
        let s = |v: &'a str| Some(Val::Str(Cow::Borrowed(v)));
        let opt = |v: &'a Option<String>| v.as_deref().map(|v| Val::Str(Cow::Borrowed(v)));
        match self {
            Source::Vertical => s(&p.vertical),
            Source::SubVertical => opt(&p.sub_vertical),
            Source::State => s(&p.state),
            Source::Zip3 => s(&p.zip3),
            Source::LeadOrigin => s(&p.source),
            Source::TcpaConsent => Some(Val::Bool(p.tcpa_consent)),
            Source::PingTrustedform => opt(&p.trustedform_cert_url),
            Source::AiQualityScore => p.ai_quality_score.map(Val::Float),
            Source::CurrentlyInsured => p.currently_insured.map(Val::Bool),
            Source::VehicleCount => p.vehicle_count.map(|n| Val::Int(i64::from(n))),
            Source::DriverAgeBand => opt(&p.driver_age_band),
            Source::Attribute(k) => match p.attributes.iter().find(|(n, _)| n == k)?.1 {
                Scalar::Bool(b) => Some(Val::Bool(b)),
                Scalar::Int(i) => Some(Val::Int(i)),
                Scalar::Float(f) => Some(Val::Float(f)),
                Scalar::Str(ref v) => s(v),
                Scalar::Null => None,
            },
            // Compiling a ping template admits only ping sources.
            _ => None,
        }
    }

    fn in_lead<'a>(
        &'a self,
        l: &'a Lead,
        s: impl Fn(&'a str) -> Option<Val<'a>>,
        opt: impl Fn(&'a Option<String>) -> Option<Val<'a>>,
    ) -> Option<Val<'a>> {
        match self {
            Source::LeadUuid => s(&l.lead_uuid),
            Source::FirstName => s(&l.first_name),
            Source::LastName => s(&l.last_name),
            Source::Email => s(&l.email),
            Source::Phone => s(&l.phone),
            Source::Line1 => s(&l.address.line1),
            Source::Line2 => opt(&l.address.line2),
            Source::City => s(&l.address.city),
            Source::LeadState => s(&l.address.state),
            Source::Zip => s(&l.address.zip),
            Source::ConsentText => s(&l.tcpa.consent_text),
            Source::ConsentTimestamp => s(&l.tcpa.consent_timestamp),
            Source::IpAddress => s(&l.tcpa.ip_address),
            Source::LeadTrustedform => opt(&l.tcpa.trustedform_cert_url),
            // Compiling a post template admits only post sources.
            _ => None,
        }
    }
}

/// One value on its way into a request.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Val<'a> {
    Str(Cow<'a, str>),
    Int(i64),
    Float(f64),
    Bool(bool),
}

impl Val<'_> {
    fn from_config(v: &FilterValue) -> Val<'static> {
        match v {
            FilterValue::Bool(b) => Val::Bool(*b),
            FilterValue::Int(i) => Val::Int(*i),
            FilterValue::Float(f) => Val::Float(*f),
            FilterValue::Str(s) => Val::Str(Cow::Owned(s.clone())),
        }
    }

    fn borrowed(&self) -> Val<'_> {
        match self {
            Val::Str(s) => Val::Str(Cow::Borrowed(s)),
            Val::Int(i) => Val::Int(*i),
            Val::Float(f) => Val::Float(*f),
            Val::Bool(b) => Val::Bool(*b),
        }
    }

    /// The value as text, as a form field or query parameter carries it.
    pub(super) fn text(&self) -> Cow<'_, str> {
        match self {
            Val::Str(s) => Cow::Borrowed(s),
            Val::Int(i) => Cow::Owned(i.to_string()),
            Val::Float(f) => Cow::Owned(f.to_string()),
            Val::Bool(b) => Cow::Borrowed(if *b { "true" } else { "false" }),
        }
    }

    fn json(&self) -> serde_json::Value {
        match self {
            Val::Str(s) => serde_json::Value::String(s.to_string()),
            Val::Int(i) => (*i).into(),
            // Ping floats were finite when validated; a non-finite one has no JSON form.
            Val::Float(f) => serde_json::Number::from_f64(*f)
                .map(serde_json::Value::Number)
                .unwrap_or(serde_json::Value::Null),
            Val::Bool(b) => serde_json::Value::Bool(*b),
        }
    }
}

/// One output field of the plan.
#[derive(Debug)]
struct Field {
    /// The name as configured: the form key, or the dotted JSON path.
    name: String,
    /// `name` split at dots, for JSON nesting.
    path: Vec<String>,
    source: Source,
    default: Option<Val<'static>>,
    bool_as: Option<[String; 2]>,
    transform: Option<Transform>,
}

impl Field {
    fn value<'a>(&'a self, input: &Input<'a>) -> Option<Val<'a>> {
        let v = self
            .source
            .get(input)
            .or_else(|| self.default.as_ref().map(Val::borrowed))?;
        let v = match (&self.bool_as, v) {
            (Some([yes, no]), Val::Bool(b)) => Val::Str(Cow::Borrowed(if b { yes } else { no })),
            (_, v) => v,
        };
        Some(match self.transform {
            None => v,
            Some(Transform::Upper) => Val::Str(Cow::Owned(v.text().to_uppercase())),
            Some(Transform::Lower) => Val::Str(Cow::Owned(v.text().to_lowercase())),
            Some(Transform::DigitsOnly) => Val::Str(Cow::Owned(
                v.text().chars().filter(char::is_ascii_digit).collect(),
            )),
        })
    }
}

/// A compiled request template.
#[derive(Debug)]
pub struct Plan {
    method: FormatMethod,
    encoding: FormatEncoding,
    fields: Vec<Field>,
}

/// What the pool sends for one call: method, content type, the query to append, and the body.
#[derive(Debug)]
pub struct Built {
    pub method: http::Method,
    pub content_type: Option<HeaderValue>,
    /// Form-encoded fields for the query string of a `GET`.
    pub query: Option<String>,
    pub body: Bytes,
}

impl Plan {
    pub(super) fn compile(
        method: FormatMethod,
        encoding: FormatEncoding,
        fields: &[(String, FieldConfig)],
        call: Call,
    ) -> Result<Plan, FormatError> {
        // A post without fields would hand the buyer an empty body instead of the lead.
        if fields.is_empty() && call == Call::Post {
            return Err(FormatError::new(
                "fields".into(),
                "a post format needs at least one field (the buyer would get an empty body)".into(),
            ));
        }
        let mut out: Vec<Field> = Vec::with_capacity(fields.len());
        for (name, f) in fields {
            let bad = |reason: String| FormatError::new(format!("fields.{name}"), reason);
            let path: Vec<String> = name.split('.').map(str::to_string).collect();
            if path.iter().any(String::is_empty) {
                return Err(bad(
                    "a field name must not be empty or have an empty part".into()
                ));
            }
            let source = match (&f.from, &f.value) {
                (Some(from), None) => match call {
                    Call::Ping => Source::ping(from)
                        .ok_or_else(|| bad(format!("unknown ping field {from:?}")))?,
                    Call::Post => Source::post(from)
                        .ok_or_else(|| bad(format!("unknown lead field {from:?}")))?,
                },
                (None, Some(v)) => Source::Const(Val::from_config(v)),
                _ => return Err(bad("needs exactly one of `from` and `value`".into())),
            };
            // In JSON one name cannot be both a value and an object holding others.
            if encoding == FormatEncoding::Json && method == FormatMethod::Post {
                if let Some(other) = out.iter().find(|o| {
                    let n = o.path.len().min(path.len());
                    o.path[..n] == path[..n]
                }) {
                    return Err(bad(format!("clashes with field {:?}", other.name)));
                }
            }
            out.push(Field {
                name: name.clone(),
                path,
                source,
                default: f.default.as_ref().map(Val::from_config),
                bool_as: f
                    .bool_as
                    .as_ref()
                    .map(|b| {
                        b.strings().ok_or_else(|| {
                            FormatError::new(
                                format!("fields.{name}.bool_as"),
                                "must be two strings, [\"Y\", \"N\"], or one with a slash, \"1/0\""
                                    .into(),
                            )
                        })
                    })
                    .transpose()?,
                transform: f.transform,
            });
        }
        Ok(Plan {
            method,
            encoding,
            fields: out,
        })
    }

    fn form<'a>(&'a self, input: &Input<'a>) -> String {
        let mut ser = form_urlencoded::Serializer::new(String::new());
        for f in &self.fields {
            if let Some(v) = f.value(input) {
                ser.append_pair(&f.name, &v.text());
            }
        }
        ser.finish()
    }

    fn json<'a>(&'a self, input: &Input<'a>) -> Vec<u8> {
        let mut root = serde_json::Map::new();
        for f in &self.fields {
            let Some(v) = f.value(input) else { continue };
            let (last, parents) = f.path.split_last().expect("paths are never empty");
            let mut obj = &mut root;
            for p in parents {
                let slot = obj
                    .entry(p.clone())
                    .or_insert_with(|| serde_json::Value::Object(Default::default()));
                // Compiling refused clashing names, so a parent is always an object.
                let serde_json::Value::Object(next) = slot else {
                    unreachable!("field paths were checked for clashes at load")
                };
                obj = next;
            }
            obj.insert(last.clone(), v.json());
        }
        serde_json::to_vec(&root).expect("a JSON map serializes")
    }

    /// The request for one ping or post.
    pub(super) fn build(&self, input: &Input<'_>) -> Built {
        match (self.method, self.encoding) {
            (FormatMethod::Get, _) => Built {
                method: http::Method::GET,
                content_type: None,
                query: Some(self.form(input)),
                body: Bytes::new(),
            },
            (FormatMethod::Post, FormatEncoding::Form) => Built {
                method: http::Method::POST,
                content_type: Some(HeaderValue::from_static(
                    "application/x-www-form-urlencoded",
                )),
                query: None,
                body: self.form(input).into(),
            },
            (FormatMethod::Post, FormatEncoding::Json) => Built {
                method: http::Method::POST,
                content_type: Some(HeaderValue::from_static("application/json")),
                query: None,
                body: self.json(input).into(),
            },
        }
    }
}

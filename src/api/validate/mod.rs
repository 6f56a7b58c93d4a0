//! Request validation for the seller API: turns the bytes of a ping or a post into a validated
//! [`Ping`] or [`Post`].
//!
//! This module owns the step from request body to model. It parses the body in place with
//! simd-json (borrowed values: strings point into the request buffer until a field is accepted),
//! checks every field against CONTRACT §4.1 (ping) and §4.2 (post), and reports every field error of
//! a request at once as one 422 `invalid_payload` with `field_errors`, so a seller can fix a request
//! in one round trip. A ping that carries contact data is refused as a whole with `pii_not_allowed`.
//!
//! It does not authenticate, check scopes or tenants, verify bid tokens, apply idempotency, or
//! enforce rules that need auction state: capping `expires_at` to the bid window, `lead_mismatch`
//! between a post and its ping, and per-source rules such as "a TrustedForm certificate is required
//! for facebook_ads" belong to the auction. For those it offers two helpers that work on the
//! validated models, [`lead_mismatch`] and [`lead_has_path`].
//!
//! Error messages and field errors never echo a submitted value, only field names, codes and a
//! description of what was expected, so no PII can leak through an error body or a log of one.
//!
//! Leniencies, stated once here so the API docs can repeat them: `null` and empty (or
//! whitespace-only) strings count as absent, so an optional field sent as `""` is ignored and a
//! required one is `missing_required`; free-text fields (names, street, city, consent text) are
//! stored trimmed. Lengths are counted in Unicode scalar values. Attributes are kept sorted by key
//! so that what buyers receive does not depend on hash-map order.

use std::net::IpAddr;

use simd_json::borrowed::{Object, Value};
use simd_json::StaticNode;

use crate::error::{ApiError, FieldError};
use crate::model::{Address, Lead, Ping, Post, Scalar, Tcpa};

/// Longest free-text value (names, street, city, attribute strings), in characters.
pub const MAX_STRING_LEN: usize = 256;
/// Longest identifier (`auction_id`, `vertical`, `sub_vertical`, `source`), in characters.
pub const MAX_ID_LEN: usize = 64;
/// Longest URL (`trustedform_cert_url`), in characters.
pub const MAX_URL_LEN: usize = 512;
/// Longest bid token, in characters.
pub const MAX_BID_TOKEN_LEN: usize = 512;
/// Longest TCPA consent language, in characters.
pub const MAX_CONSENT_TEXT_LEN: usize = 4096;
/// Longest email address (RFC 5321 path limit).
pub const MAX_EMAIL_LEN: usize = 254;
/// Longest `driver_age_band`, in characters.
pub const MAX_DRIVER_AGE_BAND_LEN: usize = 16;
/// Longest timestamp string; bounds the work of the RFC 3339 parser.
pub const MAX_TIMESTAMP_LEN: usize = 64;
/// Longest attribute key, in characters.
pub const MAX_ATTRIBUTE_KEY_LEN: usize = 64;
/// Most entries under `attributes`.
pub const MAX_ATTRIBUTES: usize = 64;
/// Largest `vehicle_count`.
pub const MAX_VEHICLE_COUNT: u32 = 20;
/// How far in the future of the server clock a `consent_timestamp` may lie (clock skew allowance).
pub const MAX_CONSENT_CLOCK_SKEW_MS: u64 = 5 * 60 * 1000;
/// Most field errors listed in one response; a body of thousands of bad keys must not turn into a
/// response many times its size.
pub const MAX_FIELD_ERRORS: usize = 100;
/// Deepest JSON nesting accepted. The deepest valid request (post → lead → address) has 3 levels;
/// the limit guards the recursive value builder of simd-json against stack exhaustion.
pub const MAX_JSON_DEPTH: usize = 32;

/// The 50 US states, DC and Puerto Rico, as USPS two-letter codes.
pub const US_STATES: [&str; 52] = [
    "AL", "AK", "AZ", "AR", "CA", "CO", "CT", "DE", "FL", "GA", "HI", "ID", "IL", "IN", "IA", "KS",
    "KY", "LA", "ME", "MD", "MA", "MI", "MN", "MS", "MO", "MT", "NE", "NV", "NH", "NJ", "NM", "NY",
    "NC", "ND", "OH", "OK", "OR", "PA", "RI", "SC", "SD", "TN", "TX", "UT", "VT", "VA", "WA", "WV",
    "WI", "WY", "DC", "PR",
];

/// The contact fields CONTRACT §4.1 forbids in a ping.
pub const PII_FIELDS: [&str; 6] = [
    "first_name",
    "last_name",
    "email",
    "phone",
    "address",
    "ip_address",
];

/// Keys refused in a ping, compared after [`normalize_key`]: the contract's fields plus the obvious
/// spellings a seller's form might use, because an attribute passes through to every buyer pinged.
const PII_KEYS_NORMALIZED: [&str; 11] = [
    "firstname",
    "lastname",
    "email",
    "phone",
    "address",
    "ipaddress",
    "fullname",
    "emailaddress",
    "phonenumber",
    "streetaddress",
    "ip",
];

// Field error codes, spelled once so a typo cannot create a new code.
const MISSING_REQUIRED: &str = "missing_required";
const INVALID_TYPE: &str = "invalid_type";
const INVALID_FORMAT: &str = "invalid_format";
const OUT_OF_RANGE: &str = "out_of_range";
const UNKNOWN_FIELD: &str = "unknown_field";
const TOO_LONG: &str = "too_long";
const PII_NOT_ALLOWED: &str = "pii_not_allowed";
const LEAD_MISMATCH: &str = "lead_mismatch";

const EXPECT_OBJECT: &str = "JSON object";
const EXPECT_BOOL: &str = "boolean";
const EXPECT_UNIQUE_KEY: &str = "each key at most once";
const EXPECT_PING_KNOWN: &str = "no such field; put vertical-specific fields under attributes";
const EXPECT_KNOWN: &str = "no such field";
const EXPECT_SCORE: &str = "number within 0..1";
const EXPECT_VEHICLES: &str = "integer within 0..=20";
const EXPECT_FUTURE: &str = "a time in the future";
const EXPECT_CONSENT_TIME: &str = "a time no more than 5 minutes in the future";
const EXPECT_SCALAR: &str = "string, number, boolean or null";
const EXPECT_PII_ABSENT: &str = "absent: contact data belongs in the post";

const PING_FIELDS: [&str; 14] = [
    "auction_id",
    "vertical",
    "sub_vertical",
    "state",
    "zip3",
    "source",
    "tcpa_consent",
    "trustedform_cert_url",
    "ai_quality_score",
    "currently_insured",
    "vehicle_count",
    "driver_age_band",
    "attributes",
    "expires_at",
];
/// A one-call lead (`POST /v1/leads`): the ping's fields plus the lead.
const LEAD_CALL_FIELDS: [&str; PING_FIELDS.len() + 1] = {
    let mut out = [""; PING_FIELDS.len() + 1];
    let mut i = 0;
    while i < PING_FIELDS.len() {
        out[i] = PING_FIELDS[i];
        i += 1;
    }
    out[PING_FIELDS.len()] = "lead";
    out
};
const POST_FIELDS: [&str; 3] = ["auction_id", "bid_token", "lead"];
const LEAD_FIELDS: [&str; 7] = [
    "lead_uuid",
    "first_name",
    "last_name",
    "email",
    "phone",
    "address",
    "tcpa",
];
const ADDRESS_FIELDS: [&str; 5] = ["line1", "line2", "city", "state", "zip"];
const TCPA_FIELDS: [&str; 4] = [
    "consent_text",
    "consent_timestamp",
    "ip_address",
    "trustedform_cert_url",
];

/// How a string field is checked once it is known to be a non-empty string.
#[derive(Clone, Copy)]
enum Kind {
    /// Single-line free text: stored trimmed, control characters refused.
    Text,
    /// Free text that may contain line breaks and tabs (consent language).
    MultilineText,
    /// A machine-readable value: stored as sent, and must pass the predicate.
    Format(fn(&str) -> bool),
}

/// The rules of one string field.
struct Spec {
    /// What a valid value looks like, reported with every error of the field.
    expected: &'static str,
    /// Longest value in characters; `None` where the format already fixes the length.
    max_chars: Option<usize>,
    kind: Kind,
}

const AUCTION_ID: Spec = Spec {
    expected: "1 to 64 characters of A-Z, a-z, 0-9, _ or -",
    max_chars: Some(MAX_ID_LEN),
    kind: Kind::Format(is_auction_id),
};
const VERTICAL: Spec = Spec {
    expected: "lowercase id of a-z, 0-9 and _ such as auto_insurance",
    max_chars: Some(MAX_ID_LEN),
    kind: Kind::Format(is_snake_id),
};
const SOURCE: Spec = Spec {
    expected: "lowercase id of a-z, 0-9, _, . and - such as facebook_ads",
    max_chars: Some(MAX_ID_LEN),
    kind: Kind::Format(is_source_id),
};
const STATE: Spec = Spec {
    expected: "US state code such as TX",
    max_chars: None,
    kind: Kind::Format(is_us_state),
};
const ZIP3: Spec = Spec {
    expected: "string of 3 digits such as 787",
    max_chars: None,
    kind: Kind::Format(is_zip3),
};
const HTTPS_URL: Spec = Spec {
    expected: "https URL",
    max_chars: Some(MAX_URL_LEN),
    kind: Kind::Format(is_https_url),
};
const DRIVER_AGE_BAND: Spec = Spec {
    expected: "text of at most 16 characters such as 25-34",
    max_chars: Some(MAX_DRIVER_AGE_BAND_LEN),
    kind: Kind::Text,
};
const TIMESTAMP: Spec = Spec {
    expected: "RFC 3339 timestamp such as 2025-06-15T14:30:00Z",
    max_chars: Some(MAX_TIMESTAMP_LEN),
    kind: Kind::Format(is_rfc3339),
};
const BID_TOKEN: Spec = Spec {
    expected: "the bid_token of the ping response",
    max_chars: Some(MAX_BID_TOKEN_LEN),
    kind: Kind::Format(is_visible_ascii),
};
const LEAD_UUID: Spec = Spec {
    expected: "ld_ followed by a 26-character ULID",
    max_chars: None,
    kind: Kind::Format(is_lead_uuid),
};
const TEXT: Spec = Spec {
    expected: "text of at most 256 characters",
    max_chars: Some(MAX_STRING_LEN),
    kind: Kind::Text,
};
const EMAIL: Spec = Spec {
    expected: "email address such as jane@example.com",
    max_chars: Some(MAX_EMAIL_LEN),
    kind: Kind::Format(is_email),
};
const PHONE: Spec = Spec {
    expected: "E.164 phone such as +15125550182",
    max_chars: None,
    kind: Kind::Format(is_e164),
};
const ZIP: Spec = Spec {
    expected: "ZIP code of 5 digits or ZIP+4 such as 78701-1234",
    max_chars: None,
    kind: Kind::Format(is_zip),
};
const CONSENT_TEXT: Spec = Spec {
    expected: "the consent language shown, at most 4096 characters",
    max_chars: Some(MAX_CONSENT_TEXT_LEN),
    kind: Kind::MultilineText,
};
const IP_ADDRESS: Spec = Spec {
    expected: "IPv4 or IPv6",
    max_chars: None,
    kind: Kind::Format(is_ip),
};

/// Parses and validates a `POST /v1/ping` body (CONTRACT §4.1).
///
/// The buffer is rewritten in place by simd-json. `now_ms` (unix milliseconds) is the clock that
/// `expires_at` must lie after; capping it to the bid window is the auction's job.
pub fn parse_ping(body: &mut [u8], now_ms: u64) -> Result<Ping, ApiError> {
    let root = parse_root(body)?;
    let obj = root_object(&root)?;
    // PII is checked before anything else because its refusal replaces every other error: the
    // seller must learn first that this request may never carry contact data.
    reject_ping_pii(obj)?;

    let mut errs = Errors::default();
    let f = Fields::new(obj, "", &PING_FIELDS);
    let ping = ping_fields(&f, now_ms, &mut errs);
    f.finish(EXPECT_PING_KNOWN, &mut errs);
    errs.check()?;
    ping.ok_or_else(lost_required_field)
}

/// Parses and validates a `POST /v1/leads` body (CONTRACT §4.4): the ping's fields at the top level
/// and the full lead under `lead`, exactly as a post carries it. Contact data anywhere but under
/// `lead` is refused like a ping's, so the part sent to buyers is clean by construction.
///
/// Returns the ping, the lead, and whether the seller supplied `lead_uuid`. Matching the lead
/// against the ping ([`lead_mismatch`]) is left to the caller, as for a post.
pub fn parse_lead_call(body: &mut [u8], now_ms: u64) -> Result<(Ping, Lead, bool), ApiError> {
    let root = parse_root(body)?;
    let obj = root_object(&root)?;
    reject_ping_pii(obj)?;

    let mut errs = Errors::default();
    let f = Fields::new(obj, "", &LEAD_CALL_FIELDS);
    let ping = ping_fields(&f, now_ms, &mut errs);
    let lead = object_field(&f, "lead", true, &mut errs).and_then(|o| lead(o, now_ms, &mut errs));
    f.finish(EXPECT_PING_KNOWN, &mut errs);
    errs.check()?;
    match (ping, lead) {
        (Some(ping), Some((lead, supplied))) => Ok((ping, lead, supplied)),
        _ => Err(lost_required_field()),
    }
}

/// The ping's fields of `f`; `None` when a required one is missing or invalid (recorded in `errs`).
fn ping_fields(f: &Fields<'_, '_>, now_ms: u64, errs: &mut Errors) -> Option<Ping> {
    let auction_id = string_field(f, "auction_id", false, &AUCTION_ID, errs);
    let vertical = string_field(f, "vertical", true, &VERTICAL, errs);
    let sub_vertical = string_field(f, "sub_vertical", false, &VERTICAL, errs);
    let state = string_field(f, "state", true, &STATE, errs);
    let zip3 = string_field(f, "zip3", true, &ZIP3, errs);
    let source = string_field(f, "source", true, &SOURCE, errs);
    let tcpa_consent = bool_field(f, "tcpa_consent", true, errs);
    let trustedform = string_field(f, "trustedform_cert_url", false, &HTTPS_URL, errs);
    let ai_quality_score = score_field(f, "ai_quality_score", errs);
    let currently_insured = bool_field(f, "currently_insured", false, errs);
    let vehicle_count = vehicle_count_field(f, "vehicle_count", errs);
    let driver_age_band = string_field(f, "driver_age_band", false, &DRIVER_AGE_BAND, errs);
    let attributes = attributes_field(f, "attributes", errs);
    let expires_at_ms = expires_at_field(f, "expires_at", now_ms, errs);
    Some(Ping {
        auction_id: auction_id.map(str::to_owned),
        vertical: vertical?.to_owned(),
        sub_vertical: sub_vertical.map(str::to_owned),
        state: state?.to_owned(),
        zip3: zip3?.to_owned(),
        source: source?.to_owned(),
        tcpa_consent: tcpa_consent?,
        trustedform_cert_url: trustedform.map(str::to_owned),
        ai_quality_score,
        currently_insured,
        vehicle_count,
        driver_age_band: driver_age_band.map(str::to_owned),
        attributes,
        expires_at_ms,
    })
}

/// Parses and validates a `POST /v1/post` body (CONTRACT §4.2), minting `lead_uuid` when the
/// seller did not send one.
///
/// Only the body's own rules are checked here; the bid token's signature, the match against the
/// ping ([`lead_mismatch`]) and per-source rules ([`lead_has_path`]) need the auction.
pub fn parse_post(body: &mut [u8], now_ms: u64) -> Result<Post, ApiError> {
    let root = parse_root(body)?;
    let obj = root_object(&root)?;

    let mut errs = Errors::default();
    let f = Fields::new(obj, "", &POST_FIELDS);
    let auction_id = string_field(&f, "auction_id", true, &AUCTION_ID, &mut errs);
    let bid_token = string_field(&f, "bid_token", true, &BID_TOKEN, &mut errs);
    let lead = object_field(&f, "lead", true, &mut errs).and_then(|o| lead(o, now_ms, &mut errs));
    f.finish(EXPECT_KNOWN, &mut errs);
    errs.check()?;

    let (Some(auction_id), Some(bid_token), Some((lead, lead_uuid_supplied))) =
        (auction_id, bid_token, lead)
    else {
        return Err(lost_required_field());
    };
    Ok(Post {
        auction_id: auction_id.to_owned(),
        bid_token: bid_token.to_owned(),
        lead,
        lead_uuid_supplied,
    })
}

/// [`lead_mismatch`] as the seller's error: `Err` with 422 `lead_mismatch` and one field error per
/// disagreement.
pub fn check_lead_matches(ping_state: &str, ping_zip3: &str, lead: &Lead) -> Result<(), ApiError> {
    let mismatches = lead_mismatch(ping_state, ping_zip3, lead);
    if mismatches.is_empty() {
        return Ok(());
    }
    let mut e = ApiError::unprocessable(
        "lead_mismatch",
        "The lead does not agree with its ping; see field_errors.",
    );
    e.field_errors = mismatches;
    Err(e)
}

/// Checks that a post's lead agrees with its ping (CONTRACT §4.2): same state, and a ZIP that
/// starts with the ping's zip3. Returns one `lead_mismatch` field error per disagreement; empty
/// when the lead matches.
pub fn lead_mismatch(ping_state: &str, ping_zip3: &str, lead: &Lead) -> Vec<FieldError> {
    let mut errs = Vec::new();
    if lead.address.state != ping_state {
        errs.push(FieldError::new(
            "lead.address.state",
            LEAD_MISMATCH,
            format!("{ping_state} (the ping's state)"),
        ));
    }
    if !lead.address.zip.starts_with(ping_zip3) {
        errs.push(FieldError::new(
            "lead.address.zip",
            LEAD_MISMATCH,
            format!("a ZIP code starting with {ping_zip3} (the ping's zip3)"),
        ));
    }
    errs
}

/// Whether the lead has the field at a dotted path such as `lead.tcpa.trustedform_cert_url`, for
/// configurable rules like "TrustedForm certificate required for facebook_ads".
///
/// Optional fields (`lead.address.line2`, `lead.tcpa.trustedform_cert_url`) give `Some(present)`;
/// required fields, always present after validation, give `Some(true)`. The `lead.` prefix may be
/// left out. `None` means the path names no lead field, so a misconfigured rule can be reported
/// instead of silently passing.
pub fn lead_has_path(lead: &Lead, path: &str) -> Option<bool> {
    let path = path.strip_prefix("lead.").unwrap_or(path);
    match path {
        "address.line2" => Some(lead.address.line2.is_some()),
        "tcpa.trustedform_cert_url" => Some(lead.tcpa.trustedform_cert_url.is_some()),
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

/// The lead of a post with whether its `lead_uuid` was supplied, or `None` after recording errors.
fn lead(obj: &Object<'_>, now_ms: u64, errs: &mut Errors) -> Option<(Lead, bool)> {
    let f = Fields::new(obj, "lead", &LEAD_FIELDS);
    let lead_uuid = string_field(&f, "lead_uuid", false, &LEAD_UUID, errs);
    let first_name = string_field(&f, "first_name", true, &TEXT, errs);
    let last_name = string_field(&f, "last_name", true, &TEXT, errs);
    let email = string_field(&f, "email", true, &EMAIL, errs);
    let phone = string_field(&f, "phone", true, &PHONE, errs);
    let address = object_field(&f, "address", true, errs).and_then(|o| address(o, errs));
    let tcpa = object_field(&f, "tcpa", true, errs).and_then(|o| tcpa(o, now_ms, errs));
    f.finish(EXPECT_KNOWN, errs);

    let (Some(first_name), Some(last_name), Some(email), Some(phone), Some(address), Some(tcpa)) =
        (first_name, last_name, email, phone, address, tcpa)
    else {
        return None;
    };
    // `None` means absent or invalid; an invalid one has already recorded an error, so an id
    // minted for it is dropped with the request.
    let (lead_uuid, supplied) = match lead_uuid {
        Some(id) => (id.to_owned(), true),
        None => (format!("ld_{}", ulid::Ulid::new()), false),
    };
    Some((
        Lead {
            lead_uuid,
            first_name: first_name.to_owned(),
            last_name: last_name.to_owned(),
            email: email.to_owned(),
            phone: phone.to_owned(),
            address,
            tcpa,
        },
        supplied,
    ))
}

fn address(obj: &Object<'_>, errs: &mut Errors) -> Option<Address> {
    let f = Fields::new(obj, "lead.address", &ADDRESS_FIELDS);
    let line1 = string_field(&f, "line1", true, &TEXT, errs);
    let line2 = string_field(&f, "line2", false, &TEXT, errs);
    let city = string_field(&f, "city", true, &TEXT, errs);
    let state = string_field(&f, "state", true, &STATE, errs);
    let zip = string_field(&f, "zip", true, &ZIP, errs);
    f.finish(EXPECT_KNOWN, errs);
    Some(Address {
        line1: line1?.to_owned(),
        line2: line2.map(str::to_owned),
        city: city?.to_owned(),
        state: state?.to_owned(),
        zip: zip?.to_owned(),
    })
}

fn tcpa(obj: &Object<'_>, now_ms: u64, errs: &mut Errors) -> Option<Tcpa> {
    let f = Fields::new(obj, "lead.tcpa", &TCPA_FIELDS);
    let consent_text = string_field(&f, "consent_text", true, &CONSENT_TEXT, errs);
    let consent_timestamp = string_field(&f, "consent_timestamp", true, &TIMESTAMP, errs);
    if let Some(ts) = consent_timestamp.and_then(rfc3339_unix_ms) {
        let latest = i128::from(now_ms) + i128::from(MAX_CONSENT_CLOCK_SKEW_MS);
        if ts > latest {
            errs.push(
                f.path("consent_timestamp"),
                OUT_OF_RANGE,
                EXPECT_CONSENT_TIME,
            );
        }
    }
    let ip_address = string_field(&f, "ip_address", true, &IP_ADDRESS, errs);
    let trustedform = string_field(&f, "trustedform_cert_url", false, &HTTPS_URL, errs);
    f.finish(EXPECT_KNOWN, errs);
    Some(Tcpa {
        consent_text: consent_text?.to_owned(),
        consent_timestamp: consent_timestamp?.to_owned(),
        ip_address: ip_address?.to_owned(),
        trustedform_cert_url: trustedform.map(str::to_owned),
    })
}

/// Refuses a ping whose top-level or attribute keys name contact data, listing the keys (never
/// their values) in both the message and `field_errors`.
fn reject_ping_pii(obj: &Object<'_>) -> Result<(), ApiError> {
    let mut fields: Vec<String> = Vec::new();
    for (key, value) in obj.iter() {
        if is_pii_key(key) {
            fields.push(display_key(key));
        }
        if key == "attributes" {
            if let Value::Object(attrs) = value {
                for key in attrs.keys() {
                    if is_pii_key(key) {
                        fields.push(format!("attributes.{}", display_key(key)));
                    }
                }
            }
        }
    }
    if fields.is_empty() {
        return Ok(());
    }
    fields.sort();
    fields.dedup();
    let mut err = ApiError::unprocessable(
        PII_NOT_ALLOWED,
        format!(
            "A ping must not carry contact data; remove {} and send contact data in the post.",
            fields.join(", ")
        ),
    );
    err.field_errors = fields
        .into_iter()
        .map(|field| FieldError::new(field, PII_NOT_ALLOWED, EXPECT_PII_ABSENT))
        .collect();
    Err(err)
}

fn is_pii_key(key: &str) -> bool {
    let normalized = normalize_key(key);
    PII_KEYS_NORMALIZED.contains(&normalized.as_str())
}

/// Lowercases a key and drops everything but ASCII letters and digits, so `firstName`,
/// `First-Name` and `first_name` compare equal.
fn normalize_key(key: &str) -> String {
    key.chars()
        .filter(char::is_ascii_alphanumeric)
        .map(|c| c.to_ascii_lowercase())
        .collect()
}

/// A key as it may appear in a field path: cut to [`MAX_ATTRIBUTE_KEY_LEN`] characters, because an
/// unknown key can be as long as the body and the error must stay small.
fn display_key(key: &str) -> String {
    match key.char_indices().nth(MAX_ATTRIBUTE_KEY_LEN) {
        Some((cut, _)) => format!("{}…", &key[..cut]),
        None => key.to_owned(),
    }
}

fn parse_root(body: &mut [u8]) -> Result<Value<'_>, ApiError> {
    if exceeds_depth(body, MAX_JSON_DEPTH) {
        return Err(validation_error(vec![FieldError::new(
            "",
            OUT_OF_RANGE,
            format!("JSON nested at most {MAX_JSON_DEPTH} levels deep"),
        )]));
    }
    // The error's own Display quotes the character at the failure, which could be part of a
    // name or an email; only where the failure lies is reported. simd-json parses in place, so
    // whether the body was blank is read first.
    let blank = body.iter().all(u8::is_ascii_whitespace);
    simd_json::to_borrowed_value(body).map_err(|e| not_json(blank, e.index()))
}

/// A 400 for a body that is not JSON, in the caller's terms: where the first problem lies, never
/// the parser's own words, which name its internals (`InternalError(TapeError)`) or quote the body.
fn not_json(blank: bool, at_byte: usize) -> ApiError {
    if blank {
        ApiError::malformed_json("the body is empty; send a JSON object")
    } else if at_byte > 0 {
        ApiError::malformed_json(format_args!("the first problem is near byte {at_byte}"))
    } else {
        ApiError::malformed_json("check its syntax")
    }
}

/// A small JSON object body (the sandbox seed, OAuth client creation, a buyer's status report)
/// read field by field, so each error names the field and what it must be instead of quoting the
/// parser (`invalid type: floating point, expected usize`). As in pings, `null` counts as absent.
pub struct SmallBody(serde_json::Map<String, serde_json::Value>);

impl SmallBody {
    /// Malformed JSON is 400; a body that is not an object, or has a field outside `allowed`, is
    /// 422 naming it.
    pub fn parse(body: &[u8], allowed: &[&str]) -> Result<SmallBody, ApiError> {
        let v: serde_json::Value = serde_json::from_slice(body).map_err(|e| {
            if body.iter().all(u8::is_ascii_whitespace) {
                not_json(true, 0)
            } else {
                ApiError::malformed_json(format_args!(
                    "the first problem is at line {}, column {}",
                    e.line(),
                    e.column()
                ))
            }
        })?;
        let serde_json::Value::Object(obj) = v else {
            return Err(field_error(
                "",
                INVALID_TYPE,
                EXPECT_OBJECT,
                "The body must be a JSON object.",
            ));
        };
        if let Some(k) = obj.keys().find(|k| !allowed.contains(&k.as_str())) {
            let k = display_key(k);
            return Err(field_error(
                &k,
                UNKNOWN_FIELD,
                EXPECT_KNOWN,
                format!(
                    "Unknown field {k:?}; the fields are {}.",
                    allowed.join(", ")
                ),
            ));
        }
        Ok(SmallBody(obj))
    }

    fn get(&self, key: &str) -> Option<&serde_json::Value> {
        self.0.get(key).filter(|v| !v.is_null())
    }

    /// A required field, or 422 `missing_required` naming it.
    pub fn required<T>(key: &str, v: Option<T>) -> Result<T, ApiError> {
        v.ok_or_else(|| {
            field_error(
                key,
                MISSING_REQUIRED,
                "present",
                format!("{key} is required."),
            )
        })
    }

    /// An optional string; `expected` describes a valid one in the error.
    pub fn string(&self, key: &str, expected: &str) -> Result<Option<&str>, ApiError> {
        match self.get(key) {
            None => Ok(None),
            Some(serde_json::Value::String(s)) => Ok(Some(s)),
            Some(_) => Err(field_error(
                key,
                INVALID_TYPE,
                expected,
                format!("{key} must be {expected}."),
            )),
        }
    }

    /// An optional whole number within `range`. An integral float (`2.0`) counts as that whole
    /// number, as JSON Schema's `integer` says.
    pub fn whole(
        &self,
        key: &str,
        range: std::ops::RangeInclusive<u64>,
    ) -> Result<Option<u64>, ApiError> {
        let Some(v) = self.get(key) else {
            return Ok(None);
        };
        let n = v.as_u64().or_else(|| {
            // `u64::MAX as f64` rounds up to 2^64, so that value itself is out of range.
            v.as_f64()
                .filter(|f| f.fract() == 0.0 && *f >= 0.0 && *f < u64::MAX as f64)
                .map(|f| f as u64)
        });
        match n {
            Some(n) if range.contains(&n) => Ok(Some(n)),
            _ => {
                let expected = format!("a whole number from {} to {}", range.start(), range.end());
                let code = if v.is_number() {
                    OUT_OF_RANGE
                } else {
                    INVALID_TYPE
                };
                Err(field_error(
                    key,
                    code,
                    &expected,
                    format!("{key} must be {expected}."),
                ))
            }
        }
    }

    /// An optional array of strings; `expected` describes a valid item in the error.
    pub fn strings(&self, key: &str, expected: &str) -> Result<Option<Vec<&str>>, ApiError> {
        let Some(v) = self.get(key) else {
            return Ok(None);
        };
        let items = v.as_array().and_then(|a| {
            a.iter()
                .map(serde_json::Value::as_str)
                .collect::<Option<Vec<&str>>>()
        });
        items.map(Some).ok_or_else(|| {
            let expected = format!("a list of {expected}");
            field_error(
                key,
                INVALID_TYPE,
                &expected,
                format!("{key} must be {expected}."),
            )
        })
    }
}

/// One invalid field of a [`SmallBody`]: 422 `invalid_payload` whose message says what is wrong
/// and whose `field_errors` name the field, as for pings and posts.
pub fn field_error(
    field: &str,
    code: &'static str,
    expected: &str,
    message: impl Into<String>,
) -> ApiError {
    let mut e = ApiError::unprocessable("invalid_payload", message);
    e.field_errors = vec![FieldError::new(field, code, expected)];
    e
}

/// The `code` of a [`field_error`] for a value outside its allowed set or range.
pub const FIELD_OUT_OF_RANGE: &str = OUT_OF_RANGE;
/// The `code` of a [`field_error`] for a value of the wrong shape.
pub const FIELD_INVALID_FORMAT: &str = INVALID_FORMAT;

fn root_object<'o, 'v>(root: &'o Value<'v>) -> Result<&'o Object<'v>, ApiError> {
    match root {
        Value::Object(obj) => Ok(obj),
        _ => Err(validation_error(vec![FieldError::new(
            "",
            INVALID_TYPE,
            EXPECT_OBJECT,
        )])),
    }
}

/// Whether arrays and objects nest deeper than `max`, counting only brackets outside strings.
/// For valid JSON the count is exact; for invalid JSON it may be off, which is harmless because
/// simd-json then refuses the body before building any value.
fn exceeds_depth(body: &[u8], max: usize) -> bool {
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    for &b in body {
        if in_string {
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > max {
                    return true;
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    false
}

/// The field errors of one request, in the order the fields are checked.
#[derive(Default)]
struct Errors(Vec<FieldError>);

impl Errors {
    fn push(&mut self, field: impl Into<String>, code: &'static str, expected: impl Into<String>) {
        self.0.push(FieldError::new(field, code, expected));
    }

    fn check(self) -> Result<(), ApiError> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(validation_error(self.0))
        }
    }
}

fn validation_error(mut errs: Vec<FieldError>) -> ApiError {
    if errs.len() <= MAX_FIELD_ERRORS {
        return ApiError::validation(errs);
    }
    errs.truncate(MAX_FIELD_ERRORS);
    let mut err = ApiError::validation(errs);
    err.message = format!(
        "The request has more than {MAX_FIELD_ERRORS} invalid fields; the first \
         {MAX_FIELD_ERRORS} are in field_errors."
    );
    err
}

/// Reached only if a required field came back empty without recording an error, which would be a
/// bug here; it answers 500 instead of panicking on a request.
fn lost_required_field() -> ApiError {
    ApiError::internal("Validation lost a required field.")
}

/// The known fields of one JSON object, looked up once, with its unknown and repeated keys.
struct Fields<'o, 'v> {
    prefix: &'static str,
    known: &'static [&'static str],
    slots: Vec<Option<&'o Value<'v>>>,
    /// Unknown or repeated keys, reported by [`Fields::finish`] after the known fields' errors.
    extras: Vec<(String, &'static str)>,
}

impl<'o, 'v> Fields<'o, 'v> {
    fn new(obj: &'o Object<'v>, prefix: &'static str, known: &'static [&'static str]) -> Self {
        let mut slots = vec![None; known.len()];
        let mut extras = Vec::new();
        for (key, value) in obj.iter() {
            let key: &str = key;
            match known.iter().position(|k| *k == key) {
                // simd-json keeps every copy of a repeated key; which one a lookup finds is an
                // accident of its map, so a repeat is refused rather than guessed at.
                Some(i) if slots[i].is_some() => extras.push((key.to_owned(), EXPECT_UNIQUE_KEY)),
                Some(i) => slots[i] = Some(value),
                None => extras.push((display_key(key), UNKNOWN_FIELD)),
            }
        }
        Self {
            prefix,
            known,
            slots,
            extras,
        }
    }

    /// The field's value; `null` counts as absent.
    fn get(&self, name: &str) -> Option<&'o Value<'v>> {
        let i = self.known.iter().position(|k| *k == name)?;
        self.slots[i].filter(|v| !matches!(v, Value::Static(StaticNode::Null)))
    }

    fn path(&self, name: &str) -> String {
        if self.prefix.is_empty() {
            name.to_owned()
        } else {
            format!("{}.{name}", self.prefix)
        }
    }

    /// Reports unknown and repeated keys, sorted so the order does not depend on the map.
    fn finish(mut self, unknown_expected: &'static str, errs: &mut Errors) {
        self.extras.sort();
        self.extras.dedup();
        for (key, kind) in self.extras.iter() {
            if *kind == UNKNOWN_FIELD {
                errs.push(self.path(key), UNKNOWN_FIELD, unknown_expected);
            } else {
                errs.push(self.path(key), INVALID_FORMAT, *kind);
            }
        }
    }
}

/// A string field checked against `spec`; `None` when absent or invalid (the error is recorded).
fn string_field<'o>(
    f: &Fields<'o, '_>,
    name: &str,
    required: bool,
    spec: &Spec,
    errs: &mut Errors,
) -> Option<&'o str> {
    let missing = |errs: &mut Errors| {
        if required {
            errs.push(f.path(name), MISSING_REQUIRED, spec.expected);
        }
    };
    let Some(value) = f.get(name) else {
        missing(errs);
        return None;
    };
    let Value::String(s) = value else {
        errs.push(f.path(name), INVALID_TYPE, spec.expected);
        return None;
    };
    let s: &'o str = s.as_ref();
    let trimmed = s.trim();
    if trimmed.is_empty() {
        missing(errs);
        return None;
    }
    if let Some(max) = spec.max_chars {
        // Bytes bound characters from above, so counting is needed only for long values.
        if s.len() > max && s.chars().count() > max {
            errs.push(f.path(name), TOO_LONG, format!("at most {max} characters"));
            return None;
        }
    }
    let (value, ok) = match spec.kind {
        Kind::Text => (trimmed, !trimmed.chars().any(char::is_control)),
        Kind::MultilineText => (
            trimmed,
            !trimmed
                .chars()
                .any(|c| c.is_control() && !matches!(c, '\n' | '\r' | '\t')),
        ),
        Kind::Format(is_valid) => (s, is_valid(s)),
    };
    if ok {
        Some(value)
    } else {
        let expected = match spec.kind {
            Kind::Format(_) => spec.expected,
            Kind::Text | Kind::MultilineText => "text without control characters",
        };
        errs.push(f.path(name), INVALID_FORMAT, expected);
        None
    }
}

fn bool_field(f: &Fields<'_, '_>, name: &str, required: bool, errs: &mut Errors) -> Option<bool> {
    match f.get(name) {
        None => {
            if required {
                errs.push(f.path(name), MISSING_REQUIRED, EXPECT_BOOL);
            }
            None
        }
        Some(Value::Static(StaticNode::Bool(b))) => Some(*b),
        Some(_) => {
            errs.push(f.path(name), INVALID_TYPE, EXPECT_BOOL);
            None
        }
    }
}

/// A nested object; when it is missing or not an object only that is reported, not its children.
fn object_field<'o, 'v>(
    f: &Fields<'o, 'v>,
    name: &str,
    required: bool,
    errs: &mut Errors,
) -> Option<&'o Object<'v>> {
    match f.get(name) {
        None => {
            if required {
                errs.push(f.path(name), MISSING_REQUIRED, EXPECT_OBJECT);
            }
            None
        }
        Some(Value::Object(obj)) => Some(obj),
        Some(_) => {
            errs.push(f.path(name), INVALID_TYPE, EXPECT_OBJECT);
            None
        }
    }
}

fn score_field(f: &Fields<'_, '_>, name: &str, errs: &mut Errors) -> Option<f64> {
    let value = f.get(name)?;
    let score = match value {
        Value::Static(StaticNode::I64(i)) => *i as f64,
        Value::Static(StaticNode::U64(u)) => *u as f64,
        Value::Static(StaticNode::F64(x)) => *x,
        _ => {
            errs.push(f.path(name), INVALID_TYPE, EXPECT_SCORE);
            return None;
        }
    };
    if (0.0..=1.0).contains(&score) {
        Some(score)
    } else {
        errs.push(f.path(name), OUT_OF_RANGE, EXPECT_SCORE);
        None
    }
}

fn vehicle_count_field(f: &Fields<'_, '_>, name: &str, errs: &mut Errors) -> Option<u32> {
    let value = f.get(name)?;
    // A whole float such as 2.0 is an integer in JSON's number model, so it is accepted.
    let count: i128 = match value {
        Value::Static(StaticNode::I64(i)) => i128::from(*i),
        Value::Static(StaticNode::U64(u)) => i128::from(*u),
        Value::Static(StaticNode::F64(x)) if x.fract() == 0.0 => *x as i128,
        _ => {
            errs.push(f.path(name), INVALID_TYPE, EXPECT_VEHICLES);
            return None;
        }
    };
    match u32::try_from(count) {
        Ok(n) if n <= MAX_VEHICLE_COUNT => Some(n),
        _ => {
            errs.push(f.path(name), OUT_OF_RANGE, EXPECT_VEHICLES);
            None
        }
    }
}

fn expires_at_field(f: &Fields<'_, '_>, name: &str, now_ms: u64, errs: &mut Errors) -> Option<u64> {
    let text = string_field(f, name, false, &TIMESTAMP, errs)?;
    let ms = rfc3339_unix_ms(text)?;
    match u64::try_from(ms) {
        Ok(ms) if ms > now_ms => Some(ms),
        _ => {
            errs.push(f.path(name), OUT_OF_RANGE, EXPECT_FUTURE);
            None
        }
    }
}

/// The `attributes` object as sorted (key, scalar) pairs; every bad entry is reported.
fn attributes_field(f: &Fields<'_, '_>, name: &str, errs: &mut Errors) -> Vec<(String, Scalar)> {
    const EXPECT_ATTRIBUTES: &str = "JSON object of scalar values";
    let path = f.path(name);
    let obj = match f.get(name) {
        None => return Vec::new(),
        Some(Value::Object(obj)) => obj,
        Some(_) => {
            errs.push(path, INVALID_TYPE, EXPECT_ATTRIBUTES);
            return Vec::new();
        }
    };
    if obj.len() > MAX_ATTRIBUTES {
        // One error for the whole object: listing each entry would only repeat the same fix.
        errs.push(
            path,
            TOO_LONG,
            format!("at most {MAX_ATTRIBUTES} attributes"),
        );
        return Vec::new();
    }
    let mut attrs: Vec<(String, Scalar)> = Vec::with_capacity(obj.len());
    let mut repeated: Vec<String> = Vec::new();
    for (key, value) in obj.iter() {
        let key: &str = key;
        // The path is built only for an error, so valid attributes cost no allocation for it.
        let field = || format!("{path}.{}", display_key(key));
        if key.is_empty() || key.chars().any(char::is_control) {
            errs.push(field(), INVALID_FORMAT, "key of visible characters");
            continue;
        }
        if key.len() > MAX_ATTRIBUTE_KEY_LEN && key.chars().count() > MAX_ATTRIBUTE_KEY_LEN {
            errs.push(
                field(),
                TOO_LONG,
                format!("key of at most {MAX_ATTRIBUTE_KEY_LEN} characters"),
            );
            continue;
        }
        let scalar = match value {
            Value::Static(StaticNode::Null) => Scalar::Null,
            Value::Static(StaticNode::Bool(b)) => Scalar::Bool(*b),
            Value::Static(StaticNode::I64(i)) => Scalar::Int(*i),
            Value::Static(StaticNode::U64(u)) => match i64::try_from(*u) {
                Ok(i) => Scalar::Int(i),
                Err(_) => {
                    errs.push(
                        field(),
                        OUT_OF_RANGE,
                        "integer within the signed 64-bit range",
                    );
                    continue;
                }
            },
            Value::Static(StaticNode::F64(x)) => Scalar::Float(*x),
            Value::String(s) => {
                if s.len() > MAX_STRING_LEN && s.chars().count() > MAX_STRING_LEN {
                    errs.push(
                        field(),
                        TOO_LONG,
                        format!("at most {MAX_STRING_LEN} characters"),
                    );
                    continue;
                }
                Scalar::Str(s.to_string())
            }
            Value::Array(_) | Value::Object(_) => {
                errs.push(field(), INVALID_TYPE, EXPECT_SCALAR);
                continue;
            }
        };
        attrs.push((key.to_owned(), scalar));
    }
    attrs.sort_by(|a, b| a.0.cmp(&b.0));
    for pair in attrs.windows(2) {
        if pair[0].0 == pair[1].0 && repeated.last() != Some(&pair[0].0) {
            repeated.push(pair[0].0.clone());
        }
    }
    for key in repeated {
        errs.push(format!("{path}.{key}"), INVALID_FORMAT, EXPECT_UNIQUE_KEY);
    }
    attrs
}

/// Unix milliseconds of an RFC 3339 timestamp, or `None` if it does not parse.
fn rfc3339_unix_ms(text: &str) -> Option<i128> {
    let t =
        time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339).ok()?;
    Some(t.unix_timestamp_nanos().div_euclid(1_000_000))
}

fn is_rfc3339(text: &str) -> bool {
    rfc3339_unix_ms(text).is_some()
}

fn is_auction_id(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_ID_LEN
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// A lowercase id of a-z, 0-9 and `_`, at most [`MAX_ID_LEN`] bytes (verticals, sub-verticals).
pub fn is_snake_id(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_ID_LEN
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

fn is_source_id(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_ID_LEN
        && s.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'_' | b'.' | b'-')
        })
}

fn is_us_state(s: &str) -> bool {
    US_STATES.contains(&s)
}

fn all_digits(s: &str) -> bool {
    s.bytes().all(|b| b.is_ascii_digit())
}

fn is_zip3(s: &str) -> bool {
    s.len() == 3 && all_digits(s)
}

fn is_zip(s: &str) -> bool {
    match s.len() {
        5 => all_digits(s),
        10 => s.as_bytes()[5] == b'-' && all_digits(&s[..5]) && all_digits(&s[6..]),
        _ => false,
    }
}

fn is_https_url(s: &str) -> bool {
    s.len() > "https://".len()
        && s.starts_with("https://")
        && s.bytes().all(|b| b.is_ascii_graphic())
}

fn is_visible_ascii(s: &str) -> bool {
    s.bytes().all(|b| b.is_ascii_graphic())
}

/// `ld_` and a ULID in its canonical uppercase form, so one lead has one spelling of its id.
fn is_lead_uuid(s: &str) -> bool {
    let Some(rest) = s.strip_prefix("ld_") else {
        return false;
    };
    // Decoding alone would accept lowercase and wrap a first character above 7; the round trip
    // accepts only the canonical 26-character spelling.
    rest.len() == 26 && ulid::Ulid::from_string(rest).is_ok_and(|id| id.to_string() == rest)
}

/// One `@`, a non-empty local part and a dotted domain, without whitespace or control characters.
/// Deliverability is the buyer's concern; this only catches what cannot be an address at all.
fn is_email(s: &str) -> bool {
    let Some((local, domain)) = s.split_once('@') else {
        return false;
    };
    !local.is_empty()
        && !domain.contains('@')
        && domain.contains('.')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && !domain.contains("..")
        && !s.chars().any(|c| c.is_whitespace() || c.is_control())
}

/// E.164: `+`, then 8 to 15 digits of which the first (the country code) is not 0.
fn is_e164(s: &str) -> bool {
    let Some(digits) = s.strip_prefix('+') else {
        return false;
    };
    (8..=15).contains(&digits.len()) && all_digits(digits) && !digits.starts_with('0')
}

fn is_ip(s: &str) -> bool {
    s.parse::<IpAddr>().is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::StatusCode;

    /// 2025-06-15T15:06:40Z.
    const NOW_MS: u64 = 1_750_000_000_000;

    fn ping(json: &str) -> Result<Ping, ApiError> {
        parse_ping(&mut json.as_bytes().to_vec(), NOW_MS)
    }

    fn post(json: &str) -> Result<Post, ApiError> {
        parse_post(&mut json.as_bytes().to_vec(), NOW_MS)
    }

    fn fields(err: &ApiError) -> Vec<(&str, &str)> {
        err.field_errors
            .iter()
            .map(|e| (e.field.as_str(), e.code))
            .collect()
    }

    fn valid_ping() -> serde_json::Value {
        serde_json::json!({
            "auction_id": "auc_01JXYZ",
            "vertical": "auto_insurance",
            "sub_vertical": "full_coverage",
            "state": "TX",
            "zip3": "787",
            "source": "facebook_ads",
            "tcpa_consent": true,
            "trustedform_cert_url": "https://cert.trustedform.com/abc123",
            "ai_quality_score": 0.82,
            "currently_insured": true,
            "vehicle_count": 2,
            "driver_age_band": "25-34",
            "attributes": {"homeowner": true, "credit": "good", "age": 31, "ratio": 0.5, "x": null},
            "expires_at": "2030-01-01T00:00:00Z"
        })
    }

    fn valid_post() -> serde_json::Value {
        serde_json::json!({
            "auction_id": "auc_01JXYZ",
            "bid_token": "bid_abc.def-123",
            "lead": {
                "lead_uuid": "ld_01JXZ3N6M2Q8W5D4R7T9V0B1C2",
                "first_name": " Jane ",
                "last_name": "Doe",
                "email": "jane.doe@example.com",
                "phone": "+15125550182",
                "address": {"line1": "1 Main St", "line2": "Apt 2", "city": "Austin",
                            "state": "TX", "zip": "78701-1234"},
                "tcpa": {
                    "consent_text": "I agree to be contacted.\nReally.",
                    "consent_timestamp": "2025-06-15T15:00:00Z",
                    "ip_address": "203.0.113.7",
                    "trustedform_cert_url": "https://cert.trustedform.com/abc123"
                }
            }
        })
    }

    #[test]
    fn valid_ping_parses() {
        let p = ping(&valid_ping().to_string()).expect("valid ping");
        assert_eq!(p.auction_id.as_deref(), Some("auc_01JXYZ"));
        assert_eq!(p.vertical, "auto_insurance");
        assert_eq!(p.sub_vertical.as_deref(), Some("full_coverage"));
        assert_eq!(p.state, "TX");
        assert_eq!(p.zip3, "787");
        assert_eq!(p.source, "facebook_ads");
        assert!(p.tcpa_consent);
        assert_eq!(p.ai_quality_score, Some(0.82));
        assert_eq!(p.currently_insured, Some(true));
        assert_eq!(p.vehicle_count, Some(2));
        assert_eq!(p.driver_age_band.as_deref(), Some("25-34"));
        assert_eq!(p.expires_at_ms, Some(1_893_456_000_000));
        assert_eq!(
            p.attributes,
            vec![
                ("age".to_owned(), Scalar::Int(31)),
                ("credit".to_owned(), Scalar::Str("good".to_owned())),
                ("homeowner".to_owned(), Scalar::Bool(true)),
                ("ratio".to_owned(), Scalar::Float(0.5)),
                ("x".to_owned(), Scalar::Null),
            ]
        );
    }

    #[test]
    fn minimal_ping_parses_and_empty_or_null_optionals_are_absent() {
        let p = ping(
            r#"{"vertical":"auto","state":"PR","zip3":"007","source":"web.form-1",
                "tcpa_consent":false,"auction_id":"","sub_vertical":null,"attributes":null}"#,
        )
        .expect("minimal ping");
        assert_eq!(p.auction_id, None);
        assert_eq!(p.sub_vertical, None);
        assert!(p.attributes.is_empty());
        assert!(!p.tcpa_consent);
    }

    #[test]
    fn every_ping_field_error_is_reported_at_once() {
        let mut v = valid_ping();
        let o = v.as_object_mut().unwrap();
        o.remove("vertical");
        o.insert("state".into(), "Texas".into());
        o.insert("zip3".into(), "78".into());
        o.insert("ai_quality_score".into(), 1.5.into());
        let err = ping(&v.to_string()).unwrap_err();
        assert_eq!(err.status, StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(err.code, "invalid_payload");
        assert_eq!(
            fields(&err),
            vec![
                ("vertical", "missing_required"),
                ("state", "invalid_format"),
                ("zip3", "invalid_format"),
                ("ai_quality_score", "out_of_range"),
            ]
        );
        assert_eq!(err.field_errors[1].expected, "US state code such as TX");
        assert!(err.message.contains("4 invalid fields"), "{}", err.message);
    }

    #[test]
    fn ping_type_errors() {
        let mut v = valid_ping();
        let o = v.as_object_mut().unwrap();
        o.insert("zip3".into(), 787.into());
        o.insert("tcpa_consent".into(), "yes".into());
        o.insert("vehicle_count".into(), 21.into());
        o.insert("currently_insured".into(), 1.into());
        o.insert("ai_quality_score".into(), "high".into());
        o.insert(
            "trustedform_cert_url".into(),
            "http://cert.trustedform.com/x".into(),
        );
        o.insert("vertical".into(), "Auto Insurance".into());
        o.insert("auction_id".into(), "x".repeat(65).into());
        let err = ping(&v.to_string()).unwrap_err();
        assert_eq!(
            fields(&err),
            vec![
                ("auction_id", "too_long"),
                ("vertical", "invalid_format"),
                ("zip3", "invalid_type"),
                ("tcpa_consent", "invalid_type"),
                ("trustedform_cert_url", "invalid_format"),
                ("ai_quality_score", "invalid_type"),
                ("currently_insured", "invalid_type"),
                ("vehicle_count", "out_of_range"),
            ]
        );
    }

    #[test]
    fn vehicle_count_accepts_whole_floats_only() {
        let mut v = valid_ping();
        v["vehicle_count"] = 3.0.into();
        assert_eq!(ping(&v.to_string()).unwrap().vehicle_count, Some(3));
        v["vehicle_count"] = 2.5.into();
        assert_eq!(
            fields(&ping(&v.to_string()).unwrap_err()),
            vec![("vehicle_count", "invalid_type")]
        );
        v["vehicle_count"] = (-1).into();
        assert_eq!(
            fields(&ping(&v.to_string()).unwrap_err()),
            vec![("vehicle_count", "out_of_range")]
        );
    }

    #[test]
    fn pii_in_ping_is_refused_without_echoing_values() {
        let mut v = valid_ping();
        v["email"] = "jane.secret@example.com".into();
        v["phone"] = "+15125550182".into();
        v["attributes"]["firstName"] = "Janine".into();
        // Other errors are not reported alongside: PII refusal comes first.
        v["state"] = "XX".into();
        let err = ping(&v.to_string()).unwrap_err();
        assert_eq!(err.status, StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(err.code, "pii_not_allowed");
        assert_eq!(
            fields(&err),
            vec![
                ("attributes.firstName", "pii_not_allowed"),
                ("email", "pii_not_allowed"),
                ("phone", "pii_not_allowed"),
            ]
        );
        assert!(err
            .field_errors
            .iter()
            .all(|e| e.expected == "absent: contact data belongs in the post"));
        for name in ["email", "phone", "attributes.firstName"] {
            assert!(err.message.contains(name), "{}", err.message);
        }
        let body = String::from_utf8(err.body("req_x")).unwrap();
        for secret in ["jane.secret", "example.com", "5125550182", "Janine"] {
            assert!(!body.contains(secret), "leaked {secret}: {body}");
        }
    }

    #[test]
    fn each_contract_pii_field_is_refused() {
        for key in PII_FIELDS {
            let mut v = valid_ping();
            v[key] = serde_json::json!({"line1": "1 Main St"});
            let err = ping(&v.to_string()).unwrap_err();
            assert_eq!(err.code, "pii_not_allowed", "{key}");
            assert_eq!(fields(&err), vec![(key, "pii_not_allowed")]);
            assert!(!err.message.contains("Main St"));
        }
    }

    #[test]
    fn malformed_json_is_400_without_echoing_input() {
        for body in ["", "{", r#"{"email":"jane@x.com""#, "{\"a\":1,}", "nul"] {
            let err = ping(body).unwrap_err();
            assert_eq!(err.status, StatusCode::BAD_REQUEST, "{body:?}");
            assert_eq!(err.code, "malformed_json");
            assert!(!err.message.contains("jane"), "{}", err.message);
        }
        let err = post(r#"{"lead":{"email":"jane@x.com"}"#).unwrap_err();
        assert_eq!(err.status, StatusCode::BAD_REQUEST);
        assert!(err.field_errors.is_empty());
    }

    #[test]
    fn non_object_root_is_422_on_root() {
        for body in ["[]", "42", "\"ping\"", "null"] {
            let err = ping(body).unwrap_err();
            assert_eq!(err.status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
            assert_eq!(fields(&err), vec![("", "invalid_type")]);
            assert_eq!(err.field_errors[0].expected, "JSON object");
        }
    }

    #[test]
    fn deep_nesting_is_refused_before_building_values() {
        let deep = format!(
            r#"{{"vertical":"auto","attributes":{{"a":{}{}}}}}"#,
            "[".repeat(10_000),
            "]".repeat(10_000)
        );
        let err = ping(&deep).unwrap_err();
        assert_eq!(fields(&err), vec![("", "out_of_range")]);
        // Brackets inside strings do not count.
        let mut v = valid_ping();
        v["attributes"]["note"] = "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[".into();
        assert!(ping(&v.to_string()).is_ok());
    }

    #[test]
    fn unknown_and_repeated_fields() {
        let mut v = valid_ping();
        v["credit_rating"] = "good".into();
        v["aaa"] = 1.into();
        let err = ping(&v.to_string()).unwrap_err();
        assert_eq!(
            fields(&err),
            vec![("aaa", "unknown_field"), ("credit_rating", "unknown_field")]
        );
        assert_eq!(
            err.field_errors[0].expected,
            "no such field; put vertical-specific fields under attributes"
        );

        let err = ping(
            r#"{"vertical":"auto","state":"TX","state":"CA","zip3":"787","source":"web",
                "tcpa_consent":true,"attributes":{"k":1,"k":2}}"#,
        )
        .unwrap_err();
        assert_eq!(
            fields(&err),
            vec![
                ("attributes.k", "invalid_format"),
                ("state", "invalid_format")
            ]
        );
        assert_eq!(err.field_errors[1].expected, "each key at most once");
    }

    #[test]
    fn attributes_must_be_scalars_within_limits() {
        let mut v = valid_ping();
        v["attributes"] = serde_json::json!({
            "nested": {"a": 1},
            "list": [1, 2],
            "long": "x".repeat(MAX_STRING_LEN + 1),
            "ok": "y".repeat(MAX_STRING_LEN),
            "big": u64::MAX,
        });
        let k = "k".repeat(MAX_ATTRIBUTE_KEY_LEN + 1);
        v["attributes"][&k] = 1.into();
        let err = ping(&v.to_string()).unwrap_err();
        let mut got = fields(&err);
        got.sort();
        let long_key = format!("attributes.{}…", "k".repeat(MAX_ATTRIBUTE_KEY_LEN));
        let mut want = vec![
            ("attributes.big", "out_of_range"),
            (long_key.as_str(), "too_long"),
            ("attributes.list", "invalid_type"),
            ("attributes.long", "too_long"),
            ("attributes.nested", "invalid_type"),
        ];
        want.sort();
        assert_eq!(got, want);

        let many: serde_json::Map<String, serde_json::Value> = (0..=MAX_ATTRIBUTES)
            .map(|i| (format!("a{i}"), serde_json::Value::from(i)))
            .collect();
        v["attributes"] = many.into();
        let err = ping(&v.to_string()).unwrap_err();
        assert_eq!(fields(&err), vec![("attributes", "too_long")]);

        v["attributes"] = serde_json::json!(["a"]);
        let err = ping(&v.to_string()).unwrap_err();
        assert_eq!(fields(&err), vec![("attributes", "invalid_type")]);
    }

    #[test]
    fn expires_at_must_be_a_future_rfc3339_time() {
        let mut v = valid_ping();
        v["expires_at"] = "2020-01-01T00:00:00Z".into();
        let err = ping(&v.to_string()).unwrap_err();
        assert_eq!(fields(&err), vec![("expires_at", "out_of_range")]);
        assert_eq!(err.field_errors[0].expected, "a time in the future");

        v["expires_at"] = "tomorrow".into();
        let err = ping(&v.to_string()).unwrap_err();
        assert_eq!(fields(&err), vec![("expires_at", "invalid_format")]);

        // Offsets are honoured and not capped here: 2025-06-15T17:06:41+02:00 is 1 s after now.
        v["expires_at"] = "2025-06-15T17:06:41+02:00".into();
        assert_eq!(
            ping(&v.to_string()).unwrap().expires_at_ms,
            Some(NOW_MS + 1_000)
        );
        v["expires_at"] = "2025-06-15T15:06:40Z".into();
        assert!(
            ping(&v.to_string()).is_err(),
            "now itself is not in the future"
        );
    }

    #[test]
    fn valid_post_parses() {
        let p = post(&valid_post().to_string()).expect("valid post");
        assert_eq!(p.auction_id, "auc_01JXYZ");
        assert_eq!(p.bid_token, "bid_abc.def-123");
        assert!(p.lead_uuid_supplied);
        assert_eq!(p.lead.lead_uuid, "ld_01JXZ3N6M2Q8W5D4R7T9V0B1C2");
        assert_eq!(p.lead.first_name, "Jane", "free text is trimmed");
        assert_eq!(p.lead.phone, "+15125550182");
        assert_eq!(p.lead.address.line2.as_deref(), Some("Apt 2"));
        assert_eq!(p.lead.address.zip, "78701-1234");
        assert_eq!(
            p.lead.tcpa.consent_text,
            "I agree to be contacted.\nReally."
        );
        assert_eq!(p.lead.tcpa.consent_timestamp, "2025-06-15T15:00:00Z");
        assert_eq!(p.lead.tcpa.ip_address, "203.0.113.7");
    }

    #[test]
    fn post_without_lead_uuid_mints_one() {
        let mut v = valid_post();
        v["lead"].as_object_mut().unwrap().remove("lead_uuid");
        v["lead"]["address"]
            .as_object_mut()
            .unwrap()
            .remove("line2");
        v["lead"]["tcpa"]["ip_address"] = "2001:db8::1".into();
        let p = post(&v.to_string()).expect("valid post");
        assert!(!p.lead_uuid_supplied);
        assert!(is_lead_uuid(&p.lead.lead_uuid), "{}", p.lead.lead_uuid);
        assert_eq!(p.lead.address.line2, None);
    }

    #[test]
    fn post_field_errors_are_reported_together_without_values() {
        let mut v = valid_post();
        v["lead"]["phone"] = "512-555-0182".into();
        v["lead"]["email"] = "jane.doe.example.com".into();
        v["lead"]["tcpa"]["ip_address"] = "300.1.2.3".into();
        v["lead"]["address"]["zip"] = "1234".into();
        v["lead"]["lead_uuid"] = "ld_01jxz3n6m2q8w5d4r7t9v0b1c2".into();
        v["lead"]["tcpa"]["consent_timestamp"] = "2025-06-15T15:20:00Z".into();
        v["lead"]["middle_name"] = "Q".into();
        let err = post(&v.to_string()).unwrap_err();
        assert_eq!(err.status, StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(
            fields(&err),
            vec![
                ("lead.lead_uuid", "invalid_format"),
                ("lead.email", "invalid_format"),
                ("lead.phone", "invalid_format"),
                ("lead.address.zip", "invalid_format"),
                ("lead.tcpa.consent_timestamp", "out_of_range"),
                ("lead.tcpa.ip_address", "invalid_format"),
                ("lead.middle_name", "unknown_field"),
            ]
        );
        let body = String::from_utf8(err.body("req_x")).unwrap();
        for secret in [
            "512-555",
            "jane.doe",
            "300.1.2.3",
            "\"1234\"",
            "Jane",
            "Main St",
        ] {
            assert!(!body.contains(secret), "leaked {secret}: {body}");
        }
    }

    #[test]
    fn post_missing_nested_objects_report_only_the_object() {
        let mut v = valid_post();
        let lead = v["lead"].as_object_mut().unwrap();
        lead.remove("address");
        lead.insert("tcpa".into(), "yes".into());
        lead.remove("first_name");
        v.as_object_mut().unwrap().remove("bid_token");
        let err = post(&v.to_string()).unwrap_err();
        assert_eq!(
            fields(&err),
            vec![
                ("bid_token", "missing_required"),
                ("lead.first_name", "missing_required"),
                ("lead.address", "missing_required"),
                ("lead.tcpa", "invalid_type"),
            ]
        );

        let err = post(r#"{"auction_id":"a","bid_token":"b","extra":1}"#).unwrap_err();
        assert_eq!(
            fields(&err),
            vec![("lead", "missing_required"), ("extra", "unknown_field")]
        );
    }

    #[test]
    fn post_text_rules() {
        let mut v = valid_post();
        v["lead"]["last_name"] = "   ".into();
        v["lead"]["first_name"] = "Ja\u{0}ne".into();
        v["lead"]["address"]["city"] = "x".repeat(MAX_STRING_LEN + 1).into();
        v["lead"]["address"]["state"] = "tx".into();
        v["lead"]["tcpa"]["consent_text"] = "ok\u{7}".into();
        v["lead"]["tcpa"]["trustedform_cert_url"] = "https://cert.example.com/a b".into();
        let err = post(&v.to_string()).unwrap_err();
        assert_eq!(
            fields(&err),
            vec![
                ("lead.first_name", "invalid_format"),
                ("lead.last_name", "missing_required"),
                ("lead.address.city", "too_long"),
                ("lead.address.state", "invalid_format"),
                ("lead.tcpa.consent_text", "invalid_format"),
                ("lead.tcpa.trustedform_cert_url", "invalid_format"),
            ]
        );
    }

    #[test]
    fn field_errors_are_capped() {
        let keys: serde_json::Map<String, serde_json::Value> = (0..500)
            .map(|i| (format!("k{i:03}"), serde_json::Value::from(i)))
            .collect();
        let err = post(&serde_json::Value::from(keys).to_string()).unwrap_err();
        assert_eq!(err.field_errors.len(), MAX_FIELD_ERRORS);
        assert!(err.message.contains("more than 100"), "{}", err.message);
    }

    #[test]
    fn format_predicates() {
        assert!(is_e164("+15125550182"));
        assert!(is_e164("+44207946095"));
        assert!(!is_e164("+0512555018"));
        assert!(!is_e164("+1512"));
        assert!(!is_e164("+1234567890123456"));
        assert!(!is_e164("15125550182"));
        assert!(is_email("a@b.co"));
        assert!(!is_email("a@b@c.co"));
        assert!(!is_email("@b.co"));
        assert!(!is_email("a@localhost"));
        assert!(!is_email("a b@c.co"));
        assert!(is_zip("78701") && is_zip("78701-1234"));
        assert!(!is_zip("787011234") && !is_zip("78701-123") && !is_zip("7870a"));
        assert!(is_ip("::1") && is_ip("10.0.0.1"));
        assert!(!is_ip("10.0.0") && !is_ip("example.com"));
        assert!(is_lead_uuid("ld_01JXZ3N6M2Q8W5D4R7T9V0B1C2"));
        assert!(
            !is_lead_uuid("ld_81JXZ3N6M2Q8W5D4R7T9V0B1C2"),
            "overflows 128 bits"
        );
        assert!(!is_lead_uuid("ld_01JXZ3N6M2Q8W5D4R7T9V0B1C"));
        assert!(!is_lead_uuid("01JXZ3N6M2Q8W5D4R7T9V0B1C2"));
        assert_eq!(US_STATES.len(), 52);
        assert!(is_us_state("DC") && is_us_state("PR") && !is_us_state("GU"));
    }

    #[test]
    fn lead_mismatch_reports_state_and_zip() {
        let lead = post(&valid_post().to_string()).unwrap().lead;
        assert!(lead_mismatch("TX", "787", &lead).is_empty());
        let errs = lead_mismatch("CA", "900", &lead);
        assert_eq!(
            errs,
            vec![
                FieldError::new(
                    "lead.address.state",
                    "lead_mismatch",
                    "CA (the ping's state)"
                ),
                FieldError::new(
                    "lead.address.zip",
                    "lead_mismatch",
                    "a ZIP code starting with 900 (the ping's zip3)"
                ),
            ]
        );
        assert_eq!(lead_mismatch("TX", "786", &lead).len(), 1);
    }

    #[test]
    fn lead_has_path_reports_optional_fields() {
        let mut lead = post(&valid_post().to_string()).unwrap().lead;
        assert_eq!(
            lead_has_path(&lead, "lead.tcpa.trustedform_cert_url"),
            Some(true)
        );
        assert_eq!(lead_has_path(&lead, "lead.address.line2"), Some(true));
        lead.tcpa.trustedform_cert_url = None;
        lead.address.line2 = None;
        assert_eq!(
            lead_has_path(&lead, "lead.tcpa.trustedform_cert_url"),
            Some(false)
        );
        assert_eq!(lead_has_path(&lead, "address.line2"), Some(false));
        assert_eq!(lead_has_path(&lead, "lead.email"), Some(true));
        assert_eq!(lead_has_path(&lead, "lead.tcpa.ip_address"), Some(true));
        assert_eq!(lead_has_path(&lead, "lead.ssn"), None);
        assert_eq!(lead_has_path(&lead, "lead.address.line3"), None);
    }
}

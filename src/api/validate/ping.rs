//! The ping's fields (CONTRACT §4.1): [`parse_ping`], the ping half of a one-call lead
//! ([`parse_lead_call`]), and the refusal of a ping that carries contact data. It does not own the
//! lead's fields (`lead`) or how one field is read and checked (`fields`, `formats`).

use simd_json::borrowed::{Object, Value};

use super::fields::{
    attributes_field, bool_field, display_key, expires_at_field, lost_required_field, object_field,
    score_field, string_field, vehicle_count_field, Errors, Fields,
};
use super::formats::{AUCTION_ID, DRIVER_AGE_BAND, HTTPS_URL, SOURCE, STATE, VERTICAL, ZIP3};
use super::json::{parse_root, root_object};
use super::lead::lead;
use super::{EXPECT_PII_ABSENT, EXPECT_PING_KNOWN, PII_NOT_ALLOWED};
use crate::error::{ApiError, FieldError};
use crate::model::{Lead, Ping};

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
/// against the ping ([`lead_mismatch`](super::lead_mismatch)) is left to the caller, as for a
/// post.
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

// Architecture Invariant [pii-post-only]: a ping carrying contact fields is refused before any
// buyer sees it; contact data travels only on the post path.
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

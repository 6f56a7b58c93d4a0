//! Request validation for the seller API: turns the bytes of a ping or a post into a validated
//! [`Ping`](crate::model::Ping) or [`Post`](crate::model::Post).
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

/// Longest free-text value (names, street, city, attribute strings), in characters.
pub const MAX_STRING_LEN: usize = 256;
/// Longest identifier (`auction_id`, `vertical`, `sub_vertical`, `source`), in characters; the
/// same bound [`is_snake_id`] applies.
pub const MAX_ID_LEN: usize = crate::types::id::MAX_ID_LEN;
/// Longest URL (`trustedform_cert_url`), in characters.
pub const MAX_URL_LEN: usize = 512;
/// Longest bid token, in characters.
pub const MAX_BID_TOKEN_LEN: usize = 512;
/// Longest TCPA consent language, in characters.
pub const MAX_CONSENT_TEXT_LEN: usize = 4096;
/// Longest email address (RFC 5321 path limit).
pub const MAX_EMAIL_LEN: usize = 254;
/// Longest `driver_age_band`, in characters. It lives in `types` because buyer filters name bands too.
pub use crate::types::MAX_DRIVER_AGE_BAND_LEN;
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

// Field error codes, spelled once so a typo cannot create a new code.
const MISSING_REQUIRED: &str = "missing_required";
const INVALID_TYPE: &str = "invalid_type";
const INVALID_FORMAT: &str = "invalid_format";
const OUT_OF_RANGE: &str = "out_of_range";
const UNKNOWN_FIELD: &str = "unknown_field";
const TOO_LONG: &str = "too_long";
const PII_NOT_ALLOWED: &str = "pii_not_allowed";

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

mod fields;
mod formats;
mod json;
mod lead;
mod ping;
mod small_body;

pub use crate::types::is_snake_id;
pub use lead::parse_post;
pub use ping::{parse_lead_call, parse_ping};
pub use small_body::{field_error, SmallBody, FIELD_INVALID_FORMAT, FIELD_OUT_OF_RANGE};

#[cfg(test)]
mod tests;

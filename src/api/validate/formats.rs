//! What each string field may look like: [`Spec`] (expected wording, length, text or format) for
//! every string field, and the format predicates (ids, states, ZIP codes, URLs, email, E.164, IP,
//! RFC 3339). It does not read JSON or record errors (`fields`).

use std::net::IpAddr;

use crate::types::is_snake_id;

use super::{
    MAX_BID_TOKEN_LEN, MAX_CONSENT_TEXT_LEN, MAX_DRIVER_AGE_BAND_LEN, MAX_EMAIL_LEN, MAX_ID_LEN,
    MAX_STRING_LEN, MAX_TIMESTAMP_LEN, MAX_URL_LEN, US_STATES,
};

/// How a string field is checked once it is known to be a non-empty string.
#[derive(Clone, Copy)]
pub(super) enum Kind {
    /// Single-line free text: stored trimmed, control characters refused.
    Text,
    /// Free text that may contain line breaks and tabs (consent language).
    MultilineText,
    /// A machine-readable value: stored as sent, and must pass the predicate.
    Format(fn(&str) -> bool),
}

/// The rules of one string field.
pub(super) struct Spec {
    /// What a valid value looks like, reported with every error of the field.
    pub(super) expected: &'static str,
    /// Longest value in characters; `None` where the format already fixes the length.
    pub(super) max_chars: Option<usize>,
    pub(super) kind: Kind,
}

pub(super) const AUCTION_ID: Spec = Spec {
    expected: "1 to 64 characters of A-Z, a-z, 0-9, _ or -",
    max_chars: Some(MAX_ID_LEN),
    kind: Kind::Format(is_auction_id),
};
pub(super) const VERTICAL: Spec = Spec {
    expected: "lowercase id of a-z, 0-9 and _ such as auto_insurance",
    max_chars: Some(MAX_ID_LEN),
    kind: Kind::Format(is_snake_id),
};
pub(super) const SOURCE: Spec = Spec {
    expected: "lowercase id of a-z, 0-9, _, . and - such as facebook_ads",
    max_chars: Some(MAX_ID_LEN),
    kind: Kind::Format(is_source_id),
};
pub(super) const STATE: Spec = Spec {
    expected: "US state code such as TX",
    max_chars: None,
    kind: Kind::Format(is_us_state),
};
pub(super) const ZIP3: Spec = Spec {
    expected: "string of 3 digits such as 787",
    max_chars: None,
    kind: Kind::Format(is_zip3),
};
pub(super) const HTTPS_URL: Spec = Spec {
    expected: "https URL",
    max_chars: Some(MAX_URL_LEN),
    kind: Kind::Format(is_https_url),
};
pub(super) const DRIVER_AGE_BAND: Spec = Spec {
    expected: "text of at most 16 characters such as 25-34",
    max_chars: Some(MAX_DRIVER_AGE_BAND_LEN),
    kind: Kind::Text,
};
pub(super) const TIMESTAMP: Spec = Spec {
    expected: "RFC 3339 timestamp such as 2025-06-15T14:30:00Z",
    max_chars: Some(MAX_TIMESTAMP_LEN),
    kind: Kind::Format(is_rfc3339),
};
pub(super) const BID_TOKEN: Spec = Spec {
    expected: "the bid_token of the ping response",
    max_chars: Some(MAX_BID_TOKEN_LEN),
    kind: Kind::Format(is_visible_ascii),
};
pub(super) const LEAD_UUID: Spec = Spec {
    expected: "ld_ followed by a 26-character ULID",
    max_chars: None,
    kind: Kind::Format(is_lead_uuid),
};
pub(super) const TEXT: Spec = Spec {
    expected: "text of at most 256 characters",
    max_chars: Some(MAX_STRING_LEN),
    kind: Kind::Text,
};
pub(super) const EMAIL: Spec = Spec {
    expected: "email address such as jane@example.com",
    max_chars: Some(MAX_EMAIL_LEN),
    kind: Kind::Format(is_email),
};
pub(super) const PHONE: Spec = Spec {
    expected: "E.164 phone such as +15125550182",
    max_chars: None,
    kind: Kind::Format(is_e164),
};
pub(super) const ZIP: Spec = Spec {
    expected: "ZIP code of 5 digits or ZIP+4 such as 78701-1234",
    max_chars: None,
    kind: Kind::Format(is_zip),
};
pub(super) const CONSENT_TEXT: Spec = Spec {
    expected: "the consent language shown, at most 4096 characters",
    max_chars: Some(MAX_CONSENT_TEXT_LEN),
    kind: Kind::MultilineText,
};
pub(super) const IP_ADDRESS: Spec = Spec {
    expected: "IPv4 or IPv6",
    max_chars: None,
    kind: Kind::Format(is_ip),
};

/// Unix milliseconds of an RFC 3339 timestamp, or `None` if it does not parse.
pub(super) fn rfc3339_unix_ms(text: &str) -> Option<i128> {
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

fn is_source_id(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_ID_LEN
        && s.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'_' | b'.' | b'-')
        })
}

pub(super) fn is_us_state(s: &str) -> bool {
    US_STATES.contains(&s)
}

fn all_digits(s: &str) -> bool {
    s.bytes().all(|b| b.is_ascii_digit())
}

fn is_zip3(s: &str) -> bool {
    s.len() == 3 && all_digits(s)
}

pub(super) fn is_zip(s: &str) -> bool {
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
pub(super) fn is_lead_uuid(s: &str) -> bool {
    let Some(rest) = s.strip_prefix("ld_") else {
        return false;
    };
    // Decoding alone would accept lowercase and wrap a first character above 7; the round trip
    // accepts only the canonical 26-character spelling.
    rest.len() == 26 && ulid::Ulid::from_string(rest).is_ok_and(|id| id.to_string() == rest)
}

/// One `@`, a non-empty local part and a dotted domain, without whitespace or control characters.
/// Deliverability is the buyer's concern; this only catches what cannot be an address at all.
pub(super) fn is_email(s: &str) -> bool {
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
pub(super) fn is_e164(s: &str) -> bool {
    let Some(digits) = s.strip_prefix('+') else {
        return false;
    };
    (8..=15).contains(&digits.len()) && all_digits(digits) && !digits.starts_with('0')
}

pub(super) fn is_ip(s: &str) -> bool {
    s.parse::<IpAddr>().is_ok()
}

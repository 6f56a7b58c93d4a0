//! The post and its lead (CONTRACT §4.2): [`parse_post`], the lead, address and TCPA objects, and
//! the helpers that compare a validated lead with its ping ([`lead_mismatch`],
//! [`check_lead_matches`]) or look a field up by path ([`lead_has_path`]). It does not own the
//! ping's fields (`ping`) or how one field is read and checked (`fields`, `formats`).

use simd_json::borrowed::Object;

use super::fields::{lost_required_field, object_field, string_field, Errors, Fields};
use super::formats::{
    rfc3339_unix_ms, AUCTION_ID, BID_TOKEN, CONSENT_TEXT, EMAIL, HTTPS_URL, IP_ADDRESS, LEAD_UUID,
    PHONE, STATE, TEXT, TIMESTAMP, ZIP,
};
use super::json::{parse_root, root_object};
use super::{EXPECT_CONSENT_TIME, EXPECT_KNOWN, MAX_CONSENT_CLOCK_SKEW_MS, OUT_OF_RANGE};
use crate::error::ApiError;
use crate::model::{Address, Lead, Post, Tcpa};

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

/// The lead of a post with whether its `lead_uuid` was supplied, or `None` after recording errors.
pub(super) fn lead(obj: &Object<'_>, now_ms: u64, errs: &mut Errors) -> Option<(Lead, bool)> {
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

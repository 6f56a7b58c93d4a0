//! Deterministic synthetic leads for `POST /v1/dev/seed` (CONTRACT §4.5): the same seed always
//! gives the same leads, drawn from realistic US states with their real ZIP prefixes, common
//! traffic sources and plausible vertical fields.
//!
//! Owns the generation only: each lead comes out as the JSON body of a one-call lead (ping fields
//! plus `lead`), which the seed endpoint then validates and runs like any seller's. Contact data is
//! fictional: names from a fixed list, `example.com` e-mails, 555-01xx phone numbers (reserved for
//! fiction), documentation IP addresses (RFC 5737).

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::{json, Value};

/// States Gavel can seed, with three-digit ZIP prefixes that really belong to them.
pub const STATES: &[(&str, &[&str])] = &[
    ("TX", &["750", "752", "770", "773", "782", "787"]),
    ("CA", &["900", "902", "917", "926", "941", "951"]),
    ("FL", &["320", "322", "331", "336", "337", "346"]),
    ("NY", &["100", "104", "112", "117", "142", "146"]),
    ("IL", &["600", "601", "606", "617", "625"]),
    ("PA", &["150", "152", "170", "180", "191"]),
    ("OH", &["430", "432", "441", "443", "452"]),
    ("GA", &["300", "303", "310", "314"]),
    ("NC", &["270", "275", "282", "284"]),
    ("MI", &["480", "482", "488", "495"]),
    ("AZ", &["850", "852", "857"]),
    ("WA", &["980", "981", "983", "992"]),
    ("CO", &["800", "802", "809"]),
    ("NJ", &["070", "075", "080", "088"]),
];

const SOURCES: &[&str] = &[
    "google_ads",
    "facebook_ads",
    "bing_ads",
    "organic",
    "affiliate",
];
const FIRST: &[&str] = &[
    "Maria", "James", "Aisha", "Wei", "Carlos", "Emily", "Darnell", "Priya", "Noah", "Sofia",
    "Liam", "Hannah",
];
const LAST: &[&str] = &[
    "Lopez", "Smith", "Khan", "Chen", "Garcia", "Johnson", "Nguyen", "Patel", "Brown", "Rossi",
    "Kim", "Okafor",
];
const STREETS: &[&str] = &[
    "Main St",
    "Oak Ave",
    "Maple Dr",
    "Cedar Ln",
    "Park Blvd",
    "Elm St",
];
const AGE_BANDS: &[&str] = &["18-24", "25-34", "35-44", "45-54", "55-64", "65+"];

fn pick<'a>(rng: &mut ChaCha8Rng, from: &[&'a str]) -> &'a str {
    from[rng.gen_range(0..from.len())]
}

/// Whether `state` can be seeded.
pub fn knows_state(state: &str) -> bool {
    STATES.iter().any(|(s, _)| *s == state)
}

/// `count` one-call lead bodies for `vertical`, all in `state` when given, reproducible from
/// `seed`. `consent_ms` is the TCPA consent time written into every lead (unix ms); it is the one
/// field that is not derived from the seed, and it is never part of the ping.
pub fn leads(
    seed: u64,
    count: usize,
    vertical: &str,
    state: Option<&str>,
    consent_ms: u64,
) -> Vec<Value> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let consent = crate::auction::rfc3339_ms(consent_ms);
    (0..count)
        .map(|n| {
            let (st, zips) = match state {
                Some(s) => *STATES
                    .iter()
                    .find(|(x, _)| *x == s)
                    .unwrap_or(&STATES[0]),
                None => STATES[rng.gen_range(0..STATES.len())],
            };
            let zip3 = pick(&mut rng, zips);
            let source = pick(&mut rng, SOURCES);
            let (first, last) = (pick(&mut rng, FIRST), pick(&mut rng, LAST));
            let score = (rng.gen_range(40..=99) as f64) / 100.0;
            let mut ping = json!({
                "vertical": vertical,
                "state": st,
                "zip3": zip3,
                "source": source,
                "tcpa_consent": true,
                "ai_quality_score": score,
            });
            let cert = format!("https://cert.trustedform.com/{:016x}", rng.gen::<u64>());
            if source == "facebook_ads" {
                ping["trustedform_cert_url"] = json!(cert);
            }
            if vertical.contains("auto") {
                ping["currently_insured"] = json!(rng.gen_bool(0.7));
                ping["vehicle_count"] = json!(rng.gen_range(1..=3));
                ping["driver_age_band"] = json!(pick(&mut rng, AGE_BANDS));
            } else {
                ping["attributes"] = json!({
                    "homeowner": rng.gen_bool(0.6),
                    "credit_band": pick(&mut rng, &["fair", "good", "excellent"]),
                });
            }
            let mut tcpa = json!({
                "consent_text": "By clicking submit, I agree to be contacted about quotes.",
                "consent_timestamp": consent,
                "ip_address": format!("203.0.113.{}", rng.gen_range(1..=254)),
            });
            if source == "facebook_ads" {
                tcpa["trustedform_cert_url"] = json!(cert);
            }
            ping["lead"] = json!({
                "first_name": first,
                "last_name": last,
                "email": format!("{}.{}.{n}@example.com", first.to_lowercase(), last.to_lowercase()),
                "phone": format!("+1{}55501{:02}", rng.gen_range(201..=989), rng.gen_range(0..100)),
                "address": {
                    "line1": format!("{} {}", rng.gen_range(10..9999), pick(&mut rng, STREETS)),
                    "city": "Sampletown",
                    "state": st,
                    "zip": format!("{zip3}{:02}", rng.gen_range(0..100)),
                },
                "tcpa": tcpa,
            });
            ping
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_leads_and_every_lead_is_valid() {
        let a = leads(7, 50, "auto_insurance", None, 1_700_000_000_000);
        let b = leads(7, 50, "auto_insurance", None, 1_700_000_000_000);
        assert_eq!(a, b);
        assert_ne!(a, leads(8, 50, "auto_insurance", None, 1_700_000_000_000));
        for (i, lead) in a
            .iter()
            .chain(&leads(3, 50, "solar", Some("CA"), 0))
            .enumerate()
        {
            let mut body = serde_json::to_vec(lead).unwrap();
            let (ping, lead, _) =
                crate::api::validate::parse_lead_call(&mut body, 1_700_000_000_000)
                    .unwrap_or_else(|e| panic!("lead {i} invalid: {e:?}"));
            assert!(lead.mismatches(&ping.state, &ping.zip3).is_empty());
        }
        assert!(leads(3, 20, "solar", Some("CA"), 0)
            .iter()
            .all(|l| l["state"] == "CA"));
    }
}

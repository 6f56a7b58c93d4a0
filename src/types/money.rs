//! Money: integer cents everywhere inside Gavel, and the conversions at its edges (config values,
//! buyers' bids, the wire's two-decimal numbers).

use serde::Serialize;

/// Money in integer cents so clearing never compares floats.
pub type Cents = u64;

/// Cents as a float, for arithmetic that leaves Gavel (never for comparisons).
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
        // Written as raw JSON so the two decimals survive (a float would print 38.5).
        let text = format!("{}.{:02}", self.0 / 100, self.0 % 100);
        serde_json::value::RawValue::from_string(text)
            .map_err(serde::ser::Error::custom)?
            .serialize(s)
    }
}

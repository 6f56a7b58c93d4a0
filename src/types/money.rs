//! Money: integer cents everywhere inside Gavel, and the conversions at its edges (config values,
//! buyers' bids, the wire's two-decimal numbers).
//!
//! Config amounts are converted exactly, once, when the file is read ([`deserialize_usd`]): an
//! amount Gavel would have to round is refused there, because only the operator can say which cent
//! was meant. Buyers' bids are rounded to the nearest cent instead ([`f64_to_cents`]), as the buyer
//! guide promises; a bid is a price offered, and refusing it over a fraction of a cent would cost
//! the seller a sale.

use std::fmt;

use serde::{Deserializer, Serialize};

/// Money in integer cents so clearing never compares floats.
pub type Cents = u64;

/// Largest amount of money Gavel accepts, in USD, from a config file or from a buyer.
pub const MAX_MONEY: f64 = 1e12;
/// [`MAX_MONEY`] in cents.
pub const MAX_CENTS: Cents = 100_000_000_000_000;

/// Cents as a float, for arithmetic that leaves Gavel (never for comparisons).
pub fn cents_to_f64(c: Cents) -> f64 {
    c as f64 / 100.0
}

/// Rounds a money amount to the nearest cent; `None` for NaN, infinities, negative amounts and
/// amounts above [`MAX_MONEY`].
pub fn f64_to_cents(v: f64) -> Option<Cents> {
    if !(0.0..=MAX_MONEY).contains(&v) {
        return None;
    }
    Some((v * 100.0).round() as Cents)
}

/// Why an amount in USD was refused. Each reason reads as the end of "key `x`: …".
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum UsdError {
    NotANumber,
    Infinite(f64),
    Negative(f64),
    TooLarge(f64),
    /// More than two decimals: the amount as written, for the message.
    SubCent(f64),
}

impl fmt::Display for UsdError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let range = format!("must be an amount in USD from 0 to {MAX_MONEY:.0}");
        match self {
            UsdError::NotANumber => write!(f, "{range}, got NaN"),
            UsdError::Infinite(v) | UsdError::Negative(v) | UsdError::TooLarge(v) => {
                write!(f, "{range}, got {v}")
            }
            // Naming the two cents around the amount shows why Gavel does not pick one itself.
            UsdError::SubCent(v) => write!(
                f,
                "{v} has more than two decimals: a sub-cent amount is ambiguous, so write the \
                 amount you mean with at most two decimals ({:.2} or {:.2})",
                (v * 100.0).floor() / 100.0,
                (v * 100.0).ceil() / 100.0
            ),
        }
    }
}

impl std::error::Error for UsdError {}

/// Converts an amount in USD to cents exactly, or says why it cannot be: NaN, infinities,
/// negative amounts, amounts above [`MAX_MONEY`] and amounts with more than two decimals are
/// refused, never rounded.
pub fn usd_to_cents(v: f64) -> Result<Cents, UsdError> {
    if v.is_nan() {
        return Err(UsdError::NotANumber);
    }
    if v.is_infinite() {
        return Err(UsdError::Infinite(v));
    }
    if v < 0.0 {
        return Err(UsdError::Negative(v));
    }
    if v > MAX_MONEY {
        return Err(UsdError::TooLarge(v));
    }
    // The shortest decimal that reads back as `v` is what the file said (TOML parsed those digits
    // into the nearest float), so counting its decimals counts the operator's, without the float
    // error that `v * 100.0` would add (0.07 * 100.0 is 7.000000000000001). `{}` never uses an
    // exponent for f64, and `-0.0` was let through above, so it prints as "-0": handled first.
    if v == 0.0 {
        return Ok(0);
    }
    let text = v.to_string();
    let (whole, frac) = text.split_once('.').unwrap_or((&text, ""));
    if frac.len() > 2 {
        return Err(UsdError::SubCent(v));
    }
    let whole: Cents = whole.parse().map_err(|_| UsdError::TooLarge(v))?;
    // "2.5" is 50 cents, "2.05" is 5.
    let frac_cents: Cents = format!("{frac:0<2}").parse().unwrap_or(0);
    Ok(whole * 100 + frac_cents)
}

/// Converts a whole number of USD (a TOML integer) to cents.
fn whole_usd_to_cents(n: i128) -> Result<Cents, UsdError> {
    if n < 0 {
        return Err(UsdError::Negative(n as f64));
    }
    if n > MAX_MONEY as i128 {
        return Err(UsdError::TooLarge(n as f64));
    }
    Ok(n as Cents * 100)
}

/// serde helper for config amounts: reads a number of USD (`floor = 2.5` or `floor = 2`) into
/// cents with [`usd_to_cents`]. Use as `#[serde(deserialize_with = "…::deserialize_usd")]`; the
/// config loader adds the key to the error.
pub fn deserialize_usd<'de, D: Deserializer<'de>>(d: D) -> Result<Cents, D::Error> {
    struct Usd;

    impl serde::de::Visitor<'_> for Usd {
        type Value = Cents;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("an amount in USD with at most two decimals, such as 2.50")
        }

        fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Cents, E> {
            usd_to_cents(v).map_err(E::custom)
        }

        fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Cents, E> {
            whole_usd_to_cents(i128::from(v)).map_err(E::custom)
        }

        fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Cents, E> {
            whole_usd_to_cents(i128::from(v)).map_err(E::custom)
        }
    }

    d.deserialize_any(Usd)
}

/// serde helper, the inverse of [`deserialize_usd`]: writes cents as a JSON number of USD with two
/// decimals (`2.50`). Use as `#[serde(serialize_with = "…::serialize_usd")]`.
pub fn serialize_usd<S: serde::Serializer>(cents: &Cents, s: S) -> Result<S::Ok, S::Error> {
    Money(*cents).serialize(s)
}

/// Writes optional cents as USD (`null` when absent), as [`serialize_usd`] does.
pub fn serialize_opt_usd<S: serde::Serializer>(
    cents: &Option<Cents>,
    s: S,
) -> Result<S::Ok, S::Error> {
    cents.map(Money).serialize(s)
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A config-like table with one amount, read the way `Config::parse` reads files.
    #[derive(Debug, serde::Deserialize)]
    struct Table {
        #[serde(deserialize_with = "deserialize_usd")]
        floor: Cents,
    }

    fn floor(value: &str) -> Result<Cents, String> {
        toml::from_str::<Table>(&format!("floor = {value}\n"))
            .map(|t| t.floor)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn config_amounts_in_usd_become_exact_cents() {
        for (text, cents) in [
            ("2.5", 250),
            ("2.50", 250),
            ("2", 200),
            ("0", 0),
            ("0.0", 0),
            ("-0.0", 0),
            ("0.07", 7),
            ("0.1", 10),
            ("19.99", 1999),
            ("1.005e2", 10050),
            ("1_000", 100_000),
            ("999999999999.99", 99_999_999_999_999),
            ("1e12", MAX_CENTS),
            ("1000000000000", MAX_CENTS),
        ] {
            assert_eq!(floor(text), Ok(cents), "floor = {text}");
        }
    }

    #[test]
    fn config_amounts_that_are_not_money_are_refused_and_say_why() {
        for (text, says) in [
            ("nan", "got NaN"),
            ("-nan", "got NaN"),
            ("inf", "got inf"),
            ("-inf", "got -inf"),
            ("-1", "from 0"),
            ("-0.5", "from 0"),
            ("1e13", "to 1000000000000"),
            ("1000000000001", "to 1000000000000"),
            ("1000000000000.01", "to 1000000000000"),
            ("12.345", "more than two decimals"),
            ("0.001", "sub-cent"),
            ("2.505", "(2.50 or 2.51)"),
            ("\"2.50\"", "an amount in USD with at most two decimals"),
            ("true", "an amount in USD"),
        ] {
            let e = floor(text).expect_err(text);
            assert!(e.contains(says), "floor = {text}: {e}");
            // toml's message points at the line, so the key is in the text an operator reads;
            // `Config::parse` also names the full key (`buyers[0].floor`), see tests/config.rs.
            assert!(e.contains("floor ="), "floor = {text}: {e}");
        }
    }

    #[test]
    fn usd_to_cents_refuses_what_a_float_can_hold_but_money_cannot() {
        assert_eq!(usd_to_cents(f64::NAN), Err(UsdError::NotANumber));
        assert_eq!(
            usd_to_cents(f64::INFINITY),
            Err(UsdError::Infinite(f64::INFINITY))
        );
        assert_eq!(usd_to_cents(-0.01), Err(UsdError::Negative(-0.01)));
        assert_eq!(usd_to_cents(1e300), Err(UsdError::TooLarge(1e300)));
        assert_eq!(usd_to_cents(1e-7), Err(UsdError::SubCent(1e-7)));
        assert_eq!(usd_to_cents(38.5), Ok(3850));
        assert_eq!(f64_to_cents(MAX_MONEY), Some(MAX_CENTS));
    }

    #[test]
    fn buyer_amounts_round_to_the_nearest_cent() {
        assert_eq!(f64_to_cents(38.505), Some(3851));
        assert_eq!(f64_to_cents(0.004), Some(0));
        assert_eq!(f64_to_cents(-1.0), None);
        assert_eq!(f64_to_cents(f64::NAN), None);
        assert_eq!(f64_to_cents(1e13), None);
    }
}

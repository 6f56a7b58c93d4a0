//! Who a credential speaks for: the operator who runs the exchange, one seller, or one buyer
//! (CONTRACT §3, DESIGN §7). Every credential belongs to exactly one party, and every view rule
//! and admin check asks this type.
//!
//! This module owns the value and its spelling only. Which party may see or change what is decided
//! where each endpoint is answered (`api::views`); which sellers exist is the seller table's.

use std::fmt;

/// The kinds of party, as they label audit entries and appear in config and API bodies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PartyKind {
    Operator,
    Seller,
    Buyer,
}

impl PartyKind {
    pub fn as_str(self) -> &'static str {
        match self {
            PartyKind::Operator => "operator",
            PartyKind::Seller => "seller",
            PartyKind::Buyer => "buyer",
        }
    }

    pub fn parse(s: &str) -> Option<PartyKind> {
        Some(match s {
            "operator" => PartyKind::Operator,
            "seller" => PartyKind::Seller,
            "buyer" => PartyKind::Buyer,
            _ => return None,
        })
    }
}

/// One party of a tenant. Seller and buyer ids are scoped by the tenant the credential belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Party {
    /// Runs the exchange: sees every record and is the only one with `admin` over buyers,
    /// sellers and other parties' credentials.
    Operator,
    /// A seller: sends leads, sees its own auctions and leads.
    Seller(String),
    /// A buyer: sees its own bids and purchases, reports the status of leads it bought.
    Buyer(String),
}

impl Party {
    pub fn kind(&self) -> PartyKind {
        match self {
            Party::Operator => PartyKind::Operator,
            Party::Seller(_) => PartyKind::Seller,
            Party::Buyer(_) => PartyKind::Buyer,
        }
    }

    /// The seller or buyer id; `None` for the operator.
    pub fn id(&self) -> Option<&str> {
        match self {
            Party::Operator => None,
            Party::Seller(id) | Party::Buyer(id) => Some(id),
        }
    }

    pub fn is_operator(&self) -> bool {
        matches!(self, Party::Operator)
    }

    /// The seller id when this party is a seller.
    pub fn seller(&self) -> Option<&str> {
        match self {
            Party::Seller(id) => Some(id),
            _ => None,
        }
    }

    /// The buyer id when this party is a buyer.
    pub fn buyer(&self) -> Option<&str> {
        match self {
            Party::Buyer(id) => Some(id),
            _ => None,
        }
    }

    /// Parses the label form written by [`fmt::Display`]: `operator`, `seller:ID`, `buyer:ID`.
    pub fn parse(s: &str) -> Option<Party> {
        if s == "operator" {
            return Some(Party::Operator);
        }
        let (kind, id) = s.split_once(':')?;
        if !is_party_id(id) {
            return None;
        }
        match PartyKind::parse(kind)? {
            PartyKind::Seller => Some(Party::Seller(id.to_string())),
            PartyKind::Buyer => Some(Party::Buyer(id.to_string())),
            PartyKind::Operator => None,
        }
    }
}

impl fmt::Display for Party {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Party::Operator => f.write_str("operator"),
            Party::Seller(id) => write!(f, "seller:{id}"),
            Party::Buyer(id) => write!(f, "buyer:{id}"),
        }
    }
}

impl serde::Serialize for Party {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Party {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Party, D::Error> {
        let s = String::deserialize(d)?;
        Party::parse(&s).ok_or_else(|| {
            serde::de::Error::custom(format!(
                "expected `operator`, `seller:ID` or `buyer:ID` (ids of a-z, 0-9, `_`, `-`), got {s:?}"
            ))
        })
    }
}

/// Longest seller or buyer id, in bytes.
pub const MAX_PARTY_ID_LEN: usize = 64;

/// A seller or buyer id: 1..=64 of `a-z`, `0-9`, `_`, `-`. Ids name parties in paths, audit
/// entries and keys, so they hold no `/`, `:` or NUL.
pub fn is_party_id(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_PARTY_ID_LEN
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_round_trip() {
        for p in [
            Party::Operator,
            Party::Seller("acme-leads".into()),
            Party::Buyer("p_alpha".into()),
        ] {
            assert_eq!(Party::parse(&p.to_string()), Some(p));
        }
        assert_eq!(Party::parse("operator:x"), None);
        assert_eq!(Party::parse("seller:"), None);
        assert_eq!(Party::parse("seller:A"), None);
        assert_eq!(Party::parse("admin"), None);
    }
}

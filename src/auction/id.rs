//! Auction ids Gavel mints: `auc_` + ULID, chosen so that the minting core owns them
//! ([`owner_of`]), so a ping never hops to another core. Owns the minting; the routing function
//! itself is the runtime's (any key hashes to a core the same way).

use crate::runtime::owner_of;

/// A fresh auction id that core `core` of `cores` owns. Should no owned id turn up within the
/// bound (never seen in practice; see [`mint_owned_id`]), the ping still runs on `core` under a
/// plain id rather than failing: a later request about it is handed to the id's owner, which
/// reads the auction from the store.
pub fn mint(core: usize, cores: usize) -> String {
    mint_owned_id(core, cores).unwrap_or_else(|| {
        tracing::error!(
            core,
            "no owned auction id found; this auction's records live on another core"
        );
        format!("auc_{}", ulid::Ulid::new())
    })
}

/// Crockford base32, the alphabet of a ULID's text form.
const CROCKFORD: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";
/// Fresh ULIDs [`mint_owned_id`] tries before it gives up.
const MINT_ROUNDS: usize = 8;

/// An `auc_` + ULID id that [`owner_of`] maps to `core` of `cores`, found in at most
/// [`MINT_ROUNDS`] × 1,024 hashes instead of a loop without bound.
///
/// Each round takes a fresh ULID and searches its last two characters (the low 10 bits of its
/// random part, so every candidate is a valid, distinct ULID with the same timestamp) for one
/// that lands on `core`. About `cores` candidates are needed on average; a round of 1,024 that
/// misses has odds of about (1 − 1/64)^1024 ≈ 10⁻⁷ at 64 cores, and every round starts from new
/// random bits. `None` only if all rounds miss; a unit test mints for every core of 1..=64 cores.
pub fn mint_owned_id(core: usize, cores: usize) -> Option<String> {
    if cores <= 1 {
        return Some(format!("auc_{}", ulid::Ulid::new()));
    }
    for _ in 0..MINT_ROUNDS {
        let mut id = format!("auc_{}", ulid::Ulid::new()).into_bytes();
        let n = id.len();
        for a in CROCKFORD {
            for b in CROCKFORD {
                id[n - 2] = *a;
                id[n - 1] = *b;
                let text = std::str::from_utf8(&id).expect("ULID text is ASCII");
                if owner_of(text, cores) == core {
                    return Some(text.to_string());
                }
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minted_ids_are_owned_ulids_for_every_core_count_up_to_64() {
        for cores in 1..=64 {
            for core in 0..cores {
                for _ in 0..4 {
                    let id = mint_owned_id(core, cores).expect("an owned id within the bound");
                    assert_eq!(owner_of(&id, cores), core, "{id} of {cores} cores");
                    let ulid = id.strip_prefix("auc_").expect("auc_ prefix");
                    assert!(ulid::Ulid::from_string(ulid).is_ok(), "{id} is a ULID");
                }
            }
        }
    }
}

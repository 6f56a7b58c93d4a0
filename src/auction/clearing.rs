//! Clearing: from the bids an auction collected to a ranked list of valid bids and a seller payout.
//!
//! Pure functions over plain data, so the rules are easy to test and to benchmark: a bid is valid
//! when it is at least the higher of the platform floor and its buyer's floor; the winner is the
//! highest valid bid, ties going to the bid that arrived first. The rest of the ranked list is the
//! fallback order for post delivery.

use crate::model::Cents;

/// One bid as clearing sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Candidate {
    /// Index of the buyer in the auction's outcome list.
    pub slot: usize,
    pub amount_cents: Cents,
    pub buyer_floor_cents: Cents,
    /// Arrival order within the auction; lower arrived earlier.
    pub arrival: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cleared {
    /// Valid bids, best first.
    Won(Vec<Candidate>),
    NoBids,
    /// Bids arrived but none cleared its floor.
    BelowFloor,
}

pub fn clear(bids: &[Candidate], platform_floor_cents: Cents) -> Cleared {
    if bids.is_empty() {
        return Cleared::NoBids;
    }
    let mut valid: Vec<Candidate> = bids
        .iter()
        .copied()
        .filter(|b| b.amount_cents >= platform_floor_cents.max(b.buyer_floor_cents))
        .collect();
    if valid.is_empty() {
        return Cleared::BelowFloor;
    }
    valid.sort_by(|a, b| {
        b.amount_cents
            .cmp(&a.amount_cents)
            .then(a.arrival.cmp(&b.arrival))
    });
    Cleared::Won(valid)
}

/// What the seller is paid for a winning price: price minus the percentage and fixed margins,
/// rounded down to the cent, never below zero.
pub fn seller_payout(price_cents: Cents, margin_percent: f64, margin_fixed_cents: Cents) -> Cents {
    let kept = (price_cents as f64 * margin_percent / 100.0).ceil() as Cents;
    price_cents
        .saturating_sub(kept)
        .saturating_sub(margin_fixed_cents)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(slot: usize, amount: Cents, floor: Cents, arrival: u32) -> Candidate {
        Candidate {
            slot,
            amount_cents: amount,
            buyer_floor_cents: floor,
            arrival,
        }
    }

    #[test]
    fn highest_wins_and_order_is_fallback_order() {
        let r = clear(&[c(0, 1000, 0, 0), c(1, 3000, 0, 1), c(2, 2000, 0, 2)], 0);
        let Cleared::Won(v) = r else { panic!() };
        assert_eq!(v.iter().map(|b| b.slot).collect::<Vec<_>>(), vec![1, 2, 0]);
    }

    #[test]
    fn tie_goes_to_earliest_arrival() {
        let r = clear(&[c(0, 2000, 0, 5), c(1, 2000, 0, 2)], 0);
        let Cleared::Won(v) = r else { panic!() };
        assert_eq!(v[0].slot, 1);
    }

    #[test]
    fn floors() {
        assert_eq!(clear(&[], 0), Cleared::NoBids);
        assert_eq!(clear(&[c(0, 500, 0, 0)], 600), Cleared::BelowFloor);
        // The buyer's own floor is above its bid even though the platform floor is met.
        assert_eq!(clear(&[c(0, 700, 800, 0)], 600), Cleared::BelowFloor);
        let Cleared::Won(v) = clear(&[c(0, 700, 800, 0), c(1, 650, 0, 1)], 600) else {
            panic!()
        };
        assert_eq!(v.len(), 1);
        assert_eq!(v[0].slot, 1);
        // Exactly at the floor clears.
        assert!(matches!(clear(&[c(0, 600, 600, 0)], 600), Cleared::Won(_)));
    }

    #[test]
    fn payout() {
        assert_eq!(seller_payout(3850, 10.0, 0), 3465);
        assert_eq!(seller_payout(3850, 0.0, 100), 3750);
        assert_eq!(seller_payout(100, 50.0, 100), 0);
        // A fraction of a cent goes to the platform, so the payout never exceeds the price minus margin.
        assert_eq!(seller_payout(999, 10.0, 0), 899);
    }
}

//! A core's auction shard: the in-memory map of the auctions this core owns, with a hard cap and
//! time-based eviction.
//!
//! Only its own core touches a shard (it lives in a `RefCell` on that core), and no borrow is held
//! across an `.await`. Durable records are not kept here; the shard is the working set.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};

use super::{Auction, PostState};

pub struct Shard {
    auctions: HashMap<String, Auction>,
    /// (evict_at_ms, id), earliest first. An entry may be stale if the auction's time moved.
    evictions: BinaryHeap<Reverse<(u64, String)>>,
    max_auctions: usize,
}

#[derive(Debug, PartialEq, Eq)]
pub enum InsertError {
    Full,
    Exists,
}

impl Shard {
    pub fn new(max_auctions: usize) -> Shard {
        Shard {
            auctions: HashMap::new(),
            evictions: BinaryHeap::new(),
            max_auctions,
        }
    }

    pub fn len(&self) -> usize {
        self.auctions.len()
    }

    pub fn is_empty(&self) -> bool {
        self.auctions.is_empty()
    }

    pub fn insert(&mut self, a: Auction, now_ms: u64) -> Result<(), InsertError> {
        self.evict(now_ms);
        if self.auctions.contains_key(&a.id) {
            return Err(InsertError::Exists);
        }
        if self.auctions.len() >= self.max_auctions {
            return Err(InsertError::Full);
        }
        self.evictions.push(Reverse((a.evict_at_ms, a.id.clone())));
        self.auctions.insert(a.id.clone(), a);
        Ok(())
    }

    pub fn get(&self, id: &str) -> Option<&Auction> {
        self.auctions.get(id)
    }

    pub fn get_mut(&mut self, id: &str) -> Option<&mut Auction> {
        self.auctions.get_mut(id)
    }

    /// Moves an auction's eviction time (e.g. once its bid token's lifetime is known).
    pub fn set_evict_at(&mut self, id: &str, evict_at_ms: u64) {
        if let Some(a) = self.auctions.get_mut(id) {
            a.evict_at_ms = evict_at_ms;
            self.evictions.push(Reverse((evict_at_ms, id.to_string())));
        }
    }

    /// Drops auctions whose time is up, except those with a delivery in flight.
    pub fn evict(&mut self, now_ms: u64) {
        while let Some(Reverse((at, _))) = self.evictions.peek() {
            if *at > now_ms {
                break;
            }
            let Reverse((at, id)) = self.evictions.pop().expect("peeked");
            let Some(a) = self.auctions.get(&id) else {
                continue;
            };
            if a.evict_at_ms != at {
                continue; // A later entry for this auction exists.
            }
            if matches!(a.post, PostState::InFlight { .. }) {
                let later = now_ms + 1_000;
                if let Some(a) = self.auctions.get_mut(&id) {
                    a.evict_at_ms = later;
                }
                self.evictions.push(Reverse((later, id)));
                continue;
            }
            self.auctions.remove(&id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Tenant;

    fn auction(id: &str, evict_at_ms: u64) -> Auction {
        Auction::open(
            id.into(),
            Tenant::Sandbox,
            "c".into(),
            crate::model::Ping {
                auction_id: None,
                vertical: "auto_insurance".into(),
                sub_vertical: None,
                state: "TX".into(),
                zip3: "770".into(),
                source: "s".into(),
                tcpa_consent: true,
                trustedform_cert_url: None,
                ai_quality_score: None,
                currently_insured: None,
                vehicle_count: None,
                driver_age_band: None,
                attributes: Vec::new(),
                expires_at_ms: None,
            },
            0,
            0,
            evict_at_ms,
        )
    }

    #[test]
    fn cap_and_duplicates() {
        let mut s = Shard::new(2);
        s.insert(auction("a", 100), 0).unwrap();
        assert_eq!(s.insert(auction("a", 100), 0), Err(InsertError::Exists));
        s.insert(auction("b", 100), 0).unwrap();
        assert_eq!(s.insert(auction("c", 100), 0), Err(InsertError::Full));
        // Once the first two expire there is room again.
        s.insert(auction("c", 300), 150).unwrap();
        assert_eq!(s.len(), 1);
    }

    #[test]
    fn eviction_follows_the_latest_time_and_spares_deliveries() {
        let mut s = Shard::new(10);
        s.insert(auction("a", 100), 0).unwrap();
        s.insert(auction("b", 100), 0).unwrap();
        s.set_evict_at("a", 500);
        s.get_mut("b").unwrap().post = PostState::InFlight {
            key: "k".into(),
            slot: None,
        };
        s.evict(200);
        assert!(s.get("a").is_some(), "moved eviction time is honoured");
        assert!(
            s.get("b").is_some(),
            "an auction being delivered is never dropped"
        );
        s.get_mut("b").unwrap().post = PostState::None;
        s.evict(1_300);
        assert!(s.is_empty());
    }
}

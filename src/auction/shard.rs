//! A core's auction shard: the in-memory map of the auctions this core owns, with a hard cap per
//! tenant and time-based eviction.
//!
//! Auction ids are scoped by tenant and seller: a seller-chosen id such as `acme_order_000123`
//! names one auction in the sandbox and another in production, and within a tenant one auction per
//! seller that chose it; none is visible from another's scope. Both sellers' auctions under one id
//! live on the same core (routing hashes the id alone), so the shard keeps them side by side under
//! the id, which also lets the operator find an id's auctions without a scan ([`Shard::by_id`]).
//! Each tenant also has its own cap, so one tenant's traffic can never take another's room.
//!
//! Only its own core touches a shard (it lives in a `RefCell` on that core), and no borrow is held
//! across an `.await`. A shard made for a core ([`Shard::owned_by`]) checks that in debug builds on
//! every access, against [`crate::runtime::current_core`]. Durable records are not kept here; the
//! shard is the working set.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};

use super::{Auction, PostState};
use crate::config::Tenant;

fn slot(t: Tenant) -> usize {
    match t {
        Tenant::Sandbox => 0,
        Tenant::Production => 1,
    }
}

// Architecture Invariant [one-owner-core]: one auction's state is read and written only by its
// owning core; debug builds assert every access runs there (`Shard::owned_by`).
pub struct Shard {
    /// One map per tenant (indexed by [`slot`]), keyed by the auction id the seller sees; each id
    /// holds one auction per seller using it, nearly always exactly one.
    auctions: [HashMap<String, Vec<Auction>>; 2],
    /// Auctions each tenant holds (its map counts ids, and one id may hold several auctions).
    counts: [usize; 2],
    /// (evict_at_ms, tenant slot, id, seller), earliest first. An entry may be stale if the
    /// auction's time moved.
    evictions: BinaryHeap<Reverse<(u64, usize, String, String)>>,
    /// Most auctions one tenant may hold on this core.
    max_auctions_per_tenant: usize,
    /// The core that owns this shard, when it belongs to one; only that core may touch it.
    owner: Option<usize>,
}

#[derive(Debug, PartialEq, Eq)]
pub enum InsertError {
    /// The tenant holds its maximum; the earliest of its auctions may leave after
    /// `retry_after_ms` (an honest hint for the caller's `Retry-After`).
    Full {
        retry_after_ms: u64,
    },
    Exists,
}

/// How long an auction waiting on a delivery is kept past its time before eviction looks again.
const IN_FLIGHT_RECHECK_MS: u64 = 1_000;

impl Shard {
    /// A shard that belongs to no core (a test's, a benchmark's): any thread may use it.
    pub fn new(max_auctions_per_tenant: usize) -> Shard {
        Shard {
            auctions: [HashMap::new(), HashMap::new()],
            counts: [0, 0],
            evictions: BinaryHeap::new(),
            max_auctions_per_tenant,
            owner: None,
        }
    }

    /// Core `core`'s shard: in debug builds every access checks that it runs on that core.
    pub fn owned_by(core: usize, max_auctions_per_tenant: usize) -> Shard {
        Shard {
            owner: Some(core),
            ..Shard::new(max_auctions_per_tenant)
        }
    }

    /// One auction's state is read and written only by its owning core (ARCHITECTURE.md,
    /// Invariants); a debug build checks it at each access instead of trusting every caller.
    #[track_caller]
    fn check_owner(&self) {
        if let Some(owner) = self.owner {
            debug_assert_eq!(
                crate::runtime::current_core(),
                Some(owner),
                "core {owner}'s auction shard touched off its core"
            );
        }
    }

    /// Auctions held, all tenants together.
    pub fn len(&self) -> usize {
        self.counts.iter().sum()
    }

    /// Auctions one tenant holds.
    pub fn len_of(&self, tenant: Tenant) -> usize {
        self.counts[slot(tenant)]
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Holds `a`, unless its seller already has an auction under its id in its tenant
    /// ([`InsertError::Exists`]; another seller's auction under the same id is no obstacle) or the
    /// tenant holds its maximum.
    #[track_caller]
    pub fn insert(&mut self, a: Auction, now_ms: u64) -> Result<(), InsertError> {
        self.check_owner();
        self.evict(now_ms);
        let t = slot(a.tenant);
        if self.get(a.tenant, &a.seller, &a.id).is_some() {
            return Err(InsertError::Exists);
        }
        if self.counts[t] >= self.max_auctions_per_tenant {
            return Err(InsertError::Full {
                retry_after_ms: self.next_eviction_of(t, now_ms),
            });
        }
        self.evictions
            .push(Reverse((a.evict_at_ms, t, a.id.clone(), a.seller.clone())));
        self.auctions[t].entry(a.id.clone()).or_default().push(a);
        self.counts[t] += 1;
        debug_assert!(
            self.counts[t] <= self.max_auctions_per_tenant,
            "a tenant holds more auctions than auction.max_auctions_per_core"
        );
        Ok(())
    }

    /// Time until the tenant's earliest auction may leave. A scan, but only on the rare path of a
    /// full tenant, and bounded by the cap.
    fn next_eviction_of(&self, t: usize, now_ms: u64) -> u64 {
        self.auctions[t]
            .values()
            .flatten()
            .map(|a| a.evict_at_ms)
            .min()
            .map_or(IN_FLIGHT_RECHECK_MS, |at| {
                at.saturating_sub(now_ms).max(IN_FLIGHT_RECHECK_MS)
            })
    }

    /// `seller`'s auction under `id` in `tenant`.
    #[track_caller]
    pub fn get(&self, tenant: Tenant, seller: &str, id: &str) -> Option<&Auction> {
        self.check_owner();
        self.auctions[slot(tenant)]
            .get(id)?
            .iter()
            .find(|a| a.seller == seller)
    }

    /// `seller`'s auction under `id` in `tenant`, to change.
    #[track_caller]
    pub fn get_mut(&mut self, tenant: Tenant, seller: &str, id: &str) -> Option<&mut Auction> {
        self.check_owner();
        self.auctions[slot(tenant)]
            .get_mut(id)?
            .iter_mut()
            .find(|a| a.seller == seller)
    }

    /// Every seller's auction under `id` in `tenant` (the operator's and buyers' lookups, which
    /// are not scoped by seller), in the order they opened.
    #[track_caller]
    pub fn by_id(&self, tenant: Tenant, id: &str) -> &[Auction] {
        self.check_owner();
        self.auctions[slot(tenant)]
            .get(id)
            .map_or(&[], Vec::as_slice)
    }

    /// Moves an auction's eviction time (e.g. once its bid token's lifetime is known).
    #[track_caller]
    pub fn set_evict_at(&mut self, tenant: Tenant, seller: &str, id: &str, evict_at_ms: u64) {
        let t = slot(tenant);
        if let Some(a) = self.get_mut(tenant, seller, id) {
            a.evict_at_ms = evict_at_ms;
            self.evictions.push(Reverse((
                evict_at_ms,
                t,
                id.to_string(),
                seller.to_string(),
            )));
        }
    }

    /// When the next eviction is due, if any auction is held: the core's expiry timer sleeps
    /// until then (bounded by its own interval).
    pub fn next_due_ms(&self) -> Option<u64> {
        self.evictions.peek().map(|Reverse((at, _, _, _))| *at)
    }

    /// Drops auctions whose time is up, except those with a delivery in flight. Returns how many
    /// left.
    #[track_caller]
    pub fn evict(&mut self, now_ms: u64) -> usize {
        self.check_owner();
        let mut dropped = 0;
        while let Some(Reverse((at, _, _, _))) = self.evictions.peek() {
            if *at > now_ms {
                break;
            }
            let Reverse((at, t, id, seller)) = self.evictions.pop().expect("peeked");
            let Some(same_id) = self.auctions[t].get_mut(&id) else {
                continue;
            };
            let Some(i) = same_id.iter().position(|a| a.seller == seller) else {
                continue;
            };
            let a = &mut same_id[i];
            if a.evict_at_ms != at {
                continue; // A later entry for this auction exists.
            }
            if matches!(a.post, PostState::InFlight { .. }) {
                let later = now_ms + IN_FLIGHT_RECHECK_MS;
                a.evict_at_ms = later;
                self.evictions.push(Reverse((later, t, id, seller)));
                continue;
            }
            same_id.remove(i);
            if same_id.is_empty() {
                self.auctions[t].remove(&id);
            }
            self.counts[t] -= 1;
            dropped += 1;
        }
        if dropped > 0 {
            // Give memory back: a map that once held a burst keeps its capacity otherwise.
            for m in &mut self.auctions {
                if m.capacity() > 1024 && m.len() < m.capacity() / 4 {
                    m.shrink_to(m.len() * 2);
                }
            }
            if self.evictions.capacity() > 1024
                && self.evictions.len() < self.evictions.capacity() / 4
            {
                self.evictions.shrink_to(self.evictions.len() * 2);
            }
        }
        dropped
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Tenant;

    fn auction(id: &str, evict_at_ms: u64) -> Auction {
        auction_of("c", id, evict_at_ms)
    }

    fn auction_of(seller: &str, id: &str, evict_at_ms: u64) -> Auction {
        Auction::open(
            Default::default(),
            id.into(),
            Tenant::Sandbox,
            "c".into(),
            seller.into(),
            crate::model::Ping::minimal(),
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
        assert_eq!(
            s.insert(auction("c", 100), 0),
            Err(InsertError::Full {
                retry_after_ms: IN_FLIGHT_RECHECK_MS
            })
        );
        assert_eq!(
            s.insert(auction("c", 100_000), 10),
            Err(InsertError::Full {
                retry_after_ms: IN_FLIGHT_RECHECK_MS
            })
        );
        // Once the first two expire there is room again.
        s.insert(auction("c", 300), 150).unwrap();
        assert_eq!(s.len(), 1);
    }

    #[test]
    fn tenants_have_their_own_ids_and_caps() {
        let mut s = Shard::new(1);
        let mut live = auction("same_id", 60_000);
        live.tenant = Tenant::Production;
        s.insert(auction("same_id", 50_000), 0).unwrap();
        // The sandbox is full, and says when its auction leaves.
        assert_eq!(
            s.insert(auction("other", 100), 0),
            Err(InsertError::Full {
                retry_after_ms: 50_000
            })
        );
        // Production has its own room, and the same id is another auction there.
        s.insert(live, 0).unwrap();
        assert_eq!(s.len(), 2);
        assert_eq!(s.len_of(Tenant::Sandbox), 1);
        assert_eq!(
            s.get(Tenant::Production, "c", "same_id").unwrap().tenant,
            Tenant::Production
        );
        assert_eq!(s.next_due_ms(), Some(50_000));
        assert_eq!(s.evict(55_000), 1);
        assert!(s.get(Tenant::Sandbox, "c", "same_id").is_none());
        assert!(s.get(Tenant::Production, "c", "same_id").is_some());
    }

    #[test]
    fn sellers_have_their_own_ids() {
        let mut s = Shard::new(3);
        s.insert(auction_of("a", "order-1", 100), 0).unwrap();
        // Another seller's auction under the same id is another auction; the same seller's is not.
        s.insert(auction_of("b", "order-1", 200), 0).unwrap();
        assert_eq!(
            s.insert(auction_of("a", "order-1", 100), 0),
            Err(InsertError::Exists)
        );
        assert_eq!(s.len_of(Tenant::Sandbox), 2);
        assert_eq!(s.get(Tenant::Sandbox, "b", "order-1").unwrap().seller, "b");
        assert!(s.get(Tenant::Sandbox, "c", "order-1").is_none());
        let sellers: Vec<&str> = s
            .by_id(Tenant::Sandbox, "order-1")
            .iter()
            .map(|a| a.seller.as_str())
            .collect();
        assert_eq!(sellers, ["a", "b"]);
        // Each leaves on its own time, and counts against the tenant's cap on its own.
        assert_eq!(s.evict(150), 1);
        assert!(s.get(Tenant::Sandbox, "a", "order-1").is_none());
        assert!(s.get(Tenant::Sandbox, "b", "order-1").is_some());
        assert_eq!(s.len(), 1);
        assert_eq!(s.evict(250), 1);
        assert!(s.by_id(Tenant::Sandbox, "order-1").is_empty());
        assert!(s.is_empty());
    }

    #[test]
    fn eviction_follows_the_latest_time_and_spares_deliveries() {
        let mut s = Shard::new(10);
        s.insert(auction("a", 100), 0).unwrap();
        s.insert(auction("b", 100), 0).unwrap();
        s.set_evict_at(Tenant::Sandbox, "c", "a", 500);
        s.get_mut(Tenant::Sandbox, "c", "b").unwrap().post = PostState::InFlight {
            key: "k".into(),
            slot: None,
        };
        s.evict(200);
        assert!(
            s.get(Tenant::Sandbox, "c", "a").is_some(),
            "moved eviction time is honoured"
        );
        assert!(
            s.get(Tenant::Sandbox, "c", "b").is_some(),
            "an auction being delivered is never dropped"
        );
        s.get_mut(Tenant::Sandbox, "c", "b").unwrap().post = PostState::None;
        s.evict(1_300);
        assert!(s.is_empty());
    }

    #[test]
    fn an_owned_shard_works_on_its_core() {
        let _core = crate::runtime::enter_core(2);
        let mut s = Shard::owned_by(2, 10);
        s.insert(auction("a", 100), 0).unwrap();
        assert!(s.get(Tenant::Sandbox, "c", "a").is_some());
        s.set_evict_at(Tenant::Sandbox, "c", "a", 50);
        assert_eq!(s.evict(60), 1);
    }

    #[test]
    #[cfg(debug_assertions)]
    #[should_panic(expected = "touched off its core")]
    fn an_owned_shard_refuses_another_core() {
        let mut s = Shard::owned_by(2, 10);
        let _core = crate::runtime::enter_core(1);
        let _ = s.insert(auction("a", 100), 0);
    }

    #[test]
    #[cfg(debug_assertions)]
    #[should_panic(expected = "touched off its core")]
    fn an_owned_shard_refuses_a_thread_that_is_no_core() {
        let s = Shard::owned_by(0, 10);
        let _ = s.get(Tenant::Sandbox, "c", "a");
    }
}

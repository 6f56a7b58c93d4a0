//! Rate limits (CONTRACT §7): requests per second per client; pings per second, concurrent auctions
//! and won-but-unposted auctions per seller; pings per second per buyer; each holding across all
//! cores.
//!
//! Every limit is one shared object behind an `Arc`, updated with atomics only (no lock on the
//! request path): a rate is a GCRA ("generic cell rate algorithm", the token bucket written as one
//! timestamp) on an `AtomicU64`, a concurrency cap is an `AtomicU32` (shared by the caps that
//! replace one another when a seller's limits change, so a change never forgets what is held).
//! Because all cores share the
//! same atomic, the aggregate can never exceed the configured rate plus the burst, which is 5 % of
//! the rate (at least one request). Owns the arithmetic and the 429 answer's headers; does not know
//! clients or buyers (auth and the registry hold their limits).

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use http::{HeaderName, StatusCode};

use crate::error::ApiError;

/// Share of a second's rate that may arrive at once: the bucket's capacity.
pub const BURST_SHARE: f64 = 0.05;

/// Nanoseconds since the process's first use of a limit: the limits' shared clock.
fn now_ns() -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    EPOCH.get_or_init(Instant::now).elapsed().as_nanos() as u64
}

/// A rate of `per_second` events with a burst of `burst` (GCRA). `tat` is the theoretical arrival
/// time of the next event when the bucket is empty; an event is allowed when it would not push
/// `tat` more than `burst - 1` intervals ahead of now.
#[derive(Debug)]
pub struct Rate {
    per_second: f64,
    burst: u32,
    interval_ns: u64,
    tat_ns: AtomicU64,
}

/// The answer of [`Rate::acquire`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Allowed; `remaining` more would be allowed right now; the bucket is full again after
    /// `reset`.
    Allowed { remaining: u32, reset: Duration },
    /// Refused; the next event is allowed after `retry_after`.
    Limited {
        retry_after: Duration,
        reset: Duration,
    },
}

impl Rate {
    /// `per_second` > 0; the burst is [`BURST_SHARE`] of it, at least 1.
    pub fn per_second(per_second: f64) -> Rate {
        let burst = ((per_second * BURST_SHARE).floor() as u32).max(1);
        Rate {
            per_second,
            burst,
            interval_ns: (1e9 / per_second).max(1.0) as u64,
            tat_ns: AtomicU64::new(0),
        }
    }

    pub fn limit(&self) -> f64 {
        self.per_second
    }

    pub fn burst(&self) -> u32 {
        self.burst
    }

    /// Takes one event if the rate allows it, at `now` (ns on the limits' clock).
    pub fn acquire_at(&self, now: u64) -> Decision {
        let tolerance = self.interval_ns * u64::from(self.burst - 1);
        let mut tat = self.tat_ns.load(Ordering::Relaxed);
        loop {
            let start = tat.max(now);
            if start - now > tolerance {
                return Decision::Limited {
                    retry_after: Duration::from_nanos(start - now - tolerance),
                    reset: Duration::from_nanos(start - now),
                };
            }
            let next = start + self.interval_ns;
            match self
                .tat_ns
                .compare_exchange_weak(tat, next, Ordering::AcqRel, Ordering::Relaxed)
            {
                Ok(_) => {
                    let ahead = next - now;
                    let room = (tolerance + self.interval_ns).saturating_sub(ahead);
                    return Decision::Allowed {
                        remaining: (room / self.interval_ns) as u32,
                        reset: Duration::from_nanos(ahead),
                    };
                }
                Err(seen) => tat = seen,
            }
        }
    }

    /// Takes one event if the rate allows it now.
    pub fn acquire(&self) -> Decision {
        self.acquire_at(now_ns())
    }
}

// Architecture Invariant [shared-limits]: a limit is one object every core shares (atomics, no
// lock), never a per-core copy, so it holds in aggregate whatever the core count.
/// A cap on things in progress (e.g. a seller's running auctions), shared by every core. The count
/// sits behind its own `Arc` so that a cap with another maximum ([`Concurrency::with_max`]) goes on
/// counting the same things: a slot taken under the old cap is given back to the count the new cap
/// reads.
#[derive(Debug)]
pub struct Concurrency {
    max: u32,
    current: Arc<AtomicU32>,
}

/// One slot of a [`Concurrency`]; dropping it frees the slot.
#[derive(Debug)]
pub struct Slot<'a>(&'a Concurrency);

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        self.0.release();
    }
}

impl Concurrency {
    pub fn new(max: u32) -> Concurrency {
        Concurrency {
            max,
            current: Arc::new(AtomicU32::new(0)),
        }
    }

    /// A cap of `max` over the same count as this one.
    pub fn with_max(&self, max: u32) -> Concurrency {
        Concurrency {
            max,
            current: self.current.clone(),
        }
    }

    pub fn max(&self) -> u32 {
        self.max
    }

    pub fn current(&self) -> u32 {
        self.current.load(Ordering::Acquire)
    }

    /// A slot, or `None` when all `max` are taken.
    pub fn try_acquire(&self) -> Option<Slot<'_>> {
        self.take().then(|| Slot(self))
    }

    /// Takes one slot unless all `max` are taken.
    fn take(&self) -> bool {
        self.current
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |c| {
                (c < self.max).then_some(c + 1)
            })
            .is_ok()
    }

    fn release(&self) {
        let before = self.current.fetch_sub(1, Ordering::AcqRel);
        debug_assert!(before > 0, "a concurrency slot was given back twice");
    }
}

/// An API client's (static token's or OAuth client's) limits. What a seller may run at once is
/// the seller's ([`SellerLimits`]), whichever of its credentials it uses.
#[derive(Debug)]
pub struct ClientLimits {
    pub requests: Rate,
}

impl ClientLimits {
    pub fn new(requests_per_s: f64) -> ClientLimits {
        ClientLimits {
            requests: Rate::per_second(requests_per_s),
        }
    }
}

/// One seller's limits, all its credentials and every core together (CONTRACT §7).
#[derive(Debug)]
pub struct SellerLimits {
    /// Pings (and one-call leads) per second; shared with the limits that replace these when only
    /// other limits change.
    pub pings: Arc<Rate>,
    /// Auctions running at once.
    pub auctions: Concurrency,
    /// Auctions won and not yet posted (nor gone from memory); a ping holds one while its auction
    /// runs, so the cap is exact however many cores close auctions at once.
    pub unposted: Concurrency,
}

impl SellerLimits {
    pub fn new(pings_per_s: f64, max_concurrent_auctions: u32, max_unposted: u32) -> SellerLimits {
        SellerLimits {
            pings: Arc::new(Rate::per_second(pings_per_s)),
            auctions: Concurrency::new(max_concurrent_auctions),
            unposted: Concurrency::new(max_unposted),
        }
    }

    /// Whether `other` sets the same limits (its counters may differ).
    pub fn same_limits(&self, other: &SellerLimits) -> bool {
        self.pings.limit() == other.pings.limit()
            && self.auctions.max() == other.auctions.max()
            && self.unposted.max() == other.unposted.max()
    }

    /// `other`'s limits over this object's counts: the running and unposted auctions counted so
    /// far stay counted (their slots are given back to the same counts), and the ping rate keeps
    /// its budget when its limit is unchanged.
    pub fn retuned(&self, other: &SellerLimits) -> SellerLimits {
        let pings = if self.pings.limit() == other.pings.limit() {
            self.pings.clone()
        } else {
            Arc::new(Rate::per_second(other.pings.limit()))
        };
        SellerLimits {
            pings,
            auctions: self.auctions.with_max(other.auctions.max()),
            unposted: self.unposted.with_max(other.unposted.max()),
        }
    }

    /// Reserves one unposted slot of this seller for an auction about to run; `None` at the cap.
    /// The slot is the auction's to keep if it is won, given back when it is dropped.
    pub fn reserve_unposted(self: &Arc<Self>) -> Option<UnpostedSlot> {
        self.unposted
            .take()
            .then(|| UnpostedSlot(Some(self.clone())))
    }
}

// Architecture Invariant [unposted-slot-once]: an owned value; dropping it gives the slot back, so
// it is released exactly once by ownership rather than by bookkeeping.
/// One of a seller's unposted-auction slots, owned by the auction that holds it: given back
/// exactly once, when dropped (the auction was posted, lost, or left memory).
#[derive(Debug)]
pub struct UnpostedSlot(Option<Arc<SellerLimits>>);

impl Drop for UnpostedSlot {
    fn drop(&mut self) {
        if let Some(limits) = self.0.take() {
            limits.unposted.release();
        }
    }
}

fn epoch_secs_after(d: Duration) -> u64 {
    (SystemTime::now() + d)
        .duration_since(UNIX_EPOCH)
        .map(|t| t.as_secs_f64().ceil() as u64)
        .unwrap_or(0)
}

/// The 429 for a refused request: `Retry-After` (whole seconds, rounded up, at least 1),
/// `X-RateLimit-Limit` (the limit), `X-RateLimit-Remaining` (0), `X-RateLimit-Reset` (epoch
/// seconds when the limit is fully available again), and the §2 body with `rate_limited`.
pub fn too_many(
    what: &str,
    limit: impl std::fmt::Display,
    retry_after: Duration,
    reset: Duration,
) -> ApiError {
    let retry_s = retry_after.as_secs_f64().ceil().max(1.0) as u64;
    ApiError::new(
        StatusCode::TOO_MANY_REQUESTS,
        "rate_limited",
        format!("{what}; retry after {retry_s} s."),
    )
    .with_header(http::header::RETRY_AFTER, retry_s.to_string())
    .with_header(
        HeaderName::from_static("x-ratelimit-limit"),
        limit.to_string(),
    )
    .with_header(
        HeaderName::from_static("x-ratelimit-remaining"),
        "0".to_string(),
    )
    .with_header(
        HeaderName::from_static("x-ratelimit-reset"),
        epoch_secs_after(reset).to_string(),
    )
}

/// Checks a client's request rate; the 429 when it is exceeded.
pub fn check_requests(limits: &ClientLimits) -> Result<(), ApiError> {
    match limits.requests.acquire() {
        Decision::Allowed { .. } => Ok(()),
        Decision::Limited { retry_after, reset } => Err(too_many(
            &format!(
                "This client may send {} requests per second",
                limits.requests.limit()
            ),
            limits.requests.limit(),
            retry_after,
            reset,
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000_000;

    #[test]
    fn rate_allows_burst_then_one_per_interval() {
        let r = Rate::per_second(100.0); // burst 5, one per 10 ms
        assert_eq!(r.burst(), 5);
        let t0 = 10 * S;
        for i in 0..5 {
            match r.acquire_at(t0) {
                Decision::Allowed { remaining, .. } => assert_eq!(remaining, 4 - i),
                d => panic!("event {i}: {d:?}"),
            }
        }
        match r.acquire_at(t0) {
            Decision::Limited { retry_after, reset } => {
                assert_eq!(retry_after, Duration::from_millis(10));
                assert_eq!(reset, Duration::from_millis(50));
            }
            d => panic!("{d:?}"),
        }
        // One interval later exactly one more fits.
        assert!(matches!(
            r.acquire_at(t0 + 10_000_000),
            Decision::Allowed { .. }
        ));
        assert!(matches!(
            r.acquire_at(t0 + 10_000_000),
            Decision::Limited { .. }
        ));
    }

    #[test]
    fn a_second_of_load_admits_rate_plus_burst() {
        // Events every 100 µs for one second (10,000 offered) against 200/s.
        let r = Rate::per_second(200.0);
        let allowed = (0..10_000u64)
            .filter(|i| matches!(r.acquire_at(S + i * 100_000), Decision::Allowed { .. }))
            .count();
        assert!((200..=210).contains(&allowed), "{allowed}");
    }

    #[test]
    fn rate_holds_across_threads() {
        let r = std::sync::Arc::new(Rate::per_second(1_000.0));
        let t = 5 * S;
        let handles: Vec<_> = (0..4)
            .map(|_| {
                let r = r.clone();
                std::thread::spawn(move || {
                    (0..10_000)
                        .filter(|_| matches!(r.acquire_at(t), Decision::Allowed { .. }))
                        .count()
                })
            })
            .collect();
        let total: usize = handles.into_iter().map(|h| h.join().unwrap()).sum();
        // All at the same instant: exactly the burst.
        assert_eq!(total, 50);
    }

    #[test]
    fn concurrency_caps_and_frees() {
        let c = Concurrency::new(2);
        let a = c.try_acquire().unwrap();
        let _b = c.try_acquire().unwrap();
        assert!(c.try_acquire().is_none());
        drop(a);
        assert_eq!(c.current(), 1);
        assert!(c.try_acquire().is_some());
    }

    #[test]
    fn a_retuned_cap_keeps_counting_what_the_old_one_handed_out() {
        let old = Arc::new(SellerLimits::new(10.0, 2, 3));
        let running = old.auctions.try_acquire().unwrap();
        let unposted = old.reserve_unposted().unwrap();
        let new = Arc::new(old.retuned(&SellerLimits::new(10.0, 1, 1)));
        assert!(
            Arc::ptr_eq(&old.pings, &new.pings),
            "same rate, same budget"
        );
        assert_eq!((new.auctions.current(), new.unposted.current()), (1, 1));
        assert!(new.auctions.try_acquire().is_none());
        assert!(new.reserve_unposted().is_none());
        // Slots taken under the old limits are given back to the count the new ones read.
        drop(running);
        drop(unposted);
        assert_eq!((new.auctions.current(), new.unposted.current()), (0, 0));
        assert!(new.auctions.try_acquire().is_some());
        let held = new.reserve_unposted().unwrap();
        assert_eq!(old.unposted.current(), 1);
        drop(held);
        assert_eq!(old.unposted.current(), 0);
        let faster = old.retuned(&SellerLimits::new(20.0, 2, 3));
        assert_eq!(faster.pings.limit(), 20.0);
    }

    #[test]
    fn too_many_carries_every_header() {
        let e = too_many(
            "x",
            100,
            Duration::from_millis(1_200),
            Duration::from_secs(3),
        );
        assert_eq!(e.status, StatusCode::TOO_MANY_REQUESTS);
        let h = |n: &str| {
            e.headers
                .iter()
                .find(|(k, _)| k.as_str() == n)
                .map(|(_, v)| v.clone())
                .unwrap()
        };
        assert_eq!(h("retry-after"), "2");
        assert_eq!(h("x-ratelimit-limit"), "100");
        assert_eq!(h("x-ratelimit-remaining"), "0");
        assert!(h("x-ratelimit-reset").parse::<u64>().unwrap() > 1_700_000_000);
    }
}

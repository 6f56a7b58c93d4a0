//! Admission control: refusing new work on a core that cannot keep up, so the requests it does
//! accept stay fast (issue #13, overload).
//!
//! A core that receives more work than its CPU can run does not fail; it falls behind. Every
//! task waits longer in its event loop's run queue, and every request gets slow together. The
//! signal of that is the core's *lag*: how late its work starts compared with when it was ready.
//! It is measured two ways, both on the core that runs the work:
//!
//! - the loop tick ([`tick`]): every [`LOOP_TICK_MS`] the core asks to be woken; how late the
//!   wake-up comes is its loop lag. It counts when two ticks in a row are late, so one stall is
//!   not taken for a backlog; a tick already overdue counts as late ([`LoopClock::lag_us`]), so
//!   a core notices it fell behind without waiting for the late tick to run;
//! - the queue delay of each request: from the moment it was ready to run (body read and
//!   validated, handed to [`super::handoff`]) to the moment its owning core starts it, inbox
//!   included.
//!
//! Past `server.max_queue_delay_ms` a request that would start new work is refused at once with
//! 503 `overloaded` and `Retry-After: 1` ([`RETRY_AFTER_S`]); shedding costs a fraction of what
//! running it would, so the core catches up and the requests it admits keep their latency. A
//! post finishes a sale already made and is worth more than a new ping, so it is shed only past
//! [`FINISH_DELAY_FACTOR`] times the limit. Separately, `server.max_in_flight_requests_per_core`
//! bounds the requests a core works on at once (memory, outbound sockets); auctions wait on
//! buyers for up to seconds, so that count is high in normal operation and says little about
//! CPU. Gavel's own bookkeeping (metrics snapshots, OAuth client updates), `/healthz`, `/readyz`
//! and `/metrics` are never shed.
//!
//! Cost on the request path: one clock read and a few compares of per-core cells and a
//! single-writer atomic; no lock, no allocation.

use std::cell::Cell;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::{App, Core};
use crate::error::ApiError;

/// How often each core's loop tick asks to be woken, in milliseconds.
pub const LOOP_TICK_MS: u64 = 10;
/// `Retry-After` of a shed request, in seconds: an overloaded core catches up within a few
/// ticks once it sheds, so the smallest whole second is the honest answer.
pub const RETRY_AFTER_S: u64 = 1;
/// Posts may wait this many times `server.max_queue_delay_ms` before they are shed.
pub const FINISH_DELAY_FACTOR: u64 = 2;
/// The loop-lag gauge reports the worst tick of at least this long a window (the current one
/// and the one before), so a scrape every few seconds still sees a short stall.
pub const LAG_WINDOW: Duration = Duration::from_secs(1);

/// What a piece of work handed to a core is, for admission.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    /// Starts something new (a ping's auction, a one-call lead, a seed run, a record lookup, a
    /// status report): shed first.
    New,
    /// Finishes a sale already made (a post): shed only far past the limit.
    Finish,
    /// Never shed (administrative changes such as OAuth client updates): counted in flight only.
    Always,
}

/// Why a request was shed; the `reason` label of `gavel_requests_shed_total`. A core's shed
/// counters are indexed by [`crate::types::words::Word::index`].
pub use crate::types::words::ShedReason as Shed;
use crate::types::words::Word;

/// A core's limits, from `[server]`.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_queue_delay_us: u64,
    pub max_in_flight: u64,
}

impl Limits {
    pub fn from_config(server: &crate::config::ServerConfig) -> Limits {
        Limits {
            max_queue_delay_us: server.max_queue_delay_ms.saturating_mul(1_000),
            max_in_flight: server.max_in_flight_requests_per_core as u64,
        }
    }

    /// The delay `admit` work may see before it is shed; `None` for work never shed.
    fn delay_limit_us(&self, admit: Admit) -> Option<u64> {
        match admit {
            Admit::New => Some(self.max_queue_delay_us),
            Admit::Finish => Some(self.max_queue_delay_us.saturating_mul(FINISH_DELAY_FACTOR)),
            Admit::Always => None,
        }
    }
}

/// The decision, as a pure function of what the core measured: `lag_us` (its loop lag now),
/// `queued_us` (this request's queue delay, `None` before it was queued) and `in_flight`
/// (requests the core works on now, this one not included).
pub fn decide(
    limits: &Limits,
    admit: Admit,
    lag_us: u64,
    queued_us: Option<u64>,
    in_flight: u64,
) -> Result<(), Shed> {
    let Some(max_delay) = limits.delay_limit_us(admit) else {
        return Ok(());
    };
    if in_flight >= limits.max_in_flight {
        return Err(Shed::InFlight);
    }
    if queued_us.is_some_and(|q| q > max_delay) {
        return Err(Shed::QueueDelay);
    }
    if lag_us > max_delay {
        return Err(Shed::LoopLag);
    }
    Ok(())
}

/// A core's view of its own loop lag. Written by its tick, read by its requests; both run on the
/// core's thread, so plain cells suffice.
///
/// Lag counts only when two ticks in a row are late (the pending one counts once it is overdue):
/// a backlog that stands, not a single stall. One late tick alone (the thread was descheduled
/// once, a large scrape ran) leaves nothing behind worth shedding for; the requests that did
/// wait through it are caught by their own queue delay.
#[derive(Debug)]
pub struct LoopClock {
    /// When the pending tick is due.
    due: Cell<Instant>,
    /// How late the latest tick fired, in µs.
    last_lag_us: Cell<u64>,
    /// How late the tick before it fired, in µs.
    previous_lag_us: Cell<u64>,
}

impl LoopClock {
    pub fn new(now: Instant) -> LoopClock {
        LoopClock {
            due: Cell::new(now + Duration::from_millis(LOOP_TICK_MS)),
            last_lag_us: Cell::new(0),
            previous_lag_us: Cell::new(0),
        }
    }

    /// The loop's standing lag as of `now`: the smaller lag of the latest two ticks, the pending
    /// one counting as overdue by now, whichever pair says more.
    pub fn lag_us(&self, now: Instant) -> u64 {
        let overdue = now.saturating_duration_since(self.due.get()).as_micros() as u64;
        let last = self.last_lag_us.get();
        last.min(self.previous_lag_us.get()).max(last.min(overdue))
    }

    /// Starts the schedule afresh at `now`, with no lag: the time a core takes to start up is
    /// not lag.
    fn restart(&self, now: Instant) {
        self.last_lag_us.set(0);
        self.previous_lag_us.set(0);
        self.due.set(now + Duration::from_millis(LOOP_TICK_MS));
    }

    /// Notes a tick that fired at `now` and schedules the next; returns how late it fired, in µs.
    fn fired(&self, now: Instant) -> u64 {
        let lag = now.saturating_duration_since(self.due.get()).as_micros() as u64;
        self.previous_lag_us.set(self.last_lag_us.get());
        self.last_lag_us.set(lag);
        self.due.set(now + Duration::from_millis(LOOP_TICK_MS));
        lag
    }
}

/// The 503 a shed request gets: Gavel's own fault (CONTRACT §2), worth a retry after
/// [`RETRY_AFTER_S`].
pub fn overloaded(core: usize, why: Shed) -> ApiError {
    let detail = match why {
        Shed::LoopLag | Shed::QueueDelay => "is running behind",
        Shed::InFlight => "works on as many requests as it may",
        Shed::InboxFull => "has too much work waiting",
    };
    ApiError::new(
        http::StatusCode::SERVICE_UNAVAILABLE,
        "overloaded",
        format!("Gavel's core {core} {detail}; retry after {RETRY_AFTER_S} s."),
    )
    .with_header(http::header::RETRY_AFTER, RETRY_AFTER_S.to_string())
}

/// Counts one shed request on `core`.
pub fn count_shed<A: App>(core: &Core<A>, why: Shed) {
    core.stats().shed[why.index()].fetch_add(1, Ordering::Relaxed);
}

/// An early check on the core that received a request, before it is parsed and handed over:
/// refuses it when this core's loop already runs too late for `admit` work, so an overloaded
/// core spends as little as possible on what it will not run.
pub fn precheck<A: App>(core: &Core<A>, admit: Admit) -> Result<(), ApiError> {
    let lag = core.loop_clock.lag_us(Instant::now());
    match decide(&core.admission, admit, lag, None, 0) {
        Ok(()) => Ok(()),
        Err(why) => {
            count_shed(core, why);
            Err(overloaded(core.id, why))
        }
    }
}

/// Admits `admit` work that was ready at `queued` and starts on `core` now, or says why not (and
/// counts it). The guard counts the request in flight until it is dropped.
pub fn admit<A: App>(
    core: &Rc<Core<A>>,
    admit: Admit,
    queued: Instant,
) -> Result<InFlight<A>, ApiError> {
    let now = Instant::now();
    let stats = core.stats();
    let in_flight = stats.in_flight_requests.load(Ordering::Relaxed);
    let queued_us = now.saturating_duration_since(queued).as_micros() as u64;
    let lag = core.loop_clock.lag_us(now);
    if let Err(why) = decide(&core.admission, admit, lag, Some(queued_us), in_flight) {
        count_shed(core, why);
        return Err(overloaded(core.id, why));
    }
    stats
        .in_flight_requests
        .store(in_flight + 1, Ordering::Relaxed);
    Ok(InFlight(core.clone()))
}

/// One request in flight on a core (see [`admit`]); dropping it ends the count, also when the
/// work is dropped unfinished.
pub struct InFlight<A: App>(Rc<Core<A>>);

impl<A: App> Drop for InFlight<A> {
    fn drop(&mut self) {
        // Only this core writes its counter, so a load and a store cannot lose an update.
        let n = &self.0.stats().in_flight_requests;
        n.store(
            n.load(Ordering::Relaxed).saturating_sub(1),
            Ordering::Relaxed,
        );
    }
}

/// The core's loop tick, forever: wakes every [`LOOP_TICK_MS`], notes how late it woke, and
/// publishes the worst lag of the last [`LAG_WINDOW`] or two for the metrics.
pub async fn tick<A: App>(core: Rc<Core<A>>) {
    let mut window_start = Instant::now();
    core.loop_clock.restart(window_start);
    let (mut current_max, mut previous_max) = (0u64, 0u64);
    loop {
        monoio::time::sleep(Duration::from_millis(LOOP_TICK_MS)).await;
        let now = Instant::now();
        let lag = core.loop_clock.fired(now);
        core.metrics.record_loop_lag(lag);
        if now.saturating_duration_since(window_start) >= LAG_WINDOW {
            previous_max = current_max;
            current_max = 0;
            window_start = now;
        }
        current_max = current_max.max(lag);
        core.stats()
            .loop_lag_us
            .store(current_max.max(previous_max), Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits {
        max_queue_delay_us: 50_000,
        max_in_flight: 3,
    };

    #[test]
    fn new_work_is_shed_past_the_delay_and_posts_past_twice_it() {
        assert_eq!(decide(&LIMITS, Admit::New, 50_000, Some(50_000), 0), Ok(()));
        assert_eq!(
            decide(&LIMITS, Admit::New, 50_001, Some(0), 0),
            Err(Shed::LoopLag)
        );
        assert_eq!(
            decide(&LIMITS, Admit::New, 0, Some(50_001), 0),
            Err(Shed::QueueDelay)
        );
        assert_eq!(
            decide(&LIMITS, Admit::Finish, 100_000, Some(100_000), 0),
            Ok(())
        );
        assert_eq!(
            decide(&LIMITS, Admit::Finish, 100_001, None, 0),
            Err(Shed::LoopLag)
        );
    }

    #[test]
    fn the_in_flight_cap_counts_before_the_delays_and_admin_work_is_never_shed() {
        assert_eq!(decide(&LIMITS, Admit::New, 0, Some(0), 2), Ok(()));
        assert_eq!(
            decide(&LIMITS, Admit::New, 90_000, Some(0), 3),
            Err(Shed::InFlight)
        );
        assert_eq!(
            decide(&LIMITS, Admit::Finish, 0, None, 3),
            Err(Shed::InFlight)
        );
        assert_eq!(
            decide(&LIMITS, Admit::Always, u64::MAX, Some(u64::MAX), u64::MAX),
            Ok(())
        );
    }

    #[test]
    fn a_single_stall_is_not_lag_but_two_late_ticks_in_a_row_are() {
        let ms = Duration::from_millis;
        let t0 = Instant::now();
        let clock = LoopClock::new(t0);
        assert_eq!(clock.lag_us(t0), 0);
        let due = t0 + ms(LOOP_TICK_MS);
        // Overdue, but the tick before was on time: one stall so far.
        assert_eq!(clock.lag_us(due + ms(70)), 0);
        // The late tick fires; alone it is not a standing backlog.
        assert_eq!(clock.fired(due + ms(80)), 80_000);
        assert_eq!(clock.lag_us(due + ms(81)), 0);
        // The next one is overdue too: the core is behind, by the smaller of the two.
        let due2 = due + ms(80 + LOOP_TICK_MS);
        assert_eq!(clock.lag_us(due2 + ms(60)), 60_000);
        assert_eq!(clock.lag_us(due2 + ms(95)), 80_000);
        assert_eq!(clock.fired(due2 + ms(90)), 90_000);
        assert_eq!(clock.lag_us(due2 + ms(91)), 80_000);
        // A tick on time: caught up at once.
        let due3 = due2 + ms(90 + LOOP_TICK_MS);
        assert_eq!(clock.fired(due3), 0);
        assert_eq!(clock.lag_us(due3), 0);
        // A restart forgets everything.
        clock.fired(due3 + ms(LOOP_TICK_MS + 200));
        clock.restart(due3 + ms(300));
        assert_eq!(clock.lag_us(due3 + ms(300)), 0);
    }

    #[test]
    fn the_refusal_is_a_503_with_retry_after() {
        let e = overloaded(3, Shed::QueueDelay);
        assert_eq!(e.status, http::StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(e.code, "overloaded");
        assert!(e
            .headers
            .iter()
            .any(|(n, v)| n == http::header::RETRY_AFTER && v == "1"));
        assert_eq!(e.cause(), crate::error::Cause::Internal);
        assert_eq!(Shed::InboxFull.as_str(), "inbox_full");
    }
}

//! Wall-clock time as a value that can be replaced: production code reads the system clock, tests
//! hand in a manual clock and move it forward instead of sleeping.
//!
//! Only wall-clock reads (record timestamps, expiry, bid-token lifetimes, schedules) go through
//! here. Timers that bound waiting (buyer deadlines, idle connections) run on the event loop's
//! monotonic clock and are not replaced.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

// Architecture Invariant [one-clock]: wall-clock time comes from this one clock (tests replace
// it); timers that bound waiting use the monotonic clock instead.
/// A source of "now" in unix milliseconds. Cloning shares the source: advancing a manual clock is
/// seen by every clone.
#[derive(Debug, Clone, Default)]
pub struct Clock {
    /// `None` reads the system clock; `Some` holds a manual clock's current time.
    manual: Option<Arc<AtomicU64>>,
}

impl Clock {
    /// The system's wall clock.
    pub fn system() -> Clock {
        Clock { manual: None }
    }

    /// A clock that stands at `start_ms` until [`Clock::advance`] or [`Clock::set_ms`] moves it.
    pub fn manual(start_ms: u64) -> Clock {
        Clock {
            manual: Some(Arc::new(AtomicU64::new(start_ms))),
        }
    }

    /// Whether this is a manual clock.
    pub fn is_manual(&self) -> bool {
        self.manual.is_some()
    }

    /// Now, in unix milliseconds.
    pub fn now_ms(&self) -> u64 {
        match &self.manual {
            None => system_now_ms(),
            Some(t) => t.load(Ordering::Relaxed),
        }
    }

    /// Moves a manual clock forward by `ms`. A system clock cannot be moved: calling this on one
    /// is a bug in the caller, caught in debug builds and ignored otherwise.
    pub fn advance(&self, ms: u64) {
        debug_assert!(self.is_manual(), "advance() on the system clock");
        if let Some(t) = &self.manual {
            t.fetch_add(ms, Ordering::Relaxed);
        }
    }

    /// Sets a manual clock to `ms` (backwards too, to test clock steps). Same rule as
    /// [`Clock::advance`] for a system clock.
    pub fn set_ms(&self, ms: u64) {
        debug_assert!(self.is_manual(), "set_ms() on the system clock");
        if let Some(t) = &self.manual {
            t.store(ms, Ordering::Relaxed);
        }
    }
}

/// The system's wall clock in unix milliseconds (0 if it reads before 1970).
pub fn system_now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_manual_clock_moves_only_when_told_and_clones_share_it() {
        let c = Clock::manual(1_000);
        let seen_by = c.clone();
        assert_eq!(c.now_ms(), 1_000);
        c.advance(250);
        assert_eq!(seen_by.now_ms(), 1_250);
        seen_by.set_ms(900);
        assert_eq!(c.now_ms(), 900);
    }

    #[test]
    fn the_system_clock_reads_the_system_time() {
        let before = system_now_ms();
        let now = Clock::system().now_ms();
        assert!(now >= before && now < before + 60_000, "{before} .. {now}");
        assert!(!Clock::system().is_manual());
    }
}

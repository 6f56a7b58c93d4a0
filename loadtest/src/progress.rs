//! The live progress line (`indicatif`, on stderr, hidden when stderr is not a terminal): elapsed
//! time, achieved rate, errors and the rolling p99 of the primary phase.
//!
//! No locks: the generator threads bump shared atomic counters ([`Counters`]), and each keeps a
//! local histogram of the primary phase that it hands over every [`TICK`] through a channel
//! ([`Tick`]); the progress thread merges the last second's worth for the p99.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::report::new_hist;

/// How often generator threads publish and the line is redrawn.
pub const TICK: Duration = Duration::from_millis(500);
/// Window of the rolling p99 and rate.
pub const WINDOW: Duration = Duration::from_secs(1);

/// Run-wide counters, bumped by every generator thread.
#[derive(Debug, Default)]
pub struct Counters {
    /// Scheduled requests started.
    pub sent: AtomicU64,
    /// Primary-phase requests finished.
    pub done: AtomicU64,
    /// Primary-phase errors (non-2xx or transport).
    pub errors: AtomicU64,
    /// The run is over: the progress thread clears the line and ends.
    pub finished: AtomicBool,
}

/// One generator thread's primary-phase latencies (µs) since its previous tick.
#[derive(Debug)]
pub struct Tick {
    pub latency: Histogram<u64>,
}

/// What the generator threads publish to.
#[derive(Debug, Clone)]
pub struct Publisher {
    pub counters: Arc<Counters>,
    pub ticks: Sender<Tick>,
}

/// The progress line's state: the ticks of the last [`WINDOW`].
#[derive(Debug, Default)]
pub struct Rolling {
    recent: VecDeque<(Instant, Histogram<u64>)>,
}

impl Rolling {
    pub fn push(&mut self, at: Instant, h: Histogram<u64>) {
        self.recent.push_back((at, h));
    }

    /// Drops ticks older than [`WINDOW`] before `now` and merges the rest.
    pub fn merged(&mut self, now: Instant) -> Histogram<u64> {
        while let Some((at, _)) = self.recent.front() {
            if now.saturating_duration_since(*at) > WINDOW {
                self.recent.pop_front();
            } else {
                break;
            }
        }
        let mut all = new_hist();
        for (_, h) in &self.recent {
            all.add(h).expect("same bounds");
        }
        all
    }
}

/// The text of the line.
pub fn line(
    elapsed: Duration,
    counters: &Counters,
    phase: &str,
    window: &Histogram<u64>,
) -> String {
    let secs = elapsed.as_secs_f64();
    let done = counters.done.load(Ordering::Relaxed);
    let p99 = if window.is_empty() {
        "-".to_string()
    } else {
        format!("{:.3} ms", window.value_at_quantile(0.99) as f64 / 1000.0)
    };
    format!(
        "{secs:6.1} s | sent {} | {phase} done {done} ({:.1}/s, last 1 s {:.1}/s) | errors {} | {phase} p99 (last 1 s) {p99}",
        counters.sent.load(Ordering::Relaxed),
        if secs > 0.0 { done as f64 / secs } else { 0.0 },
        window.len() as f64 / WINDOW.as_secs_f64(),
        counters.errors.load(Ordering::Relaxed),
    )
}

/// The running progress thread.
#[derive(Debug)]
pub struct Line {
    counters: Arc<Counters>,
    thread: std::thread::JoinHandle<()>,
}

impl Line {
    /// Clears the line and waits for the thread (at most about one [`TICK`]).
    pub fn finish(self) {
        self.counters.finished.store(true, Ordering::Relaxed);
        let _ = self.thread.join();
    }
}

/// Starts the progress thread; it ends (clearing the line) at [`Line::finish`], or once every
/// [`Publisher`] is dropped.
pub fn start(phase: &'static str) -> Result<(Publisher, Line), String> {
    let counters = Arc::new(Counters::default());
    let (tx, rx) = crossbeam_channel::unbounded();
    let c = counters.clone();
    let handle = std::thread::Builder::new()
        .name("gavel-load-progress".into())
        .spawn(move || show(phase, &c, &rx))
        .map_err(|e| format!("cannot spawn progress thread: {e}"))?;
    Ok((
        Publisher {
            counters: counters.clone(),
            ticks: tx,
        },
        Line {
            counters,
            thread: handle,
        },
    ))
}

fn show(phase: &str, counters: &Counters, rx: &Receiver<Tick>) {
    let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
    bar.set_style(ProgressStyle::with_template("{spinner} {msg}").expect("valid template"));
    let start = Instant::now();
    let mut rolling = Rolling::default();
    let mut next = start + TICK;
    while !counters.finished.load(Ordering::Relaxed) {
        match rx.recv_timeout(next.saturating_duration_since(Instant::now())) {
            Ok(t) => rolling.push(Instant::now(), t.latency),
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => break,
        }
        let now = Instant::now();
        if now >= next {
            let window = rolling.merged(now);
            bar.set_message(line(now - start, counters, phase, &window));
            bar.tick();
            next = now + TICK;
        }
    }
    bar.finish_and_clear();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rolling_window_and_line() {
        let t0 = Instant::now();
        let mut r = Rolling::default();
        let mut old = new_hist();
        old.record(900_000).unwrap(); // 900 ms, will fall out of the window
        r.push(t0, old);
        let mut h = new_hist();
        for i in 1..=100u64 {
            h.record(i * 1000).unwrap();
        }
        r.push(t0 + Duration::from_millis(1500), h);
        let w = r.merged(t0 + Duration::from_millis(2000));
        assert_eq!(w.len(), 100);
        let c = Counters::default();
        c.sent.store(250, Ordering::Relaxed);
        c.done.store(200, Ordering::Relaxed);
        c.errors.store(3, Ordering::Relaxed);
        let l = line(Duration::from_secs(2), &c, "ping", &w);
        assert!(l.contains("sent 250"), "{l}");
        assert!(
            l.contains("ping done 200 (100.0/s, last 1 s 100.0/s)"),
            "{l}"
        );
        assert!(l.contains("errors 3"), "{l}");
        assert!(l.contains("ping p99 (last 1 s) 99.0"), "{l}");
    }

    #[test]
    fn thread_ends_at_finish_or_when_publishers_drop() {
        let (p, line) = start("ping").unwrap();
        let mut h = new_hist();
        h.record(1000).unwrap();
        p.ticks.send(Tick { latency: h }).unwrap();
        p.counters.done.fetch_add(1, Ordering::Relaxed);
        // A publisher may outlive the run (a leaked task): finish() still ends the thread.
        line.finish();
        drop(p);
        let (p, line) = start("ping").unwrap();
        drop(p);
        line.thread.join().unwrap();
    }
}

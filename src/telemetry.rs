//! Logging setup: `tracing` with a level from config or `GAVEL_LOG`, text or JSON lines.
//!
//! Lines are written by a dedicated thread (tracing-appender's non-blocking writer), so a slow
//! stderr never stalls a core's event loop; when that writer's queue is full, lines are dropped
//! rather than blocking. Log lines carry request ids, cores, routes, statuses and latencies, never
//! lead contents: nothing in the crate logs a lead, and ping fields are not logged either.

use std::sync::atomic::{AtomicBool, Ordering};

use tracing_appender::non_blocking::WorkerGuard;
use tracing_subscriber::EnvFilter;

use crate::config::LogConfig;

static INSTALLED: AtomicBool = AtomicBool::new(false);

/// Installs the global subscriber once and returns the guard of its writer thread: keep it alive
/// while the process logs, and drop it at exit to flush. Later calls return `None` (tests start
/// many servers in one process).
#[must_use = "dropping the guard stops the log writer"]
pub fn init(cfg: &LogConfig) -> Option<WorkerGuard> {
    if INSTALLED.swap(true, Ordering::SeqCst) {
        return None;
    }
    let (writer, guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .lossy(true)
        .finish(std::io::stderr());
    let filter =
        EnvFilter::try_from_env("GAVEL_LOG").unwrap_or_else(|_| EnvFilter::new(&cfg.level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        .with_ansi(false);
    let _ = if cfg.json {
        builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .try_init()
    } else {
        builder.try_init()
    };
    Some(guard)
}

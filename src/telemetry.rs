//! Logging setup: `tracing` with a level from config or `GAVEL_LOG`, text or JSON lines.
//!
//! Log lines carry request ids, cores, routes, statuses and latencies, never lead contents: nothing
//! in the crate logs a lead, and ping fields are not logged either.

use tracing_subscriber::EnvFilter;

use crate::config::LogConfig;

/// Installs the global subscriber once; later calls are ignored (tests start many servers).
pub fn init(cfg: &LogConfig) {
    let filter =
        EnvFilter::try_from_env("GAVEL_LOG").unwrap_or_else(|_| EnvFilter::new(&cfg.level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = if cfg.json {
        builder.json().flatten_event(true).try_init()
    } else {
        builder.try_init()
    };
}

//! Gavel: a self-hosted, thread-per-core ping-post lead auction exchange.
//!
//! A seller pings Gavel with a lead minus its contact data; Gavel pings every eligible buyer in
//! parallel, clears the highest valid bid above the floor and answers with a signed bid token. The
//! seller then posts the full lead with that token and Gavel delivers it to the winner, falling back
//! to the next bidder when the winner refuses.
//!
//! # Layout
//! - [`runtime`]: one pinned thread per core, each a monoio event loop with its own SO_REUSEPORT
//!   listener, auction shard and buyer pool; cross-core hand-off by crossbeam channel.
//! - [`http`]: hyper 1 on monoio (via monoio-compat), bounded bodies, request ids, [`http::Reply`].
//! - [`api`]: routing and endpoints (`/v1/ping`, `/v1/post`, ops), validation with simd-json.
//! - [`auction`]: shard, fan-out, clearing, bid tokens, post delivery.
//! - [`buyers`]: buyer registry, eligibility filters, per-core keep-alive connection pool.
//! - [`auth`]: static bearer tokens (SHA-256 hashed), tenants and scopes, the party of each credential.
//! - [`parties`]: the seller table (configured and implicit sellers, suspension, per-seller limits).
//! - [`audit`]: the audit log of admin changes (who, what, before and after, secrets masked).
//! - [`metrics`]: per-core HDR histograms and counters, merged on read; Prometheus and JSON output.
//! - [`store`]: sled + rkyv records (idempotency, auctions, leads), per-core write-ahead logs, expiry.
//! - [`sandbox`]: the mock buyer fleet used by the default config, tests and load tests.
//! - [`config`]: TOML schema, validation, CLI overrides. [`error`]: who-caused-it error mapping.
//! - [`cli`]: the `gavel` command line; `main.rs` only calls it.

pub mod api;
pub mod auction;
pub mod audit;
pub mod auth;
pub mod buyers;
pub mod cli;
pub mod config;
pub mod error;
pub mod exchange;
pub mod http;
pub mod limits;
pub mod metrics;
pub mod model;
pub mod parties;
pub mod runtime;
pub mod sandbox;
pub mod store;
pub mod telemetry;
pub mod types;
pub mod webhooks;

//! Gavel: a self-hosted, thread-per-core ping-post lead auction exchange.
//!
//! A seller pings Gavel with a lead minus its contact data; Gavel pings every eligible buyer in
//! parallel, clears the highest valid bid above the floor and answers with a signed bid token. The
//! seller then posts the full lead with that token and Gavel delivers it to the winner, falling back
//! to the next bidder when the winner refuses.
//!
//! # Layout
//! From the bottom layer up (docs/ARCHITECTURE.md, "Layers"; `tests/layering.rs` checks that a
//! module names only modules of its own layer or below):
//! - [`types`]: tenants, scopes, parties, cents, the replaceable clock, and the exchange's closed
//!   vocabularies ([`types::words`]: outcomes, reasons, attempt results). [`error`]: who caused an
//!   error, its status code and error code.
//! - [`config`]: TOML schema, defaults, range checks, CLI overrides. [`model`]: validated ping,
//!   post and lead. [`limits`]: rate limits and caps on shared atomics. [`telemetry`]: logging.
//! - [`store`]: sled + rkyv records (idempotency, auctions, leads, outbox), per-core write-ahead
//!   logs, expiry. [`metrics`]: per-core HDR histograms and counters, Prometheus and JSON output.
//!   [`http`]: hyper 1 on monoio, bounded bodies, request ids, [`http::Reply`].
//! - [`runtime`]: one pinned thread per core, each a monoio event loop with its own SO_REUSEPORT
//!   listener; inboxes and hand-off, admission control, the fd limit; generic over the app.
//! - [`auction`]: shard, fan-out, clearing, bid tokens, post delivery. [`buyers`]: registry,
//!   filters, formats, the per-core keep-alive pool, TLS, DNS, egress rule. [`auth`]: bearer and
//!   OAuth credentials and the party of each. [`parties`]: the seller table. [`audit`]: the audit
//!   log of admin changes. [`webhooks`]: Standard Webhooks, the outbox and its dispatcher.
//! - [`exchange`]: the use-cases (run an auction, deliver a post, one-call lead, status reports,
//!   buyer and seller changes), without HTTP.
//! - [`api`]: routes, views per party, validation, handlers. [`sandbox`]: the mock buyer fleet.
//! - [`cli`]: the `gavel` command line; `main.rs` only calls it.

// Architecture Invariant [layers]: a module names (`crate::…`) only modules in its own layer or
// below (docs/ARCHITECTURE.md, "Layers"); tests/layering.rs reads every file to check it.
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

//! The sandbox: synthetic buyers that behave like real ones, so Gavel can be run, demonstrated and
//! tested end to end on one machine.
//!
//! It owns the mock buyer fleet ([`mock`]): real HTTP endpoints on loopback that answer pings and
//! posts the way CONTRACT §5 says a buyer does, including the ways real buyers misbehave (hanging,
//! 500s, broken JSON, slow bodies, wrong auction ids, rejected posts). `gavel serve` (sandbox
//! enabled), `gavel mock-buyers`, the integration tests and the load tester all start the same
//! fleet. It also owns the synthetic lead generator ([`synth`]) behind `POST /v1/dev/seed`. It does
//! not own Gavel's buyer client, the auction logic or the seller API: the fleet only sits on the
//! other side of the wire.

pub mod mock;
pub mod synth;

pub use mock::*;

#[cfg(test)]
mod tests;

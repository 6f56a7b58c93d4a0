//! `gavel-load`: an open-loop load generator for Gavel's ping-post API.
//!
//! Requests follow a fixed or Poisson arrival schedule ([`schedule`]) whatever the server does, and
//! each latency counts from the request's scheduled send time (or its actual send, when the 1 ms
//! timer fired it a moment early; [`run`]), so queueing anywhere —
//! server, network, or the generator itself — shows up in the numbers instead of lowering the load.
//! [`run`] owns the thread-per-core generator, [`spawn`] the in-process buyers and server, [`cli`]
//! the flags, [`client`] the GET helpers, [`server_view`] Gavel's own histograms
//! of the measured window, [`cpu`] the CPU per auction, [`webhook_sink`] the receiver of `--webhooks`,
//! [`tls`] what an https run trusts and the certificates of `--server-tls` / `--buyers-tls`.

pub mod app;
pub mod cli;
pub mod client;
pub mod cpu;
pub mod http1;
pub mod plot;
pub mod progress;
pub mod report;
pub mod run;
pub mod schedule;
pub mod server_view;
pub mod spawn;
pub mod tls;
pub mod webhook_sink;

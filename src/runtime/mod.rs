//! The thread-per-core runtime: one pinned OS thread per core, each with its own monoio event loop,
//! SO_REUSEPORT listener, auction shard and buyer connection pool; plus the inboxes that carry work
//! from one core to another.
//!
//! This module owns threads, sockets, drivers and shutdown. It does not know what a request means:
//! every accepted connection is served by the [`Service`] the server was started with (the HTTP
//! API, a layer above), called with static dispatch.
//!
//! This file holds what the pieces share: the [`App`] and [`Service`] traits, [`Shared`], [`Core`],
//! [`ServerHandle`] and the routing of a key to its core ([`owner_of`]). By concern: `start`
//! (starting, each core's main, shutdown's drain), `accept` (listeners, accept loops, serving a
//! connection), `fd` (the file-descriptor limit and the connection cap), `cores` (drivers, the
//! current core, core count and CPUs), [`handoff`] (inboxes) and [`admission`] (overload shedding).

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::config::{Config, Driver, ServerConfig};
use crate::http::shutdown::Shutdown;
use crate::store::{Checkpointer, CommitCounters, CoreLog, ExpiryHandle, Store, StoreOptions};
use crate::types::clock::Clock;

mod accept;
pub mod admission;
mod cores;
mod fd;
pub mod handoff;
mod start;

pub use accept::*;
pub use cores::*;
pub use fd::*;
pub use start::*;

use handoff::Inbox;

/// Depth of each core's hand-off inbox; a full inbox answers 503 rather than queueing without bound.
pub const INBOX_CAPACITY: usize = 16 * 1024;
/// Largest request head (request line + headers) accepted, in bytes.
pub const MAX_HEADER_BYTES: usize = 16 * 1024;

/// What the cores run: the state every core shares, the state each core owns, and the threads
/// started beside the cores. The layer above (the exchange) implements it; the runtime holds the
/// state without knowing what it is, and hands it out by `Deref` ([`Shared`] to
/// [`App::Global`], [`Core`] to [`App::Local`]).
pub trait App: Sized + 'static {
    /// Immutable after start and shared by every core.
    type Global: Send + Sync + 'static;
    /// One core's own state, used only on its thread.
    type Local: 'static;
    /// What the app started beside the cores (threads), stopped when the server is joined.
    type Handles: Stop + Send + 'static;

    /// Builds the shared state once the store is open.
    fn global(
        config: &Config,
        store: &Arc<Store>,
        clock: &Clock,
    ) -> Result<(Self::Global, Self::Handles), String>;

    /// The buyers (tenant and id) a core's metrics keep series for from the start (zeros until
    /// recorded); buyers added later get theirs when first recorded.
    fn metric_buyers(global: &Self::Global) -> Vec<crate::metrics::BuyerKey>;

    /// Builds core `id`'s own state, on that core's thread.
    fn local(id: usize, shared: &Shared<Self>) -> Self::Local;

    /// Work each core runs beside its connections until it stops (timers, eviction).
    fn background(core: Rc<Core<Self>>) -> impl Future<Output = ()> + 'static;
}

/// Something started with the server that must be stopped with it.
pub trait Stop {
    /// Stops it and waits for it to finish.
    fn stop(&mut self);
}

/// What a core serves on the connections it accepts. The layer above the runtime (the HTTP API)
/// implements it, so the runtime calls into it without naming it; the calls are monomorphized, with
/// no boxed future per request.
pub trait Service<A: App>: 'static {
    /// Answers one request on the API listener.
    fn handle(
        core: Rc<Core<A>>,
        req: http::Request<hyper::body::Incoming>,
    ) -> impl Future<Output = Result<http::Response<ResponseBody>, std::convert::Infallible>> + 'static;

    /// Answers one request on the operations listener (`/metrics`, `/healthz`, `/readyz`).
    fn handle_ops(
        core: Rc<Core<A>>,
        req: http::Request<hyper::body::Incoming>,
    ) -> impl Future<Output = Result<http::Response<ResponseBody>, std::convert::Infallible>> + 'static;
}

/// The body type of every response a core writes.
pub type ResponseBody = http_body_util::Full<bytes::Bytes>;

/// Counters one core writes and anyone may read. Each field has exactly one writer (its core), so
/// Relaxed atomics suffice and no cache line is written by two threads.
#[derive(Default, Debug)]
#[repr(align(128))]
pub struct CoreStats {
    /// Requests this core received that another core owned, and handed over.
    pub handoffs_out: AtomicU64,
    /// Requests other cores handed to this one.
    pub handoffs_in: AtomicU64,
    pub connections_open: AtomicU64,
    pub connections_total: AtomicU64,
    pub auctions_in_memory: AtomicU64,
    pub requests_total: AtomicU64,
    /// Requests this core works on now ([`admission::admit`]).
    pub in_flight_requests: AtomicU64,
    /// Worst loop lag of the last second or two, in µs ([`admission::tick`]).
    pub loop_lag_us: AtomicU64,
    /// Requests this core shed, indexed by [`admission::Shed`].
    pub shed: [AtomicU64; admission::Shed::COUNT],
}

/// Everything all cores share, immutable after start (apart from per-core atomics); the app's
/// part is reached through `Deref`.
pub struct Shared<A: App> {
    pub config: Config,
    /// The address the API listeners are bound to (the real port when the config asked for 0).
    pub addr: SocketAddr,
    /// The address the operations listener is bound to, if it is on.
    pub metrics_addr: Option<SocketAddr>,
    pub cores: usize,
    pub driver: Driver,
    pub inboxes: Vec<Inbox<A>>,
    pub store: Arc<Store>,
    /// Each core's write-ahead log statistics, indexed by core id (written by that core only).
    pub commit_counters: Vec<Arc<CommitCounters>>,
    /// Flushes sled and deletes the log segments the cores sealed.
    pub checkpointer: Checkpointer,
    pub stats: Vec<CoreStats>,
    /// Open client connections across all cores; shutdown waits for it to reach zero.
    pub live_connections: AtomicUsize,
    /// Detached request work (see [`handoff`]) still running on any core; shutdown waits for it
    /// too, since a client that hung up no longer holds a connection open for it.
    pub live_jobs: AtomicUsize,
    /// Open connections each core holds at most: `server.max_connections_per_core`, lowered at
    /// start to what the file-descriptor limit can hold ([`connection_cap`]).
    pub max_connections_per_core: usize,
    /// Process and thread-group CPU time, refreshed by the `gavel-cpu` sampler thread so that a
    /// scrape (served on a core) reads atomics instead of `/proc`.
    pub cpu: Arc<crate::metrics::cpu::CpuTotals>,
    /// Wall-clock time for everything that stamps or expires by it: records, tokens, the shard's
    /// eviction, webhook schedules, store retention. The system clock in production; a test may
    /// start the server on a manual one ([`start_with_clock`]) and advance it instead of sleeping.
    /// Timers that bound waiting stay on the monotonic clock.
    pub clock: Clock,
    /// The API listener's TLS configuration as loaded at start (`[server.tls]`); each core
    /// starts from it, and a reload replaces the cores' own copies ([`Core::tls`]), not this.
    pub tls_at_start: Option<Arc<rustls::ServerConfig>>,
    /// The app's shared state ([`App::Global`]).
    pub app: A::Global,
}

impl<A: App> std::ops::Deref for Shared<A> {
    type Target = A::Global;
    fn deref(&self) -> &A::Global {
        &self.app
    }
}

impl<A: App> Shared<A> {
    /// The core that owns an auction id. Stable for a given core count.
    pub fn owner_of(&self, auction_id: &str) -> usize {
        owner_of(auction_id, self.cores)
    }
}

/// The core that owns a key (an auction id, an idempotency key): FNV-1a over its bytes, reduced
/// to a core index. A fixed function (not `RandomState`) so every core agrees, and the auction
/// module can mint ids that land on their minting core (`auction::id`).
pub fn owner_of(key: &str, cores: usize) -> usize {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in key.as_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    (h % cores as u64) as usize
}

/// A core's own state. Lives in an `Rc` on its thread; nothing here is shared with other cores.
/// The app's part ([`App::Local`]) is reached through `Deref`.
pub struct Core<A: App> {
    pub id: usize,
    pub shared: Arc<Shared<A>>,
    pub shutdown: Shutdown,
    /// This core's latency histograms and counters; only this core writes them.
    pub metrics: crate::metrics::CoreMetrics,
    /// This core's write-ahead log: where its durable writes go.
    pub log: CoreLog,
    /// How far behind its schedule this core's event loop runs ([`admission`]).
    pub loop_clock: admission::LoopClock,
    /// This core's overload limits (`server.max_queue_delay_ms`, `max_in_flight_requests_per_core`).
    pub admission: admission::Limits,
    open_connections: Cell<usize>,
    /// The TLS configuration new API connections on this core are accepted with (`None`: plain
    /// HTTP). Replaced whole by [`ServerHandle::reload_tls`]; a connection keeps the one it was
    /// accepted with.
    pub tls: RefCell<Option<Arc<rustls::ServerConfig>>>,
    /// The app's state on this core ([`App::Local`]).
    pub local: A::Local,
}

impl<A: App> std::ops::Deref for Core<A> {
    type Target = A::Local;
    fn deref(&self) -> &A::Local {
        &self.local
    }
}

impl<A: App> Core<A> {
    pub fn stats(&self) -> &CoreStats {
        &self.shared.stats[self.id]
    }

    /// Makes `batch` durable through this core's write-ahead log, timing it for the metrics.
    pub async fn commit(&self, batch: crate::store::Batch) -> Result<(), crate::store::StoreError> {
        let started = std::time::Instant::now();
        let res = self.log.commit(batch).await;
        self.metrics
            .record_store_commit(started.elapsed().as_micros() as u64);
        res
    }
}

/// A running server: its addresses and the means to stop it.
pub struct ServerHandle<A: App> {
    pub addr: SocketAddr,
    /// Where the operations listener (`[metrics] listen`) is bound; `None` when it is off.
    pub metrics_addr: Option<SocketAddr>,
    pub shared: Arc<Shared<A>>,
    threads: Vec<std::thread::JoinHandle<()>>,
    _expiry: ExpiryHandle,
    handles: A::Handles,
    cpu_sampler: crate::metrics::cpu::Sampler,
}

impl<A: App> ServerHandle<A> {
    /// Asks every core to stop accepting and finish in-flight work. Returns at once.
    pub fn shutdown(&self) {
        for inbox in &self.shared.inboxes {
            inbox.request_stop();
        }
    }

    /// Waits for every core thread to exit. When it returns, the store is closed (its lock
    /// released) unless another holder of [`ServerHandle::shared`] still exists.
    pub fn join(mut self) {
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
        self.handles.stop();
        self.cpu_sampler.stop();
        if Arc::strong_count(&self.shared) > 1 {
            tracing::warn!("shared state outlives the server; the store stays open");
        }
    }

    /// Shutdown and join.
    pub fn stop(self) {
        self.shutdown();
        self.join();
    }

    /// Runs `work` as a task on core `core` and waits for its result: how tests and tools drive
    /// the exchange on a running server without going through HTTP. The calling thread blocks, so
    /// call it from a test or tool thread, never from a core. `None` when the core's inbox is full
    /// or the core stopped before answering.
    pub fn on_core<T, F, Fut>(&self, core: usize, work: F) -> Option<T>
    where
        T: Send + 'static,
        F: FnOnce(Rc<Core<A>>) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = T> + 'static,
    {
        let (tx, rx) = crossbeam_channel::bounded(1);
        let job: handoff::Job<A> = Box::new(move |c| {
            monoio::spawn(async move {
                let _ = tx.send(work(c).await);
            });
        });
        self.shared.inboxes[core].send(job).ok()?;
        rx.recv().ok()
    }

    /// Reads `[server.tls]` of `config` again and gives every core the new certificate and key:
    /// connections accepted from then on handshake with them, connections already open keep
    /// theirs. Turning TLS on or off needs a restart (the listener's scheme is what clients were
    /// told). Blocks the calling thread (file reads, then each core in turn): call it from the
    /// main thread or a test, never from a core.
    pub fn reload_tls(&self, config: &Config) -> Result<(), String> {
        let next = match (&config.server.tls, &self.shared.tls_at_start) {
            (None, None) => return Ok(()),
            (Some(tls), Some(_)) => {
                crate::http::tls::server_config(tls).map_err(|e| format!("server.{e}"))?
            }
            _ => {
                return Err(
                    "server.tls: turning TLS on or off takes a restart; the certificate and \
                     key are reloaded, the scheme is not"
                        .into(),
                )
            }
        };
        let missed: Vec<usize> = (0..self.shared.cores)
            .filter(|&core| {
                let next = next.clone();
                self.on_core(core, move |c| async move {
                    *c.tls.borrow_mut() = Some(next);
                })
                .is_none()
            })
            .collect();
        if missed.is_empty() {
            Ok(())
        } else {
            Err(format!(
                "the new certificate is not installed on core(s) {missed:?}; send SIGHUP again"
            ))
        }
    }
}

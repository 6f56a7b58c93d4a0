//! The thread-per-core runtime: one pinned OS thread per core, each with its own monoio event loop,
//! SO_REUSEPORT listener, auction shard and buyer connection pool; plus the inboxes that carry work
//! from one core to another.
//!
//! This module owns threads, sockets, drivers and shutdown. It does not know what a request means:
//! every accepted connection is handed to [`crate::api::handle`].

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::auction::shard::Shard;
use crate::auction::token::BidKeys;
use crate::auth::oauth::{AccessKeys, ClientRecord, ClientTable};
use crate::auth::Auth;
use crate::buyers::pool::Pool;
use crate::buyers::Registry;
use crate::config::{Config, Driver};
use crate::http::shutdown::Shutdown;
use crate::limits::ClientLimits;
use crate::store::{Committer, ExpiryHandle, Store, StoreOptions};

pub mod handoff;

use handoff::Inbox;

/// Depth of each core's hand-off inbox; a full inbox answers 503 rather than queueing without bound.
pub const INBOX_CAPACITY: usize = 16 * 1024;
/// TCP listen backlog per core.
pub const LISTEN_BACKLOG: i32 = 4096;
/// Largest request head (request line + headers) accepted, in bytes.
pub const MAX_HEADER_BYTES: usize = 16 * 1024;

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
}

/// Everything all cores share, immutable after start (apart from per-core atomics).
pub struct Shared {
    pub config: Config,
    pub cores: usize,
    pub driver: Driver,
    pub inboxes: Vec<Inbox>,
    pub registry: Registry,
    pub keys: BidKeys,
    pub auth: Auth,
    /// Signs and verifies OAuth access tokens (key generated once, kept in the store).
    pub access_keys: AccessKeys,
    /// OAuth clients as stored at start; each core builds its own table from them, and later
    /// changes reach every core through its inbox.
    pub initial_clients: Vec<(ClientRecord, Arc<ClientLimits>)>,
    pub store: Arc<Store>,
    /// One group committer per core, indexed by core id.
    pub committers: Vec<Committer>,
    pub stats: Vec<CoreStats>,
    /// Sellers' webhook endpoints: cores queue events for them, the worker delivers.
    pub webhooks: Arc<crate::webhooks::Webhooks>,
    /// Open client connections across all cores; shutdown waits for it to reach zero.
    pub live_connections: AtomicUsize,
    /// Detached request work (see [`handoff`]) still running on any core; shutdown waits for it
    /// too, since a client that hung up no longer holds a connection open for it.
    pub live_jobs: AtomicUsize,
}

impl Shared {
    /// The core that owns an auction id. Stable for a given core count.
    pub fn owner_of(&self, auction_id: &str) -> usize {
        owner_of(auction_id, self.cores)
    }
}

/// FNV-1a over the id, reduced to a core index. A fixed function (not `RandomState`) so every core
/// agrees and ids can be minted to land on their minting core.
pub fn owner_of(auction_id: &str, cores: usize) -> usize {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in auction_id.as_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    (h % cores as u64) as usize
}

/// A core's own state. Lives in an `Rc` on its thread; nothing here is shared with other cores.
pub struct Core {
    pub id: usize,
    pub shared: Arc<Shared>,
    pub shard: RefCell<Shard>,
    pub pool: Pool,
    pub shutdown: Shutdown,
    /// This core's latency histograms and counters; only this core writes them.
    pub metrics: crate::metrics::CoreMetrics,
    /// Encoded idempotency scopes of keyed requests running on this core.
    pub in_flight: RefCell<std::collections::HashSet<Vec<u8>>>,
    /// This core's copy of the active OAuth clients.
    pub clients: RefCell<ClientTable>,
    open_connections: Cell<usize>,
}

impl Core {
    pub fn stats(&self) -> &CoreStats {
        &self.shared.stats[self.id]
    }

    /// Authenticates a request (static token or OAuth access token), checks its scope, and counts
    /// it against the client's request rate (429 past it).
    pub fn authenticate(
        &self,
        headers: &http::HeaderMap,
        scope: crate::config::Scope,
    ) -> Result<crate::auth::Client, crate::error::ApiError> {
        let client = {
            let clients = self.clients.borrow();
            self.shared.auth.check_with(
                headers,
                scope,
                Some((&clients, &self.shared.access_keys)),
                crate::auction::now_ms(),
            )?
        };
        if let Err(e) = crate::limits::check_requests(&client.limits) {
            self.metrics.record_rate_limited("client_requests");
            return Err(e);
        }
        Ok(client)
    }

    /// This core's group committer.
    pub fn committer(&self) -> &Committer {
        &self.shared.committers[self.id]
    }

    /// Makes `batch` durable through this core's group committer, timing it for the metrics.
    pub async fn commit(&self, batch: crate::store::Batch) -> Result<(), crate::store::StoreError> {
        let started = std::time::Instant::now();
        let res = self.committer().commit(batch).await;
        self.metrics
            .record_store_commit(started.elapsed().as_micros() as u64);
        res
    }

    /// Mints an auction id (`auc_` + ULID) that this core owns, so a ping never hops.
    pub fn mint_auction_id(&self) -> String {
        loop {
            let id = format!("auc_{}", ulid::Ulid::new());
            if self.shared.owner_of(&id) == self.id {
                return id;
            }
        }
    }
}

/// A running server: its address and the means to stop it.
pub struct ServerHandle {
    pub addr: SocketAddr,
    pub shared: Arc<Shared>,
    threads: Vec<std::thread::JoinHandle<()>>,
    _expiry: ExpiryHandle,
    webhook_worker: crate::webhooks::worker::WorkerHandle,
}

impl ServerHandle {
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
        self.webhook_worker.stop();
        if Arc::strong_count(&self.shared) > 1 {
            tracing::warn!("shared state outlives the server; the store stays open");
        }
    }

    /// Shutdown and join.
    pub fn stop(self) {
        self.shutdown();
        self.join();
    }
}

/// Resolves `auto` to the driver this kernel supports; `uring` fails when it is unavailable.
pub fn resolve_driver(d: Driver) -> std::io::Result<Driver> {
    let uring = monoio::utils::detect_uring();
    match d {
        Driver::Auto => Ok(if uring { Driver::Uring } else { Driver::Legacy }),
        Driver::Uring if !uring => Err(std::io::Error::new(
            std::io::ErrorKind::Unsupported,
            "driver = uring, but io_uring is not available on this kernel",
        )),
        d => Ok(d),
    }
}

fn bind_listener(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(LISTEN_BACKLOG)?;
    Ok(socket.into())
}

/// Runs `make()` on a fresh monoio runtime of the chosen driver until it completes.
pub fn block_on<F, Fut>(driver: Driver, entries: u32, make: F) -> std::io::Result<Fut::Output>
where
    F: FnOnce() -> Fut,
    Fut: Future,
{
    match driver {
        Driver::Uring => Ok(monoio::RuntimeBuilder::<monoio::IoUringDriver>::new()
            .with_entries(entries)
            .enable_timer()
            .build()?
            .block_on(make())),
        Driver::Legacy | Driver::Auto => Ok(monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
            .with_entries(entries)
            .enable_timer()
            .build()?
            .block_on(make())),
    }
}

/// Binds every core's listener, starts the core threads and returns once all of them are serving.
pub fn start(config: Config) -> Result<ServerHandle, String> {
    let cores = config.core_count();
    let driver = resolve_driver(config.server.driver).map_err(|e| e.to_string())?;
    let registry = Registry::from_config(&config.buyers, config.limits.buyer_pings_per_s)?;
    let auth = Auth::from_config(&config.tokens, &config.limits)?;
    let store = Arc::new(open_store(&config)?);
    let keys = BidKeys::from_config(
        &config.bid_token,
        &stored_secret(&store, "bid_token_secret", "bid-token key")?,
    )?;
    let access_keys = AccessKeys::new(&stored_secret(
        &store,
        "oauth_access_token_secret",
        "OAuth access-token key",
    )?);
    let initial_clients = load_clients(&store)?
        .into_iter()
        .map(|r| (r, Arc::new(crate::auth::client_limits(&config.limits))))
        .collect();
    let committers = (0..cores)
        .map(|id| Committer::start(store.clone(), id, config.store.group_commit_max_batch))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("cannot start the store committers: {e}"))?;
    let expiry = store
        .spawn_expiry()
        .map_err(|e| format!("cannot start store expiry: {e}"))?;
    let webhooks = Arc::new(crate::webhooks::Webhooks::from_config(&config)?);
    webhooks
        .load_state(&store)
        .map_err(|e| format!("cannot read the webhook outbox: {e}"))?;
    let webhook_worker = crate::webhooks::worker::start(store.clone(), webhooks.clone())?;

    // Core 0 binds the configured address (port 0 picks one); the others bind the port it got, so
    // the kernel spreads connections over all listeners of the group.
    let first = bind_listener(config.server.listen)
        .map_err(|e| format!("cannot listen on {}: {e}", config.server.listen))?;
    let addr = first.local_addr().map_err(|e| e.to_string())?;
    let mut listeners = vec![first];
    for _ in 1..cores {
        listeners.push(bind_listener(addr).map_err(|e| format!("cannot listen on {addr}: {e}"))?);
    }

    let shared = Arc::new(Shared {
        cores,
        driver,
        inboxes: (0..cores).map(|_| Inbox::new(INBOX_CAPACITY)).collect(),
        registry,
        keys,
        auth,
        access_keys,
        initial_clients,
        store,
        committers,
        stats: (0..cores).map(|_| CoreStats::default()).collect(),
        webhooks,
        live_connections: AtomicUsize::new(0),
        live_jobs: AtomicUsize::new(0),
        config,
    });

    let cpus = monoio_cpus();
    let (ready_tx, ready_rx) = crossbeam_channel::bounded::<Result<(), String>>(cores);
    let mut threads = Vec::with_capacity(cores);
    for (id, listener) in listeners.into_iter().enumerate() {
        let shared = shared.clone();
        let ready = ready_tx.clone();
        let cpu = cpus.get(id % cpus.len().max(1)).copied();
        let t = std::thread::Builder::new()
            .name(format!("gavel-core-{id}"))
            .spawn(move || {
                if shared.config.server.pin_threads {
                    if let Some(cpu) = cpu {
                        if let Err(e) = monoio::utils::bind_to_cpu_set(Some(cpu)) {
                            tracing::warn!(core = id, cpu, error = ?e, "cannot pin core thread");
                        }
                    }
                }
                let res = block_on(shared.driver, 4096, || {
                    core_main(id, shared.clone(), listener, ready.clone())
                });
                if let Err(e) = res {
                    let _ = ready.send(Err(format!("core {id}: cannot start runtime: {e}")));
                }
            })
            .map_err(|e| format!("cannot spawn core thread: {e}"))?;
        threads.push(t);
    }
    drop(ready_tx);
    for _ in 0..cores {
        match ready_rx.recv() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                let handle = ServerHandle {
                    addr,
                    shared,
                    threads,
                    _expiry: expiry,
                    webhook_worker,
                };
                handle.stop();
                return Err(e);
            }
            Err(_) => return Err("a core thread exited during start".into()),
        }
    }
    tracing::info!(%addr, cores, driver = ?driver, "gavel serving");
    Ok(ServerHandle {
        addr,
        shared,
        threads,
        _expiry: expiry,
        webhook_worker,
    })
}

/// Opens (or creates) the store named by `[store]`.
pub fn open_store(config: &Config) -> Result<Store, String> {
    const DAY_MS: u64 = 24 * 60 * 60 * 1000;
    let st = &config.store;
    let opts = StoreOptions {
        path: st.path.clone(),
        cache_capacity_bytes: st.cache_capacity_bytes,
        idempotency_retention_ms: st.idempotency_retention_days * DAY_MS,
        record_retention_ms: st.record_retention_days * DAY_MS,
        expiry_interval_ms: st.expiry_interval_ms,
        group_commit_max_batch: st.group_commit_max_batch,
        durable: st.durable,
    };
    if !st.durable {
        tracing::warn!(
            "store.durable = false: answers leave before records reach the disk (benchmarks only)"
        );
    }
    Store::open(&opts).map_err(|e| format!("cannot open the store at {}: {e}", st.path.display()))
}

/// A signing key Gavel generated for itself (`what`, for errors), created and made durable under
/// `key` in the store's meta tree on first start, so what it signed survives restarts.
fn stored_secret(store: &Store, key: &str, what: &str) -> Result<Vec<u8>, String> {
    match store.get_meta(key) {
        Ok(Some(secret)) if secret.len() >= crate::auction::token::MIN_SECRET_BYTES => Ok(secret),
        Ok(_) => {
            let secret = BidKeys::generate_secret();
            let mut batch = crate::store::Batch::new();
            batch.put_meta(key, secret.clone());
            store
                .write_durable(&batch)
                .map_err(|e| format!("cannot store the {what}: {e}"))?;
            Ok(secret)
        }
        Err(e) => Err(format!("cannot read the {what}: {e}")),
    }
}

/// Every OAuth client record in the store (revoked ones included; the tables skip them).
pub fn load_clients(store: &Store) -> Result<Vec<ClientRecord>, String> {
    let rows = store
        .meta_with_prefix(crate::auth::oauth::META_PREFIX)
        .map_err(|e| format!("cannot read the OAuth clients: {e}"))?;
    rows.into_iter()
        .map(|(k, v)| {
            serde_json::from_slice(&v)
                .map_err(|e| format!("OAuth client record {k} is damaged: {e}"))
        })
        .collect()
}

/// CPUs this process may run on, in order.
fn monoio_cpus() -> Vec<usize> {
    let n = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    (0..n).collect()
}

async fn core_main(
    id: usize,
    shared: Arc<Shared>,
    listener: std::net::TcpListener,
    ready: crossbeam_channel::Sender<Result<(), String>>,
) {
    let listener = match monoio::net::TcpListener::from_std(listener) {
        Ok(l) => l,
        Err(e) => {
            let _ = ready.send(Err(format!("core {id}: listener: {e}")));
            return;
        }
    };
    let config = &shared.config;
    let core = Rc::new(Core {
        id,
        shard: RefCell::new(Shard::new(config.auction.max_auctions_per_core)),
        pool: Pool::new(),
        shutdown: Shutdown::new(),
        metrics: crate::metrics::CoreMetrics::new(
            &shared
                .registry
                .buyers
                .iter()
                .map(|b| b.id.clone())
                .collect::<Vec<_>>(),
        ),
        in_flight: RefCell::new(std::collections::HashSet::new()),
        clients: RefCell::new(ClientTable::new(shared.initial_clients.iter().cloned())),
        open_connections: Cell::new(0),
        shared: shared.clone(),
    });
    core.metrics.set_enabled(shared.config.metrics.record);
    // The inbox task ends when `stopped` fires, so nothing keeps this core's state (and through
    // it the shared state and the store) alive once the core has finished.
    let stopped = Shutdown::new();
    let drain = monoio::spawn({
        let core = core.clone();
        let stop = stopped.wait();
        async move {
            futures::future::select(std::pin::pin!(handoff::drain(core)), stop).await;
        }
    });
    let _ = ready.send(Ok(()));
    drop(ready);

    let limits = crate::http::ConnLimits {
        header_read_timeout: Duration::from_millis(config.server.header_read_timeout_ms),
        max_headers_bytes: MAX_HEADER_BYTES,
    };
    let max_conns = config.server.max_connections_per_core;
    loop {
        let accept = listener.accept();
        let stop = core.shutdown.wait();
        let (stream, _peer) = match futures::future::select(std::pin::pin!(accept), stop).await {
            futures::future::Either::Right(_) => break,
            futures::future::Either::Left((Ok(s), _)) => s,
            futures::future::Either::Left((Err(e), _)) => {
                tracing::warn!(core = id, error = %e, "accept failed");
                monoio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        if core.open_connections.get() >= max_conns {
            // Over the per-core connection limit: closing at once is kinder than a stalled accept.
            drop(stream);
            continue;
        }
        core.open_connections.set(core.open_connections.get() + 1);
        shared.live_connections.fetch_add(1, Ordering::Relaxed);
        let stats = core.stats();
        stats.connections_open.fetch_add(1, Ordering::Relaxed);
        stats.connections_total.fetch_add(1, Ordering::Relaxed);
        let c = core.clone();
        monoio::spawn(async move {
            let svc_core = c.clone();
            crate::http::serve_connection(stream, limits, c.shutdown.clone(), move |req| {
                crate::api::handle(svc_core.clone(), req)
            })
            .await;
            c.open_connections.set(c.open_connections.get() - 1);
            c.stats().connections_open.fetch_sub(1, Ordering::Relaxed);
            c.shared.live_connections.fetch_sub(1, Ordering::Relaxed);
        });
    }
    drop(listener);
    // Stay alive until every core's connections are done, so hand-offs to this core keep working
    // while other cores drain; give up after the grace period.
    let grace = Duration::from_millis(config.server.shutdown_grace_ms);
    let started = std::time::Instant::now();
    while (shared.live_connections.load(Ordering::Relaxed) > 0
        || shared.live_jobs.load(Ordering::Relaxed) > 0)
        && started.elapsed() < grace
    {
        monoio::time::sleep(Duration::from_millis(10)).await;
    }
    stopped.fire();
    drain.await;
    tracing::debug!(core = id, "core stopped");
}

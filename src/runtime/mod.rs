//! The thread-per-core runtime: one pinned OS thread per core, each with its own monoio event loop,
//! SO_REUSEPORT listener, auction shard and buyer connection pool; plus the inboxes that carry work
//! from one core to another.
//!
//! This module owns threads, sockets, drivers and shutdown. It does not know what a request means:
//! every accepted connection is served by the [`Service`] the server was started with (the HTTP
//! API, a layer above), called with static dispatch.

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

pub mod admission;
pub mod handoff;

use handoff::Inbox;

/// Depth of each core's hand-off inbox; a full inbox answers 503 rather than queueing without bound.
pub const INBOX_CAPACITY: usize = 16 * 1024;
/// TCP listen backlog per core.
pub const LISTEN_BACKLOG: i32 = 4096;
/// Largest request head (request line + headers) accepted, in bytes.
pub const MAX_HEADER_BYTES: usize = 16 * 1024;
/// File descriptors kept back from client connections for the rest of the process: stdio and
/// logging, the store's files, the webhook senders' sockets, the operations listener.
pub const FD_RESERVE_BASE: u64 = 128;
/// File descriptors kept back per core: its listener, its io_uring or epoll instance, wake-ups.
pub const FD_RESERVE_PER_CORE: u64 = 16;
/// File descriptors kept back per core and configured buyer: its outbound connections to that
/// buyer, in flight and pooled.
pub const FD_RESERVE_PER_BUYER_PER_CORE: u64 = 8;
/// Fewest client connections per core Gavel starts with: under a file-descriptor limit that
/// leaves fewer, two keep-alive clients could lock everyone else out, so it refuses to start and
/// says which limit would do.
pub const MIN_CONNECTIONS_PER_CORE: u64 = 16;
/// First pause after a failed accept; it doubles on every further failure.
pub const ACCEPT_BACKOFF_MIN: Duration = Duration::from_millis(10);
/// Longest pause between accepts while they keep failing.
pub const ACCEPT_BACKOFF_MAX: Duration = Duration::from_secs(1);
/// At most one warning per this interval per core for failed accepts, and one for connections
/// closed over the cap; the lines count what they stood for.
pub const ACCEPT_LOG_INTERVAL: Duration = Duration::from_secs(10);

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
    run_runtime(driver, entries, None, make)
}

/// Builds the runtime for `driver` (a legacy one with `pool` attached, when given) and runs
/// `make()` on it until it completes.
fn run_runtime<F, Fut>(
    driver: Driver,
    entries: u32,
    pool: Option<crate::store::wal::BlockingThread>,
    make: F,
) -> std::io::Result<Fut::Output>
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
        Driver::Legacy | Driver::Auto => {
            let mut builder = monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
                .with_entries(entries)
                .enable_timer();
            if let Some(pool) = pool {
                builder = builder.attach_thread_pool(Box::new(pool));
            }
            Ok(builder.build()?.block_on(make()))
        }
    }
}

/// Commits one core's log lets wait for the disk, in units of `store.group_commit_max_batch`:
/// past `LOG_QUEUE_GROUPS * group_commit_max_batch` waiting commits the disk is not keeping up and
/// a commit fails fast with `Overloaded` (503) instead of queueing without bound.
pub const LOG_QUEUE_GROUPS: usize = 8;

thread_local! {
    /// The core whose event loop runs on this thread, while [`block_on_core`] runs it.
    static CURRENT_CORE: Cell<Option<usize>> = const { Cell::new(None) };
}

/// The core whose event loop runs on this thread; `None` off the cores (the store's threads, the
/// webhook worker, tests). Per-core state (an auction shard) checks it in debug builds, so state
/// reached from the wrong core fails loudly instead of racing in silence.
pub fn current_core() -> Option<usize> {
    CURRENT_CORE.with(Cell::get)
}

/// Marks this thread as running core `id` until the guard drops, which restores what was there
/// before. [`block_on_core`] enters its core; a test that drives per-core state by hand may too.
pub fn enter_core(id: usize) -> CoreGuard {
    CoreGuard {
        previous: CURRENT_CORE.with(|c| c.replace(Some(id))),
    }
}

/// Keeps [`current_core`] set; see [`enter_core`].
pub struct CoreGuard {
    previous: Option<usize>,
}

impl Drop for CoreGuard {
    fn drop(&mut self) {
        CURRENT_CORE.with(|c| c.set(self.previous));
    }
}

/// [`block_on`] for a core thread: on the legacy driver the runtime gets one blocking thread,
/// `gavel-log-{id}`, where the core's write-ahead log writes and syncs (io_uring needs none).
/// While it runs, [`current_core`] is `id` on this thread.
pub fn block_on_core<F, Fut>(
    driver: Driver,
    id: usize,
    entries: u32,
    make: F,
) -> std::io::Result<Fut::Output>
where
    F: FnOnce() -> Fut,
    Fut: Future,
{
    let pool = match driver {
        Driver::Uring => None,
        Driver::Legacy | Driver::Auto => Some(crate::store::wal::BlockingThread::start(format!(
            "gavel-log-{id}"
        ))?),
    };
    let _core = enter_core(id);
    run_runtime(driver, entries, pool, make)
}

/// Binds every core's listener, starts the core threads and returns once all of them are serving.
pub fn start<A: App, S: Service<A>>(config: Config) -> Result<ServerHandle<A>, String> {
    start_with_clock::<A, S>(config, Clock::system())
}

/// [`start`] with wall-clock time read from `clock`. Production runs on [`Clock::system`]; tests
/// hand in [`Clock::manual`] and advance it to expire records, tokens and retries without
/// sleeping.
pub fn start_with_clock<A: App, S: Service<A>>(
    config: Config,
    clock: Clock,
) -> Result<ServerHandle<A>, String> {
    let cores = core_count(&config.server);
    // Before anything opens a file: a limit too low to serve is refused with its numbers.
    let cap = connection_cap_for(&config, cores)?;
    let driver = resolve_driver(config.server.driver).map_err(|e| e.to_string())?;
    let store = Arc::new(open_store(&config)?);
    let checkpointer = Checkpointer::start(store.clone())
        .map_err(|e| format!("cannot start the log checkpoint thread: {e}"))?;
    let expiry = store
        .spawn_expiry(clock.clone())
        .map_err(|e| format!("cannot start store expiry: {e}"))?;
    let (app, handles) = A::global(&config, &store, &clock)?;
    let cpu = Arc::new(crate::metrics::cpu::CpuTotals::default());
    let cpu_sampler = crate::metrics::cpu::Sampler::start(cpu.clone())?;

    let (listeners, addr, mut ops_listener, metrics_addr) = bind_listeners(&config, cores)?;

    // Read before the cores start (blocking file reads belong here); checked at load already.
    let tls_at_start = config
        .server
        .tls
        .as_ref()
        .map(crate::http::tls::server_config)
        .transpose()
        .map_err(|e| format!("server.{e}"))?;
    let shared = Arc::new(Shared::<A> {
        addr,
        metrics_addr,
        cores,
        driver,
        inboxes: (0..cores).map(|_| Inbox::new(INBOX_CAPACITY)).collect(),
        store,
        commit_counters: (0..cores)
            .map(|_| Arc::new(CommitCounters::new()))
            .collect(),
        checkpointer,
        stats: (0..cores).map(|_| CoreStats::default()).collect(),
        live_connections: AtomicUsize::new(0),
        live_jobs: AtomicUsize::new(0),
        max_connections_per_core: cap,
        cpu,
        clock,
        tls_at_start,
        config,
        app,
    });

    let cpus = allowed_cpus();
    let (ready_tx, ready_rx) = crossbeam_channel::bounded::<Result<(), String>>(cores);
    let mut threads = Vec::with_capacity(cores);
    for (id, listener) in listeners.into_iter().enumerate() {
        let shared = shared.clone();
        let ready = ready_tx.clone();
        let cpu = cpus.get(id % cpus.len().max(1)).copied();
        let ops = if id == 0 { ops_listener.take() } else { None };
        // Architecture Invariant [no-blocking]: nothing on this thread's event loop blocks: no
        // std::fs, sleeps, blocking locks, sled flushes or name resolution (clippy.toml bans them).
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
                let res = block_on_core(shared.driver, id, 4096, || {
                    core_main::<A, S>(id, shared.clone(), listener, ops, ready.clone())
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
                    metrics_addr,
                    shared,
                    threads,
                    _expiry: expiry,
                    handles,
                    cpu_sampler,
                };
                handle.stop();
                return Err(e);
            }
            Err(_) => return Err("a core thread exited during start".into()),
        }
    }
    tracing::info!(%addr, cores, driver = ?driver, "gavel serving");
    if let Some(m) = metrics_addr {
        tracing::info!(addr = %m, "operations listener serving /metrics, /healthz and /readyz");
    }
    Ok(ServerHandle {
        addr,
        metrics_addr,
        shared,
        threads,
        _expiry: expiry,
        handles,
        cpu_sampler,
    })
}

/// The API listeners, one per core, and the operations listener (with the addresses they got).
type Listeners = (
    Vec<std::net::TcpListener>,
    SocketAddr,
    Option<std::net::TcpListener>,
    Option<SocketAddr>,
);

/// Binds one API listener per core and, when `[metrics] listen` is set, the operations listener.
fn bind_listeners(config: &Config, cores: usize) -> Result<Listeners, String> {
    // Core 0 binds the configured address (port 0 picks one); the others bind the port it got, so
    // the kernel spreads connections over all listeners of the group.
    let first = bind_listener(config.server.listen)
        .map_err(|e| format!("cannot listen on {}: {e}", config.server.listen))?;
    let addr = first.local_addr().map_err(|e| e.to_string())?;
    let mut listeners = vec![first];
    for _ in 1..cores {
        listeners.push(bind_listener(addr).map_err(|e| format!("cannot listen on {addr}: {e}"))?);
    }
    // The operations listener is one plain socket served by core 0.
    let ops_listener = match config.metrics.listen {
        Some(at) => {
            #[allow(
                clippy::disallowed_methods,
                reason = "a SocketAddr from the config, bound before the cores start"
            )]
            let l = std::net::TcpListener::bind(at)
                .and_then(|l| l.set_nonblocking(true).map(|()| l))
                .map_err(|e| format!("cannot listen on {at} (metrics.listen): {e}"))?;
            Some(l)
        }
        None => None,
    };
    let metrics_addr = match &ops_listener {
        Some(l) => Some(l.local_addr().map_err(|e| e.to_string())?),
        None => None,
    };
    Ok((listeners, addr, ops_listener, metrics_addr))
}

/// Raises the file-descriptor limit and returns the connections each core may hold under it
/// ([`connection_cap`]), logging how the cap was decided. Refuses (with the numbers and the
/// limit that would do) when the limit leaves fewer than [`MIN_CONNECTIONS_PER_CORE`] per core
/// where the config asks for more.
fn connection_cap_for(config: &Config, cores: usize) -> Result<usize, String> {
    let fd_limit = raise_fd_limit();
    let buyers = config.buyers.len();
    let configured = config.server.max_connections_per_core;
    let cap = connection_cap(configured, fd_limit, cores, buyers);
    if let Some(limit) = fd_limit {
        let useful = configured.min(MIN_CONNECTIONS_PER_CORE as usize);
        if cap < useful {
            return Err(format!(
                "the file-descriptor limit {limit} leaves {cap} client connection(s) per core \
                 ({cores} cores, {buyers} buyers, {} kept for the process); at least \
                 {MIN_CONNECTIONS_PER_CORE} are needed: raise it to {} or more (ulimit -n, \
                 systemd LimitNOFILE)",
                fd_reserve(cores, buyers, fd_limit),
                fd_limit_needed(cores, buyers)
            ));
        }
    }
    match fd_limit {
        Some(limit) if cap < configured => tracing::info!(
            max_connections_per_core = cap,
            configured,
            fd_limit = limit,
            fd_reserve = fd_reserve(cores, buyers, fd_limit),
            cores,
            "connection cap lowered to fit the file-descriptor limit: (fd_limit - fd_reserve) / cores"
        ),
        Some(limit) => tracing::info!(
            max_connections_per_core = cap,
            fd_limit = limit,
            fd_reserve = fd_reserve(cores, buyers, fd_limit),
            cores,
            "connection cap as configured; the file-descriptor limit holds it"
        ),
        None => tracing::info!(
            max_connections_per_core = cap,
            "connection cap as configured; the file-descriptor limit is unknown or unlimited"
        ),
    }
    if cap < 64 {
        tracing::warn!(
            max_connections_per_core = cap,
            fd_limit_for_full_reserve = fd_limit_needed(cores, buyers),
            "few connections fit the file-descriptor limit; raise it (ulimit -n, LimitNOFILE)"
        );
    }
    Ok(cap)
}

/// Serves the operations listener on core 0 until shutdown: `/metrics`, `/healthz` and `/readyz`
/// without a token ([`Service::handle_ops`]). Its connections are not counted against the
/// client connection cap, so a health check and a scrape still get in when clients fill it.
async fn serve_ops<A: App, S: Service<A>>(
    core: Rc<Core<A>>,
    listener: monoio::net::TcpListener,
    limits: crate::http::ConnLimits,
) {
    let mut failures: u32 = 0;
    let mut failed_log = LogThrottle::new(ACCEPT_LOG_INTERVAL);
    loop {
        let accept = listener.accept();
        let stop = core.shutdown.wait();
        let stream = match futures::future::select(std::pin::pin!(accept), stop).await {
            futures::future::Either::Right(_) => break,
            futures::future::Either::Left((Ok((s, _)), _)) => {
                failures = 0;
                s
            }
            futures::future::Either::Left((Err(e), _)) => {
                failures = failures.saturating_add(1);
                let pause = accept_backoff(failures);
                if let Some(suppressed) = failed_log.note(std::time::Instant::now()) {
                    tracing::warn!(error = %e, suppressed, "operations listener: accept failed");
                }
                monoio::time::sleep(pause).await;
                continue;
            }
        };
        let c = core.clone();
        monoio::spawn(async move {
            let svc_core = c.clone();
            // The operations listener stays plain HTTP: loopback by default, scraped by Prometheus.
            crate::http::serve_connection(stream, None, limits, c.shutdown.clone(), move |req| {
                S::handle_ops(svc_core.clone(), req)
            })
            .await;
        });
    }
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

/// Number of cores a server with this `[server]` section runs: `server.cores`, or, when 0, one per
/// CPU the process may run on ([`allowed_cpus`]), fewer when a CPU quota allows less
/// (`available_parallelism` counts cgroup quotas).
pub fn core_count(server: &ServerConfig) -> usize {
    if server.cores > 0 {
        server.cores
    } else {
        let quota = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1);
        allowed_cpus().len().min(quota).max(1)
    }
}

/// CPUs this process may run on, in ascending order: its affinity mask (what `taskset`, a
/// cgroup cpuset or a container runtime allowed), which need not be CPUs 0..n−1. When the mask
/// cannot be read, CPUs 0..`available_parallelism`.
pub fn allowed_cpus() -> Vec<usize> {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: `cpu_set_t` is plain bits, so all-zero is a valid (empty) set; the kernel
        // writes at most `size_of::<cpu_set_t>()` bytes into it, and `CPU_ISSET` only reads it.
        let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
        let rc =
            unsafe { libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) };
        if rc == 0 {
            let cpus: Vec<usize> = (0..libc::CPU_SETSIZE as usize)
                .filter(|&cpu| unsafe { libc::CPU_ISSET(cpu, &set) })
                .collect();
            if !cpus.is_empty() {
                return cpus;
            }
        }
    }
    let n = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    (0..n).collect()
}

/// The process's open-file limit (`RLIMIT_NOFILE`), after raising the soft limit to the hard
/// one where it is lower (nothing is lost: the hard limit is what the operator allowed). `None`
/// when it cannot be read or is unlimited.
pub fn raise_fd_limit() -> Option<u64> {
    #[cfg(unix)]
    {
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit and setrlimit only read and write the struct passed to them.
        if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
            return None;
        }
        if lim.rlim_cur < lim.rlim_max && lim.rlim_max != libc::RLIM_INFINITY {
            let raised = libc::rlimit {
                rlim_cur: lim.rlim_max,
                rlim_max: lim.rlim_max,
            };
            if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
                lim = raised;
            }
        }
        if lim.rlim_cur == libc::RLIM_INFINITY {
            return None;
        }
        // `rlim_t` is `u64` on Linux but not on every Unix.
        #[allow(clippy::unnecessary_cast)]
        Some(lim.rlim_cur as u64)
    }
    #[cfg(not(unix))]
    None
}

/// File descriptors kept back from client connections for `cores` cores and `buyers` buyers
/// under `fd_limit`: the sum of the per-process, per-core and per-buyer reserves, but never more
/// than half the limit. The reserve is generous (8 pooled sockets per buyer and core); under a
/// low limit, client connections get the other half rather than nothing.
pub fn fd_reserve(cores: usize, buyers: usize, fd_limit: Option<u64>) -> u64 {
    let full = FD_RESERVE_BASE
        + cores as u64 * (FD_RESERVE_PER_CORE + buyers as u64 * FD_RESERVE_PER_BUYER_PER_CORE);
    fd_limit.map_or(full, |limit| full.min(limit / 2))
}

/// Connections one core may hold: `configured`, or fewer when `fd_limit` minus
/// [`fd_reserve`], shared by `cores`, cannot hold that many; never below 1.
pub fn connection_cap(
    configured: usize,
    fd_limit: Option<u64>,
    cores: usize,
    buyers: usize,
) -> usize {
    let Some(limit) = fd_limit else {
        return configured;
    };
    let per_core = limit.saturating_sub(fd_reserve(cores, buyers, fd_limit)) / cores.max(1) as u64;
    configured
        .min(usize::try_from(per_core).unwrap_or(usize::MAX))
        .max(1)
}

/// The file-descriptor limit that gives each of `cores` cores [`MIN_CONNECTIONS_PER_CORE`]
/// connections beside the full reserve: what to tell an operator whose limit is too low.
pub fn fd_limit_needed(cores: usize, buyers: usize) -> u64 {
    fd_reserve(cores, buyers, None) + cores as u64 * MIN_CONNECTIONS_PER_CORE
}

/// One log line per interval for an event that can repeat thousands of times a second.
#[derive(Debug)]
pub struct LogThrottle {
    interval: Duration,
    last: Option<std::time::Instant>,
    suppressed: u64,
}

impl LogThrottle {
    pub fn new(interval: Duration) -> Self {
        Self {
            interval,
            last: None,
            suppressed: 0,
        }
    }

    /// Notes one event at `now`; `Some(n)` when it should be logged, `n` being how many events
    /// since the last line were not.
    pub fn note(&mut self, now: std::time::Instant) -> Option<u64> {
        match self.last {
            Some(last) if now.saturating_duration_since(last) < self.interval => {
                self.suppressed += 1;
                None
            }
            _ => {
                self.last = Some(now);
                Some(std::mem::take(&mut self.suppressed))
            }
        }
    }
}

/// The pause before the next accept after `failures` failed ones in a row: 10 ms doubling up
/// to 1 s ([`ACCEPT_BACKOFF_MIN`], [`ACCEPT_BACKOFF_MAX`]).
pub fn accept_backoff(failures: u32) -> Duration {
    let doublings = failures.saturating_sub(1).min(16);
    ACCEPT_BACKOFF_MIN
        .saturating_mul(1 << doublings)
        .min(ACCEPT_BACKOFF_MAX)
}

async fn core_main<A: App, S: Service<A>>(
    id: usize,
    shared: Arc<Shared<A>>,
    listener: std::net::TcpListener,
    ops_listener: Option<std::net::TcpListener>,
    ready: crossbeam_channel::Sender<Result<(), String>>,
) {
    let (core, listener, ops_listener) =
        match build_core(id, shared.clone(), listener, ops_listener).await {
            Ok(built) => built,
            Err(e) => {
                let _ = ready.send(Err(format!("core {id}: {e}")));
                return;
            }
        };
    // The inbox task ends when `stopped` fires, so nothing keeps this core's state (and through
    // it the shared state and the store) alive once the core has finished.
    let stopped = Shutdown::new();
    let drain = spawn_until(&stopped, handoff::drain(core.clone()));
    // The app's own work beside the connections (for the exchange: evicting auctions on time).
    let background = spawn_until(&stopped, A::background(core.clone()));
    // The loop tick measures how late this core runs, the signal that sheds new work.
    let tick = spawn_until(&stopped, admission::tick(core.clone()));
    let _ = ready.send(Ok(()));
    drop(ready);

    let server = &shared.config.server;
    let limits = crate::http::ConnLimits {
        header_read_timeout: Duration::from_millis(server.header_read_timeout_ms),
        idle_timeout: Duration::from_millis(server.idle_timeout_ms),
        max_headers_bytes: MAX_HEADER_BYTES,
    };
    if let Some(ops) = ops_listener {
        monoio::spawn(serve_ops::<A, S>(core.clone(), ops, limits));
    }
    accept_until_shutdown::<A, S>(&core, listener, limits).await;
    finish(&core).await;
    stopped.fire();
    drain.await;
    background.await;
    tick.await;
    tracing::debug!(core = id, "core stopped");
}

/// Core `id`'s listeners on its event loop, its write-ahead log and its state.
async fn build_core<A: App>(
    id: usize,
    shared: Arc<Shared<A>>,
    listener: std::net::TcpListener,
    ops_listener: Option<std::net::TcpListener>,
) -> Result<
    (
        Rc<Core<A>>,
        monoio::net::TcpListener,
        Option<monoio::net::TcpListener>,
    ),
    String,
> {
    let listener =
        monoio::net::TcpListener::from_std(listener).map_err(|e| format!("listener: {e}"))?;
    let ops_listener = ops_listener
        .map(monoio::net::TcpListener::from_std)
        .transpose()
        .map_err(|e| format!("operations listener: {e}"))?;
    let config = &shared.config;
    let log = CoreLog::start(
        shared.store.clone(),
        id,
        shared.driver == Driver::Uring,
        config
            .store
            .group_commit_max_batch
            .saturating_mul(LOG_QUEUE_GROUPS),
        crate::store::wal::MAX_SEGMENT_BYTES,
        shared.commit_counters[id].clone(),
        Some(&shared.checkpointer),
    )
    .await
    .map_err(|e| format!("write-ahead log: {e}"))?;
    let core = Rc::new(Core {
        log,
        id,
        shutdown: Shutdown::new(),
        metrics: crate::metrics::CoreMetrics::new(&A::metric_buyers(&shared.app)),
        local: A::local(id, &shared),
        loop_clock: admission::LoopClock::new(std::time::Instant::now()),
        admission: admission::Limits::from_config(&config.server),
        open_connections: Cell::new(0),
        tls: RefCell::new(shared.tls_at_start.clone()),
        shared: shared.clone(),
    });
    core.metrics.set_enabled(config.metrics.record);
    Ok((core, listener, ops_listener))
}

/// Spawns `work` on this core until `stopped` fires.
fn spawn_until(
    stopped: &Shutdown,
    work: impl Future<Output = ()> + 'static,
) -> monoio::task::JoinHandle<()> {
    let stop = stopped.wait();
    monoio::spawn(async move {
        futures::future::select(std::pin::pin!(work), stop).await;
    })
}

/// Accepts connections and serves each with `S` as a task of its own, until the core's shutdown
/// fires. Accept errors back off; connections over the per-core cap are closed at once.
async fn accept_until_shutdown<A: App, S: Service<A>>(
    core: &Rc<Core<A>>,
    listener: monoio::net::TcpListener,
    limits: crate::http::ConnLimits,
) {
    let id = core.id;
    let max_conns = core.shared.max_connections_per_core;
    let mut failures: u32 = 0;
    let mut failed_log = LogThrottle::new(ACCEPT_LOG_INTERVAL);
    let mut over_cap_log = LogThrottle::new(ACCEPT_LOG_INTERVAL);
    loop {
        let accept = listener.accept();
        let stop = core.shutdown.wait();
        let (stream, _peer) = match futures::future::select(std::pin::pin!(accept), stop).await {
            futures::future::Either::Right(_) => break,
            futures::future::Either::Left((Ok(s), _)) => {
                failures = 0;
                s
            }
            futures::future::Either::Left((Err(e), _)) => {
                // Out of file descriptors (EMFILE, ENFILE) or another accept error: retrying at
                // once only spins and floods the log, so pause longer each time, and log once
                // per interval with the count of errors the line stands for.
                failures = failures.saturating_add(1);
                let pause = accept_backoff(failures);
                if let Some(suppressed) = failed_log.note(std::time::Instant::now()) {
                    tracing::warn!(
                        core = id,
                        error = %e,
                        suppressed,
                        pause_ms = pause.as_millis() as u64,
                        "accept failed; pausing accepts (suppressed = failures since the last line)"
                    );
                }
                let sleep = monoio::time::sleep(pause);
                let stop = core.shutdown.wait();
                if let futures::future::Either::Right(_) =
                    futures::future::select(std::pin::pin!(sleep), stop).await
                {
                    break;
                }
                continue;
            }
        };
        if core.open_connections.get() >= max_conns {
            // Over the per-core connection limit: closing at once is kinder than a stalled accept.
            drop(stream);
            if let Some(suppressed) = over_cap_log.note(std::time::Instant::now()) {
                tracing::warn!(
                    core = id,
                    max_connections_per_core = max_conns,
                    suppressed,
                    "connection cap reached; closing new connections (suppressed = closed since the last line)"
                );
            }
            continue;
        }
        serve::<A, S>(core, stream, limits);
    }
    drop(listener);
}

/// Serves one accepted connection as a task of its own, counted while it is open.
fn serve<A: App, S: Service<A>>(
    core: &Rc<Core<A>>,
    stream: monoio::net::TcpStream,
    limits: crate::http::ConnLimits,
) {
    core.open_connections.set(core.open_connections.get() + 1);
    core.shared.live_connections.fetch_add(1, Ordering::Relaxed);
    let stats = core.stats();
    stats.connections_open.fetch_add(1, Ordering::Relaxed);
    stats.connections_total.fetch_add(1, Ordering::Relaxed);
    let c = core.clone();
    let tls = core.tls.borrow().clone();
    monoio::spawn(async move {
        let svc_core = c.clone();
        crate::http::serve_connection(stream, tls, limits, c.shutdown.clone(), move |req| {
            S::handle(svc_core.clone(), req)
        })
        .await;
        c.open_connections.set(c.open_connections.get() - 1);
        c.stats().connections_open.fetch_sub(1, Ordering::Relaxed);
        c.shared.live_connections.fetch_sub(1, Ordering::Relaxed);
    });
}

/// After the core stopped accepting: stays alive until every core's connections and detached
/// work are done, so hand-offs to this core keep working while other cores drain (giving up after
/// the grace period), then drains this core's log so every queued write reaches the disk.
async fn finish<A: App>(core: &Core<A>) {
    let shared = &core.shared;
    let grace = Duration::from_millis(shared.config.server.shutdown_grace_ms);
    let started = std::time::Instant::now();
    while (shared.live_connections.load(Ordering::Relaxed) > 0
        || shared.live_jobs.load(Ordering::Relaxed) > 0)
        && started.elapsed() < grace
    {
        monoio::time::sleep(Duration::from_millis(10)).await;
    }
    let left = grace.saturating_sub(started.elapsed());
    if monoio::time::timeout(left, core.log.shutdown())
        .await
        .is_err()
    {
        tracing::error!(
            core = core.id,
            "the write-ahead log did not drain within the grace period"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_cap_fits_the_fd_limit() {
        // 1024 fds, 2 cores, 1 buyer: (1024 - (128 + 2 * (16 + 8))) / 2 = 424.
        assert_eq!(connection_cap(10_000, Some(1024), 2, 1), 424);
        assert_eq!(connection_cap(100, Some(1024), 2, 1), 100);
        assert_eq!(connection_cap(10_000, None, 2, 1), 10_000);
        // Under a low limit the reserve shrinks to half of it: 256 fds, 2 cores, 6 buyers keep
        // 128 (not 128 + 2 * (16 + 48) = 256) and give each core 64.
        assert_eq!(fd_reserve(2, 6, Some(256)), 128);
        assert_eq!(connection_cap(10_000, Some(256), 2, 6), 64);
        assert_eq!(connection_cap(10_000, Some(64), 4, 10), 8);
        // A limit of nothing still lets each core hold one connection (start refuses it).
        assert_eq!(connection_cap(10_000, Some(0), 4, 10), 1);
        assert_eq!(fd_limit_needed(2, 6), 256 + 32);
    }

    #[test]
    fn accept_backoff_doubles_up_to_a_second() {
        let ms: Vec<u128> = (1..=9).map(|f| accept_backoff(f).as_millis()).collect();
        assert_eq!(ms, [10, 20, 40, 80, 160, 320, 640, 1000, 1000]);
        assert_eq!(accept_backoff(u32::MAX), ACCEPT_BACKOFF_MAX);
    }

    #[test]
    fn log_throttle_logs_once_per_interval_and_counts_the_rest() {
        let t0 = std::time::Instant::now();
        let mut log = LogThrottle::new(Duration::from_secs(10));
        assert_eq!(log.note(t0), Some(0));
        for i in 1..=500 {
            assert_eq!(log.note(t0 + Duration::from_millis(i * 10)), None);
        }
        assert_eq!(log.note(t0 + Duration::from_secs(10)), Some(500));
        assert_eq!(log.note(t0 + Duration::from_secs(11)), None);
    }

    #[test]
    fn a_core_thread_knows_its_core_and_forgets_it_after() {
        assert_eq!(current_core(), None);
        {
            let _outer = enter_core(3);
            assert_eq!(current_core(), Some(3));
            {
                let _inner = enter_core(5);
                assert_eq!(current_core(), Some(5));
            }
            assert_eq!(current_core(), Some(3));
        }
        assert_eq!(current_core(), None);
        let inside = block_on_core(Driver::Legacy, 7, 64, || async { current_core() })
            .expect("core runtime");
        assert_eq!(inside, Some(7));
        assert_eq!(current_core(), None);
    }

    #[test]
    fn allowed_cpus_are_distinct_and_ascending() {
        let cpus = allowed_cpus();
        assert!(!cpus.is_empty());
        assert!(cpus.windows(2).all(|w| w[0] < w[1]), "{cpus:?}");
    }
}
